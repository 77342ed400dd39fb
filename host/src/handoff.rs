//! Listening-socket handoff between processes, by the systemd convention: the sockets sit
//! at descriptors 3, 4, … and the environment says `LISTEN_FDS=<count>` and
//! `LISTEN_PID=<pid of the process meant to take them>`.
//!
//! Thread mode uses it to reload: on HUP the running process starts a *successor* (the same
//! binary, the same arguments) that inherits the sockets, loads the plugin as it is now on
//! disk and reports ready on a pipe (`SOCKHOST_READY_FD`); only then does the old process
//! stop accepting and drain. The listening sockets never close, so no connection attempt
//! is refused. The successor has a new pid, which it writes to `--pid-file`. It runs as the
//! predecessor does, after its `--user` switch: it binds nothing new, and reads the plugin
//! and certificates with that user's rights.
//!
//! The same code accepts sockets passed by systemd socket activation.
//!
//! Linux only: elsewhere `handoff_other.rs` inherits nothing (every socket is bound).

// FFI boundary: sockets inherited by descriptor number (LISTEN_FDS).
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::Duration;

use socket2::Socket;

use crate::bind::{canonical, BindSpec, Bound, SocketKind};
use crate::error::{HandoffError, HandoffProblem, HostError};

/// The first inherited descriptor (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;
const READY_FD_VAR: &str = "SOCKHOST_READY_FD";
/// Set by a process serving systemd's sockets, and so inherited by its reload successors:
/// the sockets a predecessor hands over are then still systemd's, which keeps them (and
/// their queues) open for the next start.
const SYSTEMD_SOCKETS_VAR: &str = "SOCKHOST_SYSTEMD_SOCKETS";

/// Sockets handed to this process (by systemd or a predecessor), one entry per `--bind`:
/// `Some` where an inherited socket serves that bind, `None` where it must be bound as
/// usual. A bind takes the inherited socket with its transport and exact address; binds with
/// port 0 (a predecessor's handoff) take the remaining ones of their transport in order.
/// `LISTEN_FDNAMES` only labels the sockets in logs. Returns `None` when nothing was handed
/// over (or it was meant for another process).
pub fn inherited(binds: &[BindSpec]) -> Result<Option<Vec<Option<Bound>>>, HostError> {
    // Meaningful only from a predecessor; anyone else's (a unit's environment, a parent
    // that inherited it) says nothing of our sockets.
    if !from_predecessor() {
        std::env::remove_var(SYSTEMD_SOCKETS_VAR);
    }
    let Some(count) = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
    else {
        return Ok(None);
    };
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|n| n.split(':').map(str::to_string).collect())
        .unwrap_or_default();
    // Whatever happens, our children must not see these.
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDNAMES");
    if !for_us || count == 0 {
        return Ok(None);
    }
    if !from_predecessor() {
        std::env::set_var(SYSTEMD_SOCKETS_VAR, "1");
    }
    let mut pool: Vec<Option<(Bound, String)>> = Vec::with_capacity(count);
    for i in 0..count {
        let fd = FIRST_FD + i as RawFd;
        let name = names.get(i).cloned().unwrap_or_else(|| format!("fd {fd}"));
        // SAFETY: by the LISTEN_FDS convention descriptors 3..3+count are ours, open, and
        // owned by nobody else in this process.
        let socket = unsafe { Socket::from_raw_fd(fd) };
        pool.push(Some((adopt(socket, &name)?, name)));
    }
    let mut matched: Vec<Option<Bound>> = binds.iter().map(|_| None).collect();
    let take = |pool: &mut Vec<Option<(Bound, String)>>, wanted: &dyn Fn(&Bound) -> bool| {
        let i = pool
            .iter()
            .position(|e| e.as_ref().is_some_and(|(b, _)| wanted(b)))?;
        let (bound, name) = pool[i].take()?;
        tracing::info!(socket = %name, "serving {} on an inherited socket", bound.listening_line().trim_start_matches("listening on "));
        Some(bound)
    };
    for (spec, slot) in binds.iter().zip(matched.iter_mut()) {
        if let crate::bind::Host::Unix(unix) = &spec.host {
            *slot = take(&mut pool, &|b: &Bound| b.path.as_ref() == Some(&unix.path));
            continue;
        }
        if spec.port == 0 {
            continue;
        }
        if let Ok(addr) = spec.resolve() {
            *slot = take(&mut pool, &|b: &Bound| {
                b.transport == spec.transport && b.local == canonical(addr)
            });
        }
    }
    for (spec, slot) in binds.iter().zip(matched.iter_mut()) {
        if slot.is_none() && spec.port == 0 && spec.transport != SocketKind::Unix {
            *slot = take(&mut pool, &|b: &Bound| b.transport == spec.transport);
        }
    }
    for (bound, name) in pool.into_iter().flatten() {
        tracing::warn!(socket = %name, local = %bound.local, "an inherited socket matches no --bind; closed");
    }
    Ok(Some(matched))
}

/// Check an inherited descriptor and make it ours.
fn adopt(socket: Socket, name: &str) -> Result<Bound, HostError> {
    let fail = |problem: HandoffProblem| {
        HostError::Handoff(HandoffError {
            name: name.to_string(),
            problem,
        })
    };
    let io = |e: std::io::Error| fail(HandoffProblem::Io(e));
    let addr = socket.local_addr().map_err(io)?;
    let path = addr.as_pathname().map(std::path::Path::to_path_buf);
    let local = match (addr.as_socket(), &path) {
        (Some(ip), _) => ip,
        (None, Some(_)) => crate::bind::UNIX_ADDR,
        (None, None) => return Err(fail(HandoffProblem::NoAddress)),
    };
    let transport = match socket.r#type().map_err(io)? {
        socket2::Type::STREAM if path.is_some() => SocketKind::Unix,
        socket2::Type::STREAM => SocketKind::Tcp,
        socket2::Type::DGRAM => SocketKind::Udp,
        _ => return Err(fail(HandoffProblem::NotStreamOrDatagram)),
    };
    if transport != SocketKind::Udp && !socket.is_listener().unwrap_or(false) {
        return Err(fail(HandoffProblem::NotListening));
    }
    if transport == SocketKind::Udp && path.is_some() {
        return Err(fail(HandoffProblem::UnixDatagram));
    }
    socket.set_cloexec(true).map_err(io)?;
    socket.set_nonblocking(true).map_err(io)?;
    Ok(Bound {
        transport,
        socket,
        local: canonical(local),
        path,
    })
}

