//! The `--plugin-opt` keys, validated into a [`Config`] once per worker. Every refusal names
//! its key (`option retries: ...`), so the one `error:` line sockhost prints says what to fix.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use plugin_api::{OptionSpec, Options};

use crate::pool::Balance;
use crate::proxy_header::Version;

/// Upstreams per proxy at most: a client's tried upstreams are one `u64` bit set.
pub const MAX_UPSTREAMS: usize = 64;

/// The options, as `sockhost inspect libproxy.so` lists them.
pub const OPTIONS: &[OptionSpec] = &[
    OptionSpec::new(
        "upstream",
        "HOST:PORT of an upstream server; repeat the option for several (at least one); names are resolved once, at start-up",
    ),
    OptionSpec::new("balance", "round-robin or least-conn").default_value("round-robin"),
    OptionSpec::new(
        "connect-timeout",
        "how long one connect attempt may take (500ms, 3s, 1m; a bare number is milliseconds)",
    )
    .default_value("3s"),
    OptionSpec::new(
        "retries",
        "after a failed connect, try up to N other upstreams before closing the client",
    )
    .default_value("2"),
    OptionSpec::new(
        "fail-threshold",
        "failed connects in a row after which an upstream is down (skipped for the cool-down)",
    )
    .default_value("3"),
    OptionSpec::new(
        "cooldown",
        "how long a down upstream is skipped before one client is sent to try it again",
    )
    .default_value("10s"),
    OptionSpec::new(
        "send-proxy",
        "v1 or v2: start every upstream connection with a PROXY protocol header carrying the client's address (default: none)",
    ),
    OptionSpec::new(
        "stats-interval",
        "log each upstream's counters this often when they changed (0: only when the worker stops)",
    )
    .default_value("60s"),
];

/// One upstream as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamSpec {
    /// As given (`db.internal:6379`), for log lines.
    pub name: String,
    /// What the name resolved to at start-up; the connect target.
    pub addr: SocketAddr,
}

/// A worker's proxy settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// In the order given (round-robin follows it).
    pub upstreams: Vec<UpstreamSpec>,
    pub balance: Balance,
    pub connect_timeout: Duration,
    /// Further upstreams tried after a failed connect.
    pub retries: u32,
    /// Failed connects in a row that make an upstream down.
    pub fail_threshold: u32,
    /// How long a down upstream is skipped.
    pub cooldown: Duration,
    /// The PROXY header sent first on every upstream connection, if any.
    pub send_proxy: Option<Version>,
    /// How often counters are logged (`None`: only when the worker stops).
    pub stats_interval: Option<Duration>,
}

impl Config {
    /// Validate the options (and resolve the upstreams' names).
    pub fn from_options(options: &Options) -> Result<Config, String> {
        let mut upstreams = Vec::new();
        for (key, value) in options.iter() {
            if key == "upstream" {
                upstreams.push(resolve(value)?);
            }
        }
        if upstreams.is_empty() {
            return Err(
                "option upstream: at least one is needed (--plugin-opt upstream=HOST:PORT)".into(),
            );
        }
        if upstreams.len() > MAX_UPSTREAMS {
            return Err(format!(
                "option upstream: at most {MAX_UPSTREAMS} upstreams, got {}",
                upstreams.len()
            ));
        }
        let balance = match options.get("balance").unwrap_or("round-robin") {
            "round-robin" => Balance::RoundRobin,
            "least-conn" => Balance::LeastConn,
            other => {
                return Err(format!(
                    "option balance: expected round-robin or least-conn, got {other:?}"
                ))
            }
        };
        let connect_timeout = duration(options, "connect-timeout")?;
        if connect_timeout.is_zero() {
            return Err("option connect-timeout: must be more than 0".into());
        }
        let retries: u32 = options.parse("retries")?.unwrap_or(2);
        let fail_threshold: u32 = options.parse("fail-threshold")?.unwrap_or(3);
        if fail_threshold == 0 {
            return Err("option fail-threshold: must be at least 1".into());
        }
        let send_proxy = match options.get("send-proxy") {
            None | Some("none") => None,
            Some("v1") => Some(Version::V1),
            Some("v2") => Some(Version::V2),
            Some(other) => {
                return Err(format!(
                    "option send-proxy: expected v1, v2 or none, got {other:?}"
                ))
            }
        };
        let stats = duration(options, "stats-interval")?;
        Ok(Config {
            upstreams,
            balance,
            connect_timeout,
            retries,
            fail_threshold,
            cooldown: duration(options, "cooldown")?,
            send_proxy,
            stats_interval: (!stats.is_zero()).then_some(stats),
        })
    }
}

/// `HOST:PORT` → its first address.
fn resolve(value: &str) -> Result<UpstreamSpec, String> {
    let bad = |why: &str| format!("option upstream: {value:?}: {why}");
    let (host, port) = value
        .rsplit_once(':')
        .ok_or_else(|| bad("expected HOST:PORT, IP:PORT or [IPv6]:PORT"))?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad("expected HOST:PORT, IP:PORT or [IPv6]:PORT"));
    }
    let addr = value
        .to_socket_addrs()
        .map_err(|e| bad(&format!("cannot resolve: {e}")))?
        .next()
        .ok_or_else(|| bad("the name has no address"))?;
    Ok(UpstreamSpec {
        name: value.to_string(),
        addr,
    })
}

