//! The plugin template in `examples/plugin-template/` is what a third party starts from: it
//! must build stand-alone with a plain `cargo build --release`, pass its own harness tests,
//! and serve with the real sockhost.
//!
//! The template is its own workspace; it is built into `<workspace target>/template` so that
//! this build never waits on the lock of the build running these tests. The first run
//! compiles abi_stable once more (about a minute on two cores); later runs are incremental.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sockhost_tests::{ask, closed_within, connect, profile_dir, Server};

/// How long one cargo command on the template may take before the test gives up.
const CARGO_TIMEOUT: Duration = Duration::from_secs(900);

fn template_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace root")
        .join("examples/plugin-template")
}

/// `<workspace target>/template`: the target directory is the parent of the profile
/// directory the tests run from.
fn template_target_dir() -> PathBuf {
    profile_dir()
        .parent()
        .expect("target/<profile>")
        .join("template")
}

/// Run `cargo <args> --manifest-path <template> --target-dir <template target>` to
/// completion (bounded), failing with its output if it fails.
fn cargo(args: &[&str]) -> String {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = template_dir().join("Cargo.toml");
    let target = template_target_dir();
    let mut child = Command::new(&cargo)
        .args(args)
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cargo:?}: {e}"));
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + CARGO_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cargo {args:?} on the template did not finish within {CARGO_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    assert!(
        status.success(),
        "cargo {args:?} on the template failed ({status}):\n{stderr}\n{stdout}"
    );
    stdout + &stderr
}

#[test]
fn template_builds_stand_alone_passes_its_tests_and_serves() {
    cargo(&["build", "--release"]);
    let lib = template_target_dir().join("release/libgreeter.so");
    assert!(lib.exists(), "{} was not built", lib.display());

    let server = Server::start(&[
        "--plugin",
        lib.to_str().unwrap(),
        "--bind",
        "127.0.0.1:0",
        "--concurrency",
        "thread",
        "--plugin-opt",
        "greeting=hi",
    ]);
    let mut s = connect(server.addr());
    assert_eq!(ask(&mut s, "world\n"), "hi, world!");
    assert_eq!(ask(&mut s, "bye\n"), "goodbye");
    assert!(closed_within(&mut s, Duration::from_secs(5)));
    drop(server);

    // The README's `cargo test`, with the harness.
    let report = cargo(&["test", "--release"]);
    assert!(
        report.contains("test tests::greets_each_line ... ok"),
        "the template's harness tests did not run:\n{report}"
    );
}
