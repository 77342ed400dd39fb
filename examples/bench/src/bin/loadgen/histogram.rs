//! A fixed-size log-linear latency histogram (HdrHistogram-style, ~1.6% precision).
//!
//! Recording every latency in a `Vec` would cost memory proportional to the run; this
//! keeps ~30 KiB per connection whatever the rate, and merges by adding buckets.

use std::time::Duration;

/// Values below `2^BITS` ns get a bucket each; above, each power of two is split into
/// `2^(BITS-1)` buckets.
const BITS: u32 = 7;
const HALF: u64 = 1 << (BITS - 1);
const BUCKETS: usize = ((64 - (BITS - 1)) as usize) * HALF as usize + HALF as usize;

/// Latency counts in nanoseconds.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
        }
    }
}

fn index(v: u64) -> usize {
    if v < (1 << BITS) {
        return v as usize;
    }
    let e = (63 - v.leading_zeros()) - (BITS - 1);
    let m = v >> e;
    (u64::from(e) * HALF + m) as usize
}

/// The middle of bucket `i`, in ns.
fn value(i: usize) -> f64 {
    let i = i as u64;
    if i < (1 << BITS) {
        return i as f64;
    }
    let e = i / HALF - 1;
    let m = i - e * HALF;
    ((m << e) as f64) + ((1u64 << e) as f64) / 2.0
}

impl Histogram {
    /// Count one latency.
    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[index(ns)] += 1;
        self.total += 1;
    }

    /// Add another histogram's counts to this one.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
    }

    /// The `q` quantile (0..=1) in microseconds, or 0 when nothing was recorded.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return value(i) / 1000.0;
            }
        }
        unreachable!("rank <= total")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_continuous_and_precise() {
        let mut last = 0;
        for v in [
            0u64,
            1,
            127,
            128,
            129,
            255,
            256,
            1_000,
            45_678,
            1 << 40,
            u64::MAX,
        ] {
            let i = index(v);
            assert!(i >= last && i < BUCKETS, "v={v} i={i}");
            last = i;
            if v > 0 && v < (1 << 60) {
                let err = (value(i) - v as f64).abs() / v as f64;
                assert!(err < 0.02, "v={v} value={} err={err}", value(i));
            }
        }
        assert_eq!(index(128), 128);
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::default();
        for us in 1..=100u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile_us(0.5);
        let p99 = h.quantile_us(0.99);
        assert!((49.0..=51.0).contains(&p50), "{p50}");
        assert!((97.0..=101.0).contains(&p99), "{p99}");
        assert_eq!(Histogram::default().quantile_us(0.5), 0.0);
    }
}
