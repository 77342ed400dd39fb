//! `--pid-file`: a symlink is refused (not followed), a second instance with the same file is
//! refused with one `error:` line, a stale file (nobody holds its lock) is replaced.

use std::path::PathBuf;
use std::time::Duration;

use sockhost_tests::{plugin, run_to_exit, serve, wait_until, Finished, Server};

/// A fresh directory for one test.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sockhost-pidfile-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn echo_args<'a>(echo: &'a str, pid_file: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--plugin",
        echo,
        "--bind",
        "127.0.0.1:0",
        "--pid-file",
        pid_file,
    ];
    args.extend(extra);
    args
}

/// Exactly one line on stderr, an `error:` line, and exit status 1.
fn one_error_line(f: &Finished) -> String {
    assert_eq!(f.status.code(), Some(1), "{}", f.stderr);
    let lines: Vec<&str> = f.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line only: {}", f.stderr);
    assert!(lines[0].starts_with("error: --pid-file "), "{}", lines[0]);
    assert!(f.elapsed < Duration::from_secs(2), "took {:?}", f.elapsed);
    lines[0].to_string()
}

#[test]
fn a_symlink_at_the_pid_file_path_is_refused_not_followed() {
    let dir = temp_dir("symlink");
    let target = dir.join("important");
    std::fs::write(&target, "do not overwrite\n").unwrap();
    let link = dir.join("sockhost.pid");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let echo = plugin("echo");
    for mode in ["process", "thread"] {
        let f = run_to_exit(
            &echo_args(
                echo.to_str().unwrap(),
                link.to_str().unwrap(),
                &["--concurrency", mode],
            ),
            Duration::from_secs(10),
        );
        let line = one_error_line(&f);
        assert!(line.contains("symbolic link"), "{mode}: {line}");
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "do not overwrite\n",
            "{mode}: the link's target is untouched"
        );
    }
    // A dangling link is not created through either.
    std::fs::remove_file(&target).unwrap();
    let f = run_to_exit(
        &echo_args(echo.to_str().unwrap(), link.to_str().unwrap(), &[]),
        Duration::from_secs(10),
    );
    one_error_line(&f);
    assert!(!target.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_second_instance_with_the_same_pid_file_is_refused() {
    let dir = temp_dir("second");
    let pid_file = dir.join("sockhost.pid");
    let echo = plugin("echo");
    let first = serve(
        "echo",
        &[
            "--bind",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--pid-file",
            pid_file.to_str().unwrap(),
        ],
    );
    let first_pid = first.pid().to_string();
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        first_pid
    );
    for mode in ["process", "thread"] {
        let f = run_to_exit(
            &echo_args(
                echo.to_str().unwrap(),
                pid_file.to_str().unwrap(),
                &["--concurrency", mode],
            ),
            Duration::from_secs(10),
        );
        let line = one_error_line(&f);
        assert!(
            line.contains("in use by another running sockhost")
                && line.contains(&format!("pid {first_pid}")),
            "{mode}: {line}"
        );
        assert_eq!(
            std::fs::read_to_string(&pid_file).unwrap().trim(),
            first_pid,
            "{mode}: the first instance's pid file is left alone"
        );
    }
    let mut first = first;
    assert!(first.is_running());
    first.signal("TERM");
    assert!(first.wait_exit(Duration::from_secs(10)).success());
    assert!(!pid_file.exists(), "removed by its owner at exit");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_stale_pid_file_is_replaced() {
    let dir = temp_dir("stale");
    let pid_file = dir.join("sockhost.pid");
    let arg = pid_file.to_str().unwrap();
    // Left behind with a pid nobody holds the lock for.
    std::fs::write(&pid_file, "999999\n").unwrap();
    let mut server = serve(
        "echo",
        &["--bind", "127.0.0.1:0", "--workers", "1", "--pid-file", arg],
    );
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        server.pid().to_string()
    );
    // Left behind by a killed instance: its lock went with it.
    server.signal("KILL");
    server.wait_exit(Duration::from_secs(5));
    assert!(
        pid_file.exists(),
        "a killed instance cannot remove its file"
    );
    let next = Server::start(&[
        "--plugin",
        plugin("echo").to_str().unwrap(),
        "--bind",
        "127.0.0.1:0",
        "--concurrency",
        "thread",
        "--pid-file",
        arg,
    ]);
    // Thread mode writes it just after its `listening on` line.
    let want = next.pid().to_string();
    wait_until(
        "the new instance's pid in the file",
        Duration::from_secs(5),
        || std::fs::read_to_string(&pid_file).is_ok_and(|s| s.trim() == want),
    );
    drop(next);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_thread_mode_reload_hands_the_locked_pid_file_to_the_new_process() {
    let dir = temp_dir("handoff");
    let pid_file = dir.join("sockhost.pid");
    let arg = pid_file.to_str().unwrap();
    let echo = plugin("echo");
    let mut old = Server::start(&echo_args(
        echo.to_str().unwrap(),
        arg,
        &["--concurrency", "thread"],
    ));
    let old_pid = old.pid().to_string();
    wait_until("the pid file", Duration::from_secs(5), || {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| s.trim() == old_pid)
    });
    old.signal("HUP");
    old.stderr
        .wait_for("reload finished", Duration::from_secs(10));
    assert!(old.wait_exit(Duration::from_secs(10)).success());
    let successor = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_string();
    assert_ne!(successor, old_pid, "the new process wrote its pid");
    // The lock went with the file: with the old process gone, the file is still held.
    let f = run_to_exit(
        &echo_args(echo.to_str().unwrap(), arg, &[]),
        Duration::from_secs(10),
    );
    let line = one_error_line(&f);
    assert!(line.contains(&format!("pid {successor}")), "{line}");

    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &successor])
        .status()
        .unwrap();
    assert!(stopped.success());
    let successor: u32 = successor.parse().unwrap();
    wait_until("the new process to stop", Duration::from_secs(10), || {
        !sockhost_tests::alive(successor)
    });
    assert!(!pid_file.exists(), "the new process removes it at exit");
    std::fs::remove_dir_all(&dir).unwrap();
}
