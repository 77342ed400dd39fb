//! The one declaration of every counter: [`counters!`]'s two tables below, a worker's
//! per-service counters and the arbiter's supervision figures. Everything else is derived
//! from them: the [`Counter`] and [`SupervisionCounter`] names the code counts with, the
//! [`Counters`] snapshot and its board layout (`[u64; COUNTERS]`, in table order), the
//! aggregation ([`Counters::add`], [`Counters::without_gauges`]), the arbiter's
//! [`SupervisionCounters`] and the Prometheus text ([`super::prometheus`]). **Adding a
//! counter is one row here plus its use** (`metrics.bump(Counter::New, 1)` in a worker,
//! `self.supervision[SupervisionCounter::New] += 1` in the arbiter's supervisor).

use std::cell::Cell;

use plugin_api::LostReason;

/// What kind of Prometheus metric a row is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up; survives its worker (an exited worker's count is kept).
    Counter,
    /// A level now; an exited worker's is dropped.
    Gauge,
}

impl Kind {
    /// The `# TYPE` word.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// One row of a table: a sample of a Prometheus metric. Consecutive rows with the same
/// `metric` are one metric family with several label sets (they share `help` and `kind`).
#[derive(Clone, Copy, Debug)]
pub struct Row {
    pub metric: &'static str,
    pub kind: Kind,
    /// Labels besides `service` (`reason="closed"`), or empty.
    pub labels: &'static str,
    pub help: &'static str,
}

/// Declares, from one table, the enum `$name` of its counters (each one's value is its
/// index), the rows `$rows` in table (layout and exposition) order, and `$values`: one
/// value per row, indexed by `$name`. Each row is `Name: kind "metric" "labels" "help";`.
macro_rules! counters {
    (
        $(#[$doc:meta])* enum $enum:ident;
        $(#[$values_doc:meta])* struct $values:ident;
        const $rows:ident;
        $($name:ident: $kind:ident $metric:literal $labels:literal $help:literal;)*
    ) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $enum {
            $($name,)*
        }

        #[doc = concat!("Every row of [`", stringify!($enum), "`], in layout (and exposition) order.")]
        pub const $rows: &[Row] = &[
            $(Row { metric: $metric, kind: Kind::$kind, labels: $labels, help: $help },)*
        ];

        $(#[$values_doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct $values([u64; $rows.len()]);

        impl Default for $values {
            fn default() -> Self {
                $values([0; $rows.len()])
            }
        }

        impl std::ops::Index<$enum> for $values {
            type Output = u64;
            fn index(&self, c: $enum) -> &u64 {
                &self.0[c as usize]
            }
        }

        impl std::ops::IndexMut<$enum> for $values {
            fn index_mut(&mut self, c: $enum) -> &mut u64 {
                &mut self.0[c as usize]
            }
        }

        impl $values {
            #[doc = concat!("Every value, in [`", stringify!($rows), "`] order.")]
            pub fn values(&self) -> &[u64] {
                &self.0
            }
        }
    };
}

counters! {
    /// A worker's counter (or gauge), by name; its value is the index in the layout.
    enum Counter;
    /// One worker's figures for one service (counters, plus the gauges), in [`ROWS`] order.
    struct Counters;
    const ROWS;
    Accepted: Counter "sockhost_connections_accepted_total" "" "Connections accepted (TCP and Unix).";
    Open: Gauge "sockhost_connections_open" "" "Connections open now.";
    ClosedClosed: Counter "sockhost_connections_closed_total" r#"reason="closed""# "Connections closed, by reason.";
    ClosedPeerClosed: Counter "sockhost_connections_closed_total" r#"reason="peer_closed""# "Connections closed, by reason.";
    ClosedIdleTimeout: Counter "sockhost_connections_closed_total" r#"reason="idle_timeout""# "Connections closed, by reason.";
    ClosedError: Counter "sockhost_connections_closed_total" r#"reason="error""# "Connections closed, by reason.";
    ClosedShutdown: Counter "sockhost_connections_closed_total" r#"reason="shutdown""# "Connections closed, by reason.";
    BytesIn: Counter "sockhost_received_bytes_total" "" "Bytes received from peers (after TLS).";
    BytesOut: Counter "sockhost_sent_bytes_total" "" "Bytes sent to peers (before TLS).";
    UdpSessionsOpen: Gauge "sockhost_udp_sessions_open" "" "UDP peer sessions open now.";
    UdpSessions: Counter "sockhost_udp_sessions_total" "" "UDP peer sessions started.";
    UdpEvicted: Counter "sockhost_udp_sessions_evicted_total" "" "UDP sessions evicted at --max-sessions.";
    TlsHandshakeFailures: Counter "sockhost_tls_handshake_failures_total" "" "TLS handshakes that failed or timed out.";
    OutputLimitCloses: Counter "sockhost_output_limit_closes_total" "" "Connections closed for unsent output above --max-pending or past --send-timeout.";
    OutboundConnects: Counter "sockhost_outbound_connections_total" r#"result="attempted""# "Outbound connections plugins opened, by result.";
    OutboundFailures: Counter "sockhost_outbound_connections_total" r#"result="failed""# "Outbound connections plugins opened, by result.";
    ProxyRefused: Counter "sockhost_proxy_protocol_refused_total" "" "Connections closed because they came from outside --proxy-protocol-from.";
    PluginPanics: Counter "sockhost_plugin_panics_total" "" "Panics caught at the plugin boundary.";
}

counters! {
    /// What the arbiter itself counts (no `service` label; thread mode has `Workers` only).
    enum SupervisionCounter;
    /// The arbiter's figures, in [`SUPERVISION_ROWS`] order.
    struct SupervisionCounters;
    const SUPERVISION_ROWS;
    Workers: Gauge "sockhost_workers" "" "Worker processes running.";
    WorkerStarts: Counter "sockhost_worker_starts_total" "" "Worker processes started.";
    WorkerExitsRetired: Counter "sockhost_worker_exits_total" r#"cause="retired""# "Worker processes that exited, by cause.";
    WorkerExitsCrashed: Counter "sockhost_worker_exits_total" r#"cause="crashed""# "Worker processes that exited, by cause.";
    WorkerExitsTimeout: Counter "sockhost_worker_exits_total" r#"cause="timeout""# "Worker processes that exited, by cause.";
    ReloadsOk: Counter "sockhost_reloads_total" r#"result="ok""# "Reloads (HUP), by result.";
    ReloadsAborted: Counter "sockhost_reloads_total" r#"result="aborted""# "Reloads (HUP), by result.";
}

/// Number of values in a [`Counters`] snapshot (the board's row length).
pub const COUNTERS: usize = ROWS.len();

impl Counter {
    /// The counter of connections (or UDP sessions) that ended for `reason`: the
    /// `Closed*` rows are in [`LostReason::code`] order; a failed outbound connect counts
    /// as an error.
    pub fn closed(reason: LostReason) -> Counter {
        const BY_CODE: [Counter; 5] = [
            Counter::ClosedClosed,
            Counter::ClosedPeerClosed,
            Counter::ClosedIdleTimeout,
            Counter::ClosedError,
            Counter::ClosedShutdown,
        ];
        BY_CODE
            .get(usize::from(reason.code()))
            .copied()
            .unwrap_or(Counter::ClosedError)
    }
}

impl Counters {
    /// As a flat array (the board's layout).
    pub fn to_array(self) -> [u64; COUNTERS] {
        self.0
    }

    /// From [`Counters::to_array`]'s layout.
    pub fn from_array(a: [u64; COUNTERS]) -> Counters {
        Counters(a)
    }

    /// Element-wise sum.
    pub fn add(self, other: Counters) -> Counters {
        Counters(std::array::from_fn(|i| self.0[i] + other.0[i]))
    }

    /// The same figures with the gauges zeroed (what an exited worker leaves behind).
    pub fn without_gauges(self) -> Counters {
        Counters(std::array::from_fn(|i| match ROWS[i].kind {
            Kind::Counter => self.0[i],
            Kind::Gauge => 0,
        }))
    }
}

/// The counting side of one service, owned by one worker's event loop: plain cells on its
/// own thread, no atomics on the connection path. ([`Counter::Open`] is not counted here:
/// the connection registry knows it, see [`WorkerMetrics::snapshot`].)
pub struct WorkerMetrics([Cell<u64>; COUNTERS]);

impl Default for WorkerMetrics {
    fn default() -> Self {
        WorkerMetrics(std::array::from_fn(|_| Cell::new(0)))
    }
}

/// Add `n` to a counter cell.
#[inline]
pub fn bump(cell: &Cell<u64>, n: u64) {
    cell.set(cell.get().wrapping_add(n));
}

impl WorkerMetrics {
    /// Add `n` to counter `c`.
    #[inline]
    pub fn bump(&self, c: Counter, n: u64) {
        bump(self.cell(c), n);
    }

    /// Take one from gauge `c` (never below zero).
    #[inline]
    pub fn lower(&self, c: Counter) {
        let cell = self.cell(c);
        cell.set(cell.get().saturating_sub(1));
    }

    /// Counter `c`'s cell (for code that is handed a cell to count in).
    #[inline]
    pub fn cell(&self, c: Counter) -> &Cell<u64> {
        &self.0[c as usize]
    }

    /// A connection (or UDP session) ended for `reason`.
    pub fn closed(&self, reason: LostReason) {
        self.bump(Counter::closed(reason), 1);
    }

    /// A snapshot, with the number of open connections.
    pub fn snapshot(&self, open: usize) -> Counters {
        let mut c = Counters(std::array::from_fn(|i| self.0[i].get()));
        c[Counter::Open] = open as u64;
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_round_trip_through_the_board_layout() {
        let c = Counters::from_array(std::array::from_fn(|i| i as u64 + 1));
        assert_eq!(Counters::from_array(c.to_array()), c);
        assert_eq!(c.add(c)[Counter::Accepted], 2);
        assert_eq!(c.without_gauges()[Counter::Open], 0);
        assert_eq!(c.without_gauges()[Counter::UdpSessionsOpen], 0);
        assert_eq!(c.without_gauges()[Counter::Accepted], 1);
    }

    #[test]
    fn each_reason_lands_in_its_own_row() {
        for (reason, label) in [
            (LostReason::Closed, "closed"),
            (LostReason::PeerClosed, "peer_closed"),
            (LostReason::IdleTimeout, "idle_timeout"),
            (LostReason::Error, "error"),
            (LostReason::Shutdown, "shutdown"),
        ] {
            let row = ROWS[Counter::closed(reason) as usize];
            assert_eq!(row.labels, format!("reason=\"{label}\""));
        }
        assert_eq!(
            Counter::closed(LostReason::ConnectFailed),
            Counter::ClosedError
        );
    }

    #[test]
    fn a_snapshot_takes_open_from_the_registry() {
        let m = WorkerMetrics::default();
        m.bump(Counter::Accepted, 3);
        m.closed(LostReason::IdleTimeout);
        let c = m.snapshot(2);
        assert_eq!(c[Counter::Accepted], 3);
        assert_eq!(c[Counter::ClosedIdleTimeout], 1);
        assert_eq!(c[Counter::Open], 2);
    }
}