/// Whether the sockets handed to this process come from a thread-mode predecessor (which
/// waits for our `ready`), not from systemd.
pub fn from_predecessor() -> bool {
    std::env::var_os(READY_FD_VAR).is_some()
}

/// Whether systemd holds this process's inherited sockets — handed over by systemd itself
/// or by a predecessor that had them from systemd — so that they are not ours to close for
/// good. Known once [`inherited`] has run. One answer for all of them: with some binds
/// activated by systemd and others bound here, none is closed for good (as before this
/// existed: a stop resets their queued connections).
pub fn systemd_holds_sockets() -> bool {
    std::env::var_os(SYSTEMD_SOCKETS_VAR).is_some()
}

/// Tell the process that started us (if any) that we are ready to serve.
pub fn notify_ready() {
    let Some(fd) = std::env::var(READY_FD_VAR)
        .ok()
        .and_then(|v| v.parse::<RawFd>().ok())
    else {
        return;
    };
    std::env::remove_var(READY_FD_VAR);
    // SAFETY: the predecessor put the pipe's write end at this descriptor for us alone.
    let pipe = unsafe { OwnedFd::from_raw_fd(fd) };
    let _ = nix::unistd::write(&pipe, b"ready\n");
}

/// A successor process that has been started but has not yet said it is ready.
pub struct Successor {
    child: Child,
    ready: OwnedFd,
}

/// Start the successor: this binary, these arguments, the listening sockets at 3, 4, …,
/// and the locked `--pid-file`, if any, after them ([`crate::pid_file`]).
pub fn start_successor(listeners: &[RawFd], pid_file: Option<RawFd>) -> Result<Successor, String> {
    let (ready_read, ready_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let sources: Vec<RawFd> = listeners.to_vec();
    let ready_source = ready_write.as_raw_fd();
    let count = sources.len();
    let ready_target = FIRST_FD + count as RawFd;
    let pid_file_fd = std::ffi::CString::new((ready_target + 1).to_string()).expect("digits");
    let exe = std::env::current_exe().map_err(|e| format!("finding the sockhost binary: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.args(std::env::args_os().skip(1));
    // Set in the child with setenv (below), not with `Command::env`: once any variable is set
    // that way, std hands exec its own copy of the environment and the child's setenv of
    // LISTEN_PID (which only the child can know) would be lost.
    let listen_fds = std::ffi::CString::new(count.to_string()).expect("digits");
    let ready_fd = std::ffi::CString::new(ready_target.to_string()).expect("digits");
    // SAFETY: runs in the forked child before exec. The thread-mode process is
    // single-threaded, so the libc calls below (dup, setenv) cannot meet a lock held by
    // another thread; nothing here unwinds.
    unsafe {
        cmd.pre_exec(move || {
            // Move every source above the target range first, so no dup2 clobbers another.
            let mut high = Vec::with_capacity(count + 2);
            for fd in sources
                .iter()
                .copied()
                .chain([ready_source])
                .chain(pid_file)
            {
                let h = nix::libc::fcntl(fd, nix::libc::F_DUPFD_CLOEXEC, 64);
                if h < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                high.push(h);
            }
            for (i, h) in high.iter().enumerate() {
                // dup2 clears close-on-exec on the target: exactly these survive the exec.
                if nix::libc::dup2(*h, FIRST_FD + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            let pid = format!("{}\0", nix::libc::getpid());
            nix::libc::setenv(c"LISTEN_PID".as_ptr(), pid.as_ptr().cast(), 1);
            nix::libc::setenv(c"LISTEN_FDS".as_ptr(), listen_fds.as_ptr(), 1);
            nix::libc::setenv(c"SOCKHOST_READY_FD".as_ptr(), ready_fd.as_ptr(), 1);
            if pid_file.is_some() {
                nix::libc::setenv(c"SOCKHOST_PID_FILE_FD".as_ptr(), pid_file_fd.as_ptr(), 1);
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("starting the successor: {e}"))?;
    drop(ready_write);
    Ok(Successor {
        child,
        ready: ready_read,
    })
}

impl Successor {
    /// Wait for `ready` on the event loop (no helper thread: this process must stay
    /// single-threaded for the next handoff's fork); `Err` if the successor exited first or
    /// took longer than `timeout` (then it is killed).
    pub async fn ready(self, timeout: Duration) -> Result<u32, String> {
        let Successor { mut child, ready } = self;
        let pid = child.id();
        let waited = async move {
            let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(ready)?;
            let mut buf = [0u8; 16];
            let n = tokio::io::AsyncReadExt::read(&mut pipe, &mut buf).await?;
            Ok::<bool, std::io::Error>(buf[..n].starts_with(b"ready"))
        };
        match tokio::time::timeout(timeout, waited).await {
            Ok(Ok(true)) => Ok(pid),
            Ok(_) => {
                let status = child
                    .wait()
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| e.to_string());
                Err(format!(
                    "the new process exited before it was ready ({status})"
                ))
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!("the new process was not ready within {timeout:?}"))
            }
        }
    }
}
