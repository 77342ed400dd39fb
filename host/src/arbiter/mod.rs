//! Process mode: the arbiter's lifecycle — bind → fork → supervise → reload → drain → exit.
//!
//! The arbiter binds every socket, forks the workers, and from then on only watches
//! processes and signals: it never starts an async runtime, never loads the plugin and never
//! touches a connection's bytes.
//!
//! # Module map
//! - [`supervisor`]: the decisions, as a pure state machine fed with events (signals,
//!   reports, exits, time) that answers with actions; unit-tested without forking.
//! - [`reload`]: the reload (HUP) as one state — idle, starting generation N, handing over —
//!   with one method per transition.
//! - [`backoff`]: a slot's restart back-off.
//! - [`shell`]: the side effects: the loop that polls, reaps, forks, kills and carries out
//!   the supervisor's actions; [`listeners`]: each slot's sockets.
//! - [`spawn`]: the fork boundary and the worker process's entry; [`status`]: the
//!   worker → arbiter report pipe; [`board`]: the shared-memory heartbeats and counters;
//!   [`signals`]: the signal self-pipe.
//! - [`generation`] and [`snapshot`]: what a generation runs; [`steering`]: which slot the
//!   kernel gives a new connection to.
//!
//! # Sockets: one SO_REUSEPORT slot per worker
//! Several processes waiting on one shared listening socket are woken LIFO, so one worker
//! would take most connections. Instead each *slot* (worker position) has its own socket
//! per `--bind`, all in one SO_REUSEPORT group, and the kernel spreads new connections over
//! the group by hash. The arbiter holds every slot's sockets for its whole life, so:
//! - a worker that dies leaves its accept queue intact; its replacement takes it over;
//! - a reload starts the new worker on the same slot socket while the old one drains:
//!   no connection attempt is refused or reset;
//! - TTOU removes the last slot; its socket closes once its worker has drained (a connection
//!   that reached that socket's queue in the last instant may be reset, unless the kernel's
//!   `net.ipv4.tcp_migrate_req` is on; new connections are steered away from it at once).
//!
//! # Steering
//! The kernel would spread new connections over every slot's socket, including a slot whose
//! worker is dead, restarting or hung. [`steering`] attaches a classic-BPF program to each
//! group that sends them to the *live* slots only (a serving worker whose heartbeat is within
//! [`supervisor::HEARTBEAT_GRACE`]), and the shell replaces it whenever that set changes. A
//! slot left with no worker at all hands its queued TCP connections to the others where the
//! kernel can. See docs/supervision.md.
//!
//! # Supervision
//! Workers post a heartbeat to shared memory ([`board`]) from inside their event loop; one
//! silent for `--timeout` is killed and replaced. Workers report `ready` / `failed` /
//! `retiring` over a pipe ([`status`]). A worker that dies young, fails to start or cannot
//! be forked is replaced with exponential back-off per slot ([`backoff`]) while the other
//! slots serve. If the first generation cannot start, the arbiter exits with the worker's
//! own `error:` line (or the fork's).
//!
//! # Reload (HUP)
//! A new generation snapshots the plugin file ([`snapshot`]) and starts one worker per slot
//! beside the old ones. When all report ready, the old generation is told to stop
//! gracefully. If any fails, the new generation is killed and the old one keeps serving.
//!
//! # Platforms
//! Linux only (fork, SO_REUSEPORT balancing, Linux process APIs): elsewhere
//! `arbiter_other.rs` refuses process mode.

mod backoff;
mod board;
mod generation;
mod listeners;
mod reload;
mod shell;
mod signals;
pub mod snapshot;
mod spawn;
mod status;
mod steering;
mod supervisor;

use crate::cli::Config;
use crate::error::HostError;
use crate::metrics;
use crate::pid_file::PidFile;
use crate::privileges::Identity;
use board::Board;
pub use generation::Generation;
use shell::Arbiter;
use signals::Signals;
use steering::Steering;
use supervisor::{Limits, Supervisor};

/// Room on the board for live and retiring workers together.
const BOARD_CELLS: usize = 4096;

/// Run process mode to the end.
pub fn run(config: &Config) -> Result<(), HostError> {
    let identity = Identity::resolve(config.user.as_deref(), config.group.as_deref())?;
    let access_log = config
        .access_log
        .as_ref()
        .map(|d| d.open(identity.as_ref()))
        .transpose()?;
    let generation = Generation::prepare(1, config.clone())?;
    // Socket activation: slot 0's sockets may be systemd's, which must never be shut down.
    let activated = std::env::var_os("LISTEN_FDS").is_some();
    let binds: Vec<_> = config.binds().cloned().collect();
    // Unix socket files are removed at exit (workers leave by `_exit`, never removing them).
    let (first, _unix_files) = crate::sockets::bind_all(&binds, config.backlog, true)?;
    let metrics = config
        .metrics_bind
        .map(|addr| {
            metrics::Endpoint::bind(addr).map_err(|e| HostError::Bind {
                spec: format!("--metrics-bind {addr}"),
                source: e,
            })
        })
        .transpose()?;
    let signals = Signals::install().map_err(|e| HostError::io("installing signal handlers", e))?;
    let board: &'static Board = Box::leak(Box::new(
        Board::new(BOARD_CELLS).map_err(|e| HostError::io("mapping the worker board", e))?,
    ));
    let limits = Limits {
        timeout: config.timeout,
        graceful_timeout: config.graceful_timeout,
        cells: board.len(),
    };
    let mut arbiter = Arbiter {
        config,
        identity,
        signals,
        board,
        supervisor: Supervisor::new(limits),
        slots: Vec::new(),
        pipes: Vec::new(),
        generations: vec![generation],
        steering: Steering::new(&first),
        announced_down: Vec::new(),
        metrics,
        retired: vec![metrics::Counters::default(); config.services.len()],
        access_log,
    };
    arbiter.add_slot(first, !activated);
    for _ in 1..config.workers {
        arbiter.add_sibling_slot()?;
    }
    let _pid_file = config.pid_file.as_deref().map(PidFile::write).transpose()?;
    let result = arbiter.supervise();
    if result.is_err() {
        arbiter.kill_all();
    }
    result
}
