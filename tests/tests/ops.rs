//! What an operator looks at: `--version`, `/health` and `/ready`, worker process titles,
//! `--max-requests-jitter`, JSON logs and per-target log filters, shell completions and the
//! man page.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use sockhost_tests::{
    ask, children_of, connect, metrics_addr, plugin, run_to_exit, run_to_exit_with_env, wait_until,
    Server,
};

#[test]
fn version_names_the_commit_the_profile_and_the_plugin_abi() {
    let f = run_to_exit(&["--version"], Duration::from_secs(10));
    assert!(f.status.success());
    let text = f.stdout;
    assert!(text.starts_with("sockhost 0."), "{text}");
    let commit = text
        .lines()
        .find_map(|l| l.strip_prefix("commit:"))
        .unwrap_or_else(|| panic!("no commit line: {text}"))
        .trim();
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{text}"
    );
    assert!(text.contains("build:      release"), "{text}");
    assert!(
        text.contains("plugin ABI: sockhost-plugin-api 0.1.")
            && text.contains("(root module ABI 0.1, host services level 1)"),
        "{text}"
    );
    // -V stays one line.
    let short = run_to_exit(&["-V"], Duration::from_secs(10)).stdout;
    assert_eq!(short.lines().count(), 1, "{short}");
}

/// `GET path`: the status code and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let code = reply[9..12].parse().unwrap();
    let body = reply
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (code, body)
}

/// `/health` answers while the process lives; `/ready` only while it serves and is not
/// stopping (a connection held open keeps it draining).
fn health_and_readiness(mode: &[&str]) {
    let mut args = vec!["--bind", "127.0.0.1:0", "--metrics-bind", "127.0.0.1:0"];
    args.extend(mode);
    args.extend(["--graceful-timeout", "30"]);
    let mut server = sockhost_tests::serve("kv", &args);
    let metrics = metrics_addr(&server);
    assert_eq!(get(metrics, "/health"), (200, "ok\n".into()));
    assert_eq!(get(metrics, "/ready"), (200, "ready\n".into()));
    assert_eq!(get(metrics, "/nothing").0, 404);

    let mut held = connect(server.addr());
    assert_eq!(ask(&mut held, "PING\n"), "PONG");
    server.signal("TERM");
    wait_until(
        "/ready to answer 503 while draining",
        Duration::from_secs(10),
        || get(metrics, "/ready").0 == 503,
    );
    assert_eq!(get(metrics, "/health").0, 200);
    assert_eq!(ask(&mut held, "QUIT\n"), "BYE");
    drop(held);
    assert!(server.wait_exit(Duration::from_secs(20)).success());
}

#[test]
fn health_and_ready_in_process_mode() {
    health_and_readiness(&["--workers", "2"]);
}

#[test]
fn health_and_ready_in_thread_mode() {
    health_and_readiness(&["--concurrency", "thread"]);
}

/// The worker processes of `arbiter`, with their command line and name, as `ps` shows them.
fn titles(arbiter: u32) -> Vec<(String, String)> {
    children_of(arbiter)
        .into_iter()
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline)
                .trim_end_matches('\0')
                .replace('\0', " ");
            Some((cmdline, comm.trim().to_string()))
        })
        .collect()
}

#[test]
fn workers_are_titled_with_their_slot_and_generation() {
    let server = sockhost_tests::serve("echo", &["--bind", "127.0.0.1:0", "--workers", "2"]);
    let mut first = titles(server.pid());
    first.sort();
    assert_eq!(
        first,
        [
            (
                "sockhost: worker 0 gen 1".to_string(),
                "sockhost w0 g1".to_string()
            ),
            (
                "sockhost: worker 1 gen 1".to_string(),
                "sockhost w1 g1".to_string()
            ),
        ]
    );
    // The arbiter keeps its command line.
    let own = std::fs::read(format!("/proc/{}/cmdline", server.pid())).unwrap();
    assert!(String::from_utf8_lossy(&own).contains("--workers"));

    server.signal("HUP");
    server
        .stderr
        .wait_for("reload finished", Duration::from_secs(20));
    wait_until("only generation 2 workers", Duration::from_secs(20), || {
        let now = titles(server.pid());
        now.len() == 2 && now.iter().all(|(cmd, _)| cmd.ends_with(" gen 2"))
    });
}

