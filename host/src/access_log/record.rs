//! What one access log record holds ([`Tally`] while the connection is open, [`Record`]
//! when it ends) and its line, as logfmt text or JSON.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use plugin_api::LostReason;

use crate::logging::LogFormat;

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
    pub(super) fn record(&self) -> Record<'_> {
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
    let t = crate::civil_date::Utc::of(time);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second,
        t.subsec.as_millis()
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
