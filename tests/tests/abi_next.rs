//! The compatibility rule for future additions (docs/plugin-guide.md, "Compatibility"),
//! exercised by the `nextver` fixture, which plays a plugin built against the *next*
//! plugin-api: its services table has a field this host does not know.
//! - It needs only what this host offers: it loads and serves (the appended field is
//!   ignored).
//! - It needs a higher services level: it is refused with one `error:` line naming the level.

use std::io::Write;
use std::time::Duration;

use sockhost_tests::{connect, plugin, round_trip, run_to_exit_with_env, Server};

#[test]
fn a_plugin_with_an_appended_services_field_loads_and_serves() {
    let path = plugin("nextver");
    let server = Server::start(&[
        "--plugin",
        path.to_str().unwrap(),
        "--bind",
        "127.0.0.1:0",
        "--concurrency",
        "thread",
    ]);
    let mut c = connect(server.addr());
    assert_eq!(round_trip(&mut c, b"from the future"), b"from the future");
    c.flush().unwrap();
}

#[test]
fn a_plugin_needing_a_higher_services_level_is_refused_with_one_line() {
    let path = plugin("nextver");
    for concurrency in ["thread", "process"] {
        let done = run_to_exit_with_env(
            &[
                "--plugin",
                path.to_str().unwrap(),
                "--bind",
                "127.0.0.1:0",
                "--concurrency",
                concurrency,
            ],
            &[("NEXTVER_NEEDS", "2")],
            Duration::from_secs(10),
        );
        assert!(!done.status.success(), "{concurrency}: must not serve");
        let lines: Vec<&str> = done
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "{concurrency}: one line, got:\n{}",
            done.stderr
        );
        assert!(
            lines[0].starts_with("error: plugin ")
                && lines[0].contains("needs sockhost host services level 2")
                && lines[0].contains("offers level 1"),
            "{concurrency}: {}",
            lines[0]
        );
    }
}
