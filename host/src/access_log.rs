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
use std::time::{Duration, Instant, SystemTime};

use plugin_api::LostReason;

use crate::cli::LogFormat;
use crate::error::HostError;
use crate::privileges::Identity;

#[cfg_attr(target_os = "linux", path = "access_log/file_linux.rs")]
#[cfg_attr(not(target_os = "linux"), path = "access_log/file_other.rs")]
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

/// What is known of one connection or session while it is open.
#[derive(Debug)]
pub struct Tally {
    /// The service it belongs to (several services per worker: named per listener).
    service: Option<Arc<str>>,
    transport: &'static str,
    started: Instant,
    peer: SocketAddr,
    local: SocketAddr,
    bytes_in: u64,
    bytes_out: u64,
    /// Set when the driver knows why it ended; a connection cancelled before that (during
    /// its handshake) ends as `shutdown`.
    reason: Option<&'static str>,
    tls: Option<Box<TlsSummary>>,
}

/// The TLS part of a record.
#[derive(Debug, Default)]
pub struct TlsSummary {
    pub version: Option<&'static str>,
    pub alpn: Option<String>,
    pub sni: Option<String>,
}

impl Tally {
    /// A connection or session starting now.
    pub fn new(transport: &'static str, peer: SocketAddr, local: SocketAddr) -> Tally {
        Tally {
            service: None,
            transport,
            started: Instant::now(),
            peer,
            local,
            bytes_in: 0,
            bytes_out: 0,
            reason: None,
            tls: None,
        }
    }

    /// Bytes received from / sent to the peer (plaintext, as the plugin sees them).
    pub fn count(&mut self, bytes_in: u64, bytes_out: u64) {
        self.bytes_in += bytes_in;
        self.bytes_out += bytes_out;
    }

    /// The record, as it ends now.
    fn record(&self) -> Record<'_> {
        Record {
            service: self.service.as_deref(),
            transport: self.transport,
            peer: self.peer,
            local: self.local,
            duration: self.started.elapsed(),
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            reason: self.reason.unwrap_or("shutdown"),
            tls: self.tls.as_deref(),
        }
    }
}

/// One access log record.
#[derive(Debug)]
pub struct Record<'a> {
    /// The service the connection belongs to (named services only).
    pub service: Option<&'a str>,
    /// `tcp`, `udp` or `unix`.
    pub transport: &'static str,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub duration: Duration,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Why it ended: closed, peer_closed, idle_timeout, error, shutdown, connect_failed,
    /// tls_failed, handshake_timeout, proxy_failed, proxy_refused.
    pub reason: &'static str,
    pub tls: Option<&'a TlsSummary>,
}

impl Record<'_> {
    /// The line (with its `\n`), stamped `now`.
    pub fn line(&self, format: LogFormat, now: SystemTime) -> String {
        let time = rfc3339(now);
        let duration_ms = (self.duration.as_micros() as f64) / 1000.0;
        let tls = self
            .tls
            .map(|t| (t.version, t.alpn.as_deref(), t.sni.as_deref()));
        match format {
            LogFormat::Json => {
                let mut o = serde_json::Map::new();
                o.insert("time".into(), time.into());
                if let Some(service) = self.service {
                    o.insert("service".into(), service.into());
                }
                o.insert("transport".into(), self.transport.into());
                o.insert("peer".into(), self.peer.to_string().into());
                o.insert("local".into(), self.local.to_string().into());
                o.insert("duration_ms".into(), duration_ms.into());
                o.insert("bytes_in".into(), self.bytes_in.into());
                o.insert("bytes_out".into(), self.bytes_out.into());
                o.insert("reason".into(), self.reason.into());
                if let Some((version, alpn, sni)) = tls {
                    o.insert("tls".into(), version.unwrap_or("unknown").into());
                    if let Some(alpn) = alpn {
                        o.insert("alpn".into(), alpn.into());
                    }
                    if let Some(sni) = sni {
                        o.insert("sni".into(), sni.into());
                    }
                }
                let mut line = serde_json::Value::Object(o).to_string();
                line.push('\n');
                line
            }
            LogFormat::Text => {
                use std::fmt::Write as _;
                let mut line = format!("time={time}");
                if let Some(service) = self.service {
                    let _ = write!(line, " service={}", logfmt(service));
                }
                let _ = write!(
                    line,
                    " transport={} peer={} local={} duration_ms={duration_ms:.3} bytes_in={} bytes_out={} reason={}",
                    self.transport, self.peer, self.local, self.bytes_in, self.bytes_out, self.reason
                );
                if let Some((version, alpn, sni)) = tls {
                    let _ = write!(line, " tls={}", version.unwrap_or("unknown"));
                    if let Some(alpn) = alpn {
                        let _ = write!(line, " alpn={}", logfmt(alpn));
                    }
                    if let Some(sni) = sni {
                        let _ = write!(line, " sni={}", logfmt(sni));
                    }
                }
                line.push('\n');
                line
            }
        }
    }
}

