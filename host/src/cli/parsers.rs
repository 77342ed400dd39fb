//! Value parsers of flags whose checks clap does not have built in (their errors are
//! usage errors: exit 2).

use crate::bind::BindSpec;

pub(super) fn parse_metrics_bind(s: &str) -> Result<std::net::SocketAddr, String> {
    let spec = BindSpec::parse(s)?;
    if spec.transport != crate::bind::SocketKind::Tcp {
        return Err("the metrics endpoint is HTTP over TCP".to_string());
    }
    // Clap names the flag; the resolver's own message would name --bind.
    spec.resolve().map_err(|e| match e {
        crate::error::HostError::Resolve { reason, .. } => format!("cannot resolve: {reason}"),
        other => other.to_string(),
    })
}

/// A value parser for a whole number of at least `min` (seconds, counts), whose error says
/// so in words: with negative numbers allowed as values (see [`Cli`]), `--keep-alive -1`
/// reaches it, instead of `-1` being taken for an unknown flag.
pub(super) fn whole_number(
    min: u64,
) -> impl Fn(&str) -> Result<u64, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        s.parse::<u64>()
            .ok()
            .filter(|n| *n >= min)
            .ok_or_else(|| format!("expected a whole number, {min} or more"))
    }
}

pub(super) fn parse_plugin_opt(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}