/// A duration option: `250ms`, `3s`, `2m`, or a bare number of milliseconds.
fn duration(options: &Options, key: &str) -> Result<Duration, String> {
    let value = options.get(key).unwrap_or("0");
    parse_duration(value).ok_or_else(|| {
        format!("option {key}: invalid duration {value:?} (examples: 500ms, 3s, 1m; a bare number is milliseconds)")
    })
}

fn parse_duration(value: &str) -> Option<Duration> {
    let (digits, unit_ms) = if let Some(n) = value.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = value.strip_suffix('s') {
        (n, 1_000)
    } else if let Some(n) = value.strip_suffix('m') {
        (n, 60_000)
    } else {
        (value, 1)
    };
    let n: u64 = digits.trim().parse().ok()?;
    // At most a day: anything longer is a typo, and it keeps the arithmetic small.
    let ms = n.checked_mul(unit_ms).filter(|&ms| ms <= 86_400_000)?;
    Some(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, String> {
        Config::from_options(&Options::new(OPTIONS, pairs.iter().copied()))
    }

    #[test]
    fn defaults_with_one_upstream() {
        let c = config(&[("upstream", "127.0.0.1:6379")]).unwrap();
        assert_eq!(c.upstreams.len(), 1);
        assert_eq!(c.upstreams[0].addr, "127.0.0.1:6379".parse().unwrap());
        assert_eq!(c.balance, Balance::RoundRobin);
        assert_eq!(c.connect_timeout, Duration::from_secs(3));
        assert_eq!(c.retries, 2);
        assert_eq!(c.fail_threshold, 3);
        assert_eq!(c.cooldown, Duration::from_secs(10));
        assert_eq!(c.send_proxy, None);
        assert_eq!(c.stats_interval, Some(Duration::from_secs(60)));
    }

    #[test]
    fn every_option_given() {
        let c = config(&[
            ("upstream", "127.0.0.1:1"),
            ("upstream", "[::1]:2"),
            ("upstream", "localhost:3"),
            ("balance", "least-conn"),
            ("connect-timeout", "250"),
            ("retries", "0"),
            ("fail-threshold", "1"),
            ("cooldown", "2m"),
            ("send-proxy", "v2"),
            ("stats-interval", "0"),
        ])
        .unwrap();
        let names: Vec<&str> = c.upstreams.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["127.0.0.1:1", "[::1]:2", "localhost:3"]);
        assert!(c.upstreams[2].addr.ip().is_loopback());
        assert_eq!(c.balance, Balance::LeastConn);
        assert_eq!(c.connect_timeout, Duration::from_millis(250));
        assert_eq!(c.retries, 0);
        assert_eq!(c.fail_threshold, 1);
        assert_eq!(c.cooldown, Duration::from_secs(120));
        assert_eq!(c.send_proxy, Some(Version::V2));
        assert_eq!(c.stats_interval, None);
    }

    #[test]
    fn refusals_name_the_option() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], "option upstream: at least one is needed"),
            (
                &[("upstream", "10.0.0.1")],
                "option upstream: \"10.0.0.1\": expected HOST:PORT",
            ),
            (
                &[("upstream", "a:b")],
                "option upstream: \"a:b\": expected HOST:PORT",
            ),
            (
                &[("upstream", "no-such-host.invalid:80")],
                "option upstream: \"no-such-host.invalid:80\": cannot resolve",
            ),
            (
                &[("upstream", "127.0.0.1:1"), ("balance", "random")],
                "option balance: expected round-robin or least-conn, got \"random\"",
            ),
            (
                &[("upstream", "127.0.0.1:1"), ("connect-timeout", "soon")],
                "option connect-timeout: invalid duration \"soon\"",
            ),
            (
                &[("upstream", "127.0.0.1:1"), ("connect-timeout", "0")],
                "option connect-timeout: must be more than 0",
            ),
            (
                &[("upstream", "127.0.0.1:1"), ("retries", "-1")],
                "option retries: invalid value \"-1\"",
            ),
            (
                &[("upstream", "127.0.0.1:1"), ("fail-threshold", "0")],
                "option fail-threshold: must be at least 1",
            ),
            (
                &[("upstream", "127.0.0.1:1"), ("send-proxy", "v3")],
                "option send-proxy: expected v1, v2 or none, got \"v3\"",
            ),
            (
                &[("upstream", "127.0.0.1:1"), ("cooldown", "100000m")],
                "option cooldown: invalid duration",
            ),
        ];
        for (pairs, want) in cases {
            let err = config(pairs).expect_err(want);
            assert!(err.starts_with(want), "{pairs:?}: {err}");
        }
        let many: Vec<(&str, &str)> = (0..65).map(|_| ("upstream", "127.0.0.1:1")).collect();
        assert_eq!(
            config(&many).unwrap_err(),
            "option upstream: at most 64 upstreams, got 65"
        );
    }

    #[test]
    fn durations() {
        for (text, ms) in [
            ("0", 0),
            ("15", 15),
            ("15ms", 15),
            ("2s", 2000),
            ("1m", 60_000),
        ] {
            assert_eq!(
                parse_duration(text),
                Some(Duration::from_millis(ms)),
                "{text}"
            );
        }
        for bad in ["", "s", "1h", "-1s", "1.5s", "2 days"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
