//! `sockhost check` (or `-t`): everything a start would do short of serving, with one line
//! per problem on stderr, exit 0 only if a real start would succeed.
//!
//! 1. Parse the configuration (file, variables, flags): every key problem, one line each.
//! 2. Resolve `--user`/`--group`, read every service's certificates, resolve its binds
//!    (names; a Unix socket's directory and any file already at its path).
//! 3. Load every plugin **in a child process** (a plugin that crashes or hangs while
//!    loading cannot take the checker down; the child is killed after `--timeout`), check
//!    its transports against the binds and build each service's factory with its options,
//!    as a worker would.
//!
//! Addresses are not bound: checking the configuration of a running sockhost (before a
//! reload) must not fail on the sockets that instance holds.
//!
//! Unix only (the fork): on Windows `check_windows.rs` refuses the command.

// Fork boundary: each plugin is loaded in a forked child.
#![allow(unsafe_code)]

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};

use crate::cli::Config;
use crate::config::{self, Given, Origin};
use crate::error::{HostError, Problem};
use crate::log_filter::LogLevel;
use crate::plugin::Plugin;

/// Run the check; `Err(Reported)` once the problems are printed.
pub fn run(given: &Given<'_>) -> Result<(), HostError> {
    crate::logging::init(
        crate::log_filter::LogFilter::effective(None, LogLevel::Warn),
        crate::logging::LogFormat::Text,
    );
    let problems = match config::load(given) {
        Ok((config, origins)) => check(&config, &origins),
        Err(problems) => problems,
    };
    if problems.is_empty() {
        let (config, _) = config::load(given).map_err(|_| HostError::Reported)?;
        let names: Vec<String> = config
            .services
            .iter()
            .map(|s| format!("{} ({})", s.name, s.plugin.display()))
            .collect();
        crate::stdout::print_flushed([format!(
            "configuration ok: {} service(s): {}",
            names.len(),
            names.join(", ")
        )])?;
        return Ok(());
    }
    let mut err = std::io::stderr().lock();
    for p in &problems {
        let _ = writeln!(err, "error: {p}");
    }
    Err(HostError::Reported)
}

/// Every problem a start of `config` would meet.
fn check(config: &Config, origins: &[Origin]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let global = |key: &str, message: String| Problem {
        file: origins.first().and_then(|o| o.file.clone()),
        line: None,
        key: Some(key.to_string()),
        message,
    };
    if let Err(e) =
        crate::privileges::Identity::resolve(config.user.as_deref(), config.group.as_deref())
    {
        problems.push(global("user", e.to_string()));
    }
    for (service, origin) in config.services.iter().zip(origins) {
        if let Some(files) = &service.tls {
            if let Err(e) = files.load(&service.name) {
                // The message starts with the flag of the file it is about.
                let message = e.to_string();
                let key = ["ca-file", "key-file"]
                    .into_iter()
                    .find(|k| message.starts_with(&format!("--{k} ")))
                    .unwrap_or("cert-file");
                problems.push(origin.problem(key, message));
            }
        }
        for bind in &service.binds {
            if let Some(message) = bind_problem(bind) {
                problems.push(origin.problem("bind", message));
            }
        }
    }
    // One child per distinct plugin file, building the factories of every service using it.
    let mut files: Vec<&std::path::Path> = Vec::new();
    for s in &config.services {
        if !files.contains(&s.plugin.as_path()) {
            files.push(&s.plugin);
        }
    }
    for file in files {
        let users: Vec<usize> = (0..config.services.len())
            .filter(|&i| config.services[i].plugin == file)
            .collect();
        for (i, key, message) in load_in_child(config, &users, config.timeout) {
            problems.push(origins[i].problem(key, message));
        }
    }
    problems
}

/// What a start would say of one bind, without binding it.
fn bind_problem(bind: &crate::bind::BindSpec) -> Option<String> {
    use crate::bind::Host;
    match &bind.host {
        Host::Unix(unix) => {
            let dir = unix.path.parent().filter(|d| !d.as_os_str().is_empty());
            if let Some(dir) = dir {
                if !dir.is_dir() {
                    return Some(format!(
                        "{bind}: the directory {} does not exist",
                        dir.display()
                    ));
                }
            }
            match std::fs::symlink_metadata(&unix.path) {
                Ok(meta) => {
                    use std::os::unix::fs::FileTypeExt;
                    (!meta.file_type().is_socket())
                        .then(|| format!("{bind}: a file that is not a socket is at this path"))
                }
                Err(_) => None,
            }
        }
        _ => bind.resolve().err().map(|e| e.to_string()),
    }
}

