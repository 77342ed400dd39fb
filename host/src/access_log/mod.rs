//! `--access-log PATH|-`: one line per finished connection or UDP session — who (peer),
//! where (local address, service), how long, how many bytes each way, why it ended, and
//! over TLS the version, ALPN protocol and SNI name — as logfmt text or JSON.
//!
//! # Cost
//! Off by default, and then it costs nothing per connection but a branch. When on, each
//! TCP connection gets a [`Tally`] (boxed, ~100 bytes) in a per-worker side table keyed by
//! its registration, from accept to close: the connection's own future and entry do not
//! grow (a test holds their sizes). A UDP session keeps its tally in its session.
//!
//! # Writing
//! Each record is one `write(2)` of one line to a file opened with `O_APPEND`, so lines
//! from several worker processes never interleave. In process mode the arbiter opens the
//! file (created `0640`, owned by `--user`/`--group` when given, so that workers that
//! dropped privileges can reopen it) and workers inherit it; a write that fails (disk full)
//! drops the record and logs one warning until the next successful write.
//!
//! # Rotation
//! `USR1` reopens the file by its path (logrotate's `postrotate`: `kill -USR1 <pid>`): the
//! arbiter reopens its own copy first, then flags every worker through the board, and each
//! reopens at its next heartbeat (within half a second); thread mode reopens at once. A
//! reopen that fails is logged and writing goes on to the old file.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use crate::error::HostError;
use crate::logging::LogFormat;
use crate::privileges::Identity;

pub use record::{reason, Tally, TlsSummary};

mod record;

#[cfg_attr(target_os = "linux", path = "file_linux.rs")]
#[cfg_attr(not(target_os = "linux"), path = "file_other.rs")]
mod file;

/// `--access-log` and its format, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// A file path, or `-` for stdout.
    pub path: PathBuf,
    pub format: LogFormat,
}

impl Destination {
    fn is_stdout(&self) -> bool {
        self.path.as_os_str() == "-"
    }

    /// Open (create) the file, owned by `owner` if given; stdout needs nothing.
    pub fn open(&self, owner: Option<&Identity>) -> Result<Sink, HostError> {
        let file = if self.is_stdout() {
            None
        } else {
            Some(Arc::new(self.open_file(owner)?))
        };
        Ok(Sink {
            destination: self.clone(),
            file,
        })
    }

    fn open_file(&self, owner: Option<&Identity>) -> Result<File, HostError> {
        file::open(&self.path, owner)
    }
}

/// An open access log: where records go.
#[derive(Clone, Debug)]
pub struct Sink {
    destination: Destination,
    /// `None`: stdout.
    file: Option<Arc<File>>,
}

impl Sink {
    /// Reopen by path (rotation); on failure the old file stays in use.
    pub fn reopen(&mut self, owner: Option<&Identity>) -> Result<(), HostError> {
        if self.file.is_some() {
            self.file = Some(Arc::new(self.destination.open_file(owner)?));
        }
        Ok(())
    }

    /// The descriptor a forked worker must keep.
    #[cfg(unix)]
    pub fn raw_fd(&self) -> Option<i32> {
        use std::os::fd::AsRawFd;
        self.file.as_ref().map(|f| f.as_raw_fd())
    }

    fn write_line(&self, line: &[u8]) -> std::io::Result<()> {
        match &self.file {
            Some(file) => (&**file).write_all(line),
            None => {
                let mut out = std::io::stdout().lock();
                out.write_all(line)?;
                out.flush()
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The worker's side: one access log per worker thread, and the tallies of its open TCP
// connections by registration key.

/// This worker's log.
struct Writer {
    sink: Sink,
    /// A write failed and was reported; quiet until one succeeds.
    failing: bool,
}

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static WRITER: RefCell<Option<Writer>> = const { RefCell::new(None) };
    /// Open TCP connections' tallies, indexed by registration key.
    static OPEN: RefCell<Vec<Option<Box<Tally>>>> = const { RefCell::new(Vec::new()) };
}

/// Turn the access log on for this worker thread (`None`: off).
pub fn install(sink: Option<Sink>) {
    ON.set(sink.is_some());
    WRITER.set(sink.map(|sink| Writer {
        sink,
        failing: false,
    }));
}

/// Whether this worker keeps an access log.
#[inline]
pub fn enabled() -> bool {
    ON.get()
}

/// Reopen this worker's log by its path (USR1).
pub fn reopen() {
    WRITER.with_borrow_mut(|w| {
        if let Some(w) = w {
            match w.sink.reopen(None) {
                Ok(()) => tracing::debug!(pid = std::process::id(), "reopened the access log"),
                Err(e) => {
                    tracing::error!("reopening the access log: {e}; still writing to the old file")
                }
            }
        }
    });
}

/// Write one record to this worker's log.
pub fn write(tally: &Tally) {
    WRITER.with_borrow_mut(|w| {
        let Some(w) = w else { return };
        let line = tally
            .record()
            .line(w.sink.destination.format, SystemTime::now());
        match w.sink.write_line(line.as_bytes()) {
            Ok(()) => w.failing = false,
            Err(e) if !w.failing => {
                w.failing = true;
                tracing::warn!("access log: {e}; records are dropped until a write succeeds");
            }
            Err(_) => {}
        }
    });
}

/// A TCP connection was accepted: start its tally under its registration `key`.
pub fn opened(key: usize, peer: SocketAddr, local: SocketAddr) {
    if !enabled() {
        return;
    }
    OPEN.with_borrow_mut(|open| {
        if open.len() <= key {
            open.resize_with(key + 1, || None);
        }
        open[key] = Some(Box::new(Tally::new("tcp", peer, local)));
    });
}

/// Update the tally of connection `key`, if it has one.
#[inline]
pub fn with_open(key: usize, f: impl FnOnce(&mut Tally)) {
    if !enabled() {
        return;
    }
    OPEN.with_borrow_mut(|open| {
        if let Some(Some(tally)) = open.get_mut(key) {
            f(tally);
        }
    });
}

/// Connection `key` ended (its slot is released): write its record.
pub fn closed(key: usize) {
    if !enabled() {
        return;
    }
    let tally = OPEN.with_borrow_mut(|open| open.get_mut(key).and_then(Option::take));
    if let Some(tally) = tally {
        write(&tally);
    }
}
