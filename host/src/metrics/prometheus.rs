//! The Prometheus text exposition: each service's [`Counters`] (every row of
//! [`ROWS`], labelled `service="NAME"`) and the arbiter's own [`Supervision`] figures.

use std::fmt::Write as _;

use super::counters::{Counters, ROWS};
use crate::plugin::PluginId;

/// What the arbiter itself counts.
#[derive(Clone, Debug, Default)]
pub struct Supervision {
    pub workers: u64,
    pub worker_starts: u64,
    pub worker_exits: u64,
    pub worker_crashes: u64,
    pub worker_timeouts: u64,
    pub reloads_ok: u64,
    pub reloads_aborted: u64,
    /// The plugin each service of the current workers runs.
    pub plugins: Vec<PluginId>,
}

/// A metric family written out: name, kind, help, and its samples (labels, value).
type Family<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, u64)]);

/// The Prometheus text exposition of each service's counters `per_service` (labelled
/// `service="NAME"`, in the order of `services`) and of `s`.
pub fn render(services: &[&str], per_service: &[Counters], s: &Supervision) -> String {
    let mut out = String::with_capacity(2048 * services.len().max(1));
    let header = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    // A family is a run of rows with one metric name; one sample per service and row:
    // `{service="echo",reason="closed"}`.
    let mut first = 0;
    while first < ROWS.len() {
        let row = ROWS[first];
        let end = ROWS[first..]
            .iter()
            .position(|r| r.metric != row.metric)
            .map_or(ROWS.len(), |n| first + n);
        header(&mut out, row.metric, row.kind.name(), row.help);
        for (name, counters) in services.iter().zip(per_service) {
            let service = format!("service=\"{}\"", escape(name));
            for (i, r) in ROWS.iter().enumerate().take(end).skip(first) {
                let comma = if r.labels.is_empty() { "" } else { "," };
                let value = counters.row(i);
                let _ = writeln!(out, "{}{{{service}{comma}{}}} {value}", r.metric, r.labels);
            }
        }
        first = end;
    }
    let supervision: [Family; 4] = [
        (
            "sockhost_workers",
            "gauge",
            "Worker processes running.",
            &[("", s.workers)],
        ),
        (
            "sockhost_worker_starts_total",
            "counter",
            "Worker processes started.",
            &[("", s.worker_starts)],
        ),
        (
            "sockhost_worker_exits_total",
            "counter",
            "Worker processes that exited, by cause.",
            &[
                ("{cause=\"retired\"}", s.worker_exits),
                ("{cause=\"crashed\"}", s.worker_crashes),
                ("{cause=\"timeout\"}", s.worker_timeouts),
            ],
        ),
        (
            "sockhost_reloads_total",
            "counter",
            "Reloads (HUP), by result.",
            &[
                ("{result=\"ok\"}", s.reloads_ok),
                ("{result=\"aborted\"}", s.reloads_aborted),
            ],
        ),
    ];
    for (name, kind, help, samples) in supervision {
        header(&mut out, name, kind, help);
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    }
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
        let s = Supervision {
            workers: 2,
            plugins: vec![PluginId::new("echo", "0.1.0"), PluginId::new("kv", "0.2.0")],
            ..Default::default()
        };
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

    #[test]
    fn a_family_is_one_run_of_rows_with_one_help_and_kind() {
        for (i, row) in ROWS.iter().enumerate() {
            let same = |r: &&crate::metrics::counters::Row| r.metric == row.metric;
            let first = ROWS.iter().position(|r| same(&r)).unwrap();
            let count = ROWS.iter().filter(same).count();
            assert!(i < first + count, "{} is split in two runs", row.metric);
            let head = ROWS[first];
            assert_eq!(
                (head.help, head.kind),
                (row.help, row.kind),
                "{}",
                row.metric
            );
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
