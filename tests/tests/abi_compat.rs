//! Plugins built against plugin-api 0.1.0 keep loading in the current sockhost, and plugins
//! built now keep loading in a 0.1.0 host (issue #12). abi_stable refuses a plugin whose
//! root module differs from the host's by as little as one field, so this is tested, not
//! assumed.
//!
//! `tests/frozen/` is its own workspace (see its README): plugin-api and the echo, hello, kv
//! and template plugins as released at 0.1.0 (commit 9ad498b, with its Cargo.lock), and
//! `old-host-loader`, which loads a plugin the way sockhost 0.1.0 did. These tests build it
//! once per test process, serve each frozen plugin with the current binary in both modes,
//! `inspect` each, and run the old loader on frozen and current plugins.
//!
//! The frozen workspace is built into `<target>/template`, where tests/tests/template.rs
//! builds the stand-alone template: both are small plugin workspaces with the same
//! dependency versions, features and (default) release profile, so whichever test builds
//! first compiles abi_stable and its dependencies and the other reuses them. The main target
//! directory shares less: the main workspace enables more features of libc, log and syn, so
//! abi_stable would be compiled again there. Measured on two cores shared with other builds
//! (`cargo build --release --manifest-path tests/frozen/Cargo.toml --target-dir …`): cold,
//! 20–60 s (30–35 s of CPU) for whichever of the two builds first, then 3 s of CPU for the
//! other; warm, 0.1 s. Built into the main target directory after a full main build it took
//! 20 s of CPU, and the template still compiled its own copy of abi_stable. (Should the
//! template's Cargo.lock move on, the two stop sharing; both still build.) The frozen
//! libraries are named `lib*_v0_1_0.so`, so they are never taken for the current ones.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Duration;

use sockhost_tests::{
    ask, closed_within, connect, payload, plugin, profile_dir, round_trip, run_to_exit, Server,
};

/// How long building the frozen workspace may take (cold it compiles abi_stable and its
/// dependencies; CI machines have two cores).
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);

/// How long one `old-host-loader` run may take.
const LOADER_TIMEOUT: Duration = Duration::from_secs(30);

/// The plugins frozen at plugin-api 0.1.0, by the name they declare. Their files are
/// `lib<name>_v0_1_0.so`.
const FROZEN_PLUGINS: [&str; 4] = ["echo", "hello", "kv", "greeter"];

/// The two ways sockhost serves: one process that loads the plugin from its path, or an
/// arbiter whose worker loads the arbiter's in-memory snapshot of the file.
const MODES: [&[&str]; 2] = [
    &["--concurrency", "thread"],
    &["--concurrency", "process", "--workers", "1"],
];

/// Run `command` to completion with its output captured; past `timeout` its whole process
/// group (cargo and its compilers) is killed and the test fails.
fn run_bounded(command: &mut Command, timeout: Duration) -> Output {
    use std::os::unix::process::CommandExt;
    let what = format!("{command:?}");
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let group = child.id();
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match finished.recv_timeout(timeout) {
        Ok(output) => output.unwrap_or_else(|e| panic!("wait for {what}: {e}")),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{group}")])
                .status();
            panic!("{what} did not finish within {timeout:?}");
        }
    }
}

