//! `--config`: a file with several services, served in both modes and reloaded with a
//! changed option; `sockhost check` rejecting broken files with file, line and key; the
//! precedence of file, environment and flags; Unix-domain socket binds.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use sockhost_tests::{
    alive, ask, children_of, connect, plugin, round_trip, run_to_exit, run_to_exit_with_env,
    wait_until, Server,
};

/// A temporary directory, removed at the end of the test.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let dir =
            std::env::temp_dir().join(format!("sockhost-config-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CA and a `localhost` certificate signed by it (`server.pem`, `server.key`) in `dir`;
/// returns the CA certificate for the client.
fn make_certificates(dir: &Dir) -> CertificateDer<'static> {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "config test CA");
    let ca = ca_params.clone().self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(dir.path("server.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.path("server.key"), key.serialize_pem()).unwrap();
    ca.der().clone()
}

/// An HTTP request to the hello plugin over TLS over the Unix socket at `path`.
fn hello_over_tls_on_unix(path: &Path, ca: &CertificateDer<'static>) -> String {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let sock =
        UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    sock.set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = Vec::new();
    let _ = tls.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}

/// The three-service configuration: echo over TCP and UDP, hello over TLS on a Unix
/// socket (certificate paths relative to the file), kv with `max-keys`.
fn three_services(dir: &Dir, max_keys: u32) -> String {
    let text = format!(
        r#"# three services, one arbiter
workers = 2
metrics-bind = "127.0.0.1:0"
pid-file = "sockhost.pid"

[[service]]
name = "echo"
plugin = "{echo}"
bind = ["127.0.0.1:0", "udp://127.0.0.1:0"]

[[service]]
name = "hello"
plugin = "{hello}"
bind = "unix:{socket}?mode=600"
cert-file = "server.pem"
key-file = "server.key"

[[service]]
name = "kv"
plugin = "{kv}"
bind = "127.0.0.1:0"
plugin-opt = {{ max-keys = {max_keys} }}
keep-alive = 60
"#,
        echo = plugin("echo").display(),
        hello = plugin("hello").display(),
        kv = plugin("kv").display(),
        socket = dir.path("hello.sock").display(),
    );
    dir.write("sockhost.toml", &text)
}

fn scrape(stdout: &str) -> String {
    let addr: SocketAddr = stdout
        .lines()
        .find_map(|l| l.strip_prefix("metrics on http://"))
        .expect("a `metrics on` line")
        .trim_end_matches("/metrics")
        .parse()
        .unwrap();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

/// Every service answers: echo over TCP and UDP, hello over TLS on the Unix socket, kv
/// with `max-keys` keys at most.
fn assert_three_services_serve(server: &Server, ca: &CertificateDer<'static>, max_keys: u32) {
    let tcp: Vec<SocketAddr> = server
        .listening
        .iter()
        .filter(|(t, _)| t == "tcp")
        .map(|(_, a)| *a)
        .collect();
    let udp = server.listening.iter().find(|(t, _)| t == "udp").unwrap().1;
    assert_eq!(tcp.len(), 2, "echo and kv over TCP: {:?}", server.listening);
    let mut echo = connect(tcp[0]);
    assert_eq!(round_trip(&mut echo, b"over tcp"), b"over tcp");
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client.send_to(b"over udp", udp).unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = client.recv_from(&mut buf).expect("the UDP echo");
    assert_eq!(&buf[..n], b"over udp");
    let reply = hello_over_tls_on_unix(&server.unix[0], ca);
    assert!(
        reply.starts_with("HTTP/1.1 200 OK") && reply.ends_with("Hello, world!\n"),
        "{reply:?}"
    );
    // One connection: one worker's store.
    let mut kv = connect(tcp[1]);
    for i in 0..max_keys {
        assert_eq!(ask(&mut kv, &format!("SET k{i} v\n")), "OK");
    }
    assert_eq!(ask(&mut kv, "SET one-too-many v\n"), "ERR store full");
}

fn three_services_serve_and_reload(concurrency: &str, reloaded: &str) {
    let dir = Dir::new(concurrency);
    let ca = make_certificates(&dir);
    let config = three_services(&dir, 1);
    let mut server =
        Server::start_expecting(&["--config", &config, "--concurrency", concurrency], &[], 4);
    assert_eq!(server.unix, vec![dir.path("hello.sock")]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path("hello.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode=600 from the bind");
    assert_three_services_serve(&server, &ca, 1);

    // Metrics carry each service's name.
    let metrics = scrape(&server.stdout.text());
    for service in ["echo", "hello", "kv"] {
        assert!(
            metrics.contains(&format!(
                "sockhost_plugin_info{{service=\"{service}\",name=\"{service}\""
            )),
            "{metrics}"
        );
    }
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sockhost_connections_accepted_total{service=\"hello\"} ")),
        "{metrics}"
    );

    // Reload with a changed plugin option: the file is read again.
    three_services(&dir, 3);
    server.signal("HUP");
    server.stderr.wait_for(reloaded, Duration::from_secs(20));
    assert_three_services_serve(&server, &ca, 3);

    // Thread mode: the pid file (relative to the configuration) names the successor.
    let pid: u32 = std::fs::read_to_string(dir.path("sockhost.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid == server.pid(), concurrency == "process");
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    wait_until("sockhost to stop", Duration::from_secs(30), || !alive(pid));
    assert!(server.wait_exit(Duration::from_secs(30)).success());
    assert!(
        !dir.path("hello.sock").exists(),
        "the Unix socket file is removed at exit"
    );
}

#[test]
fn three_services_from_one_file_in_process_mode_reloaded_with_a_changed_option() {
    three_services_serve_and_reload(
        "process",
        "reload finished: only the new generation accepts connections",
    );
}

#[test]
fn three_services_from_one_file_in_thread_mode_reloaded_with_a_changed_option() {
    three_services_serve_and_reload(
        "thread",
        "reload finished: the new process serves; this one drains",
    );
}

#[test]
fn a_reload_whose_new_configuration_fails_keeps_the_old_one_serving() {
    let dir = Dir::new("bad-reload");
    let ca = make_certificates(&dir);
    let config = three_services(&dir, 1);
    let mut server = Server::start_expecting(&["--config", &config], &[], 4);
    // kv refuses max-keys = 0: the whole reload is aborted.
    three_services(&dir, 0);
    server.signal("HUP");
    let line = server
        .stderr
        .wait_for("reload aborted", Duration::from_secs(20));
    assert!(line.contains("max-keys"), "{line}");
    assert_three_services_serve(&server, &ca, 1);
    // A certificate that no longer loads aborts the whole reload too.
    three_services(&dir, 1);
    std::fs::write(dir.path("server.pem"), "garbage\n").unwrap();
    server.signal("HUP");
    wait_until("a second aborted reload", Duration::from_secs(20), || {
        server.stderr.count("reload aborted") >= 2
    });
    let text = server.stderr.text();
    let line = text
        .lines()
        .filter(|l| l.contains("reload aborted"))
        .nth(1)
        .unwrap();
    assert!(
        line.contains("service hello") && line.contains("--cert-file"),
        "{line}"
    );
    assert_three_services_serve(&server, &ca, 1);
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(30)).success());
}

/// `sockhost check` on `text`: exit status and stderr.
fn check(dir: &Dir, text: &str) -> (bool, String, String) {
    let path = dir.write("check.toml", text);
    let out = run_to_exit(&["check", "--config", &path], Duration::from_secs(30));
    (out.status.success(), out.stdout, out.stderr)
}

#[test]
fn check_rejects_five_kinds_of_broken_config_each_with_file_line_and_key() {
    let dir = Dir::new("check");
    make_certificates(&dir);
    std::fs::write(dir.path("bad.pem"), "not a certificate\n").unwrap();
    let echo = plugin("echo");
    let kv = plugin("kv");
    let file = dir.path("check.toml");
    let file = file.display();
    let cases = [
        (
            "unknown key",
            format!("plugin = \"{}\"\nkep-alive = 5\n", echo.display()),
            format!("error: {file}:2: kep-alive: unknown key (did you mean `keep-alive`?)"),
        ),
        (
            "wrong type",
            format!("plugin = \"{}\"\n\nworkers = \"many\"\n", echo.display()),
            format!("error: {file}:3: workers: invalid value 'many' for '--workers <N>'"),
        ),
        (
            "conflicting settings",
            format!(
                "bind = \"127.0.0.1:0\"\n[[service]]\nplugin = \"{}\"\nbind = \"127.0.0.1:0\"\n",
                echo.display()
            ),
            format!("error: {file}:1: bind: conflicts with the [[service]] blocks"),
        ),
        (
            "a plugin that does not load",
            "[[service]]\nname = \"gone\"\nplugin = \"/nonexistent/libgone.so\"\nbind = \"127.0.0.1:0\"\n".to_string(),
            format!("error: {file}:3: service[1].plugin: plugin /nonexistent/libgone.so: no such file"),
        ),
        (
            "an option the plugin refuses",
            format!(
                "[[service]]\nplugin = \"{}\"\nbind = \"127.0.0.1:0\"\n\n[[service]]\nplugin = \"{}\"\nbind = \"127.0.0.1:1\"\nplugin-opt = {{ max-keys = 0 }}\n",
                echo.display(),
                kv.display()
            ),
            format!("error: {file}:8: service[2].plugin-opt: plugin kv: option max-keys: must be at least 1"),
        ),
        (
            "a certificate that does not load",
            format!(
                "plugin = \"{}\"\nbind = \"127.0.0.1:0\"\ncert-file = \"bad.pem\"\nkey-file = \"server.key\"\n",
                echo.display()
            ),
            format!("error: {file}:3: cert-file: --cert-file {}: no certificate found", dir.path("bad.pem").display()),
        ),
    ];
    for (what, text, expected) in cases {
        let (ok, _, stderr) = check(&dir, &text);
        assert!(!ok, "{what}: check must fail; stderr:\n{stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{what}: one line; stderr:\n{stderr}");
        assert!(
            lines[0].starts_with(&expected),
            "{what}:\n expected {expected}\n got      {}",
            lines[0]
        );
    }
    // Serving meets the same problems: the first is its one `error:` line.
    let path = dir.write(
        "start.toml",
        &format!("plugin = \"{}\"\nkep-alive = 5\n", echo.display()),
    );
    let out = run_to_exit(&["--config", &path], Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        out.stderr.trim(),
        format!("error: {path}:2: kep-alive: unknown key (did you mean `keep-alive`?)")
    );
    // A good file passes (two services of one plugin file), and so does -t; nothing is
    // served.
    let good = format!(
        "[[service]]\nplugin = \"{echo}\"\nbind = \"127.0.0.1:0\"\n[[service]]\nname = \"echo2\"\nplugin = \"{echo}\"\nbind = \"udp://127.0.0.1:0\"\n",
        echo = echo.display()
    );
    let (ok, stdout, stderr) = check(&dir, &good);
    assert!(ok, "stderr:\n{stderr}");
    assert!(
        stdout.starts_with("configuration ok: 2 service(s): echo ("),
        "{stdout}"
    );
    let path = dir.write("good.toml", &format!("plugin = \"{}\"\n", kv.display()));
    let out = run_to_exit(
        &["-t", "--config", &path, "--plugin-opt", "max-keys=2"],
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stdout
            .starts_with("configuration ok: 1 service(s): kv ("),
        "{}",
        out.stdout
    );
}

#[test]
fn two_services_can_share_one_plugin_file_with_different_options() {
    let dir = Dir::new("shared-plugin");
    let kv = plugin("kv");
    let config = dir.write(
        "two.toml",
        &format!(
            "concurrency = \"thread\"\n[[service]]\nname = \"small\"\nplugin = \"{kv}\"\nbind = \"127.0.0.1:0\"\nplugin-opt = {{ max-keys = 1 }}\n\n[[service]]\nname = \"big\"\nplugin = \"{kv}\"\nbind = \"127.0.0.1:0\"\nplugin-opt = {{ max-keys = 3 }}\n",
            kv = kv.display()
        ),
    );
    let server = Server::start_expecting(&["--config", &config], &[], 2);
    let (small, big) = (server.listening[0].1, server.listening[1].1);
    let mut s = connect(small);
    assert_eq!(ask(&mut s, "SET a 1\n"), "OK");
    assert_eq!(ask(&mut s, "SET b 1\n"), "ERR store full");
    let mut b = connect(big);
    for key in ["a", "b", "c"] {
        assert_eq!(ask(&mut b, &format!("SET {key} 1\n")), "OK");
    }
    assert_eq!(ask(&mut b, "SET d 1\n"), "ERR store full");
}

#[test]
fn environment_variables_override_the_file_and_flags_override_both() {
    let dir = Dir::new("precedence");
    let config = dir.write(
        "p.toml",
        &format!(
            "plugin = \"{}\"\nbind = \"127.0.0.1:0\"\nworkers = 1\n",
            plugin("echo").display()
        ),
    );
    let workers_of = |env: &[(&str, &str)], flags: &[&str], want: usize| {
        let mut args = vec!["--config", config.as_str()];
        args.extend(flags);
        let server = Server::start_expecting(&args, env, 1);
        wait_until(&format!("{want} workers"), Duration::from_secs(10), || {
            children_of(server.pid()).len() == want
        });
        assert_eq!(round_trip(&mut connect(server.addr()), b"hi"), b"hi");
    };
    workers_of(&[], &[], 1);
    workers_of(&[("SOCKHOST_WORKERS", "3")], &[], 3);
    workers_of(&[("SOCKHOST_WORKERS", "3")], &["--workers", "2"], 2);
    // A bad variable is a usage error naming it, as a bad flag is.
    let out = run_to_exit_with_env(
        &["--config", &config],
        &[("SOCKHOST_WORKERS", "lots")],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("lots"), "{}", out.stderr);
}

#[test]
fn a_unix_bind_replaces_a_stale_socket_refuses_a_live_one_and_is_removed_at_exit() {
    let dir = Dir::new("unix");
    let path = dir.path("kit.sock");
    // A stale socket file: its listener is gone.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let bind = format!("unix:{}", path.display());
    for concurrency in ["process", "thread"] {
        let mut server = Server::start_expecting(
            &[
                "--plugin",
                plugin("testkit").to_str().unwrap(),
                "--bind",
                &bind,
                "--concurrency",
                concurrency,
                "--workers",
                "2",
            ],
            &[],
            1,
        );
        // What a plugin sees of a Unix peer (ConnInfo has IP addresses only).
        let mut c = UnixStream::connect(&path).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(b"whoami").unwrap();
        let mut line = [0u8; 256];
        let n = c.read(&mut line).unwrap();
        let line = String::from_utf8_lossy(&line[..n]).into_owned();
        assert!(
            line.starts_with("peer=0.0.0.0:0 local=0.0.0.0:0 transport=tcp"),
            "{line}"
        );
        // A second instance must not take the live socket away.
        let second = run_to_exit(
            &[
                "--plugin",
                plugin("echo").to_str().unwrap(),
                "--bind",
                &bind,
            ],
            Duration::from_secs(10),
        );
        assert!(!second.status.success());
        assert!(
            second.stderr.trim()
                == format!("error: --bind {bind}: another process listens on this socket"),
            "{}",
            second.stderr
        );
        assert!(path.exists(), "the live socket is left alone");
        drop(c);
        server.signal("TERM");
        assert!(server.wait_exit(Duration::from_secs(30)).success());
        assert!(!path.exists(), "{concurrency}: removed at exit");
        // The next round starts from a stale file again.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    }
    // Not a socket: refused and left alone.
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, b"keep me").unwrap();
    let out = run_to_exit(
        &[
            "--plugin",
            plugin("echo").to_str().unwrap(),
            "--bind",
            &bind,
        ],
        Duration::from_secs(10),
    );
    assert!(
        out.stderr
            .contains("a file that is not a socket is at this path; not removing it"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
}

#[test]
fn host_services_reach_connections_of_every_service_of_a_worker() {
    let dir = Dir::new("services");
    let kit = plugin("servicekit");
    for concurrency in ["process", "thread"] {
        let config = dir.write(
            "kits.toml",
            &format!(
                "workers = 1\nconcurrency = \"{concurrency}\"\n\
                 [[service]]\nplugin = \"{echo}\"\nbind = \"127.0.0.1:0\"\n\
                 [[service]]\nname = \"kit1\"\nplugin = \"{kit}\"\nbind = \"127.0.0.1:0\"\n\
                 [[service]]\nname = \"kit2\"\nplugin = \"{kit}\"\nbind = \"127.0.0.1:0\"\n",
                echo = plugin("echo").display(),
                kit = kit.display()
            ),
        );
        let server = Server::start_expecting(&["--config", &config], &[], 3);
        let (kit1, kit2) = (server.listening[1].1, server.listening[2].1);
        // A timer of a connection of the third service.
        let mut b = connect(kit2);
        b.write_all(b"timer 50 1\n").unwrap();
        assert_eq!(ask(&mut b, ""), "timer 1", "{concurrency}");
        // A post from a connection of one service to one of another (ids are worker-wide).
        let b_id = ask(&mut b, "id\n");
        let mut a = connect(kit1);
        assert_eq!(
            ask(&mut a, &format!("post {b_id} across services\n")),
            "post Queued",
            "{concurrency}"
        );
        assert_eq!(ask(&mut b, ""), "across services", "{concurrency}");
        // An outbound connection opened by the third service's plugin.
        let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        b.write_all(format!("connect {} 2000\n", upstream.local_addr().unwrap()).as_bytes())
            .unwrap();
        let (mut up, _) = upstream.accept().unwrap();
        assert_eq!(ask(&mut b, ""), "outbound connected", "{concurrency}");
        up.write_all(b"hello kit2\n").unwrap();
        assert_eq!(ask(&mut b, ""), "outbound data hello kit2", "{concurrency}");
        // The first service still echoes.
        assert_eq!(round_trip(&mut connect(server.listening[0].1), b"e"), b"e");
    }
}

/// A shared library that is no plugin and misbehaves when loaded (`abort()` or an endless
/// sleep in its constructor), built with the C compiler CI has.
fn misbehaving_library(dir: &Dir, name: &str, body: &str) -> String {
    let source = dir.write(
        &format!("{name}.c"),
        &format!("__attribute__((constructor)) static void init(void) {{ {body} }}\n"),
    );
    let lib = dir.path(&format!("lib{name}.so"));
    let status = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o", lib.to_str().unwrap(), &source])
        .status()
        .expect("a C compiler (cc) is installed");
    assert!(status.success());
    lib.to_str().unwrap().to_string()
}

#[test]
fn check_survives_a_plugin_that_crashes_or_hangs_while_loading() {
    let dir = Dir::new("crash");
    let crash = misbehaving_library(&dir, "crash", "extern void abort(void); abort();");
    let hang = misbehaving_library(
        &dir,
        "hang",
        "extern unsigned sleep(unsigned); for (;;) sleep(60);",
    );
    let out = run_to_exit(&["check", "--plugin", &crash], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert_eq!(
        out.stderr.trim(),
        format!("error: plugin {crash}: the process loading it crashed (killed by SIGABRT)"),
    );
    let out = run_to_exit(
        &["check", "--plugin", &hang, "--timeout", "2"],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert_eq!(
        out.stderr.trim(),
        format!("error: plugin {hang}: did not finish loading within --timeout 2s"),
    );
    assert!(out.elapsed < Duration::from_secs(20), "{:?}", out.elapsed);
}

#[test]
fn each_plugins_log_records_carry_its_own_name() {
    let dir = Dir::new("plugin-logs");
    let config = dir.write(
        "logs.toml",
        &format!(
            "concurrency = \"thread\"\n[[service]]\nplugin = \"{}\"\nbind = \"127.0.0.1:0\"\n[[service]]\nplugin = \"{}\"\nbind = \"127.0.0.1:0\"\n",
            plugin("testkit").display(),
            plugin("kv").display()
        ),
    );
    let server = Server::start_expecting(&["--config", &config], &[], 2);
    let kit = server
        .stderr
        .wait_for("testkit factory ready", Duration::from_secs(5));
    let kv = server
        .stderr
        .wait_for("store ready", Duration::from_secs(5));
    assert!(kit.contains("plugin=testkit"), "{kit}");
    assert!(kv.contains("plugin=kv"), "{kv}");
}

#[test]
fn a_unix_socket_from_systemd_is_served_and_its_file_left_to_systemd() {
    use std::os::fd::AsRawFd;
    let dir = Dir::new("activated");
    let path = dir.path("activated.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let bind = format!("unix:{}", path.display());
    for concurrency in ["process", "thread"] {
        let mut server = Server::start_activated(
            &[
                "--plugin",
                plugin("echo").to_str().unwrap(),
                "--bind",
                &bind,
                "--concurrency",
                concurrency,
                "--workers",
                "2",
            ],
            &[listener.as_raw_fd()],
            &["app"],
        );
        assert_eq!(server.unix, vec![path.clone()], "{concurrency}");
        server
            .stderr
            .wait_for("on an inherited socket", Duration::from_secs(5));
        let mut c = UnixStream::connect(&path).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(b"activated").unwrap();
        let mut back = [0u8; 9];
        c.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"activated", "{concurrency}");
        drop(c);
        server.signal("TERM");
        assert!(server.wait_exit(Duration::from_secs(30)).success());
        assert!(path.exists(), "{concurrency}: systemd's socket file stays");
    }
}

#[test]
fn a_proxy_header_over_a_unix_socket_gives_the_plugin_the_client_address() {
    let dir = Dir::new("unix-proxy");
    let path = dir.path("proxied.sock");
    let bind = format!("unix:{}", path.display());
    let _server = Server::start_expecting(
        &[
            "--plugin",
            plugin("testkit").to_str().unwrap(),
            "--bind",
            &bind,
            "--concurrency",
            "thread",
            "--proxy-protocol",
            // IP sources only: a Unix peer is trusted by the socket file's rights.
            "--proxy-protocol-from",
            "10.0.0.0/8",
        ],
        &[],
        1,
    );
    let mut c = UnixStream::connect(&path).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\nwhoami")
        .unwrap();
    let mut line = [0u8; 256];
    let n = c.read(&mut line).unwrap();
    let line = String::from_utf8_lossy(&line[..n]).into_owned();
    assert!(line.starts_with("peer=192.0.2.7:40000 "), "{line}");
}

#[test]
fn access_log_records_name_their_service_and_a_unix_transport() {
    let dir = Dir::new("access");
    let log = dir.path("access.log");
    let socket = dir.path("kit.sock");
    let config = dir.write(
        "access.toml",
        &format!(
            "concurrency = \"thread\"\naccess-log = \"{log}\"\n\
             [[service]]\nplugin = \"{echo}\"\nbind = \"127.0.0.1:0\"\n\
             [[service]]\nname = \"kit\"\nplugin = \"{kit}\"\nbind = \"unix:{socket}\"\n",
            log = log.display(),
            echo = plugin("echo").display(),
            kit = plugin("testkit").display(),
            socket = socket.display()
        ),
    );
    let server = Server::start_expecting(&["--config", &config], &[], 2);
    assert_eq!(round_trip(&mut connect(server.addr()), b"hi"), b"hi");
    let mut c = UnixStream::connect(&socket).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"tag").unwrap();
    let mut buf = [0u8; 64];
    assert!(c.read(&mut buf).unwrap() > 0);
    drop(c);
    let mut text = String::new();
    wait_until("two access log records", Duration::from_secs(10), || {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines().count() >= 2
    });
    assert!(
        text.lines()
            .any(|l| l.contains(" service=echo transport=tcp peer=127.0.0.1:")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains(" service=kit transport=unix peer=0.0.0.0:0 local=0.0.0.0:0 ")),
        "{text}"
    );
}

#[test]
#[allow(unsafe_code)] // FFI/fork boundary: libc calls on the test's own child processes.
fn a_unix_sockets_owner_group_and_mode_are_set_before_it_listens() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: changing a file's owner needs root");
        return;
    }
    let dir = Dir::new("owner");
    let path = dir.path("owned.sock");
    let bind = format!("unix:{}?mode=660&owner=65534&group=65534", path.display());
    let _server = Server::start_expecting(
        &[
            "--plugin",
            plugin("echo").to_str().unwrap(),
            "--bind",
            &bind,
            "--concurrency",
            "thread",
        ],
        &[],
        1,
    );
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
}
