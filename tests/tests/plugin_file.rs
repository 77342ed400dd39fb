//! The plugin file and its private copy (issue #11): thread mode loads a sealed memfd copy
//! as process mode does, so overwriting the `.so` in place cannot crash it; no worker keeps
//! the copy's descriptor after loading it, and the one the arbiter keeps is sealed; a plugin
//! that group or others could replace is warned about.

use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use sockhost_tests::{ask, children_of, connect, plugin, round_trip, wait_until, Server};

/// A copy of a workspace plugin in a fresh directory (mode 0755), as `libproto.so`.
struct PluginDir {
    dir: PathBuf,
}

impl PluginDir {
    fn new(tag: &str, from: &str) -> PluginDir {
        let dir = std::env::temp_dir().join(format!("sockhost-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        chmod(&dir, 0o755);
        let d = PluginDir { dir };
        std::fs::copy(plugin(from), d.file()).unwrap();
        chmod(&d.file(), 0o644);
        d
    }

    fn file(&self) -> PathBuf {
        self.dir.join("libproto.so")
    }

    fn serve(&self, extra: &[&str]) -> Server {
        let file = self.file();
        let mut args = vec!["--plugin", file.to_str().unwrap(), "--bind", "127.0.0.1:0"];
        args.extend(extra);
        Server::start(&args)
    }
}

impl Drop for PluginDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn chmod(path: &std::path::Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn overwriting_the_plugin_in_place_does_not_disturb_thread_mode() {
    let lib = PluginDir::new("overwrite-thread", "testkit");
    let server = lib.serve(&["--concurrency", "thread"]);
    let mut open = connect(server.addr());
    assert_eq!(ask(&mut open, "tag"), "a");

    // In place: the same inode, truncated, then other bytes (what `cp` over it does).
    let size = std::fs::metadata(lib.file()).unwrap().len() as usize;
    std::fs::write(lib.file(), b"").unwrap();
    let mut garbage = std::fs::read(plugin("testkit_b")).unwrap();
    garbage.resize(size, 0xCC);
    garbage
        .iter_mut()
        .skip(4096)
        .step_by(7)
        .for_each(|b| *b = 0xCC);
    std::fs::write(lib.file(), &garbage).unwrap();

    assert_eq!(ask(&mut open, "tag"), "a", "the open connection");
    assert_eq!(round_trip(&mut open, b"still here"), b"still here");
    for i in 0..20 {
        let mut s = connect(server.addr());
        assert_eq!(ask(&mut s, "tag"), "a", "new connection {i}");
    }
    let mut s = connect(server.addr());
    assert_eq!(ask(&mut s, "log"), "logged");
    server
        .stderr
        .wait_for("testkit log line", Duration::from_secs(5));
}

/// `pid`'s descriptors that are plugin snapshots: `(fd number, link target)`.
fn snapshot_fds(pid: u32) -> Vec<(u32, String)> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            let target = target.to_string_lossy().into_owned();
            let fd = e.file_name().to_str()?.parse().ok()?;
            target
                .starts_with("/memfd:sockhost-plugin")
                .then_some((fd, target))
        })
        .collect()
}

#[test]
#[allow(unsafe_code)] // FFI/fork boundary: libc calls on the test's own child processes.
fn workers_close_the_snapshot_and_the_arbiters_copy_is_sealed() {
    let lib = PluginDir::new("sealed", "echo");
    let server = lib.serve(&["--workers", "2"]);
    let mut workers = Vec::new();
    wait_until("2 workers", Duration::from_secs(10), || {
        workers = children_of(server.pid());
        workers.len() == 2
    });
    // Ready workers have loaded the plugin (the `listening on` lines wait for them).
    for w in &workers {
        assert_eq!(snapshot_fds(*w), [], "worker {w} still holds the snapshot");
    }
    let held = snapshot_fds(server.pid());
    assert_eq!(held.len(), 1, "the arbiter holds one snapshot: {held:?}");

    // Even a fresh read-write descriptor for it (as root) cannot change it.
    let path = format!("/proc/{}/fd/{}", server.pid(), held[0].0);
    let mut rw = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    // SAFETY: F_GET_SEALS only reads the descriptor's file's seals.
    let seals = unsafe { libc::fcntl(rw.as_raw_fd(), libc::F_GET_SEALS) };
    let all = libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
    assert_eq!(seals & all, all, "seals are {seals:#x}");
    let denied = std::io::Write::write_all(&mut rw, b"evil").unwrap_err();
    assert_eq!(denied.raw_os_error(), Some(libc::EPERM), "{denied}");
    assert!(rw.set_len(0).is_err(), "the snapshot can be truncated");

    let mut s = connect(server.addr());
    assert_eq!(round_trip(&mut s, b"sealed"), b"sealed");
}

#[test]
fn thread_mode_closes_the_snapshot_once_loaded() {
    let lib = PluginDir::new("closed-thread", "echo");
    let server = lib.serve(&["--concurrency", "thread"]);
    assert_eq!(snapshot_fds(server.pid()), []);
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", server.pid())).unwrap();
    assert!(
        maps.contains("/memfd:sockhost-plugin"),
        "the plugin is not mapped from its private copy"
    );
    assert!(
        !maps.contains(lib.file().to_str().unwrap()),
        "the plugin is mapped from its path"
    );
}

const WARNING: &str = "writable by group or others";

/// Start, and wait until stderr has got past startup (the snapshot is taken before it says
/// it serves), so that counting warning lines is meaningful.
fn serve_settled(lib: &PluginDir, extra: &[&str]) -> Server {
    let server = lib.serve(extra);
    server
        .stderr
        .wait_for("serving in", Duration::from_secs(10));
    server
}

#[test]
fn a_plugin_others_can_replace_is_warned_about_in_one_line() {
    let lib = PluginDir::new("perms", "echo");
    // Private file, private directory: no warning.
    let server = serve_settled(&lib, &["--concurrency", "thread"]);
    assert_eq!(server.stderr.count(WARNING), 0, "{}", server.stderr.text());
    drop(server);

    chmod(&lib.file(), 0o666);
    for mode in [["--concurrency", "thread"], ["--workers", "1"]] {
        let server = serve_settled(&lib, &mode);
        let line = server.stderr.wait_for(WARNING, Duration::from_secs(5));
        assert!(line.contains("the file (mode 0666)"), "{line}");
        assert_eq!(server.stderr.count(WARNING), 1, "{}", server.stderr.text());
    }

    chmod(&lib.file(), 0o644);
    chmod(&lib.dir, 0o777);
    let server = serve_settled(&lib, &["--concurrency", "thread"]);
    let line = server.stderr.wait_for(WARNING, Duration::from_secs(5));
    assert!(
        line.contains("its directory") && line.contains("(mode 0777)"),
        "{line}"
    );
    assert!(!line.contains("the file"), "{line}");
    assert_eq!(server.stderr.count(WARNING), 1, "{}", server.stderr.text());
    drop(server);

    // Sticky, as /tmp: others cannot replace a file they do not own.
    chmod(&lib.dir, 0o1777);
    let server = serve_settled(&lib, &["--concurrency", "thread"]);
    assert_eq!(server.stderr.count(WARNING), 0, "{}", server.stderr.text());
}
