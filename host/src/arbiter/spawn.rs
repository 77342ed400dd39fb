//! The fork boundary: start one worker process on one slot's sockets.
//!
//! The arbiter has never started a tokio runtime nor loaded the plugin, so a plain `fork`
//! gives the child a clean slate (no exec needed; the child shares the arbiter's
//! already-bound sockets and the shared-memory board). In the child, before anything else:
//! default signal dispositions, die-with-parent, and close every descriptor that is not
//! this slot's (a worker holding another slot's socket would keep that socket's accept queue
//! alive after the arbiter closed it). Then drop privileges, load this generation's
//! plugin snapshot, report `ready`, and serve.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::Ordering;

use nix::fcntl::OFlag;
use nix::sys::signal::Signal;
use nix::unistd::{fork, getppid, ForkResult, Pid};

use super::board::{now_ms, Cell};
use super::signals;
use super::snapshot::Snapshot;
use super::status::{Report, StatusReader, StatusWriter};
use crate::bind::Bound;
use crate::cli::Config;
use crate::error::HostError;
use crate::plugin::Plugin;
use crate::privileges::Identity;
use crate::tls::Tls;
use crate::worker;

/// What one worker is started with.
pub struct WorkerSpec<'a> {
    /// The arbiter's pid (set by [`spawn`]).
    pub arbiter: Pid,
    pub slot: usize,
    /// Its generation's number (for its process title).
    pub generation: u64,
    /// The arbiter's open `--access-log`, inherited.
    pub access_log: Option<&'a crate::access_log::Sink>,
    pub sockets: &'a [Bound],
    pub snapshot: &'a Snapshot,
    pub tls: Option<&'a Tls>,
    pub cell: &'static Cell,
    pub config: &'a Config,
    pub identity: Option<&'a Identity>,
}

/// A started worker as the arbiter sees it.
pub struct Spawned {
    pub pid: Pid,
    pub status: StatusReader,
}

/// Fork a worker.
pub fn spawn(spec: WorkerSpec<'_>) -> Result<Spawned, HostError> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| HostError::io("creating a status pipe", e.into()))?;
    nix::fcntl::fcntl(&read, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
        .map_err(|e| HostError::io("creating a status pipe", e.into()))?;
    spec.cell.reset();
    let arbiter = spec.arbiter;
    let guard = signals::ForkGuard::block();
    // SAFETY: the arbiter is single-threaded (no runtime, no helper threads), so the child
    // is a consistent copy; it never returns into arbiter code (it ends in `_exit`).
    match unsafe { fork() } {
        Ok(ForkResult::Parent { child }) => {
            drop(guard);
            drop(write);
            Ok(Spawned {
                pid: child,
                status: StatusReader::new(read),
            })
        }
        Ok(ForkResult::Child) => {
            drop(read);
            signals::reset_in_child(guard);
            child_main(spec, write, arbiter)
        }
        Err(e) => Err(HostError::io("fork", e.into())),
    }
}

fn child_main(spec: WorkerSpec<'_>, status: OwnedFd, arbiter: Pid) -> ! {
    // Die with the arbiter, so a SIGKILLed arbiter leaves no worker serving stale code.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if getppid() != arbiter {
        exit_now(1);
    }
    let mut keep: Vec<i32> = vec![0, 1, 2, status.as_raw_fd(), spec.snapshot.raw_fd()];
    keep.extend(spec.sockets.iter().map(|b| b.socket.as_raw_fd()));
    keep.extend(spec.access_log.and_then(|a| a.raw_fd()));
    close_all_but(&keep);
    crate::proc_title::set(
        &format!("sockhost: worker {} gen {}", spec.slot, spec.generation),
        &format!("sockhost w{} g{}", spec.slot, spec.generation),
    );
    let mut status = StatusWriter::new(status);
    let code = match serve(&spec, &mut status) {
        Ok(()) => 0,
        Err(message) => {
            status.send(&Report::Failed(message));
            3
        }
    };
    exit_now(code)
}

