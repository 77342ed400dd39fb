//! Startup failures: one `error:` line on stderr, non-zero exit, within 2 s; usage errors
//! exit 2.

use std::time::Duration;

use sockhost_tests::{plugin, run_to_exit, Finished};

fn start_fails(args: &[&str]) -> Finished {
    let f = run_to_exit(args, Duration::from_secs(10));
    assert_eq!(
        f.status.code(),
        Some(1),
        "exit code 1 expected; stderr: {}",
        f.stderr
    );
    assert!(
        f.elapsed < Duration::from_secs(2),
        "took {:?} to fail",
        f.elapsed
    );
    let lines: Vec<&str> = f.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "exactly one stderr line expected, got:\n{}",
        f.stderr
    );
    assert!(lines[0].starts_with("error: "), "{}", lines[0]);
    assert!(
        !f.stdout.contains("listening on"),
        "announced listening before failing"
    );
    f
}

fn serve_args(plugin_path: &str) -> Vec<String> {
    [
        "--plugin",
        plugin_path,
        "--bind",
        "127.0.0.1:0",
        "--concurrency",
        "thread",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn fails_with(args: Vec<String>) -> String {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    start_fails(&args).stderr
}

#[test]
fn missing_plugin_file() {
    let err = fails_with(serve_args("/nonexistent/libnothing.so"));
    assert!(
        err.contains("/nonexistent/libnothing.so") && err.contains("no such file"),
        "{err}"
    );
}

#[test]
fn garbage_file() {
    let path = std::env::temp_dir().join(format!("sockhost-garbage-{}.so", std::process::id()));
    std::fs::write(&path, b"this is not an ELF file at all").unwrap();
    let err = fails_with(serve_args(path.to_str().unwrap()));
    assert!(err.contains("not a loadable shared library"), "{err}");
    let _ = std::fs::remove_file(path);
}

/// A real shared library that is not a plugin: the C library this test links against.
fn system_library() -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.contains("/libc.so") || p.contains("/libc-"))
        .expect("libc mapped")
        .to_string()
}

#[test]
fn unrelated_system_library() {
    let lib = system_library();
    let err = fails_with(serve_args(&lib));
    assert!(
        err.contains("not a sockhost plugin") && err.contains(&lib),
        "{err}"
    );
}

#[test]
fn incompatible_plugin_is_refused_with_both_versions() {
    let p = plugin("incompatible");
    let err = fails_with(serve_args(p.to_str().unwrap()));
    assert!(
        err.contains("libincompatible.so"),
        "names the plugin: {err}"
    );
    // The fixture claims 0.1.0: the same root module ABI as this host's, so the layout
    // check is what refuses it, and the message says both.
    assert!(
        err.contains(
            "built against sockhost-plugin-api 0.1.0 (root module ABI 0.1), this sockhost has 0.1."
        ) && err.contains("(root module ABI 0.1): their type layouts differ"),
        "{err}"
    );
    assert!(err.contains("layouts differ"), "says what differs: {err}");
}

#[test]
fn incompatible_plugin_layout_report_at_debug_level() {
    let p = plugin("incompatible");
    let f = run_to_exit(
        &["inspect", p.to_str().unwrap(), "--log-level", "debug"],
        Duration::from_secs(10),
    );
    assert_eq!(f.status.code(), Some(1));
    assert!(
        f.stderr.contains("Layout of expected type"),
        "full report at debug: {}",
        f.stderr
    );
}

#[test]
fn address_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let echo = plugin("echo");
    let bind = format!("127.0.0.1:{port}");
    let f = start_fails(&[
        "--plugin",
        echo.to_str().unwrap(),
        "--bind",
        &bind,
        "--concurrency",
        "thread",
    ]);
    assert!(
        f.stderr.contains(&bind) && f.stderr.to_lowercase().contains("in use"),
        "{}",
        f.stderr
    );
}

#[test]
fn unknown_plugin_option() {
    let kit = plugin("testkit");
    let mut args = serve_args(kit.to_str().unwrap());
    args.extend(["--plugin-opt".into(), "colour=blue".into()]);
    let err = fails_with(args);
    assert!(
        err.contains("plugin testkit: unknown option \"colour\"") && err.contains("greeting"),
        "{err}"
    );
}

