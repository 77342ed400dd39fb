//! `--metrics-bind ADDR`: Prometheus metrics at `http://ADDR/metrics`, and health checks:
//! `/health` answers 200 while the process answers at all (liveness); `/ready` answers 200
//! while every worker slot serves and nothing is stopping, 503 otherwise (readiness: a load
//! balancer stops routing here while it starts, drains or is short of workers).
//!
//! The counters are declared once, as a table in [`counters`]; their names, the board's
//! layout, the aggregation and the Prometheus text ([`prometheus`]) all follow from it.
//! Workers count in plain cells on their own thread ([`WorkerMetrics`]: no atomics on the
//! connection path) and post a [`Counters`] snapshot with each heartbeat — to the arbiter's
//! shared-memory board in process mode. The arbiter adds up the live workers' snapshots and
//! the final ones of workers that have exited (so counters never go backwards), adds its
//! own supervision counters ([`Supervision`]) and serves the text from its poll loop
//! ([`Endpoint`]): still no async runtime and no plugin in the arbiter. Thread mode serves
//! the same text from its event loop.

mod counters;
mod endpoint;
mod prometheus;

pub use counters::{bump, Counter, Counters, SupervisionCounter, WorkerMetrics};
pub use endpoint::serve_async;
// The arbiter's: its board's layout and its poll loop's listener (process mode, Linux).
pub use prometheus::{render, PluginId, Supervision};
#[cfg(target_os = "linux")]
pub use {counters::COUNTERS, endpoint::Endpoint};