/// The worker's life after fork; `Err` is a startup failure message.
fn serve(spec: &WorkerSpec<'_>, status: &mut StatusWriter) -> Result<(), String> {
    if let Some(identity) = spec.identity {
        identity.apply()?;
        // The kernel clears the parent-death signal when credentials change: arm it again,
        // and make sure the arbiter did not die in between.
        let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
        if getppid() != spec.arbiter {
            return Err("the arbiter exited while this worker was starting".to_string());
        }
    }
    let config = spec.config;
    let plugin = Plugin::load_snapshot(&spec.snapshot.path, &spec.snapshot.load_path())
        .map_err(|e| e.to_string())?;
    // Loaded (mapped): the worker needs the snapshot's descriptor no more.
    // SAFETY: its owner is a copy of arbiter state that this child never drops (it ends in
    // `_exit`), so nothing else closes or uses this descriptor here.
    unsafe { nix::libc::close(spec.snapshot.raw_fd()) };
    plugin
        .check_binds(&config.binds)
        .map_err(|e| e.to_string())?;
    let factory = plugin
        .factory(&config.plugin_opts)
        .map_err(|e| e.to_string())?;
    // Take over the inherited descriptors themselves (not duplicates): when this worker
    // stops accepting and drops them, its copy of the socket must really close, so that once
    // the arbiter has closed its own a connection attempt is refused (a load balancer then
    // retries elsewhere) instead of queueing for a process that will never accept it.
    let sockets: Vec<Bound> = spec
        .sockets
        .iter()
        .map(|b| Bound {
            transport: b.transport,
            // SAFETY: in this forked child the descriptor is owned by a copy of arbiter state
            // that is never used or dropped again (the child ends in `_exit`), so the new
            // `Socket` is its only owner.
            socket: unsafe { socket2::Socket::from_raw_fd(b.socket.as_raw_fd()) },
            local: b.local,
        })
        .collect();
    status.send(&Report::Ready(Some((
        plugin.meta.name.clone(),
        plugin.meta.version.clone(),
    ))));
    tracing::debug!(pid = std::process::id(), slot = spec.slot, "worker serving");

    let cell = spec.cell;
    let retiring_status = StatusWriter::new(status.try_clone().map_err(|e| e.to_string())?);
    let draining_status = StatusWriter::new(status.try_clone().map_err(|e| e.to_string())?);
    let mut reopened = 0;
    let hooks = worker::Hooks {
        heartbeat: Some(Box::new(move |counters| {
            cell.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
            cell.post(counters);
            // USR1 to the arbiter: it has reopened the access log; follow.
            let asked = cell.reopen.load(Ordering::Relaxed);
            if asked != reopened {
                reopened = asked;
                crate::access_log::reopen();
            }
        })),
        metrics: None,
        retiring: Some(Box::new(move || {
            let mut s = retiring_status;
            s.send(&Report::Retiring);
        })),
        draining: Some(Box::new(move || {
            let mut s = draining_status;
            s.send(&Report::Draining);
        })),
        reload: None,
        stopping: None,
        serving: None,
    };
    worker::run(
        sockets,
        factory,
        config.worker_settings(spec.tls.cloned(), spec.access_log.cloned()),
        hooks,
    )
    .map_err(|e| e.to_string())
}

/// Close every descriptor not in `keep`.
fn close_all_but(keep: &[i32]) {
    let open: Vec<i32> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => return,
    };
    for fd in open {
        if !keep.contains(&fd) {
            // SAFETY: in the freshly forked child nothing else will use these descriptors:
            // their owners are copies of arbiter state that is never touched again.
            unsafe { nix::libc::close(fd) };
        }
    }
}

/// Leave the worker process without running the arbiter's exit-time code.
fn exit_now(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stderr().flush();
    // SAFETY: `_exit` ends the process immediately; nothing is left half-done that matters
    // (stdout/stderr are flushed, the sockets belong to the arbiter).
    unsafe { nix::libc::_exit(code) }
}
