//! The statsd plugin: a statsd aggregator over UDP that flushes to a Graphite plaintext
//! backend, and a worked example of the host services a plugin needs to *act on its own* —
//! the periodic [`Protocol::tick`], an outbound connection ([`services::connect`]) and the
//! stop hook ([`Protocol::stopping`]).
//!
//! Built as `libstatsd.so`:
//!
//! ```text
//! sockhost --plugin target/release/libstatsd.so --concurrency thread --bind udp://127.0.0.1:8125 \
//!     --plugin-opt backend=127.0.0.1:2003 --plugin-opt flush-interval=10
//! echo 'page.views:1|c' | nc -u -w0 127.0.0.1 8125
//! # ten seconds later, Graphite (port 2003) receives:
//! stats.counters.page.views 1 1767225600
//! stats.statsd.lines 1 1767225600
//! stats.statsd.bad_lines 0 1767225600
//! stats.statsd.dropped_lines 0 1767225600
//! ```
//!
//! # Input
//!
//! Datagrams of statsd lines (`name:value|type[|@rate]`, several per datagram separated by
//! `\n`): counters (`c`, with sample rates), gauges (`g`, with `+`/`-` deltas), sets (`s`)
//! and timers (`ms`, with sample rates) — see the [`metric`] module. Bad lines are ignored,
//! counted (`statsd.bad_lines` in the next flush) and, once per flush interval, logged as a
//! warning showing the first of them. Any peer may send; every peer's lines go into the
//! worker's one aggregate.
//!
//! # Output
//!
//! Every `flush-interval` the worker's tick renders the interval as Graphite plaintext
//! lines `prefix.name value timestamp` — see the [`aggregate`] module for the names, the
//! percentiles and what is sent for a quiet interval (the `statsd.*` lines always, so a
//! server that receives nothing still flushes on time, and gauges) — and hands the flush to
//! the [`backend`] module: over one outbound TCP connection, queued while the backend is
//! unreachable (the newest `max-queued-flushes` are kept), reconnected with back-off. When
//! the worker stops (`TERM`, a reload, `--max-requests`) the interval so far is flushed
//! once more and the connection closed after it, so the host's graceful stop does not wait.
//!
//! **One aggregate per worker.** Each worker process aggregates what it receives and sends
//! it under the same names: Graphite keeps the last value written for a name and timestamp,
//! not the sum. Run statsd with `--concurrency thread` or `--workers 1`.
//!
//! # Options
//!
//! * `backend` (required): `HOST:PORT` of the Graphite plaintext receiver (carbon's port
//!   2003); a host name is resolved (off the worker's loop) at each connection attempt.
//! * `flush-interval` (seconds, default 10; fractions allowed, at least 0.1).
//! * `prefix` (default `stats`): the first component of every name; empty for none.
//! * `max-queued-flushes` (default 60): flushes kept while the backend is unreachable.
//! * `max-metrics` (default 10000) and `max-samples` (default 1000): the memory bounds of
//!   the aggregate (see [`aggregate`]). With the defaults a worker holds at most about
//!   10000 × 1000 × 8 bytes of samples (80 MB) in the worst case, plus
//!   `max-queued-flushes` rendered flushes.
//!
//! [`services::connect`]: plugin_api::services::connect

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use plugin_api::{
    ConnInfo, Consumer, OptionSpec, Options, Output, PluginInfo, Protocol, Transports,
};

pub mod aggregate;
pub mod backend;
pub mod metric;

use aggregate::{Aggregate, Flush, Limits};
use backend::{Backend, Shipper};

/// One worker's aggregator.
pub struct Statsd {
    aggregate: Rc<RefCell<Aggregate>>,
    backend: Backend,
    prefix: String,
    interval: Duration,
}

impl Statsd {
    /// Take the interval out as a flush stamped now, and warn about its bad lines.
    fn take_flush(&self) -> Flush {
        let mut aggregate = self.aggregate.borrow_mut();
        if let (n @ 1.., Some((line, why))) = aggregate.bad_lines() {
            log::warn!("{n} bad lines ignored in the last interval; the first: {line:?} ({why})");
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        aggregate.flush(&self.prefix, now)
    }
}

impl Protocol for Statsd {
    type Consumer = Sender;

