//! Unit tests through the sans-IO harness.

use super::*;
use plugin_api::testing::Harness;

#[test]
fn options_are_validated() {
    let err = |pairs: &[(&str, &str)]| Harness::<Chat>::with_options(pairs.iter().copied()).err();
    assert_eq!(
        err(&[("pings", "5")]).as_deref(),
        Some(
            r#"plugin chat: unknown option "pings" (accepted: max-line, max-subscriptions, ping, idle-timeout)"#
        )
    );
    assert_eq!(
        err(&[("ping", "soon")]).as_deref(),
        Some(r#"plugin chat: option ping: invalid value "soon": invalid digit found in string"#)
    );
    assert_eq!(
        err(&[("max-line", "0")]).as_deref(),
        Some("plugin chat: option max-line: must be between 1 and 1048576, got 0")
    );
    assert_eq!(
        err(&[("max-subscriptions", "0")]).as_deref(),
        Some("plugin chat: option max-subscriptions: must be at least 1")
    );
    let defaults = Harness::<Chat>::new();
    assert_eq!(
        defaults.protocol().config,
        Config {
            max_line: 4096,
            ping: None,
            idle_timeout: None
        }
    );
    let set = Harness::<Chat>::with_options([("ping", "30"), ("idle-timeout", "0")]).unwrap();
    assert_eq!(
        set.protocol().config,
        Config {
            max_line: 4096,
            ping: Some(Duration::from_secs(30)),
            idle_timeout: Some(None)
        }
    );
}