/// The profile directory of the frozen workspace's build (`<target>/template/release`),
/// built once per test process; every test fails with cargo's output if the build fails.
fn frozen_profile_dir() -> &'static Path {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("frozen");
        let target = profile_dir()
            .parent()
            .expect("target/<profile>")
            .join("template");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = run_bounded(
            Command::new(cargo)
                .args(["build", "--release", "--manifest-path"])
                .arg(workspace.join("Cargo.toml"))
                .arg("--target-dir")
                .arg(&target),
            BUILD_TIMEOUT,
        );
        if out.status.success() {
            Ok(target.join("release"))
        } else {
            Err(format!(
                "building {} failed ({}):\n{}",
                workspace.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    match built {
        Ok(dir) => dir,
        Err(e) => panic!("{e}"),
    }
}

/// A frozen plugin's library, by the name it declares (`echo`, `greeter`, ...).
fn frozen_plugin(name: &str) -> PathBuf {
    let lib = frozen_profile_dir().join(format!("lib{name}_v0_1_0.so"));
    assert!(lib.exists(), "{} was not built", lib.display());
    lib
}

/// Serve a frozen plugin on `127.0.0.1:0` in `mode`, plus `extra`.
fn serve_frozen(name: &str, mode: &[&str], extra: &[&str]) -> Server {
    let lib = frozen_plugin(name);
    let mut args = vec!["--plugin", lib.to_str().expect("utf-8 path")];
    args.extend(["--bind", "127.0.0.1:0"]);
    args.extend(mode);
    args.extend(extra);
    Server::start(&args)
}

/// Run the 0.1.0 loader on `lib`: (exit code, stdout, stderr).
fn old_host_load(lib: &Path) -> (Option<i32>, String, String) {
    let loader = frozen_profile_dir().join("old-host-loader");
    let out = run_bounded(Command::new(loader).arg(lib), LOADER_TIMEOUT);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn frozen_echo_echoes_in_both_modes() {
    for mode in MODES {
        let server = serve_frozen("echo", mode, &[]);
        let mut s = connect(server.addr());
        // Small enough to sit in the socket buffers: written whole before anything is read.
        let data = payload(16 * 1024, 12);
        assert!(
            round_trip(&mut s, &data) == data,
            "{mode:?}: the frozen echo sent back different bytes"
        );
        s.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(
            closed_within(&mut s, Duration::from_secs(10)),
            "{mode:?}: the frozen echo did not close after the client's end of stream"
        );
    }
}

#[test]
fn frozen_hello_answers_an_http_get_in_both_modes() {
    for mode in MODES {
        let server = serve_frozen("hello", mode, &[]);
        let mut s = connect(server.addr());
        std::io::Write::write_all(
            &mut s,
            b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let mut response = String::new();
        std::io::Read::read_to_string(&mut s, &mut response)
            .unwrap_or_else(|e| panic!("{mode:?}: reading the response to the end: {e}"));
        assert!(
            response.starts_with("HTTP/1.1 200 OK\r\n")
                && response.ends_with("\r\n\r\nHello, world!\n"),
            "{mode:?}: unexpected response from the frozen hello:\n{response}"
        );
    }
}

/// A line protocol's round of checks on a frozen plugin, in both modes: served with
/// `options`, it logs a line containing each of `logged` (so options and plugin logging
/// cross the 0.1.0 boundary), answers each `(line, reply)` of `dialogue` in turn on one
/// connection, and closes after the last.
fn converses_in_both_modes(
    name: &str,
    options: &[&str],
    logged: &[&str],
    dialogue: &[(&str, &str)],
) {
    for mode in MODES {
        let server = serve_frozen(name, mode, options);
        let line = server.stderr.wait_for(logged[0], Duration::from_secs(10));
        assert!(
            logged.iter().all(|part| line.contains(part)),
            "{mode:?}: the frozen {name} logged {line:?}, want all of {logged:?}"
        );
        let mut s = connect(server.addr());
        for (said, reply) in dialogue {
            assert_eq!(
                ask(&mut s, said),
                *reply,
                "{mode:?}: {name} answering {said:?}"
            );
        }
        assert!(
            closed_within(&mut s, Duration::from_secs(10)),
            "{mode:?}: the frozen {name} did not close after its last reply"
        );
    }
}

#[test]
fn frozen_kv_sets_and_gets_in_both_modes() {
    converses_in_both_modes(
        "kv",
        &["--plugin-opt", "max-line=64"],
        &["store ready", "plugin=kv", "max-line 64"],
        &[
            ("SET colour deep blue\n", "OK"),
            ("GET colour\n", "VALUE deep blue"),
            ("GET missing\n", "NOT_FOUND"),
            ("QUIT\n", "BYE"),
        ],
    );
}

#[test]
fn frozen_template_greets_in_both_modes() {
    converses_in_both_modes(
        "greeter",
        &["--plugin-opt", "greeting=hi"],
        &["greeting with \"hi\"", "plugin=greeter"],
        &[("world\n", "hi, world!"), ("bye\n", "goodbye")],
    );
}

#[test]
fn inspect_finds_every_frozen_plugin_compatible() {
    for name in FROZEN_PLUGINS {
        let lib = frozen_plugin(name);
        let f = run_to_exit(&["inspect", lib.to_str().unwrap()], Duration::from_secs(10));
        assert!(
            f.status.success(),
            "inspect {name}: {}\n{}",
            f.status,
            f.stderr
        );
        for needle in [
            format!("name:        {name}\n"),
            "version:     0.1.0\n".to_string(),
            "abi:         compatible (plugin built against sockhost-plugin-api 0.1.0,".to_string(),
        ] {
            assert!(
                f.stdout.contains(&needle),
                "inspect {name} lacks {needle:?}:\n{}",
                f.stdout
            );
        }
    }
}

#[test]
fn old_host_loads_the_frozen_echo() {
    let (code, stdout, stderr) = old_host_load(&frozen_plugin("echo"));
    assert_eq!(
        (code, stdout.as_str()),
        (Some(0), "ok echo 0.1.0\n"),
        "stderr: {stderr}"
    );
}

#[test]
fn old_host_loads_the_current_echo() {
    let (code, stdout, stderr) = old_host_load(&plugin("echo"));
    assert!(
        code == Some(0) && stdout.starts_with("ok echo ") && stdout.lines().count() == 1,
        "a 0.1.0 host must load the current echo (it uses no host services); \
         exit {code:?}\nstdout: {stdout}\nstderr: {stderr}"
    );
}

#[test]
fn old_host_refuses_an_incompatible_plugin_with_one_error_line() {
    let lib = plugin("incompatible");
    let (code, stdout, stderr) = old_host_load(&lib);
    assert_eq!(code, Some(1), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(stdout, "", "nothing on stdout for a refused plugin");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines.len() == 1
            && lines[0].starts_with(&format!("error: plugin {}: ", lib.display()))
            && lines[0].contains("incompatible with this sockhost's plugin-api"),
        "want one `error: plugin <path>: ... incompatible with ...` line, got:\n{stderr}"
    );
}

/// A plugin that needs host services, on a 0.1.0 host (which never offers them): refused
/// before any of its code serves, with one `error:` line. (0.1.0's message for a root module
/// that refuses to initialise puts the reason on the line after it — abi_stable's formatting,
/// which a plugin cannot change; the reason names the services level it needs.)
#[test]
fn old_host_refuses_a_plugin_that_needs_services() {
    for name in ["servicekit", "chat", "statsd"] {
        let lib = plugin(name);
        let (code, stdout, stderr) = old_host_load(&lib);
        assert_eq!(code, Some(1), "{name}: stdout: {stdout}\nstderr: {stderr}");
        assert_eq!(stdout, "", "{name}: nothing on stdout for a refused plugin");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{name}: one error line, got:\n{stderr}");
        assert!(
            errors[0].starts_with(&format!(
                "error: plugin {}: failed to initialise",
                lib.display()
            )),
            "{name}: {stderr}"
        );
        assert!(
            stderr.contains("it needs sockhost host services level 1")
                && stderr.contains("this sockhost offers none"),
            "{name}: the reason names the level: {stderr}"
        );
        assert_eq!(
            stderr.lines().filter(|l| !l.trim().is_empty()).count(),
            2,
            "{name}: the error line and its reason, nothing else:\n{stderr}"
        );
    }
}