    const INFO: PluginInfo = PluginInfo::new(
        "statsd",
        env!("CARGO_PKG_VERSION"),
        "statsd aggregator (counters, gauges, sets, timers) flushing to Graphite over TCP",
    )
    .services()
    .transports(Transports::UDP)
    .options(&[
        OptionSpec::new(
            "backend",
            "HOST:PORT of the Graphite plaintext receiver (required)",
        ),
        OptionSpec::new("flush-interval", "seconds between flushes").default_value("10"),
        OptionSpec::new(
            "prefix",
            "first component of every metric name; empty for none",
        )
        .default_value("stats"),
        OptionSpec::new(
            "max-queued-flushes",
            "flushes kept while the backend is unreachable (the oldest is dropped past it)",
        )
        .default_value("60"),
        OptionSpec::new("max-metrics", "metric names held at most").default_value("10000"),
        OptionSpec::new(
            "max-samples",
            "values kept per timer (for percentiles) and per set, per interval",
        )
        .default_value("1000"),
    ]);

    fn new(options: &Options) -> Result<Self, String> {
        let backend = options
            .get("backend")
            .ok_or("option backend: required: HOST:PORT of a Graphite plaintext receiver")?;
        match backend.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
            _ => {
                return Err(format!(
                    "option backend: {backend:?} is not HOST:PORT (e.g. 127.0.0.1:2003)"
                ))
            }
        }
        let seconds: f64 = options.parse("flush-interval")?.unwrap_or(10.0);
        if !(0.1..=86400.0).contains(&seconds) {
            return Err(format!(
                "option flush-interval: must be between 0.1 and 86400 seconds, got {seconds}"
            ));
        }
        let interval = Duration::from_secs_f64(seconds);
        let prefix = options.get("prefix").unwrap_or("stats").to_string();
        if metric::clean_name(prefix.as_bytes()) != prefix {
            return Err(format!(
                "option prefix: {prefix:?} may hold only ASCII letters, digits, '_', '-' and '.'"
            ));
        }
        let at_least_one = |key: &str| -> Result<usize, String> {
            match options.parse::<usize>(key)? {
                Some(0) => Err(format!("option {key}: must be at least 1")),
                n => Ok(n.unwrap_or_default()),
            }
        };
        let max_queued = at_least_one("max-queued-flushes")?;
        let limits = Limits {
            max_metrics: at_least_one("max-metrics")?,
            max_samples: at_least_one("max-samples")?,
        };
        let max_backoff = (backend::MAX_BACKOFF.as_secs_f64() / seconds).ceil() as u64;
        log::info!(
            "statsd ready: flushing every {seconds}s to {backend} (prefix {prefix:?}, up to {max_queued} flushes queued)"
        );
        Ok(Statsd {
            aggregate: Rc::new(RefCell::new(Aggregate::new(limits))),
            backend: Backend::new(backend, Shipper::new(max_queued, max_backoff)),
            prefix,
            interval,
        })
    }

    fn consumer(&self, _info: &ConnInfo) -> Sender {
        Sender {
            aggregate: self.aggregate.clone(),
        }
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(self.interval)
    }

    fn tick(&self) {
        if self.backend.is_stopping() {
            return;
        }
        let flush = self.take_flush();
        self.backend.ship(flush);
    }

    fn serving(&self) {
        self.backend.start();
    }

    fn stopping(&self) {
        if self.backend.is_stopping() {
            return;
        }
        let flush = self.take_flush();
        log::info!("stopping: final flush");
        self.backend.stop(flush);
    }
}

/// One UDP peer: its datagrams go into the worker's aggregate.
pub struct Sender {
    aggregate: Rc<RefCell<Aggregate>>,
}

impl Consumer for Sender {
    fn data_received(&mut self, data: &[u8], _out: &mut Output) {
        self.aggregate.borrow_mut().ingest(data);
        log::trace!("datagram of {} bytes aggregated", data.len());
    }
}

plugin_api::export_plugin!(Statsd);

#[cfg(test)]
mod tests;
