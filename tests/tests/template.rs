//! The plugin template in `examples/plugin-template/` is what a third party starts from. As
//! its README says, it is copied out of the tree — here into a temporary directory, under a
//! name of our own — renamed, pointed at this checkout's sockhost-plugin-api with one
//! `.cargo/config.toml`, and then it must build, pass its harness tests and its black-box
//! test (the real sockhost, here this build's binary through `SOCKHOST_BIN` instead of
//! `cargo install`), and its library must load.
//!
//! Build time: the copy is built into `<workspace target>/template`, shared with other
//! plugin workspaces built by the tests, so abi_stable and its dependencies are compiled
//! once (about a minute on two cores), and later runs only compile the small plugin crate.
//! Cargo runs in the copy's directory, where it finds the copy's `.cargo/config.toml`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sockhost_tests::{profile_dir, run_to_exit, sockhost_bin};

/// How long one cargo command on the copy may take before the test gives up.
const CARGO_TIMEOUT: Duration = Duration::from_secs(900);

fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace root")
        .to_path_buf()
}

/// `<workspace target>/template`: the target directory is the parent of the profile
/// directory the tests run from.
fn template_target_dir() -> PathBuf {
    profile_dir()
        .parent()
        .expect("target/<profile>")
        .join("template")
}

/// The template copied to `<tmp>/<dir>`: its sources and lock file (not its target or
/// `.cargo`), the package renamed `package`, and a `.cargo/config.toml` that points at this
/// checkout's sockhost-plugin-api — the README's step 2, done by a program.
fn copy_template(dir: &Path, package: &str) {
    let template = workspace_dir().join("examples/plugin-template");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::create_dir_all(dir.join("tests")).unwrap();
    std::fs::create_dir_all(dir.join(".cargo")).unwrap();
    for file in ["Cargo.lock", "README.md", "src/lib.rs", "tests/serve.rs"] {
        std::fs::copy(template.join(file), dir.join(file))
            .unwrap_or_else(|e| panic!("copying {file}: {e}"));
    }
    let manifest = std::fs::read_to_string(template.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("name = \"greeter\""), "{manifest}");
    std::fs::write(
        dir.join("Cargo.toml"),
        manifest.replacen("name = \"greeter\"", &format!("name = \"{package}\""), 1),
    )
    .unwrap();
    let api = workspace_dir().join("plugin-api");
    std::fs::write(
        dir.join(".cargo/config.toml"),
        format!(
            "[patch.crates-io]\nsockhost-plugin-api = {{ path = {:?} }}\n",
            api.display().to_string()
        ),
    )
    .unwrap();
}

/// Run `cargo <args>` in `dir` (bounded), failing with its output if it fails.
fn cargo(dir: &Path, args: &[&str]) -> String {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut child = Command::new(&cargo)
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", template_target_dir())
        .env("SOCKHOST_BIN", sockhost_bin())
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
            panic!(
                "cargo {args:?} in {} did not finish within {CARGO_TIMEOUT:?}",
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    assert!(
        status.success(),
        "cargo {args:?} in {} failed ({status}):\n{stderr}\n{stdout}",
        dir.display()
    );
    stdout + &stderr
}

#[test]
fn template_copied_out_of_tree_builds_passes_its_tests_and_serves() {
    let root = std::env::temp_dir().join(format!("sockhost-outoftree-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let dir = root.join("zebra proto.d");
    copy_template(&dir, "zebra-proto");

    // The README's `cargo test`: the harness tests, then the black-box test that starts
    // sockhost on the library cargo built for it.
    let report = cargo(&dir, &["test", "--release"]);
    for test in [
        "test tests::greets_each_line ... ok",
        "test greets_over_tcp_and_closes_on_bye ... ok",
        "test a_bad_option_stops_sockhost_with_one_error_line ... ok",
    ] {
        assert!(report.contains(test), "{test:?} did not pass:\n{report}");
    }

    // The README's `cargo build --release`: the library is named after the package.
    cargo(&dir, &["build", "--release"]);
    let lib = template_target_dir().join("release/libzebra_proto.so");
    assert!(lib.exists(), "{} was not built", lib.display());
    let inspect = run_to_exit(&["inspect", lib.to_str().unwrap()], Duration::from_secs(10));
    assert!(inspect.status.success(), "{}", inspect.stderr);
    assert!(
        inspect.stdout.contains("name:        greeter")
            && inspect.stdout.contains("abi:         compatible"),
        "{}",
        inspect.stdout
    );
    std::fs::remove_dir_all(&root).unwrap();
}