/// A logfmt value: as is when it is a plain word, else quoted with JSON escapes (so a value
/// can neither break the line nor fake a field).
fn logfmt(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '=' && c != '\\');
    if plain {
        value.to_string()
    } else {
        serde_json::Value::from(value).to_string()
    }
}

/// `time` as `2026-12-02T14:51:07.123Z` (UTC, milliseconds).
fn rfc3339(time: SystemTime) -> String {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// The reason word of a [`LostReason`].
pub fn reason(r: LostReason) -> &'static str {
    match r {
        LostReason::Closed => "closed",
        LostReason::PeerClosed => "peer_closed",
        LostReason::IdleTimeout => "idle_timeout",
        LostReason::Shutdown => "shutdown",
        LostReason::ConnectFailed => "connect_failed",
        _ => "error",
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

impl Tally {
    /// The service it belongs to (a worker serving several names each listener's).
    pub fn set_service(&mut self, service: Arc<str>) {
        self.service = Some(service);
    }

    /// A stream over a Unix socket (`unix`), not TCP.
    pub fn set_transport(&mut self, transport: &'static str) {
        self.transport = transport;
    }

    /// The peer is someone else (a PROXY header named the client).
    pub fn set_peer(&mut self, peer: SocketAddr) {
        self.peer = peer;
    }

    /// Why it ended (the first reason set wins).
    pub fn set_reason(&mut self, reason: &'static str) {
        self.reason.get_or_insert(reason);
    }

    /// The finished handshake's details.
    pub fn set_tls(&mut self, tls: TlsSummary) {
        self.tls = Some(Box::new(tls));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(tls: Option<&TlsSummary>) -> Record<'_> {
        Record {
            service: None,
            transport: "tcp",
            peer: "127.0.0.1:5000".parse().unwrap(),
            local: "[::1]:8060".parse().unwrap(),
            duration: Duration::from_micros(12_345),
            bytes_in: 5,
            bytes_out: 7,
            reason: "closed",
            tls,
        }
    }

    fn at() -> SystemTime {
        // 2026-12-02T14:51:07.123Z
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_223_067_123)
    }

    #[test]
    fn text_is_one_logfmt_line() {
        assert_eq!(
            record(None).line(LogFormat::Text, at()),
            "time=2026-12-02T14:51:07.123Z transport=tcp peer=127.0.0.1:5000 local=[::1]:8060 duration_ms=12.345 bytes_in=5 bytes_out=7 reason=closed\n"
        );
        let tls = TlsSummary {
            version: Some("TLSv1.3"),
            alpn: Some("h2".into()),
            sni: Some("a b\n".into()),
        };
        let mut r = record(Some(&tls));
        r.service = Some("web");
        let line = r.line(LogFormat::Text, at());
        assert!(
            line.starts_with("time=2026-12-02T14:51:07.123Z service=web transport=tcp "),
            "{line}"
        );
        assert!(
            line.ends_with(" reason=closed tls=TLSv1.3 alpn=h2 sni=\"a b\\n\"\n"),
            "{line}"
        );
        assert_eq!(line.matches('\n').count(), 1);
    }

    #[test]
    fn json_is_one_object_per_line() {
        let tls = TlsSummary {
            version: Some("TLSv1.2"),
            alpn: None,
            sni: Some("example.com".into()),
        };
        let line = record(Some(&tls)).line(LogFormat::Json, at());
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["time"], "2026-12-02T14:51:07.123Z");
        assert_eq!(v["peer"], "127.0.0.1:5000");
        assert_eq!(v["local"], "[::1]:8060");
        assert_eq!(v["duration_ms"], 12.345);
        assert_eq!(v["bytes_in"], 5);
        assert_eq!(v["bytes_out"], 7);
        assert_eq!(v["reason"], "closed");
        assert_eq!(v["tls"], "TLSv1.2");
        assert_eq!(v["sni"], "example.com");
        assert!(v.get("alpn").is_none() && v.get("service").is_none());
    }

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // A leap day.
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn a_tally_counts_and_keeps_the_first_reason() {
        let mut t = Tally::new(
            "udp",
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        );
        t.count(3, 0);
        t.count(0, 4);
        t.set_reason("idle_timeout");
        t.set_reason("shutdown");
        let r = t.record();
        assert_eq!((r.bytes_in, r.bytes_out, r.reason), (3, 4, "idle_timeout"));
        assert_eq!(r.service, None);
        let mut named = Tally::new("tcp", r.peer, r.local);
        named.set_service("web".into());
        assert_eq!(named.record().reason, "shutdown");
        assert_eq!(named.record().service, Some("web"));
    }
}