#[test]
fn max_requests_jitter_gives_each_worker_its_own_limit() {
    let server = sockhost_tests::serve(
        "echo",
        &[
            "--bind",
            "127.0.0.1:0",
            "--workers",
            "4",
            "--max-requests",
            "1000",
            "--max-requests-jitter",
            "100000",
        ],
    );
    wait_until(
        "4 workers saying their limit",
        Duration::from_secs(10),
        || server.stderr.count("this worker recycles after") >= 4,
    );
    let limits: Vec<u64> = server
        .stderr
        .text()
        .lines()
        .filter_map(|l| l.split("max_requests=").nth(1))
        .map(|v| v.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(limits.len(), 4, "{limits:?}");
    assert!(
        limits.iter().all(|n| (1000..=101_000).contains(n)),
        "{limits:?}"
    );
    // Four equal draws out of 100,001 would be a broken jitter.
    assert!(limits.iter().any(|n| *n != limits[0]), "{limits:?}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let server = sockhost_tests::serve_thread("echo", &["--log-format", "json"]);
    let line = server
        .stderr
        .wait_for("serving in thread mode", Duration::from_secs(10));
    assert!(line.starts_with('{') && line.ends_with('}'), "{line}");
    for part in [
        "\"level\":\"INFO\"",
        "\"target\":\"sockhost::thread_mode\"",
        "\"plugin\":\"echo\"",
        "\"timestamp\":\"20",
    ] {
        assert!(line.contains(part), "{part} missing in {line}");
    }
}

#[test]
fn log_filter_sets_levels_per_target_and_per_plugin_module() {
    // The host's own lines at warn, testkit's records at debug.
    let server =
        sockhost_tests::serve_thread("testkit", &["--log-filter", "warn,plugin::testkit=debug"]);
    let mut s = connect(server.addr());
    assert_eq!(ask(&mut s, "log\n"), "logged");
    server
        .stderr
        .wait_for("testkit debug line", Duration::from_secs(10));
    assert!(server.stderr.text().contains("testkit log line"));
    assert_eq!(
        server.stderr.count("serving in thread mode"),
        0,
        "host info lines are off"
    );

    // SOCKHOST_LOG does the same when the flag is absent; here: plugin records off.
    let testkit = plugin("testkit");
    let quiet = Server::start_with_env(
        &[
            "--plugin",
            testkit.to_str().unwrap(),
            "--bind",
            "127.0.0.1:0",
            "--concurrency",
            "thread",
        ],
        &[("SOCKHOST_LOG", "info,plugin=off")],
    );
    let mut s = connect(quiet.addr());
    assert_eq!(ask(&mut s, "log\n"), "logged");
    drop(s);
    // A line the host logs after the plugin's record would have been written.
    quiet.signal("TERM");
    quiet
        .stderr
        .wait_for("worker stopped", Duration::from_secs(10));
    assert!(quiet.stderr.text().contains("serving in thread mode"));
    for record in ["testkit factory ready", "testkit log line"] {
        assert_eq!(quiet.stderr.count(record), 0, "{}", quiet.stderr.text());
    }
}

#[test]
fn debug_level_logs_one_line_per_connection() {
    let server = sockhost_tests::serve_thread("echo", &["--log-level", "debug"]);
    for _ in 0..3 {
        let mut s = connect(server.addr());
        assert_eq!(sockhost_tests::round_trip(&mut s, b"hi"), b"hi");
        let peer = s.local_addr().unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        server.stderr.wait_for(
            &format!("connection closed peer={peer} reason=closed"),
            Duration::from_secs(10),
        );
    }
}

#[test]
fn a_bad_log_filter_is_a_usage_error() {
    let f = run_to_exit_with_env(
        &["--plugin", "x.so"],
        &[("SOCKHOST_LOG", "sockhost=loud")],
        Duration::from_secs(10),
    );
    assert_eq!(f.status.code(), Some(2), "{}", f.stderr);
    assert!(f.stderr.contains("TARGET=LEVEL"), "{}", f.stderr);
}

#[test]
fn completions_and_man_page_come_from_the_command_line_definition() {
    let bash = run_to_exit(&["completions", "bash"], Duration::from_secs(10));
    assert!(bash.status.success());
    assert!(bash.stdout.contains("_sockhost()") && bash.stdout.contains("--access-log"));
    let fish = run_to_exit(&["completions", "fish"], Duration::from_secs(10)).stdout;
    assert!(fish.contains("complete -c sockhost"), "{fish}");
    let man = run_to_exit(&["manpage"], Duration::from_secs(10));
    assert!(man.status.success());
    assert!(man.stdout.contains(".TH sockhost 1"), "{}", man.stdout);
    assert!(man.stdout.contains("access\\-log"), "{}", man.stdout);
    let bad = run_to_exit(&["completions", "tcsh"], Duration::from_secs(10));
    assert_eq!(bad.status.code(), Some(2));
}