#[test]
fn plugin_rejects_a_bad_value() {
    let kit = plugin("testkit");
    let mut args = serve_args(kit.to_str().unwrap());
    args.extend(["--plugin-opt".into(), "limit=many".into()]);
    let err = fails_with(args);
    assert!(
        err.contains("plugin testkit: option limit: invalid value \"many\""),
        "{err}"
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        vec!["--bind", ":1"],
        vec!["--plugin", "x.so", "--bind", "nonsense"],
        vec!["--plugin", "x.so", "--frobnicate"],
    ] {
        let f = run_to_exit(&args, Duration::from_secs(10));
        assert_eq!(f.status.code(), Some(2), "{args:?}: {}", f.stderr);
        assert!(f.stderr.starts_with("error:"), "{}", f.stderr);
    }
}

#[test]
fn a_negative_number_names_its_flag() {
    for flag in [
        "--keep-alive",
        "--timeout",
        "--graceful-timeout",
        "--handshake-timeout",
        "--max-requests",
        "--workers",
        "--backlog",
        "--max-connections",
        "--max-sessions",
    ] {
        let f = run_to_exit(&["--plugin", "x.so", flag, "-1"], Duration::from_secs(10));
        assert_eq!(f.status.code(), Some(2), "{flag} -1: {}", f.stderr);
        let first = f.stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error: invalid value '-1' for '")
                && first.contains(&format!("'{flag} <")),
            "{flag} -1: {first}"
        );
    }
}

#[test]
fn metrics_bind_errors_name_metrics_bind() {
    let named_right = |err: &str| {
        err.contains("--metrics-bind") && !err.replace("--metrics-bind", "").contains("--bind")
    };
    // An address that does not resolve: a usage error.
    let f = run_to_exit(
        &[
            "--plugin",
            "x.so",
            "--metrics-bind",
            "no-such-host.invalid:9100",
        ],
        Duration::from_secs(10),
    );
    assert_eq!(f.status.code(), Some(2), "{}", f.stderr);
    let first = f.stderr.lines().next().unwrap_or_default();
    assert!(
        named_right(first) && first.contains("cannot resolve"),
        "{first}"
    );

    // An address in use, in both modes: one `error:` line.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let echo = plugin("echo");
    for mode in ["thread", "process"] {
        let f = start_fails(&[
            "--plugin",
            echo.to_str().unwrap(),
            "--bind",
            "127.0.0.1:0",
            "--concurrency",
            mode,
            "--metrics-bind",
            &addr,
        ]);
        assert!(
            named_right(&f.stderr) && f.stderr.contains(&addr),
            "{mode}: {}",
            f.stderr
        );
    }
}

#[test]
fn proxy_protocol_from_needs_proxy_protocol_and_real_blocks() {
    for (args, needle) in [
        (
            vec!["--proxy-protocol-from", "10.0.0.0/8"],
            "--proxy-protocol",
        ),
        (
            vec![
                "--proxy-protocol",
                "--proxy-protocol-from",
                "10.0.0.0/8,nonsense",
            ],
            "'nonsense' for '--proxy-protocol-from",
        ),
        (
            vec!["--proxy-protocol", "--proxy-protocol-from", "10.1.0.0/8"],
            "did you mean 10.0.0.0/8?",
        ),
    ] {
        let mut all = vec!["--plugin", "x.so"];
        all.extend(&args);
        let f = run_to_exit(&all, Duration::from_secs(10));
        assert_eq!(f.status.code(), Some(2), "{args:?}: {}", f.stderr);
        assert!(
            f.stderr.starts_with("error:") && f.stderr.contains(needle),
            "{args:?}: {}",
            f.stderr
        );
    }
}

#[test]
fn inspect_prints_metadata_and_abi_check() {
    let kit = plugin("testkit");
    let f = run_to_exit(&["inspect", kit.to_str().unwrap()], Duration::from_secs(10));
    assert!(f.status.success(), "{}", f.stderr);
    for needle in [
        "name:        testkit",
        "transports:  tcp, udp",
        "greeting",
        "limit",
        "(default: 10)",
        "abi:         compatible",
    ] {
        assert!(
            f.stdout.contains(needle),
            "inspect output lacks {needle:?}:\n{}",
            f.stdout
        );
    }
}

#[test]
fn process_mode_startup_failures_print_one_line_too() {
    let kit = plugin("testkit");
    let f = start_fails(&[
        "--plugin",
        kit.to_str().unwrap(),
        "--bind",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--plugin-opt",
        "limit=many",
    ]);
    assert!(
        f.stderr
            .contains("plugin testkit: option limit: invalid value \"many\""),
        "{}",
        f.stderr
    );
}
