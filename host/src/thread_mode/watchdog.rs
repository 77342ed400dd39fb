//! Thread mode's supervision: there is no arbiter to notice a stuck event loop, so the
//! process watches itself and, when the loop has not ticked for `--timeout`, logs one line
//! and exits with [`EXIT_STATUS`] for a service manager to restart it (systemd:
//! `Restart=on-failure`).
//!
//! The watchdog is the kernel's `alarm`: every tick of the event loop pushes it back to
//! `--timeout` from now; if it ever fires, the loop (or the plugin's startup) has been stuck
//! that long. Its SIGALRM handler writes a prepared line straight to stderr and `_exit`s —
//! it interrupts whatever the stuck code was doing, spinning or blocked in a system call,
//! and touches no lock that code may hold. No watchdog thread: thread mode stays
//! single-threaded, which the reload handoff's `fork` relies on (`handoff.rs`). The alarm is
//! not inherited by a forked child, and a successor arms its own.

// FFI boundary: the SIGALRM handler and alarm().
#![allow(unsafe_code)]

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::alarm;

use crate::error::HostError;

/// The exit status after the watchdog fired (`EX_SOFTWARE`): any non-zero status makes
/// a service manager restart the process; this one says why.
pub const EXIT_STATUS: i32 = 70;

/// The two lines the handler may print, after a timestamp: before the first tick (the
/// plugin did not finish loading) and after it (the event loop is stuck).
static LINES: OnceLock<[String; 2]> = OnceLock::new();
/// Set by the first tick.
static TICKED: AtomicBool = AtomicBool::new(false);
/// Set when the alarm has fired once.
static FIRED: AtomicBool = AtomicBool::new(false);
/// How long the handler's write may block (stderr a pipe nobody drains) before the process
/// exits without its line.
const WRITE_GRACE_SECS: u32 = 1;

/// The armed watchdog; dropping it disarms it.
pub struct Watchdog {
    secs: u32,
}

impl Watchdog {
    /// Install the handler and arm: the first tick is due within `timeout`.
    pub fn arm(timeout: Duration) -> Result<Watchdog, HostError> {
        let secs = timeout.as_secs().clamp(1, u64::from(u32::MAX)) as u32;
        let pid = std::process::id();
        let _ = LINES.set([
            format!(
                "ERROR watchdog: the plugin did not finish loading within --timeout {secs}s; exiting with status {EXIT_STATUS} pid={pid}\n"
            ),
            format!(
                "ERROR watchdog: the event loop has not run for --timeout {secs}s (a plugin call is stuck); exiting with status {EXIT_STATUS} for the service manager to restart sockhost pid={pid}\n"
            ),
        ]);
        // SAFETY: the handler is async-signal-safe: it formats into a stack buffer (no
        // allocation, no lock), then calls alarm(2), write(2) and _exit(2). SA_NODEFER lets
        // a second alarm interrupt a write that blocks.
        unsafe {
            sigaction(
                Signal::SIGALRM,
                &SigAction::new(
                    SigHandler::Handler(on_alarm),
                    SaFlags::SA_NODEFER,
                    SigSet::empty(),
                ),
            )
        }
        .map_err(|e| HostError::io("installing the watchdog (SIGALRM)", e.into()))?;
        alarm::set(secs);
        Ok(Watchdog { secs })
    }

    /// Proof of life from inside the event loop.
    pub fn tick(&self) {
        TICKED.store(true, Ordering::Relaxed);
        alarm::set(self.secs);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        alarm::cancel();
    }
}

extern "C" fn on_alarm(_: nix::libc::c_int) {
    if FIRED.swap(true, Ordering::Relaxed) {
        // The second alarm: the line's write has blocked for WRITE_GRACE_SECS.
        // SAFETY: _exit(2) is async-signal-safe.
        unsafe { nix::libc::_exit(EXIT_STATUS) };
    }
    alarm::set(WRITE_GRACE_SECS);
    let mut buf = [0u8; 512];
    let len = {
        let mut cursor = std::io::Cursor::new(&mut buf[..]);
        let line = LINES
            .get()
            .map(|l| l[usize::from(TICKED.load(Ordering::Relaxed))].as_str())
            .unwrap_or("ERROR watchdog: --timeout expired\n");
        let _ = write_timestamp(&mut cursor, SystemTime::now());
        let _ = cursor.write_all(b" ");
        let _ = cursor.write_all(line.as_bytes());
        cursor.position() as usize
    };
    // SAFETY: write(2) and _exit(2) are async-signal-safe; `buf` is ours.
    unsafe {
        nix::libc::write(2, buf.as_ptr().cast(), len);
        nix::libc::_exit(EXIT_STATUS);
    }
}

/// `2026-12-02T13:53:36.360321Z`, as the log lines start (UTC, microseconds). Allocates
/// nothing, so the signal handler may call it.
fn write_timestamp(out: &mut impl Write, now: SystemTime) -> std::io::Result<()> {
    let t = crate::civil_date::Utc::of(now);
    write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second,
        t.subsec.as_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(secs: u64, micros: u32) -> String {
        let mut out = Vec::new();
        let t = SystemTime::UNIX_EPOCH + Duration::new(secs, micros * 1000);
        write_timestamp(&mut out, t).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn timestamps_match_the_log_format() {
        assert_eq!(stamp(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(stamp(951_782_400, 7), "2000-02-29T00:00:00.000007Z");
        assert_eq!(stamp(1_796_219_616, 360_321), "2026-12-02T13:53:36.360321Z");
        assert_eq!(stamp(4_107_542_399, 999_999), "2100-02-28T23:59:59.999999Z");
    }
}
