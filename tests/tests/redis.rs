//! libredis.so served by the real binary and driven by Redis clients nobody here wrote:
//! redis-py (`tests/python/redis_clients.py`, one section per test), `redis-cli` and
//! `redis-benchmark` (Debian's `redis-tools`); and raw RESP where no client would send it.
//! `.ci/run` installs the clients.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sockhost_tests::{closed_within, connect, Server};

fn redis(extra: &[&str]) -> Server {
    let server = sockhost_tests::serve_thread("redis", extra);
    server
        .stderr
        .wait_for("store ready", Duration::from_secs(5));
    server
}

/// Run `cmd` to completion within `timeout` (killed and failed past it).
fn run_bounded(mut cmd: Command, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e} (.ci/run installs the Redis clients)"));
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not finish within {timeout:?}; stdout so far:\n{}",
                String::from_utf8_lossy(&out.join().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Run one section of the redis-py script against `server`; fails with its output.
fn redis_py(server: &Server, section: &str) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/redis_clients.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .arg(server.addr().port().to_string())
        .arg(section);
    let out = run_bounded(cmd, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "redis-py section {section} failed ({}):\n{}\n{}\nserver stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.stderr.text()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{section}: ok")
    );
}

#[test]
fn redis_py_runs_every_command() {
    redis_py(&redis(&[]), "commands");
}

#[test]
fn redis_py_pipelines_and_transactions() {
    redis_py(&redis(&[]), "pipelines");
}

#[test]
fn redis_py_pubsub_between_two_clients() {
    redis_py(&redis(&[]), "pubsub");
}

#[test]
fn keys_expire_without_being_touched() {
    redis_py(&redis(&[]), "expiry");
}

#[test]
fn maxmemory_noeviction_refuses_writes() {
    redis_py(&redis(&["--plugin-opt", "maxmemory=500kb"]), "noeviction");
}

#[test]
fn maxmemory_allkeys_lru_evicts() {
    redis_py(
        &redis(&[
            "--plugin-opt",
            "maxmemory=500kb",
            "--plugin-opt",
            "maxmemory-policy=allkeys-lru",
        ]),
        "lru",
    );
}

#[test]
fn malformed_requests_get_redis_errors_and_close() {
    redis_py(&redis(&[]), "malformed");
}

#[test]
fn resp3_handshake_is_refused_as_by_a_resp2_server() {
    redis_py(&redis(&[]), "resp3");
}

