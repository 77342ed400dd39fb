//! Black-box tests: the real `sockhost` serving the library your crate just built, over
//! loopback — the last mile after the [harness](super).
//!
//! Put the test in your crate's `tests/` directory (an integration test: cargo then builds
//! the `cdylib` first, into the same `target/<profile>/` as the test):
//!
//! ```no_run
//! use std::io::{Read, Write};
//! use plugin_api::testing::server::{built_plugin, Sockhost};
//!
//! let plugin = built_plugin(env!("CARGO_PKG_NAME")).unwrap();
//! let server = Sockhost::start(&plugin, &["--plugin-opt", "greeting=hi"]).unwrap();
//! let mut conn = server.connect().unwrap();
//! conn.write_all(b"world\nbye\n").unwrap();
//! let mut reply = String::new();
//! conn.read_to_string(&mut reply).unwrap();
//! assert_eq!(reply, "hi, world!\ngoodbye\n");
//! ```
//!
//! The binary is `$SOCKHOST_BIN`, else `sockhost` on `PATH` (`cargo install --path host` in
//! a sockhost checkout). It runs with `--bind 127.0.0.1:0 --concurrency thread` unless your
//! arguments say otherwise, and is killed when the [`Sockhost`] is dropped. Every wait is
//! bounded; a server that exits or stays silent fails with its stderr.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long `sockhost` may take to print its `listening on` lines.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopping `sockhost` may take to exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Read and write timeouts of [`Sockhost::connect`].
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The plugin library cargo built for `crate_name` (your package's name; `-` becomes `_`)
/// for the running test: `lib<name>.so` (`.dylib` on macOS, `.dll` on Windows) in
/// `target/<profile>/deps/`, where `cargo test` builds it, else in `target/<profile>/`,
/// where `cargo build` puts it.
pub fn built_plugin(crate_name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    // target/<profile>/deps/<test binary>
    let deps = exe
        .parent()
        .ok_or_else(|| format!("{} is not in target/<profile>/deps", exe.display()))?;
    let file = format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        crate_name.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    );
    let candidates = [Some(deps.join(&file)), deps.parent().map(|p| p.join(&file))];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.exists())
        .ok_or_else(|| {
            format!(
                "{file} is not in {}: is `crate-type = [\"cdylib\", …]` in [lib], and is this an \
                 integration test (tests/*.rs)?",
                deps.display()
            )
        })
}

/// The `sockhost` binary: `$SOCKHOST_BIN`, else `sockhost` on `PATH`.
pub fn sockhost_binary() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("SOCKHOST_BIN") {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!("SOCKHOST_BIN={}: no such file", bin.display()))
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("sockhost"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "sockhost is not on PATH: install it with `cargo install --path host` in a sockhost \
             checkout, or set SOCKHOST_BIN to the binary"
                .to_string()
        })
}

/// A running `sockhost`, killed when dropped.
pub struct Sockhost {
    child: Child,
    listening: Vec<(String, SocketAddr)>,
    stderr: Arc<Mutex<String>>,
}

impl Sockhost {
    /// Start `sockhost --plugin <plugin> <args>` (plus `--bind 127.0.0.1:0` and
    /// `--concurrency thread` unless `args` has them) and wait for its `listening on` lines.
    pub fn start(plugin: &Path, args: &[&str]) -> Result<Sockhost, String> {
        let binary = sockhost_binary()?;
        let mut command = Command::new(&binary);
        command.arg("--plugin").arg(plugin);
        if !args.contains(&"--bind") {
            command.args(["--bind", "127.0.0.1:0"]);
        }
        if !args.contains(&"--concurrency") {
            command.args(["--concurrency", "thread"]);
        }
        command.args(args);
        let binds = args.iter().filter(|a| **a == "--bind").count().max(1);
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().expect("piped");
        let collected = stderr.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = err_pipe.read(&mut chunk) {
                let text = String::from_utf8_lossy(&chunk[..n]);
                collected
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&text);
            }
        });
        // stdout: the `listening on` lines, then drained so the server never blocks on it.
        let (lines, listening) = mpsc::channel();
        let out_pipe = child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(out_pipe).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let mut server = Sockhost {
            child,
            listening: Vec::new(),
            stderr,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while server.listening.len() < binds {
            let left = deadline.saturating_duration_since(Instant::now());
            match listening.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(line) => {
                    if let Some(bound) = parse_listening(&line) {
                        server.listening.push(bound);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) if !left.is_zero() => {
                    if let Ok(Some(status)) = server.child.try_wait() {
                        return Err(server.exited_early(status));
                    }
                }
                // Its stdout closed: it is exiting.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = server.child.wait().map_err(|e| e.to_string())?;
                    return Err(server.exited_early(status));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!(
                    "sockhost printed no `listening on` line within {START_TIMEOUT:?}; stderr:\n{}",
                    server.stderr()
                ))
                }
            }
        }
        Ok(server)
    }

    fn exited_early(&self, status: ExitStatus) -> String {
        // Its last stderr lines may still be in flight.
        std::thread::sleep(Duration::from_millis(50));
        format!(
            "sockhost exited ({status}) before listening; stderr:\n{}",
            self.stderr()
        )
    }

    /// Every `(transport, address)` it listens on, from its `listening on` lines.
    pub fn listening(&self) -> &[(String, SocketAddr)] {
        &self.listening
    }

    /// The first TCP address.
    pub fn addr(&self) -> SocketAddr {
        self.first("tcp")
            .expect("sockhost listens on a TCP address")
    }

    /// The first UDP address, if any.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.first("udp")
    }

    fn first(&self, transport: &str) -> Option<SocketAddr> {
        self.listening
            .iter()
            .find(|(t, _)| t == transport)
            .map(|(_, a)| *a)
    }

    /// A connection to [`addr`](Sockhost::addr), with 10 s read and write timeouts.
    pub fn connect(&self) -> std::io::Result<TcpStream> {
        let stream = TcpStream::connect_timeout(&self.addr(), IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// What it has written to stderr so far (its log).
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stop it gracefully (`SIGTERM`) and wait for it to exit (bounded).
    pub fn stop(mut self) -> Result<ExitStatus, String> {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .map_err(|e| format!("kill -TERM: {e}"))?;
        if !sent.success() {
            return Err(format!("kill -TERM {} failed", self.pid()));
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "sockhost did not stop within {STOP_TIMEOUT:?}; stderr:\n{}",
                    self.stderr()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sockhost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `listening on tcp://127.0.0.1:8060` → `("tcp", 127.0.0.1:8060)`.
fn parse_listening(line: &str) -> Option<(String, SocketAddr)> {
    let (transport, addr) = line.strip_prefix("listening on ")?.split_once("://")?;
    Some((transport.to_string(), addr.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_lines_are_parsed() {
        assert_eq!(
            parse_listening("listening on udp://[::1]:53"),
            Some(("udp".to_string(), "[::1]:53".parse().unwrap()))
        );
        assert_eq!(
            parse_listening("metrics on http://127.0.0.1:1/metrics"),
            None
        );
    }

    #[test]
    fn a_missing_binary_says_how_to_install_it() {
        std::env::set_var("SOCKHOST_BIN", "/nonexistent/sockhost");
        let err = sockhost_binary().unwrap_err();
        std::env::remove_var("SOCKHOST_BIN");
        assert!(err.contains("SOCKHOST_BIN=/nonexistent/sockhost"), "{err}");
    }
}
