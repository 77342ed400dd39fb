//! Unit tests through the sans-IO harness.

use super::*;
use plugin_api::testing::Harness;

#[test]
fn options_are_validated() {
    let err = |pairs: &[(&str, &str)]| Harness::<Statsd>::with_options(pairs.iter().copied()).err();
    let backend = ("backend", "127.0.0.1:2003");
    assert_eq!(
        err(&[]).as_deref(),
        Some("plugin statsd: option backend: required: HOST:PORT of a Graphite plaintext receiver")
    );
    assert_eq!(
        err(&[("backend", "graphite")]).as_deref(),
        Some(r#"plugin statsd: option backend: "graphite" is not HOST:PORT (e.g. 127.0.0.1:2003)"#)
    );
    assert_eq!(
        err(&[backend, ("flush-interval", "0")]).as_deref(),
        Some("plugin statsd: option flush-interval: must be between 0.1 and 86400 seconds, got 0")
    );
    assert_eq!(
        err(&[backend, ("prefix", "a b")]).as_deref(),
        Some(
            r#"plugin statsd: option prefix: "a b" may hold only ASCII letters, digits, '_', '-' and '.'"#
        )
    );
    assert_eq!(
        err(&[backend, ("max-queued-flushes", "0")]).as_deref(),
        Some("plugin statsd: option max-queued-flushes: must be at least 1")
    );
    let s = Harness::<Statsd>::with_options([backend]).unwrap();
    assert_eq!(s.protocol().interval, Duration::from_secs(10));
    assert_eq!(s.protocol().prefix, "stats");
    let s = Harness::<Statsd>::with_options([
        ("backend", "graphite.example:2003"),
        ("flush-interval", "0.5"),
        ("prefix", ""),
    ])
    .unwrap();
    assert_eq!(s.protocol().interval, Duration::from_millis(500));
    assert_eq!(s.protocol().prefix, "");
}
