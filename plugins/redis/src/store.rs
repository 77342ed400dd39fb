//! One worker's store: the keyspace, the pub/sub registry, the configuration and the
//! counters `INFO` reports. Shared by the worker's connections through `Rc<RefCell<_>>`
//! and borrowed once per read, not once per command.

use std::time::{Duration, Instant};

use crate::commands::transaction::Watches;
use crate::db::Db;
use crate::pubsub::PubSub;
use crate::resp::Limits;

/// What happens when a write would pass `maxmemory`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvictionPolicy {
    /// Refuse the write with `-OOM ...`.
    NoEviction,
    /// Evict the least recently used keys (approximately: the oldest of 5 samples).
    AllKeysLru,
}

impl EvictionPolicy {
    /// The name as Redis spells it.
    pub fn name(self) -> &'static str {
        match self {
            EvictionPolicy::NoEviction => "noeviction",
            EvictionPolicy::AllKeysLru => "allkeys-lru",
        }
    }

    /// From its Redis name (case-insensitive).
    pub fn parse(name: &str) -> Option<EvictionPolicy> {
        match name.to_ascii_lowercase().as_str() {
            "noeviction" => Some(EvictionPolicy::NoEviction),
            "allkeys-lru" => Some(EvictionPolicy::AllKeysLru),
            _ => None,
        }
    }
}

/// Settings from `--plugin-opt` (some changeable with `CONFIG SET`).
#[derive(Clone, Debug)]
pub struct Config {
    /// Bytes of keys and values allowed (estimated); 0 for no limit.
    pub maxmemory: u64,
    /// What to do past `maxmemory`.
    pub policy: EvictionPolicy,
    /// Per-connection request bounds.
    pub limits: Limits,
    /// The port of the first connection seen (for `INFO server`'s `tcp_port`).
    pub port: u16,
}

/// Counters for `INFO`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Connections accepted since start.
    pub connections_received: u64,
    /// Connections open now.
    pub connected_clients: u64,
    /// Commands run (including refused ones that reached a command, as Redis counts).
    pub commands_processed: u64,
    /// Connections closed for a protocol error.
    pub protocol_errors: u64,
}

/// Active expiry runs at most this often (Redis's default `hz 10`).
pub const EXPIRE_PERIOD: Duration = Duration::from_millis(100);
/// And spends at most this long per run (Redis: 25% of each period; less here, as the
/// store shares its thread with every connection of the worker).
pub const EXPIRE_BUDGET: Duration = Duration::from_millis(2);

/// One worker's store.
#[derive(Debug)]
pub struct Store {
    /// The keyspace.
    pub db: Db,
    /// Channels, patterns and their subscribers.
    pub pubsub: PubSub,
    /// Keys watched by `WATCH`.
    pub watches: Watches,
    /// Settings.
    pub config: Config,
    /// Counters.
    pub stats: Stats,
    /// When the store was made (`uptime_in_seconds`).
    pub started: Instant,
    /// A random id for this store's lifetime (`INFO`'s `run_id`).
    pub run_id: String,
    /// The last `CLIENT ID` given out.
    next_client_id: u64,
}

impl Store {
    /// An empty store.
    pub fn new(config: Config) -> Store {
        let now = Instant::now();
        Store {
            db: Db::new(),
            pubsub: PubSub::default(),
            watches: Watches::default(),
            config,
            stats: Stats::default(),
            started: now,
            run_id: {
                let mut rng = crate::db::Rng::new();
                format!(
                    "{:016x}{:016x}{:08x}",
                    rng.next_u64(),
                    rng.next_u64(),
                    rng.next_u64() as u32
                )
            },
            next_client_id: 0,
        }
    }

    /// A new connection: its `CLIENT ID`.
    pub fn client_connected(&mut self) -> u64 {
        self.next_client_id += 1;
        self.stats.connections_received += 1;
        self.stats.connected_clients += 1;
        self.next_client_id
    }

    /// A connection ended.
    pub fn client_disconnected(&mut self, id: u64) {
        self.stats.connected_clients = self.stats.connected_clients.saturating_sub(1);
        self.pubsub.forget(id);
        self.watches.unwatch(id);
    }

    /// The periodic work: one bounded active-expiry cycle. Called from the host's tick;
    /// returns how many keys expired.
    pub fn tick(&mut self) -> usize {
        self.db.active_expire(unix_ms(), EXPIRE_BUDGET)
    }

    /// Make room under `maxmemory` before a command that may grow memory: evict (with
    /// `allkeys-lru`) until under the limit; false if still over it (the command is refused).
    pub fn make_room(&mut self) -> bool {
        let max = self.config.maxmemory;
        if max == 0 {
            return true;
        }
        while self.db.used_memory() as u64 > max {
            if self.config.policy == EvictionPolicy::NoEviction || !self.db.evict_one() {
                return false;
            }
        }
        true
    }
}

/// The current Unix time in milliseconds (expiry times are absolute, as in Redis).
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A memory size as Redis's `memtoull` reads it: bytes, or with a unit — `k`/`m`/`g`
/// (powers of 1000) or `kb`/`mb`/`gb` (powers of 1024), any case.
pub fn parse_memory(value: &str) -> Option<u64> {
    let v = value.trim().to_ascii_lowercase();
    let digits_end = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (number, unit) = v.split_at(digits_end);
    let n: u64 = number.parse().ok()?;
    let multiplier: u64 = match unit {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(multiplier)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_values() {
        assert_eq!(parse_memory("100"), Some(100));
        assert_eq!(parse_memory("1kb"), Some(1024));
        assert_eq!(parse_memory("2MB"), Some(2 << 20));
        assert_eq!(parse_memory("1g"), Some(1_000_000_000));
        assert_eq!(parse_memory("lots"), None);
        assert_eq!(parse_memory("-1"), None);
    }
}
