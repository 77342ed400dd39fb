//! One flush interval's metrics, and their rendering as Graphite plaintext.
//!
//! Every datagram of the worker lands here ([`Aggregate::ingest`]); every flush interval the
//! tick takes the totals out as one [`Flush`] ([`Aggregate::flush`]) and starts over —
//! except gauges, which keep their value until changed (and are sent in every flush).
//!
//! What a flush holds, with `P` the prefix (`stats` by default; an empty prefix drops `P.`):
//!
//! | metric | lines |
//! |---|---|
//! | counter `name` | `P.counters.name` — the sum of the interval's values, each divided by its sample rate |
//! | gauge `name` | `P.gauges.name` — its value (in every flush, once set) |
//! | set `name` | `P.sets.name` — how many distinct values the interval saw |
//! | timer `name` | `P.timers.name.count` (Σ 1/rate), `.min`, `.max`, `.mean`, `.p50`, `.p90`, `.p99` |
//! | always | `P.statsd.lines` (good lines), `P.statsd.bad_lines`, `P.statsd.dropped_lines` in the interval |
//!
//! Counters, sets and timers that saw nothing in an interval are **not sent** (no zero
//! lines); the three `statsd.*` lines always are, so a quiet server's flush is never empty.
//!
//! Memory is bounded by two limits ([`Limits`]):
//! * `max_metrics` names are held at most (counters, sets and timers of the interval, and
//!   every gauge ever set); a line for a new name past it is dropped and counted in
//!   `statsd.dropped_lines`.
//! * `max_samples` values per timer and per set and interval. A timer keeps a uniform
//!   random sample of that many timings (reservoir sampling) for its percentiles, which are
//!   then estimates; its count, min, max and mean are always exact. A set counts distinct
//!   values exactly up to that many; a new value past it is dropped and counted.
//!
//! Percentiles are nearest-rank: `pN` is the smallest kept timing with at least N% of the
//! kept timings at or below it. Numbers are printed as Rust prints an `f64` (`3`, `2.5`,
//! `0.30000000000000004`).

use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::hash::Hasher;

use crate::metric::{self, Value};

/// The bounds on what one interval holds (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Names held at most.
    pub max_metrics: usize,
    /// Values kept per timer or set and interval.
    pub max_samples: usize,
}

/// One flush, rendered: Graphite plaintext lines `name value timestamp\n`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flush {
    /// Its timestamp (seconds since the Unix epoch), on every line.
    pub timestamp: u64,
    /// The lines.
    pub text: Vec<u8>,
}

/// One timer's interval.
#[derive(Debug)]
struct Timer {
    /// Σ 1/rate.
    count: f64,
    /// Timings seen (not weighted).
    seen: u64,
    sum: f64,
    min: f64,
    max: f64,
    /// A uniform sample of at most `max_samples` timings.
    kept: Vec<f64>,
}

