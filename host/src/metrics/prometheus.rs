//! The Prometheus text exposition: each service's [`Counters`] (every row of
//! [`ROWS`], labelled `service="NAME"`) and the arbiter's own [`Supervision`] figures
//! (every row of [`SUPERVISION_ROWS`]), from the same table-driven writer.

use std::fmt::Write as _;

use super::counters::{
    Counters, Row, SupervisionCounter, SupervisionCounters, ROWS, SUPERVISION_ROWS,
};

/// Which plugin a service runs: its declared name and version (the
/// `sockhost_plugin_info` labels, reported by each worker once it serves). Here, below
/// [`crate::plugin`] (which makes them), so that metrics need not depend on the plugin
/// boundary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginId {
    pub name: String,
    pub version: String,
}

impl PluginId {
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> PluginId {
        PluginId {
            name: name.into(),
            version: version.into(),
        }
    }
}

/// What the arbiter itself counts ([`SupervisionCounters`], a row each in the table of
/// [`super::counters`]), and the plugin each service runs.
#[derive(Clone, Debug, Default)]
pub struct Supervision {
    pub counters: SupervisionCounters,
    /// The plugin each service of the current workers runs.
    pub plugins: Vec<PluginId>,
}

impl std::ops::Index<SupervisionCounter> for Supervision {
    type Output = u64;
    fn index(&self, c: SupervisionCounter) -> &u64 {
        &self.counters[c]
    }
}

impl std::ops::IndexMut<SupervisionCounter> for Supervision {
    fn index_mut(&mut self, c: SupervisionCounter) -> &mut u64 {
        &mut self.counters[c]
    }
}

/// The Prometheus text exposition of each service's counters `per_service` (labelled
/// `service="NAME"`, in the order of `services`) and of `s`.
pub fn render(services: &[&str], per_service: &[Counters], s: &Supervision) -> String {
    let mut out = String::with_capacity(2048 * services.len().max(1));
    let labelled: Vec<(String, &[u64])> = services
        .iter()
        .zip(per_service)
        .map(|(name, counters)| (format!("service=\"{}\"", escape(name)), counters.values()))
        .collect();
    families(&mut out, ROWS, &labelled);
    families(
        &mut out,
        SUPERVISION_ROWS,
        &[(String::new(), s.counters.values())],
    );
    if !s.plugins.is_empty() {
        let name = "sockhost_plugin_info";
        header(&mut out, name, "gauge", "The plugin each service runs.");
        for (service, plugin) in services.iter().zip(&s.plugins) {
            let _ = writeln!(
                out,
                "{name}{{service=\"{}\",name=\"{}\",version=\"{}\"}} 1",
                escape(service),
                escape(&plugin.name),
                escape(&plugin.version)
            );
        }
    }
    out
}

