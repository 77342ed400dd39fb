//! The worker → arbiter status pipe: one line per event.
//!
//! `ready` once the plugin is loaded and the event loop is about to serve; `failed <msg>`
//! if it could not start (the message becomes the arbiter's `error:` line at startup);
//! `retiring` when a worker begins a graceful stop on its own (`--max-requests`), so that
//! its replacement starts while it drains; `draining` once a stopping worker has stopped
//! accepting (from then on only other workers take new connections).

use std::io::Write;
use std::os::fd::OwnedFd;

use crate::metrics::PluginId;

/// What a worker reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// Serving, with each service's plugin name and version.
    Ready(Vec<PluginId>),
    Failed(String),
    Retiring,
    Draining,
}

impl Report {
    fn encode(&self) -> String {
        match self {
            Report::Ready(plugins) => {
                let mut line = "ready".to_string();
                for PluginId { name, version } in plugins {
                    line.push(' ');
                    line.push_str(&name.replace([' ', '\n'], "_"));
                    line.push(' ');
                    line.push_str(&version.replace([' ', '\n'], "_"));
                }
                line + "\n"
            }
            Report::Failed(m) => format!("failed {}\n", m.replace('\n', " ")),
            Report::Retiring => "retiring\n".to_string(),
            Report::Draining => "draining\n".to_string(),
        }
    }

    fn decode(line: &str) -> Option<Report> {
        match line {
            "ready" => Some(Report::Ready(Vec::new())),
            _ if line.starts_with("ready ") => {
                let words: Vec<&str> = line.split(' ').skip(1).collect();
                let plugins = words
                    .chunks(2)
                    .map(|p| PluginId::new(p[0], p.get(1).copied().unwrap_or_default()))
                    .collect();
                Some(Report::Ready(plugins))
            }
            "retiring" => Some(Report::Retiring),
            "draining" => Some(Report::Draining),
            _ => line
                .strip_prefix("failed ")
                .map(|m| Report::Failed(m.to_string())),
        }
    }
}

/// The worker's end.
pub struct StatusWriter(std::fs::File);

impl StatusWriter {
    pub fn new(fd: OwnedFd) -> StatusWriter {
        StatusWriter(fd.into())
    }

    /// Send one report (best effort: if the arbiter is gone, so is this worker soon).
    pub fn send(&mut self, report: &Report) {
        let _ = self.0.write_all(report.encode().as_bytes());
    }
}

/// The arbiter's end for one worker: buffers partial lines.
pub struct StatusReader {
    fd: OwnedFd,
    partial: Vec<u8>,
}

impl StatusReader {
    pub fn new(fd: OwnedFd) -> StatusReader {
        StatusReader {
            fd,
            partial: Vec::new(),
        }
    }

    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.fd)
    }

    /// Read what is available (non-blocking) and return the complete reports.
    pub fn read(&mut self) -> Vec<Report> {
        let mut buf = [0u8; 1024];
        while let Ok(n @ 1..) = nix::unistd::read(&self.fd, &mut buf) {
            self.partial.extend_from_slice(&buf[..n]);
        }
        let mut reports = Vec::new();
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            if let Some(r) = Report::decode(String::from_utf8_lossy(&line[..end]).as_ref()) {
                reports.push(r);
            }
        }
        reports
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_cross_the_pipe_whole() {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK).unwrap();
        let mut writer = StatusWriter::new(w);
        let mut reader = StatusReader::new(r);
        writer.send(&Report::Ready(vec![
            PluginId::new("echo", "0.1.0"),
            PluginId::new("kv", "0.2.0"),
        ]));
        writer.send(&Report::Failed("plugin x: bad\nthing".into()));
        writer.send(&Report::Retiring);
        assert_eq!(
            reader.read(),
            vec![
                Report::Ready(vec![
                    PluginId::new("echo", "0.1.0"),
                    PluginId::new("kv", "0.2.0")
                ]),
                Report::Failed("plugin x: bad thing".into()),
                Report::Retiring
            ]
        );
        assert!(reader.read().is_empty());
    }
}