/// What the interval saw, and the gauges.
#[derive(Debug)]
pub struct Aggregate {
    limits: Limits,
    counters: HashMap<String, f64>,
    gauges: HashMap<String, f64>,
    /// Distinct values by their 64-bit hash (8 bytes each, whatever a value's length).
    sets: HashMap<String, HashSet<u64>>,
    timers: HashMap<String, Timer>,
    lines: u64,
    bad_lines: u64,
    dropped_lines: u64,
    /// The interval's first bad line and why, for the warning at flush.
    first_bad: Option<(String, &'static str)>,
    /// State of the reservoir sampling's random numbers (xorshift: no dependency, and the
    /// same choices on every run).
    random: u64,
}

impl Aggregate {
    /// Nothing seen yet.
    pub fn new(limits: Limits) -> Aggregate {
        Aggregate {
            limits,
            counters: HashMap::new(),
            gauges: HashMap::new(),
            sets: HashMap::new(),
            timers: HashMap::new(),
            lines: 0,
            bad_lines: 0,
            dropped_lines: 0,
            first_bad: None,
            random: 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// One datagram: lines separated by `\n` (blank ones are skipped).
    pub fn ingest(&mut self, datagram: &[u8]) {
        for line in datagram.split(|&b| b == b'\n') {
            if line.trim_ascii().is_empty() {
                continue;
            }
            match metric::parse(line) {
                Ok(sample) => self.add(sample.name, sample.value),
                Err(bad) => {
                    self.bad_lines += 1;
                    if self.first_bad.is_none() {
                        let shown = &line[..line.len().min(80)];
                        self.first_bad = Some((String::from_utf8_lossy(shown).into(), bad.0));
                    }
                }
            }
        }
    }

    /// The bad lines of the interval so far, and the first of them with why.
    pub fn bad_lines(&self) -> (u64, Option<&(String, &'static str)>) {
        (self.bad_lines, self.first_bad.as_ref())
    }

    fn add(&mut self, name: String, value: Value<'_>) {
        let held = self.counters.len() + self.gauges.len() + self.sets.len() + self.timers.len();
        let room = held < self.limits.max_metrics;
        let kept = match value {
            Value::Counter(n) => upsert(&mut self.counters, name, room, || 0.0).map(|c| *c += n),
            Value::Gauge(n) => upsert(&mut self.gauges, name, room, || 0.0).map(|g| *g = n),
            Value::GaugeDelta(n) => upsert(&mut self.gauges, name, room, || 0.0).map(|g| *g += n),
            Value::Set(v) => {
                let max = self.limits.max_samples;
                upsert(&mut self.sets, name, room, HashSet::new).and_then(|set| {
                    let mut h = DefaultHasher::new();
                    h.write(v);
                    let h = h.finish();
                    (set.len() < max || set.contains(&h)).then(|| {
                        set.insert(h);
                    })
                })
            }
            Value::Timer { ms, weight } => {
                let max = self.limits.max_samples;
                let random = next_random(&mut self.random);
                upsert(&mut self.timers, name, room, || Timer {
                    count: 0.0,
                    seen: 0,
                    sum: 0.0,
                    min: f64::INFINITY,
                    max: f64::NEG_INFINITY,
                    kept: Vec::new(),
                })
                .map(|t| t.add(ms, weight, max, random))
            }
        };
        match kept {
            Some(()) => self.lines += 1,
            None => self.dropped_lines += 1,
        }
    }

    /// Take the interval out as Graphite lines stamped `timestamp`, under `prefix`, and
    /// start the next interval (gauges stay).
    pub fn flush(&mut self, prefix: &str, timestamp: u64) -> Flush {
        let mut out = Lines {
            text: String::new(),
            prefix,
            timestamp,
        };
        for (name, value) in sorted(std::mem::take(&mut self.counters)) {
            out.line("counters.", &name, "", value);
        }
        for (name, value) in sorted(self.gauges.iter().map(|(k, v)| (k.clone(), *v))) {
            out.line("gauges.", &name, "", value);
        }
        for (name, set) in sorted(std::mem::take(&mut self.sets)) {
            out.line("sets.", &name, "", set.len() as f64);
        }
        for (name, mut timer) in sorted(std::mem::take(&mut self.timers)) {
            timer.kept.sort_by(f64::total_cmp);
            out.line("timers.", &name, ".count", timer.count);
            out.line("timers.", &name, ".min", timer.min);
            out.line("timers.", &name, ".max", timer.max);
            out.line("timers.", &name, ".mean", timer.sum / timer.seen as f64);
            for p in [50, 90, 99] {
                let value = percentile(&timer.kept, p);
                out.line("timers.", &name, &format!(".p{p}"), value);
            }
        }
        out.line(
            "statsd.",
            "lines",
            "",
            std::mem::take(&mut self.lines) as f64,
        );
        let bad = std::mem::take(&mut self.bad_lines);
        out.line("statsd.", "bad_lines", "", bad as f64);
        let dropped = std::mem::take(&mut self.dropped_lines) as f64;
        out.line("statsd.", "dropped_lines", "", dropped);
        self.first_bad = None;
        Flush {
            timestamp,
            text: out.text.into_bytes(),
        }
    }
}

impl Timer {
    fn add(&mut self, ms: f64, weight: f64, max: usize, random: u64) {
        self.count += weight;
        self.seen += 1;
        self.sum += ms;
        self.min = self.min.min(ms);
        self.max = self.max.max(ms);
        if self.kept.len() < max {
            self.kept.push(ms);
        } else {
            // Algorithm R: the n-th timing replaces a kept one with probability max / n.
            let slot = (random % self.seen) as usize;
            if slot < max {
                self.kept[slot] = ms;
            }
        }
    }
}

/// The entry for `name`, made with `new` if absent and there is `room`; `None`: no room.
fn upsert<T>(
    map: &mut HashMap<String, T>,
    name: String,
    room: bool,
    new: impl FnOnce() -> T,
) -> Option<&mut T> {
    match map.entry(name) {
        Entry::Occupied(e) => Some(e.into_mut()),
        Entry::Vacant(e) if room => Some(e.insert(new())),
        Entry::Vacant(_) => None,
    }
}

fn sorted<T>(items: impl IntoIterator<Item = (String, T)>) -> Vec<(String, T)> {
    let mut items: Vec<_> = items.into_iter().collect();
    items.sort_by(|a, b| a.0.cmp(&b.0));
    items
}

/// Nearest rank: the value at rank ⌈p/100 × n⌉ of the sorted values.
fn percentile(sorted: &[f64], p: usize) -> f64 {
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Graphite lines being written.
struct Lines<'a> {
    text: String,
    prefix: &'a str,
    timestamp: u64,
}

impl Lines<'_> {
    fn line(&mut self, kind: &str, name: &str, suffix: &str, value: f64) {
        let dot = if self.prefix.is_empty() { "" } else { "." };
        let _ = writeln!(
            self.text,
            "{}{dot}{kind}{name}{suffix} {value} {}",
            self.prefix, self.timestamp
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_metrics: 100,
        max_samples: 1000,
    };

    fn text(flush: Flush) -> String {
        String::from_utf8(flush.text).unwrap()
    }

    #[test]
    fn every_type_rendered_and_reset() {
        let mut a = Aggregate::new(LIMITS);
        a.ingest(b"hits:1|c\nhits:2|c|@0.5\n\nload:5|g\nload:+2|g\nload:-1|g\r\n");
        a.ingest(b"users:ann|s\nusers:bob|s\nusers:ann|s\nbogus\n");
        let timings: Vec<String> = (1..=20).map(|i| format!("db:{i}|ms")).collect();
        a.ingest(timings.join("\n").as_bytes());
        assert_eq!(
            text(a.flush("stats", 1700000000)),
            "stats.counters.hits 5 1700000000\n\
             stats.gauges.load 6 1700000000\n\
             stats.sets.users 2 1700000000\n\
             stats.timers.db.count 20 1700000000\n\
             stats.timers.db.min 1 1700000000\n\
             stats.timers.db.max 20 1700000000\n\
             stats.timers.db.mean 10.5 1700000000\n\
             stats.timers.db.p50 10 1700000000\n\
             stats.timers.db.p90 18 1700000000\n\
             stats.timers.db.p99 20 1700000000\n\
             stats.statsd.lines 28 1700000000\n\
             stats.statsd.bad_lines 1 1700000000\n\
             stats.statsd.dropped_lines 0 1700000000\n"
        );
        // Quiet interval: gauges repeat, nothing else but the statsd lines; no prefix.
        assert_eq!(
            text(a.flush("", 1700000010)),
            "gauges.load 6 1700000010\n\
             statsd.lines 0 1700000010\n\
             statsd.bad_lines 0 1700000010\n\
             statsd.dropped_lines 0 1700000010\n"
        );
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50), 50.0);
        assert_eq!(percentile(&v, 90), 90.0);
        assert_eq!(percentile(&v, 99), 99.0);
        assert_eq!(percentile(&[7.0], 99), 7.0);
        assert_eq!(percentile(&[1.0, 2.0], 50), 1.0);
        assert_eq!(percentile(&[1.0, 2.0], 90), 2.0);
    }

    #[test]
    fn names_and_samples_are_bounded() {
        let mut a = Aggregate::new(Limits {
            max_metrics: 3,
            max_samples: 10,
        });
        a.ingest(b"g:1|g\nc1:1|c\nc2:1|c\nc3:1|c\nc1:1|c\ng:+1|g");
        let t = text(a.flush("", 1));
        assert!(t.contains("counters.c1 2 1\n") && !t.contains("c3"), "{t}");
        assert!(t.contains("statsd.dropped_lines 1 1\n"), "{t}");
        assert!(t.contains("gauges.g 2 1\n"), "{t}");

        // A timer past max-samples: count/min/max/mean exact, percentiles from 10 kept.
        let timings: Vec<String> = (1..=1000).map(|i| format!("t:{i}|ms")).collect();
        a.ingest(timings.join("\n").as_bytes());
        let values: Vec<String> = (0..20).map(|i| format!("s:v{i}|s")).collect();
        a.ingest(values.join("\n").as_bytes());
        assert_eq!(a.timers["t"].kept.len(), 10);
        let t = text(a.flush("", 2));
        for want in [
            "timers.t.count 1000 2\n",
            "timers.t.min 1 2\n",
            "timers.t.max 1000 2\n",
            "timers.t.mean 500.5 2\n",
            "sets.s 10 2\n",
            "statsd.dropped_lines 10 2\n",
            "statsd.lines 1010 2\n",
        ] {
            assert!(t.contains(want), "{want:?} in\n{t}");
        }
        let p50: f64 = t
            .lines()
            .find_map(|l| l.strip_prefix("timers.t.p50 "))
            .and_then(|l| l.split(' ').next())
            .unwrap()
            .parse()
            .unwrap();
        assert!((1.0..=1000.0).contains(&p50));
    }

    #[test]
    fn sample_rates_weigh_counts() {
        let mut a = Aggregate::new(LIMITS);
        a.ingest(b"c:1|c|@0.1\nt:4|ms|@0.25\nt:8|ms");
        let t = text(a.flush("p", 3));
        assert!(t.contains("p.counters.c 10 3\n"), "{t}");
        assert!(t.contains("p.timers.t.count 5 3\n"), "{t}");
        assert!(t.contains("p.timers.t.mean 6 3\n"), "{t}");
    }

    #[test]
    fn bad_lines_are_counted_and_the_first_kept() {
        let mut a = Aggregate::new(LIMITS);
        a.ingest(b"x:1|q\ny\nz:1|c");
        let (n, first) = a.bad_lines();
        assert_eq!(n, 2);
        assert_eq!(
            first,
            Some(&("x:1|q".to_string(), "unknown type (want c, g, s or ms)"))
        );
        a.flush("", 0);
        assert_eq!(a.bad_lines(), (0, None));
    }
}