/// Write `rows` as metric families: a family is a run of rows with one metric name, under
/// one header; one sample per set of `sets` and row, each set's labels first
/// (`{service="echo",reason="closed"}`; no braces when there are no labels at all).
fn families(out: &mut String, rows: &[Row], sets: &[(String, &[u64])]) {
    let mut first = 0;
    while first < rows.len() {
        let row = rows[first];
        let end = rows[first..]
            .iter()
            .position(|r| r.metric != row.metric)
            .map_or(rows.len(), |n| first + n);
        header(out, row.metric, row.kind.name(), row.help);
        for (set, values) in sets {
            for (r, value) in rows.iter().zip(values.iter()).take(end).skip(first) {
                let _ = match (set.is_empty(), r.labels.is_empty()) {
                    (true, true) => writeln!(out, "{} {value}", r.metric),
                    (false, true) => writeln!(out, "{}{{{set}}} {value}", r.metric),
                    (true, false) => writeln!(out, "{}{{{}}} {value}", r.metric, r.labels),
                    (false, false) => {
                        writeln!(out, "{}{{{set},{}}} {value}", r.metric, r.labels)
                    }
                };
            }
        }
        first = end;
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Counter;

    #[test]
    fn renders_prometheus_text() {
        let mut c = Counters::default();
        c[Counter::Accepted] = 5;
        c[Counter::ClosedClosed] = 1;
        c[Counter::ClosedIdleTimeout] = 2;
        let mut s = Supervision {
            plugins: vec![PluginId::new("echo", "0.1.0"), PluginId::new("kv", "0.2.0")],
            ..Default::default()
        };
        s[SupervisionCounter::Workers] = 2;
        let mut other = Counters::default();
        other[Counter::Accepted] = 7;
        let text = render(&["echo", "store"], &[c, other], &s);
        assert!(text.contains("# TYPE sockhost_connections_accepted_total counter\nsockhost_connections_accepted_total{service=\"echo\"} 5\nsockhost_connections_accepted_total{service=\"store\"} 7\n"), "{text}");
        assert!(text.contains(
            "sockhost_connections_closed_total{service=\"echo\",reason=\"idle_timeout\"} 2\n"
        ));
        assert!(text.contains(
            "sockhost_plugin_info{service=\"echo\",name=\"echo\",version=\"0.1.0\"} 1\n"
        ));
        assert!(text
            .contains("sockhost_plugin_info{service=\"store\",name=\"kv\",version=\"0.2.0\"} 1\n"));
        assert!(text.contains("sockhost_workers 2\n"));
    }

    /// The arbiter's figures, byte for byte (scrapers and dashboards read these names).
    #[test]
    fn renders_the_supervision_figures_exactly() {
        let mut s = Supervision {
            plugins: vec![PluginId::new("echo", "0.1.0")],
            ..Default::default()
        };
        // Distinct values, 2, 3, …, in exposition order.
        for (c, value) in [
            (SupervisionCounter::Workers, 2),
            (SupervisionCounter::WorkerStarts, 3),
            (SupervisionCounter::WorkerExitsRetired, 4),
            (SupervisionCounter::WorkerExitsCrashed, 5),
            (SupervisionCounter::WorkerExitsTimeout, 6),
            (SupervisionCounter::ReloadsOk, 7),
            (SupervisionCounter::ReloadsAborted, 8),
        ] {
            s[c] = value;
        }
        let text = render(&["a\"b"], &[Counters::default()], &s);
        let start = text.find("# HELP sockhost_workers ").expect(&text);
        assert_eq!(
            &text[start..],
            "# HELP sockhost_workers Worker processes running.\n\
             # TYPE sockhost_workers gauge\n\
             sockhost_workers 2\n\
             # HELP sockhost_worker_starts_total Worker processes started.\n\
             # TYPE sockhost_worker_starts_total counter\n\
             sockhost_worker_starts_total 3\n\
             # HELP sockhost_worker_exits_total Worker processes that exited, by cause.\n\
             # TYPE sockhost_worker_exits_total counter\n\
             sockhost_worker_exits_total{cause=\"retired\"} 4\n\
             sockhost_worker_exits_total{cause=\"crashed\"} 5\n\
             sockhost_worker_exits_total{cause=\"timeout\"} 6\n\
             # HELP sockhost_reloads_total Reloads (HUP), by result.\n\
             # TYPE sockhost_reloads_total counter\n\
             sockhost_reloads_total{result=\"ok\"} 7\n\
             sockhost_reloads_total{result=\"aborted\"} 8\n\
             # HELP sockhost_plugin_info The plugin each service runs.\n\
             # TYPE sockhost_plugin_info gauge\n\
             sockhost_plugin_info{service=\"a\\\"b\",name=\"echo\",version=\"0.1.0\"} 1\n"
        );
    }

    #[test]
    fn a_family_is_one_run_of_rows_with_one_help_and_kind() {
        for rows in [ROWS, SUPERVISION_ROWS] {
            for (i, row) in rows.iter().enumerate() {
                let same = |r: &&Row| r.metric == row.metric;
                let first = rows.iter().position(|r| same(&r)).unwrap();
                let count = rows.iter().filter(same).count();
                assert!(i < first + count, "{} is split in two runs", row.metric);
                let head = rows[first];
                assert_eq!(
                    (head.help, head.kind),
                    (row.help, row.kind),
                    "{}",
                    row.metric
                );
            }
        }
    }

    #[test]
    fn each_family_has_one_header() {
        let text = render(&["a"], &[Counters::default()], &Supervision::default());
        let closed = "# TYPE sockhost_connections_closed_total counter";
        assert_eq!(text.matches(closed).count(), 1, "{text}");
        assert_eq!(
            text.matches("sockhost_connections_closed_total{").count(),
            5
        );
    }
}
