//! systemd integration: socket activation (LISTEN_FDS) and the readiness protocol
//! (NOTIFY_SOCKET), against a fake notify socket and pre-bound sockets, in both modes.

use std::net::{TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use sockhost_tests::{connect, plugin, round_trip, Server};

/// A stand-in for systemd's notify socket: collects the datagrams.
struct FakeSystemd {
    socket: UnixDatagram,
    path: std::path::PathBuf,
}

impl FakeSystemd {
    fn new(tag: &str) -> FakeSystemd {
        let path =
            std::env::temp_dir().join(format!("sockhost-notify-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        FakeSystemd { socket, path }
    }

    /// The next message (bounded wait).
    fn next(&self) -> String {
        let mut buf = [0u8; 1024];
        let n = self
            .socket
            .recv(&mut buf)
            .expect("a notify message within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Wait for a message containing `needle`, returning it.
    fn expect(&self, needle: &str) -> String {
        for _ in 0..20 {
            let m = self.next();
            if m.contains(needle) {
                return m;
            }
        }
        panic!("no notify message with {needle:?}");
    }
}

impl Drop for FakeSystemd {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[test]
fn sd_notify_ready_reloading_and_stopping_in_both_modes() {
    let echo = plugin("echo");
    for mode in ["process", "thread"] {
        let systemd = FakeSystemd::new(mode);
        let mut server = Server::start_with_env(
            &[
                "--plugin",
                echo.to_str().unwrap(),
                "--bind",
                "127.0.0.1:0",
                "--concurrency",
                mode,
                "--workers",
                "2",
            ],
            &[("NOTIFY_SOCKET", systemd.path.to_str().unwrap())],
        );
        let ready = systemd.expect("READY=1");
        assert!(
            ready.contains(&format!("MAINPID={}", server.pid())),
            "{mode}: {ready}"
        );
        server.signal("HUP");
        let reloading = systemd.expect("RELOADING=1");
        assert!(reloading.contains("MONOTONIC_USEC="), "{mode}: {reloading}");
        let after = systemd.expect("READY=1");
        if mode == "thread" {
            // The successor process takes over as the main process.
            assert!(
                !after.contains(&format!("MAINPID={}", server.pid())),
                "thread-mode reload names the new process: {after}"
            );
            let successor: u32 = after
                .split("MAINPID=")
                .nth(1)
                .unwrap()
                .lines()
                .next()
                .unwrap()
                .parse()
                .unwrap();
            server.wait_exit(Duration::from_secs(10));
            assert!(std::process::Command::new("kill")
                .args(["-TERM", &successor.to_string()])
                .status()
                .unwrap()
                .success());
            systemd.expect("STOPPING=1");
        } else {
            server.signal("TERM");
            systemd.expect("STOPPING=1");
            assert!(server.wait_exit(Duration::from_secs(10)).success());
        }
    }
}

#[test]
fn socket_activation_serves_the_inherited_sockets_in_both_modes() {
    let echo = plugin("echo");
    for mode in ["thread", "process"] {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (tcp_addr, udp_addr) = (tcp.local_addr().unwrap(), udp.local_addr().unwrap());
        // Named in the opposite order to the --bind flags: matching is by address.
        let server = Server::start_activated(
            &[
                "--plugin",
                echo.to_str().unwrap(),
                "--bind",
                &format!("udp://{udp_addr}"),
                "--bind",
                &tcp_addr.to_string(),
                "--concurrency",
                mode,
                "--workers",
                "2",
            ],
            &[tcp.as_raw_fd(), udp.as_raw_fd()],
            &["web", "dns"],
        );
        // Only the child holds them now.
        drop(tcp);
        drop(udp);
        assert_eq!(server.listening[0], ("udp".to_string(), udp_addr), "{mode}");
        assert_eq!(server.listening[1], ("tcp".to_string(), tcp_addr), "{mode}");
        let mut s = connect(tcp_addr);
        assert_eq!(round_trip(&mut s, b"activated"), b"activated", "{mode}");
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        client.send_to(b"dns", udp_addr).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(client.recv(&mut buf).unwrap(), 3, "{mode}");
        server
            .stderr
            .wait_for("on an inherited socket", Duration::from_secs(2));
    }
}

#[test]
fn a_stop_leaves_systemds_socket_taking_connections_for_the_next_start() {
    // A stop makes the sockets it closes for good refuse new connections while it serves
    // their queues; systemd's sockets are not closed by it (systemd holds them for the next
    // start), so they must not be marked.
    let echo = plugin("echo");
    for mode in ["thread", "process"] {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        let mut server = Server::start_activated(
            &[
                "--plugin",
                echo.to_str().unwrap(),
                "--bind",
                &addr.to_string(),
                "--concurrency",
                mode,
                "--workers",
                "1",
            ],
            &[tcp.as_raw_fd()],
            &["web"],
        );
        let mut s = connect(addr);
        assert_eq!(round_trip(&mut s, b"before"), b"before", "{mode}");
        drop(s);
        server.signal("TERM");
        assert!(
            server.wait_exit(Duration::from_secs(10)).success(),
            "{mode}"
        );
        // The socket `tcp` (systemd's copy) still takes connections for the next start.
        let next = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3));
        assert!(
            next.is_ok(),
            "{mode}: systemd's socket no longer takes connections after a stop: {next:?}"
        );
        tcp.set_nonblocking(true).unwrap();
        assert!(
            tcp.accept().is_ok(),
            "{mode}: the connection was not queued"
        );
    }
}
