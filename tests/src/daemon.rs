//! Real servers run as children of a test — nginx, redis-server — each on a free loopback
//! port with its files in a scratch directory, stopped (and the directory removed) on drop.
//! `.ci/run` installs the programs.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A loopback port nothing listens on (it was free a moment ago).
pub fn dead_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A scratch directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new empty directory, its name saying `what` it is for.
    pub fn new(what: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sockhost-test-{what}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// A file in it.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server run as a child process of the test (nginx, redis-server), killed on drop.
pub struct Daemon {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    program: String,
    args: Vec<String>,
    dir: TempDir,
}

impl Daemon {
    /// Start `program` with the arguments `args(dir, port)` gives for a free port, and wait
    /// until the port accepts connections; another port is tried if that one was taken
    /// meanwhile.
    pub fn start(program: &str, args: impl Fn(&TempDir, u16) -> Vec<String>) -> Daemon {
        let mut last_words = String::new();
        for _ in 0..3 {
            let dir = TempDir::new(program);
            let addr = dead_port();
            let args = args(&dir, addr.port());
            match spawn_listening(program, &args, &dir, addr, Duration::from_secs(10)) {
                Ok(child) => {
                    return Daemon {
                        child: Some(child),
                        addr,
                        program: program.to_string(),
                        args,
                        dir,
                    }
                }
                // The port was taken, most likely: another one.
                Err(words) => last_words = words,
            }
        }
        panic!("{program} did not start listening (3 attempts); it said:\n{last_words}");
    }

    /// Its process id (while it runs).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the daemon is stopped").id()
    }

    /// Kill it (SIGKILL: no goodbye to its clients) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again after [`kill`](Daemon::kill), with the same arguments on the same
    /// port, and wait until the port accepts connections (bounded; retried while the
    /// port is still held).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart: {} still runs", self.program);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match spawn_listening(
                &self.program,
                &self.args,
                &self.dir,
                self.addr,
                Duration::from_secs(10),
            ) {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(words) if Instant::now() > deadline => {
                    panic!(
                        "{} did not listen again on {}; it said:\n{words}",
                        self.program, self.addr
                    )
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// nginx answering every request with `location` (a `return` directive), single
    /// process, listening with `listen_flags` (e.g. `proxy_protocol`).
    pub fn nginx(listen_flags: &str, location: &str) -> Daemon {
        let (listen_flags, location) = (listen_flags.to_string(), location.to_string());
        Daemon::start("nginx", move |dir, port| {
            let d = dir.0.display();
            let conf = format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
                 error_log {d}/error.log warn;\nevents {{ worker_connections 1024; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
                 fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
                 server {{\n    listen 127.0.0.1:{port} {listen_flags};\n\
                 location / {{ default_type text/plain; {location} }}\n  }}\n}}\n"
            );
            std::fs::write(dir.path("nginx.conf"), conf).unwrap();
            ["-p", &format!("{d}"), "-e", &format!("{d}/error.log"), "-c"]
                .iter()
                .map(|s| s.to_string())
                .chain([dir.path("nginx.conf").display().to_string()])
                .collect()
        })
    }

    /// nginx reading a PROXY header (v1 or v2: `listen … proxy_protocol`) first on every
    /// connection and answering with the client address it carried.
    pub fn nginx_showing_proxy_protocol() -> Daemon {
        Daemon::nginx(
            "proxy_protocol",
            r#"return 200 "$proxy_protocol_addr:$proxy_protocol_port\n";"#,
        )
    }

    pub fn redis() -> Daemon {
        Daemon::start("redis-server", |dir, port| {
            [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &dir.0.display().to_string(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        })
    }
}

/// Run `program args` with its output in `dir`/output, and wait until `addr` accepts
/// connections; `Err` with what it said if it exits (or is not listening by `timeout`).
fn spawn_listening(
    program: &str,
    args: &[String],
    dir: &TempDir,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<Child, String> {
    let output = std::fs::File::create(dir.path("output")).unwrap();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(output.try_clone().unwrap())
        .stderr(output)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {program} (.ci/run installs it): {e}"));
    let deadline = Instant::now() + timeout;
    loop {
        // A connection to itself (the kernel picked the free port as the probe's own) is
        // not the daemon listening.
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200))
            .is_ok_and(|probe| probe.local_addr().ok() != Some(addr))
        {
            return Ok(child);
        }
        if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::fs::read_to_string(dir.path("output")).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}
