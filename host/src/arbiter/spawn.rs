//! The fork boundary: start one worker process on one slot's sockets.
//!
//! The arbiter has never started a tokio runtime nor loaded the plugin, so a plain `fork`
//! gives the child a clean slate (no exec needed; the child shares the arbiter's
//! already-bound sockets and the shared-memory board). In the child, before anything else:
//! default signal dispositions, die-with-parent, and close every descriptor that is not
//! this slot's (a worker holding another slot's socket would keep that socket's accept queue
//! alive after the arbiter closed it). Then drop privileges, load this generation's
//! plugin snapshot, report `ready`, and serve.

// Fork boundary: forking workers.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::Ordering;

use nix::fcntl::OFlag;
use nix::sys::signal::Signal;
use nix::unistd::{fork, getppid, ForkResult, Pid};

use super::board::{now_ms, WorkerCell};
use super::signals;
use super::status::{Report, StatusReader, StatusWriter};
use super::Generation;
use crate::bind::Bound;
use crate::cli::Config;
use crate::error::HostError;
use crate::plugin::Plugin;
use crate::privileges::Identity;
use crate::worker::{self, Link, Stop, StopReason, Worker, WorkerEvent};

/// What one worker is started with.
pub struct WorkerSpec<'a> {
    /// The arbiter's pid (set by [`spawn`]).
    pub arbiter: Pid,
    pub slot: usize,
    /// The arbiter's open `--access-log`, inherited.
    pub access_log: Option<&'a crate::access_log::Sink>,
    /// Every service's sockets, in the order of the configuration's binds.
    pub sockets: &'a [Bound],
    /// The configuration, plugin snapshots and TLS of the worker's generation.
    pub generation: &'a Generation,
    pub cell: &'static WorkerCell,
    /// The process-wide settings (as at startup).
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
    // is a consistent copy; it never returns nor unwinds into arbiter code (`child_main`
    // catches any panic and ends in `_exit`).
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
            // A panic must not unwind out of the child's entry: the frames above it are the
            // arbiter's, and unwinding through them would run arbiter code (and drop its
            // copies of the pid file, the Unix socket files, the generations) in this
            // process. The panic hook has already printed the message; leave with the code
            // of a panicking Rust program.
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                child_main(spec, write, arbiter)
            }))
            .unwrap_or(101);
            exit_now(code)
        }
        Err(e) => Err(HostError::io("fork", e.into())),
    }
}

/// The worker process, from fork to its exit code.
fn child_main(spec: WorkerSpec<'_>, status: OwnedFd, arbiter: Pid) -> i32 {
    // Die with the arbiter, so a SIGKILLed arbiter leaves no worker serving stale code.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if getppid() != arbiter {
        return 1;
    }
    let mut keep: Vec<i32> = vec![0, 1, 2, status.as_raw_fd()];
    keep.extend(spec.generation.snapshots.iter().map(|s| s.raw_fd()));
    keep.extend(spec.sockets.iter().map(|b| b.socket.as_raw_fd()));
    keep.extend(spec.access_log.and_then(|a| a.raw_fd()));
    close_all_but(&keep);
    crate::proc_title::set(
        &format!("sockhost: worker {} gen {}", spec.slot, spec.generation.id),
        &format!("sockhost w{} g{}", spec.slot, spec.generation.id),
    );
    let mut status = StatusWriter::new(status);
    match run_worker(&spec, &mut status) {
        Ok(()) => 0,
        Err(message) => {
            status.send(&Report::Failed(message));
            3
        }
    }
}

/// The worker's life after fork; `Err` is a startup failure message.
fn run_worker(spec: &WorkerSpec<'_>, status: &mut StatusWriter) -> Result<(), String> {
    let generation = spec.generation;
    let (plugins, services) = load(spec)?;
    status.send(&Report::Ready(
        generation
            .plugin_of
            .iter()
            .map(|&p| plugins[p].id())
            .collect(),
    ));
    tracing::debug!(pid = std::process::id(), slot = spec.slot, "worker serving");

    let settings = spec.config.worker_settings(spec.access_log.cloned());
    Worker::new(services, settings)
        .run(|link| report(link, spec.cell, status))
        .map_err(|e| e.to_string())
}

