//! A tiny hand-written flag parser, so the load generator needs no dependency but tokio.
//!
//! Flags are `--name VALUE`, `--name=VALUE`, or bare switches (`--json`). Each mode takes
//! the flags it knows with [`Flags::take`] / [`Flags::switch`] and then calls
//! [`Flags::finish`], which rejects anything left over, so a typo is an error rather than
//! a silently ignored setting.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;
use std::time::Duration;

/// Flags that never take a value.
const SWITCHES: &[&str] = &["json", "no-probe", "help", "tls", "http", "resume"];

/// The command line after the mode: flag name (without `--`) to its value.
pub struct Flags {
    values: BTreeMap<String, String>,
    switches: BTreeMap<String, ()>,
}

impl Flags {
    /// Split `args` into the mode (first bare word, or `--mode X`) and the flags.
    pub fn parse(
        args: impl IntoIterator<Item = String>,
    ) -> Result<(Option<String>, Flags), String> {
        let mut flags = Flags {
            values: BTreeMap::new(),
            switches: BTreeMap::new(),
        };
        let mut mode = None;
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            let Some(name) = arg.strip_prefix("--") else {
                if mode.is_none() {
                    mode = Some(arg);
                    continue;
                }
                return Err(format!("unexpected argument {arg:?}"));
            };
            let (name, inline) = match name.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (name.to_string(), None),
            };
            if SWITCHES.contains(&name.as_str()) {
                if inline.is_some() {
                    return Err(format!("--{name} takes no value"));
                }
                flags.switches.insert(name, ());
                continue;
            }
            let value = match inline {
                Some(v) => v,
                None => it.next().ok_or_else(|| format!("--{name} needs a value"))?,
            };
            if name == "mode" {
                if mode.replace(value).is_some() {
                    return Err("the mode is given twice".into());
                }
                continue;
            }
            if flags.values.insert(name.clone(), value).is_some() {
                return Err(format!("--{name} is given twice"));
            }
        }
        Ok((mode, flags))
    }

    /// Whether the switch `--name` was given.
    pub fn switch(&mut self, name: &str) -> bool {
        self.switches.remove(name).is_some()
    }

    /// The value of `--name` parsed as `T`, or `default` when absent.
    pub fn take<T: FromStr>(&mut self, name: &str, default: T) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        match self.values.remove(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e| format!("--{name} {v}: {e}")),
        }
    }

    /// A count that must be at least 1.
    pub fn count(&mut self, name: &str, default: usize) -> Result<usize, String> {
        let n = self.take(name, default)?;
        if n == 0 {
            return Err(format!("--{name} must be at least 1"));
        }
        Ok(n)
    }

    /// A duration in (possibly fractional) seconds; `positive` rejects 0.
    pub fn seconds(
        &mut self,
        name: &str,
        default: f64,
        positive: bool,
    ) -> Result<Duration, String> {
        let s: f64 = self.take(name, default)?;
        if !s.is_finite() || s < 0.0 || (positive && s == 0.0) || s > 86_400.0 {
            return Err(format!("--{name} {s}: out of range"));
        }
        Ok(Duration::from_secs_f64(s))
    }

    /// The value of `--name` as given, without taking it.
    pub fn peek(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// The required `--addr`, which must resolve to a loopback address: the load generator
    /// refuses to send traffic anywhere else. Accepts `tcp://HOST:PORT` and `udp://HOST:PORT`
    /// as sockhost prints them, and `redis://HOST:PORT` (fanout's redis protocol).
    pub fn addr(&mut self) -> Result<SocketAddr, String> {
        let raw = self
            .values
            .remove("addr")
            .ok_or("--addr HOST:PORT is required")?;
        let text = raw
            .strip_prefix("tcp://")
            .or_else(|| raw.strip_prefix("udp://"))
            .or_else(|| raw.strip_prefix("redis://"))
            .unwrap_or(&raw);
        let addr = text
            .to_socket_addrs()
            .map_err(|e| format!("--addr {raw}: {e}"))?
            .next()
            .ok_or_else(|| format!("--addr {raw}: no address"))?;
        if !addr.ip().is_loopback() {
            return Err(format!(
                "--addr {raw}: {} is not a loopback address; loadgen only targets loopback",
                addr.ip()
            ));
        }
        Ok(addr)
    }

    /// Reject any flag no one took.
    pub fn finish(self) -> Result<(), String> {
        let left: Vec<String> = self
            .values
            .keys()
            .chain(self.switches.keys())
            .map(|k| format!("--{k}"))
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("unknown or misplaced flag(s): {}", left.join(" ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> (Option<String>, Flags) {
        Flags::parse(s.split_whitespace().map(String::from)).unwrap()
    }

    #[test]
    fn modes_values_and_switches() {
        let (mode, mut f) = parse("echo --addr 127.0.0.1:9 --size=128 --json");
        assert_eq!(mode.as_deref(), Some("echo"));
        assert_eq!(f.take("size", 64usize).unwrap(), 128);
        assert_eq!(f.take("depth", 1usize).unwrap(), 1);
        assert!(f.switch("json"));
        assert_eq!(f.addr().unwrap().port(), 9);
        f.finish().unwrap();

        let (mode, f) = parse("--mode idle --hold 3");
        assert_eq!(mode.as_deref(), Some("idle"));
        assert!(f.finish().is_err(), "--hold was never taken");
    }

    #[test]
    fn refuses_non_loopback() {
        let (_, mut f) = parse("echo --addr 192.0.2.1:80");
        assert!(f.addr().is_err());
        let (_, mut f) = parse("echo --addr tcp://[::1]:80");
        assert!(f.addr().is_ok());
    }
}
