//! The proxy plugin: a layer-4 (TCP) forwarder built on the host's outbound connections.
//!
//! ```text
//! sockhost --plugin target/release/libproxy.so --bind :6379 \
//!     --plugin-opt upstream=10.0.0.11:6379 --plugin-opt upstream=10.0.0.12:6379 \
//!     --plugin-opt balance=least-conn --plugin-opt send-proxy=v2
//! ```
//!
//! Every client connection gets one upstream connection; bytes are relayed both ways
//! unchanged, with flow control and half-close (see [`tunnel`]). What the host already does
//! applies in front: TLS termination (`--cert-file`: TLS to the client, plain to the
//! upstream), `--proxy-protocol` (the client address it reads is the one this plugin passes
//! on with `send-proxy`), `--max-connections`, `--keep-alive` (a tunnel with no byte either
//! way for that long is closed; set it to the longest silence your protocol has, or 0),
//! graceful stop and reload.
//!
//! # Options
//!
//! | option | default | |
//! |---|---|---|
//! | `upstream=HOST:PORT` | — | repeatable, at least one; names are resolved once, at start-up |
//! | `balance` | `round-robin` | or `least-conn` (fewest open connections from this worker) |
//! | `connect-timeout` | `3s` | per attempt; `500ms`, `3s`, `1m`, or a bare number of milliseconds |
//! | `retries` | `2` | other upstreams tried after a failed connect, before the client is closed |
//! | `fail-threshold` | `3` | failed connects in a row that make an upstream *down* |
//! | `cooldown` | `10s` | how long a down upstream is skipped; then one client tries it |
//! | `send-proxy` | none | `v1` or `v2`: a PROXY protocol header first on every upstream connection |
//! | `stats-interval` | `60s` | how often changed counters are logged; `0`: only at stop |
//!
//! # Logs (the host has no metrics API for plugins)
//!
//! - `upstream NAME down: N connects in a row failed; skipped for …` (warning), once per
//!   outage, and `upstream NAME back up: connected after … s down` when a connect succeeds
//!   again.
//! - `client ADDR closed: every upstream is down …` / `… no upstream could be reached (tried
//!   …)` (warning, at most one a second, with a count of the ones held back).
//! - `upstream stats: upstream=NAME state=up active=N connects=N failures=N bytes_up=N
//!   bytes_down=N` (info), every `stats-interval` for the upstreams whose counters changed,
//!   and for all of them when the worker stops.
//!
//! Each worker process keeps its own pool: balancing, health and counters are per worker.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use plugin_api::{ConnInfo, Options, PluginInfo, Protocol};

pub mod config;
pub mod pool;
pub mod proxy_header;
pub mod tunnel;

#[cfg(test)]
mod tests;

use config::Config;
use pool::Pool;
use tunnel::{ClientSide, Shared, Throttle};

/// One worker's proxy: its settings and upstream pool.
pub struct Proxy {
    shared: Rc<Shared>,
    stats_interval: Option<Duration>,
}

impl Protocol for Proxy {
    type Consumer = ClientSide;

    const INFO: PluginInfo = PluginInfo::new(
        "proxy",
        env!("CARGO_PKG_VERSION"),
        "a layer-4 TCP proxy: balancing, retries, passive health checks, flow control, half-close, PROXY headers",
    )
    .options(config::OPTIONS)
    .services();

    fn new(options: &Options) -> Result<Self, String> {
        let config = Config::from_options(options)?;
        let upstreams: Vec<String> = config
            .upstreams
            .iter()
            .map(|u| {
                if u.name == u.addr.to_string() {
                    u.name.clone()
                } else {
                    format!("{} ({})", u.name, u.addr)
                }
            })
            .collect();
        log::info!(
            "proxying to {} ({}; connect timeout {:?}, {} retries; down after {} failed connects in a row, for {:?}; PROXY header: {})",
            upstreams.join(", "),
            config.balance,
            config.connect_timeout,
            config.retries,
            config.fail_threshold,
            config.cooldown,
            match config.send_proxy {
                None => "none",
                Some(proxy_header::Version::V1) => "v1",
                Some(proxy_header::Version::V2) => "v2",
            }
        );
        let pool = Pool::new(
            &config.upstreams,
            config.balance,
            config.fail_threshold,
            config.cooldown,
        );
        Ok(Proxy {
            shared: Rc::new(Shared {
                pool: RefCell::new(pool),
                targets: config
                    .upstreams
                    .iter()
                    .map(|u| u.addr.to_string())
                    .collect(),
                connect_timeout: config.connect_timeout,
                retries: config.retries,
                send_proxy: config.send_proxy,
                refusals: RefCell::new(Throttle::default()),
            }),
            stats_interval: config.stats_interval,
        })
    }

    fn consumer(&self, info: &ConnInfo) -> ClientSide {
        ClientSide::new(self.shared.clone(), info)
    }

    fn tick_interval(&self) -> Option<Duration> {
        self.stats_interval
    }

    fn tick(&self) {
        for line in self.shared.pool.borrow_mut().stats_lines(false) {
            log::info!("{line}");
        }
    }

    fn stopping(&self) {
        for line in self.shared.pool.borrow_mut().stats_lines(true) {
            log::info!("{line}");
        }
    }
}

plugin_api::export_plugin!(Proxy);
