//! `--bind` forms, the `listening on` lines, several binds, and `--backlog`.

use std::net::SocketAddr;
use std::process::Command;

use sockhost_tests::{connect, loopback, plugin, round_trip, Server};

fn serve(binds: &[&str], extra: &[&str]) -> Server {
    let echo = plugin("echo");
    let mut args = vec![
        "--plugin",
        echo.to_str().unwrap(),
        "--concurrency",
        "thread",
    ];
    for b in binds {
        args.extend(["--bind", b]);
    }
    args.extend(extra);
    Server::start(&args)
}

fn assert_echoes(addr: SocketAddr) {
    let mut s = connect(addr);
    assert_eq!(round_trip(&mut s, b"ping"), b"ping", "echo via {addr}");
}

#[test]
fn ipv4_ipv6_and_names_each_bind_one_interface() {
    let server = serve(&["127.0.0.1:0", "[::1]:0", "localhost:0"], &[]);
    let lines = server.stdout.text();
    let listening: Vec<&str> = lines
        .lines()
        .filter(|l| l.starts_with("listening on "))
        .collect();
    assert_eq!(listening.len(), 3, "one line per bind: {lines}");
    assert!(
        listening[0].starts_with("listening on tcp://127.0.0.1:"),
        "{}",
        listening[0]
    );
    assert!(
        listening[1].starts_with("listening on tcp://[::1]:"),
        "{}",
        listening[1]
    );
    assert!(
        listening[2].starts_with("listening on tcp://127.0.0.1:"),
        "localhost binds its IPv4 address: {}",
        listening[2]
    );
    for (_, addr) in &server.listening {
        assert_ne!(addr.port(), 0, "port 0 is reported as the chosen port");
        assert_echoes(*addr);
    }
}

#[test]
fn all_interfaces_is_one_dual_stack_socket() {
    let server = serve(&[":0"], &[]);
    let (transport, addr) = server.listening[0].clone();
    assert_eq!(transport, "tcp");
    assert_eq!(
        addr.to_string(),
        format!("[::]:{}", addr.port()),
        "`:PORT` is one [::] socket"
    );
    assert_echoes(SocketAddr::from(([127, 0, 0, 1], addr.port())));
    assert_echoes(loopback(addr));
}

#[test]
fn ipv4_peers_of_the_dual_stack_socket_are_plain_ipv4() {
    let kit = plugin("testkit");
    let server = Server::start(&[
        "--plugin",
        kit.to_str().unwrap(),
        "--bind",
        ":0",
        "--concurrency",
        "thread",
    ]);
    let mut s = connect(SocketAddr::from(([127, 0, 0, 1], server.addr().port())));
    let who = sockhost_tests::ask(&mut s, "whoami");
    assert!(who.starts_with("peer=127.0.0.1:"), "{who}");
    assert!(who.contains(" local=127.0.0.1:"), "{who}");
}

#[test]
fn tcp_prefix_is_accepted() {
    let server = serve(&["tcp://127.0.0.1:0"], &[]);
    assert_echoes(server.addr());
}

#[test]
fn backlog_is_the_listen_queue_length() {
    let server = serve(&["127.0.0.1:0"], &["--backlog", "77"]);
    let port = server.addr().port();
    let out = Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .expect("ss (iproute2) is installed");
    let text = String::from_utf8_lossy(&out.stdout);
    // ss -l shows the backlog in the Send-Q column: State Recv-Q Send-Q Local Peer
    let send_q: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert_eq!(send_q, vec!["77"], "ss output: {text}");
}