/// Load the plugin of services `users` in a child process and build their factories;
/// problems as `(service, key, message)`.
fn load_in_child(
    config: &Config,
    users: &[usize],
    timeout: Duration,
) -> Vec<(usize, &'static str, String)> {
    let first = users[0];
    let plugin_path = &config.services[first].plugin;
    let (read, write) = match nix::unistd::pipe() {
        Ok(p) => p,
        Err(e) => return vec![(first, "plugin", format!("cannot check it: pipe: {e}"))],
    };
    // SAFETY: the checker is single-threaded (no runtime, no helper threads), so the child
    // is a consistent copy; it ends in `_exit` and never returns into the checker.
    match unsafe { fork() } {
        Err(e) => vec![(first, "plugin", format!("cannot check it: fork: {e}"))],
        Ok(ForkResult::Child) => {
            drop(read);
            let report = load_here(config, users);
            let mut out = std::fs::File::from(write);
            let _ = out.write_all(report.as_bytes());
            drop(out);
            // SAFETY: `_exit` ends the child at once, without the parent's exit-time code.
            unsafe { nix::libc::_exit(0) }
        }
        Ok(ForkResult::Parent { child }) => {
            drop(write);
            let (text, finished) = read_until(read, Instant::now() + timeout);
            if !finished {
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            }
            let status = waitpid(child, None);
            let mut problems: Vec<(usize, &'static str, String)> = text
                .lines()
                .filter_map(|line| {
                    let mut parts = line.splitn(3, '\t');
                    let i: usize = parts.next()?.parse().ok()?;
                    let key = match parts.next()? {
                        "plugin-opt" => "plugin-opt",
                        "bind" => "bind",
                        _ => "plugin",
                    };
                    Some((i, key, parts.next()?.to_string()))
                })
                .collect();
            let done = text.lines().any(|l| l == "done");
            if !finished {
                problems.push((
                    first,
                    "plugin",
                    format!(
                        "plugin {}: did not finish loading within --timeout {}s",
                        plugin_path.display(),
                        timeout.as_secs()
                    ),
                ));
            } else if !done {
                let how = match status {
                    Ok(WaitStatus::Signaled(_, sig, _)) => format!("killed by {}", sig.as_str()),
                    Ok(WaitStatus::Exited(_, code)) => format!("exit status {code}"),
                    _ => "ended".to_string(),
                };
                problems.push((
                    first,
                    "plugin",
                    format!(
                        "plugin {}: the process loading it crashed ({how})",
                        plugin_path.display()
                    ),
                ));
            }
            problems
        }
    }
}

/// In the child: load, check binds, build factories; one line per problem, then `done`.
fn load_here(config: &Config, users: &[usize]) -> String {
    let mut out = String::new();
    let mut line = |i: usize, key: &str, message: String| {
        out.push_str(&format!(
            "{i}\t{key}\t{}\n",
            message.replace(['\n', '\t'], " ")
        ));
    };
    let first = users[0];
    match Plugin::load(&config.services[first].plugin) {
        Err(e) => line(first, "plugin", e.to_string()),
        Ok(plugin) => {
            for &i in users {
                let service = &config.services[i];
                if let Err(e) = plugin.check_binds(&service.binds) {
                    line(i, "bind", e.to_string());
                    continue;
                }
                if let Err(e) = plugin.factory(&service.plugin_opts) {
                    let key = if service.plugin_opts.is_empty() {
                        "plugin"
                    } else {
                        "plugin-opt"
                    };
                    line(i, key, e.to_string());
                }
            }
        }
    }
    out.push_str("done\n");
    out
}

/// Read the child's report until it closes the pipe; `false` if the deadline came first.
fn read_until(read: OwnedFd, deadline: Instant) -> (String, bool) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut file = std::fs::File::from(read);
    let mut text = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (String::from_utf8_lossy(&text).into_owned(), false);
        }
        let mut fds = [PollFd::new(
            std::os::fd::AsFd::as_fd(&file),
            PollFlags::POLLIN,
        )];
        let ms = PollTimeout::try_from(left.min(Duration::from_millis(500)))
            .unwrap_or(PollTimeout::NONE);
        if poll(&mut fds, ms).unwrap_or(0) == 0 {
            continue;
        }
        let mut chunk = [0u8; 4096];
        match file.read(&mut chunk) {
            Ok(0) | Err(_) => return (String::from_utf8_lossy(&text).into_owned(), true),
            Ok(n) => text.extend_from_slice(&chunk[..n]),
        }
    }
}