/// Pass the worker's events on to the arbiter: heartbeats and counters through the board,
/// `retiring` and `draining` on the status pipe.
async fn report(
    mut link: Link,
    cell: &WorkerCell,
    status: &mut StatusWriter,
) -> Result<(), HostError> {
    let mut reopened = 0;
    while let Some(event) = link.events.recv().await {
        match event {
            WorkerEvent::Heartbeat(counters) => {
                cell.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
                cell.post(&counters);
                // USR1 to the arbiter: it has reopened the access log; follow.
                let asked = cell.reopen.load(Ordering::Relaxed);
                if asked != reopened {
                    reopened = asked;
                    crate::access_log::reopen();
                }
            }
            WorkerEvent::Stopping(Stop::Graceful(StopReason::MaxRequests)) => {
                status.send(&Report::Retiring);
            }
            WorkerEvent::Draining => status.send(&Report::Draining),
            WorkerEvent::ReloadAsked => tracing::debug!("SIGHUP ignored by this worker"),
            WorkerEvent::Serving | WorkerEvent::Stopping(_) => {}
        }
    }
    Ok(())
}

/// Drop privileges, load the generation's plugins and make each service's factory and
/// listeners; `Err` is a startup failure message.
fn load(spec: &WorkerSpec<'_>) -> Result<(Vec<Plugin>, Vec<worker::Service>), String> {
    if let Some(identity) = spec.identity {
        identity.apply().map_err(|e| e.to_string())?;
        // The kernel clears the parent-death signal when credentials change: arm it again,
        // and make sure the arbiter did not die in between.
        let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
        if getppid() != spec.arbiter {
            return Err("the arbiter exited while this worker was starting".to_string());
        }
    }
    let generation = spec.generation;
    let mut plugins = Vec::new();
    for snapshot in &generation.snapshots {
        plugins.push(
            Plugin::load_snapshot(&snapshot.path, &snapshot.load_path())
                .map_err(|e| e.to_string())?,
        );
        // Loaded (mapped): the worker needs the snapshot's descriptor no more.
        // SAFETY: its owner is a copy of arbiter state that this child never drops (it ends
        // in `_exit`), so nothing else closes or uses this descriptor here.
        unsafe { nix::libc::close(snapshot.raw_fd()) };
    }
    let many = generation.config.services.len() > 1;
    let mut factories = Vec::new();
    for (i, service) in generation.config.services.iter().enumerate() {
        let plugin = &plugins[generation.plugin_of[i]];
        let named = |e: HostError| match many {
            true => format!("service {}: {e}", service.name),
            false => e.to_string(),
        };
        plugin.check_binds(&service.binds).map_err(named)?;
        factories.push(plugin.factory(&service.plugin_opts).map_err(named)?);
    }
    // Take over the inherited descriptors themselves (not duplicates): when this worker
    // stops accepting and drops them, its copy of the socket must really close, so that once
    // the arbiter has closed its own a connection attempt is refused (a load balancer then
    // retries elsewhere) instead of queueing for a process that will never accept it.
    let mut sockets = spec.sockets.iter().map(|b| Bound {
        transport: b.transport,
        // SAFETY: in this forked child the descriptor is owned by a copy of arbiter state
        // that is never used or dropped again (the child ends in `_exit`), so the new
        // `Socket` is its only owner.
        socket: unsafe { socket2::Socket::from_raw_fd(b.socket.as_raw_fd()) },
        local: b.local,
        path: b.path.clone(),
    });
    let services: Vec<worker::Service> = generation
        .config
        .services
        .iter()
        .zip(factories)
        .enumerate()
        .map(|(i, (service, factory))| worker::Service {
            name: service.name.clone(),
            listeners: sockets.by_ref().take(service.binds.len()).collect(),
            factory,
            settings: service.worker_settings(generation.tls[i].clone()),
        })
        .collect();
    Ok((plugins, services))
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