/// `redis-cli -p PORT args...`: stdout, with stderr required empty (no warnings).
fn redis_cli(server: &Server, args: &[&str]) -> String {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &server.addr().port().to_string()])
        .args(args);
    let out = run_bounded(cmd, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.is_empty(),
        "redis-cli {args:?}: {}, stderr: {stderr}",
        out.status
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn redis_cli_runs_without_errors_or_warnings() {
    let server = redis(&[]);
    assert_eq!(redis_cli(&server, &["PING"]), "PONG\n");
    assert_eq!(
        redis_cli(&server, &["SET", "greeting", "hello world"]),
        "OK\n"
    );
    assert_eq!(redis_cli(&server, &["GET", "greeting"]), "hello world\n");
    for i in 0..30 {
        redis_cli(&server, &["SET", &format!("key:{i}"), "v"]);
    }
    let info = redis_cli(&server, &["INFO"]);
    for field in [
        "redis_version:",
        "connected_clients:",
        "used_memory:",
        "db0:keys=31",
    ] {
        assert!(info.contains(field), "INFO lacks {field}:\n{info}");
    }
    let mut scanned: Vec<String> = redis_cli(&server, &["--scan", "--pattern", "key:*"])
        .lines()
        .map(str::to_string)
        .collect();
    scanned.sort();
    let mut want: Vec<String> = (0..30).map(|i| format!("key:{i}")).collect();
    want.sort();
    assert_eq!(scanned, want);
    // `help` builds redis-cli's help table from COMMAND DOCS, as its interactive start does
    // (the output is coloured: drop the escape sequences).
    let mut help = String::new();
    let mut in_escape = false;
    for c in redis_cli(&server, &["help", "set"]).chars() {
        match c {
            '\x1b' => in_escape = true,
            'm' if in_escape => in_escape = false,
            _ if in_escape => {}
            c => help.push(c),
        }
    }
    assert!(
        help.contains("SET key value [NX|XX] [GET] [EX seconds|PX milliseconds|EXAT unix-time-seconds|PXAT unix-time-milliseconds|KEEPTTL]"),
        "{help}"
    );
    assert!(help.contains("group: string"), "{help}");
    let errors = redis_cli(&server, &["NOSUCH"]);
    assert_eq!(
        errors.trim_end(),
        "ERR unknown command 'NOSUCH', with args beginning with:"
    );
}

#[test]
fn redis_benchmark_completes_every_default_test_without_errors() {
    let server = redis(&[]);
    let tests = "ping,set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,lrange_100";
    let mut cmd = Command::new("redis-benchmark");
    cmd.args(["-h", "127.0.0.1", "-p", &server.addr().port().to_string()])
        .args(["-t", tests, "-q", "-n", "2000"]);
    let out = run_bounded(cmd, Duration::from_secs(180));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // redis-benchmark (7.x) exits non-zero at the first error reply ("Error from server").
    assert!(
        out.status.success(),
        "redis-benchmark: {}\n{stdout}\n{stderr}",
        out.status
    );
    // `-q` prints one line per test (after `\r`-separated progress lines).
    let finals: Vec<&str> = stdout
        .split(['\r', '\n'])
        .filter(|l| l.contains("requests per second"))
        .collect();
    for name in [
        "PING_INLINE",
        "PING_MBULK",
        "SET",
        "GET",
        "INCR",
        "LPUSH",
        "RPUSH",
        "LPOP",
        "RPOP",
        "SADD",
        "HSET",
        "SPOP",
        "ZADD",
        "LRANGE_100",
    ] {
        assert!(
            finals
                .iter()
                .any(|l| l.trim_start().starts_with(&format!("{name}:"))
                    || l.trim_start().starts_with(&format!("{name} "))),
            "no result for {name}:\n{stdout}"
        );
    }
    for text in [&stdout, &stderr] {
        assert!(
            !text.contains("Error") && !text.contains("ERR") && !text.contains("WARNING"),
            "redis-benchmark reported errors:\n{stdout}\n{stderr}"
        );
    }
}

/// Encode a command as RESP.
fn frame(args: &[&[u8]]) -> Vec<u8> {
    let mut f = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        f.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        f.extend_from_slice(a);
        f.extend_from_slice(b"\r\n");
    }
    f
}

#[test]
fn large_values_cross_many_reads_and_max_bulk_is_enforced() {
    let server = redis(&["--plugin-opt", "max-bulk=4mb"]);
    let mut s = connect(server.addr());
    let value = sockhost_tests::payload(3 << 20, 15);
    let request = frame(&[b"SET", b"big", &value]);
    // Dribble the first part, then the rest in one go.
    for chunk in request[..4096].chunks(7) {
        s.write_all(chunk).unwrap();
    }
    s.write_all(&request[4096..]).unwrap();
    let mut ok = [0u8; 5];
    s.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"+OK\r\n");
    s.write_all(&frame(&[b"GET", b"big"])).unwrap();
    let header = format!("${}\r\n", value.len());
    let mut back = vec![0; header.len() + value.len() + 2];
    s.read_exact(&mut back).unwrap();
    assert_eq!(&back[..header.len()], header.as_bytes());
    assert!(back[header.len()..header.len() + value.len()] == value[..]);
    // Past max-bulk: refused as soon as the length is read, and the connection closes.
    s.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5000000\r\n")
        .unwrap();
    let want = b"-ERR Protocol error: invalid bulk length\r\n";
    let mut got = vec![0; want.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, want);
    assert!(closed_within(&mut s, Duration::from_secs(5)));
}
