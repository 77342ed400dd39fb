//! The keyspace: keys, their values, their expiry times and their last access, with the
//! three kinds of random access Redis needs besides lookups — sampling keys with a TTL
//! (active expiry), sampling any key (LRU eviction), and a cursor that survives changes
//! (`SCAN`).
//!
//! Entries live in a slab (`slots`): a key keeps its slot for as long as it exists, and a
//! deleted key's slot is reused. A `hashbrown::HashTable` of slot numbers finds a key by
//! its bytes. That gives:
//!
//! * **SCAN** walks slots in order; its cursor is the next slot number. A key present for
//!   the whole iteration never moves, so it is returned, as Redis guarantees. When the slab
//!   is compacted (after three quarters of it emptied) slots do move: the cursor carries the
//!   compaction epoch, and a cursor from an older epoch restarts from slot 0 — some keys
//!   come twice, which Redis allows, none is missed.
//! * **Eviction** picks random slots (the slab is at least a quarter full) and evicts the
//!   least recently used of five samples, like Redis's `maxmemory-samples 5`.
//! * **Active expiry** samples `volatile`, the slots of the keys with a TTL (each entry
//!   knows its position there, so removal is a swap), as Redis's `activeExpireCycle`
//!   samples its `expires` dictionary.
//!
//! Expired keys are also removed lazily, by any lookup that finds them.

use std::hash::BuildHasher;
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;
use hashbrown::HashTable;

use crate::value::{Value, KEY_OVERHEAD};

/// No position in `volatile`.
const NOT_VOLATILE: u32 = u32::MAX;
/// Bits of a SCAN cursor that hold the slot; the compaction epoch is above them.
const CURSOR_SLOT_BITS: u32 = 40;
/// Keys sampled per eviction, as Redis's default `maxmemory-samples`.
const EVICTION_SAMPLES: usize = 5;
/// Keys with a TTL sampled per active-expiry round, as Redis's
/// `ACTIVE_EXPIRE_CYCLE_KEYS_PER_LOOP`.
const EXPIRE_SAMPLES: usize = 20;

/// One key and what belongs to it.
#[derive(Debug)]
pub struct Entry {
    key: Box<[u8]>,
    value: Value,
    hash: u64,
    /// Unix time in milliseconds at which the key expires; 0 for never.
    expires: i64,
    /// The access clock at the last access (higher is more recent).
    lru: u64,
    /// Position in `Db::volatile`, or [`NOT_VOLATILE`].
    volatile_pos: u32,
    /// The estimated memory counted for this entry in `Db::used`.
    mem: usize,
}

impl Entry {
    /// The key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The value.
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// Whether the key has expired at `now` (Unix milliseconds).
    fn expired(&self, now: i64) -> bool {
        self.expires != 0 && self.expires <= now
    }
}

/// Counters `INFO stats` reports.
#[derive(Clone, Copy, Debug, Default)]
pub struct DbStats {
    /// Keys removed because their TTL passed.
    pub expired_keys: u64,
    /// Keys evicted under `maxmemory`.
    pub evicted_keys: u64,
    /// Lookups that found their key.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
}

/// A small, fast random number generator (xorshift64*) for sampling; not for secrets.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded from the clock and an address (different per process and per store).
    pub fn new() -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let local = 0u8;
        Rng((t ^ (&local as *const u8 as u64).rotate_left(32)) | 1)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

impl Default for Rng {
    fn default() -> Self {
        Rng::new()
    }
}

/// The keyspace of one store (Redis's database 0).
#[derive(Debug, Default)]
pub struct Db {
    table: HashTable<u32>,
    slots: Vec<Option<Entry>>,
    free: Vec<u32>,
    volatile: Vec<u32>,
    hasher: RandomState,
    used: usize,
    epoch: u64,
    clock: u64,
    rng: Rng,
    /// Hits, misses, expired and evicted keys.
    pub stats: DbStats,
}

/// A mutable borrow of one key's value; on drop the memory estimate is updated and a
/// collection left empty is deleted, as Redis deletes empty lists, hashes and sets.
pub struct ValueMut<'a> {
    db: &'a mut Db,
    slot: u32,
}

impl std::ops::Deref for ValueMut<'_> {
    type Target = Value;
    fn deref(&self) -> &Value {
        &self.db.entry(self.slot).value
    }
}

impl std::ops::DerefMut for ValueMut<'_> {
    fn deref_mut(&mut self) -> &mut Value {
        &mut self.db.entry_mut(self.slot).value
    }
}

impl Drop for ValueMut<'_> {
    fn drop(&mut self) {
        let entry = self.db.slots[self.slot as usize]
            .as_mut()
            .expect("a borrowed slot is occupied");
        if entry.value.is_empty_collection() {
            self.db.remove_slot(self.slot);
            return;
        }
        let mem = entry.key.len() + entry.value.mem() + KEY_OVERHEAD;
        self.db.used = self.db.used + mem - entry.mem;
        entry.mem = mem;
    }
}

/// What to do with an existing TTL when a key is overwritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ttl {
    /// Remove it (plain `SET`).
    Clear,
    /// Keep it (`SET ... KEEPTTL`).
    Keep,
    /// Set this Unix time in milliseconds.
    At(i64),
}

impl Db {
    /// An empty keyspace.
    pub fn new() -> Db {
        Db::default()
    }

    /// Keys stored (including expired keys not yet removed, as Redis's `DBSIZE`).
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Keys with a TTL.
    pub fn volatile_len(&self) -> usize {
        self.volatile.len()
    }

    /// Estimated bytes used by keys and values.
    pub fn used_memory(&self) -> usize {
        self.used
    }

    fn entry(&self, slot: u32) -> &Entry {
        self.slots[slot as usize]
            .as_ref()
            .expect("slot in the table")
    }

    fn entry_mut(&mut self, slot: u32) -> &mut Entry {
        self.slots[slot as usize]
            .as_mut()
            .expect("slot in the table")
    }

    fn find(&self, key: &[u8]) -> Option<u32> {
        let hash = self.hasher.hash_one(key);
        let slots = &self.slots;
        self.table
            .find(hash, |&s| {
                slots[s as usize]
                    .as_ref()
                    .is_some_and(|e| e.hash == hash && &*e.key == key)
            })
            .copied()
    }

    /// The slot of a live key: an expired one is removed first (lazy expiry). Counts a hit
    /// or a miss and marks the access.
    fn lookup(&mut self, key: &[u8], now: i64) -> Option<u32> {
        let Some(slot) = self.find(key) else {
            self.stats.misses += 1;
            return None;
        };
        if self.entry(slot).expired(now) {
            self.remove_slot(slot);
            self.stats.expired_keys += 1;
            self.stats.misses += 1;
            return None;
        }
        self.stats.hits += 1;
        self.clock += 1;
        let clock = self.clock;
        self.entry_mut(slot).lru = clock;
        Some(slot)
    }

    /// A live key's value.
    pub fn get(&mut self, key: &[u8], now: i64) -> Option<&Value> {
        let slot = self.lookup(key, now)?;
        Some(&self.entry(slot).value)
    }

    /// A live key's value, to change.
    pub fn get_mut(&mut self, key: &[u8], now: i64) -> Option<ValueMut<'_>> {
        let slot = self.lookup(key, now)?;
        Some(ValueMut { db: self, slot })
    }

    /// A live key's value to change, or a new one made by `make` if the key is missing.
    pub fn get_or_insert_with(
        &mut self,
        key: &[u8],
        now: i64,
        make: impl FnOnce() -> Value,
    ) -> ValueMut<'_> {
        let slot = match self.lookup(key, now) {
            Some(slot) => slot,
            None => self.insert_new(key, make(), 0),
        };
        ValueMut { db: self, slot }
    }

    /// The slot of a live key, removing it if it has expired (lazy expiry); no hit or miss
    /// is counted and the access time is not changed (`EXISTS`, `TTL`, `EXPIRE`).
    fn find_live(&mut self, key: &[u8], now: i64) -> Option<u32> {
        let slot = self.find(key)?;
        if self.entry(slot).expired(now) {
            self.remove_slot(slot);
            self.stats.expired_keys += 1;
            return None;
        }
        Some(slot)
    }

    /// Whether a live key exists (no hit/miss counted, as Redis's `EXISTS`).
    pub fn contains(&mut self, key: &[u8], now: i64) -> bool {
        self.find_live(key, now).is_some()
    }

    /// Store `value` at `key`, replacing any value; `ttl` says what happens to a TTL.
    pub fn set(&mut self, key: &[u8], value: Value, ttl: Ttl, now: i64) {
        match self.find(key) {
            Some(slot) => {
                let old_expires = self.entry(slot).expires;
                let expired = old_expires != 0 && old_expires <= now;
                {
                    let entry = self.entry_mut(slot);
                    entry.value = value;
                }
                self.touch_mem(slot);
                let expires = match ttl {
                    Ttl::Clear => 0,
                    Ttl::Keep if expired => 0,
                    Ttl::Keep => old_expires,
                    Ttl::At(at) => at,
                };
                self.set_expires(slot, expires);
                self.clock += 1;
                let clock = self.clock;
                self.entry_mut(slot).lru = clock;
            }
            None => {
                let expires = match ttl {
                    Ttl::At(at) => at,
                    _ => 0,
                };
                self.insert_new(key, value, expires);
            }
        }
    }

    /// Delete a key; whether a live key was deleted.
    pub fn remove(&mut self, key: &[u8], now: i64) -> bool {
        match self.find(key) {
            Some(slot) => {
                let live = !self.entry(slot).expired(now);
                if !live {
                    self.stats.expired_keys += 1;
                }
                self.remove_slot(slot);
                live
            }
            None => false,
        }
    }

    /// Delete a key and return its value, if live.
    pub fn take(&mut self, key: &[u8], now: i64) -> Option<(Value, i64)> {
        let slot = self.lookup(key, now)?;
        let entry = self.remove_slot(slot);
        Some((entry.value, entry.expires))
    }

    /// A live key's expiry (Unix ms; 0 = none), `None` if the key is missing.
    pub fn expires(&mut self, key: &[u8], now: i64) -> Option<i64> {
        let slot = self.find_live(key, now)?;
        Some(self.entry(slot).expires)
    }

    /// Set (`at > 0`) or clear (`at == 0`) a live key's expiry; false if the key is missing.
    /// An expiry at or before `now` deletes the key at once, as Redis does.
    pub fn set_expiry(&mut self, key: &[u8], at: i64, now: i64) -> bool {
        let Some(slot) = self.find_live(key, now) else {
            return false;
        };
        if at != 0 && at <= now {
            self.remove_slot(slot);
            return true;
        }
        self.set_expires(slot, at);
        true
    }

    /// Remove every key.
    pub fn clear(&mut self) {
        self.table = HashTable::new();
        self.slots = Vec::new();
        self.free = Vec::new();
        self.volatile = Vec::new();
        self.used = 0;
        self.epoch += 1;
    }

    /// Every live key, in slot order.
    pub fn for_each_live<'a>(&'a self, now: i64, mut f: impl FnMut(&'a Entry)) {
        for entry in self.slots.iter().flatten() {
            if !entry.expired(now) {
                f(entry);
            }
        }
    }

    /// One step of `SCAN`: visit about `count` slots from `cursor`, calling `f` on each live
    /// entry; returns the next cursor (0 when the walk is done).
    pub fn scan<'a>(
        &'a self,
        cursor: u64,
        count: usize,
        now: i64,
        mut f: impl FnMut(&'a Entry),
    ) -> u64 {
        let epoch = cursor >> CURSOR_SLOT_BITS;
        let mut slot = (cursor & ((1 << CURSOR_SLOT_BITS) - 1)) as usize;
        if epoch != self.epoch_bits() {
            // Slots moved since this cursor was handed out: start over (duplicates are
            // allowed, misses are not).
            slot = 0;
        }
        let mut seen = 0;
        // Empty slots cost a step too, bounded, so that a sparse region cannot make one
        // call walk the whole slab.
        let mut steps = 0;
        while slot < self.slots.len() && seen < count && steps < count * 10 {
            if let Some(entry) = &self.slots[slot] {
                seen += 1;
                if !entry.expired(now) {
                    f(entry);
                }
            }
            slot += 1;
            steps += 1;
        }
        if slot >= self.slots.len() {
            0
        } else {
            (self.epoch_bits() << CURSOR_SLOT_BITS) | slot as u64
        }
    }

    fn epoch_bits(&self) -> u64 {
        self.epoch % (1 << 22)
    }

    /// A random live key, or `None` if there is none.
    pub fn random_key(&mut self, now: i64) -> Option<&[u8]> {
        for _ in 0..16 {
            let slot = self.random_slot()?;
            if !self.entry(slot).expired(now) {
                return Some(&self.entry(slot).key);
            }
        }
        None
    }

    fn random_slot(&mut self) -> Option<u32> {
        if self.table.is_empty() {
            return None;
        }
        // The slab is kept at least a quarter full, so this rarely takes more than a few
        // tries; after 64 misses fall back to a scan from a random place.
        for _ in 0..64 {
            let slot = self.rng.below(self.slots.len());
            if self.slots[slot].is_some() {
                return Some(slot as u32);
            }
        }
        let from = self.rng.below(self.slots.len());
        (0..self.slots.len())
            .map(|i| (from + i) % self.slots.len())
            .find(|&s| self.slots[s].is_some())
            .map(|s| s as u32)
    }

    /// Evict the least recently used of a few sampled keys (`allkeys-lru`); false if the
    /// keyspace is empty.
    pub fn evict_one(&mut self) -> bool {
        let mut victim: Option<(u64, u32)> = None;
        for _ in 0..EVICTION_SAMPLES {
            let Some(slot) = self.random_slot() else {
                return false;
            };
            let lru = self.entry(slot).lru;
            if victim.is_none_or(|(best, _)| lru < best) {
                victim = Some((lru, slot));
            }
        }
        let Some((_, slot)) = victim else {
            return false;
        };
        self.remove_slot(slot);
        self.stats.evicted_keys += 1;
        true
    }

    /// One active-expiry cycle, like Redis's `activeExpireCycle`: sample keys with a TTL,
    /// delete the expired ones, and go on while more than a quarter of a sample had expired
    /// — for at most `budget` of time. Returns how many keys were deleted.
    pub fn active_expire(&mut self, now: i64, budget: Duration) -> usize {
        let started = Instant::now();
        let mut removed = 0;
        loop {
            if self.volatile.is_empty() {
                return removed;
            }
            let samples = EXPIRE_SAMPLES.min(self.volatile.len());
            let mut expired = 0;
            for _ in 0..samples {
                if self.volatile.is_empty() {
                    break;
                }
                let slot = self.volatile[self.rng.below(self.volatile.len())];
                if self.entry(slot).expired(now) {
                    self.remove_slot(slot);
                    self.stats.expired_keys += 1;
                    expired += 1;
                }
            }
            removed += expired;
            if expired * 4 <= samples || started.elapsed() >= budget {
                return removed;
            }
        }
    }

    /// Rename `from` to `to` (replacing `to`), keeping the TTL; false if `from` is missing.
    pub fn rename(&mut self, from: &[u8], to: &[u8], now: i64) -> bool {
        let Some((value, expires)) = self.take(from, now) else {
            return false;
        };
        let ttl = if expires == 0 {
            Ttl::Clear
        } else {
            Ttl::At(expires)
        };
        self.set(to, value, ttl, now);
        true
    }

    fn insert_new(&mut self, key: &[u8], value: Value, expires: i64) -> u32 {
        let hash = self.hasher.hash_one(key);
        let mem = key.len() + value.mem() + KEY_OVERHEAD;
        self.clock += 1;
        let entry = Entry {
            key: key.into(),
            value,
            hash,
            expires: 0,
            lru: self.clock,
            volatile_pos: NOT_VOLATILE,
            mem,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(entry);
                slot
            }
            None => {
                self.slots.push(Some(entry));
                (self.slots.len() - 1) as u32
            }
        };
        let slots = &self.slots;
        self.table.insert_unique(hash, slot, |&s| {
            slots[s as usize].as_ref().map_or(0, |e| e.hash)
        });
        self.used += mem;
        if expires != 0 {
            self.set_expires(slot, expires);
        }
        slot
    }

    fn touch_mem(&mut self, slot: u32) {
        let entry = self.slots[slot as usize].as_mut().expect("occupied");
        let mem = entry.key.len() + entry.value.mem() + KEY_OVERHEAD;
        self.used = self.used + mem - entry.mem;
        entry.mem = mem;
    }

    fn set_expires(&mut self, slot: u32, expires: i64) {
        let entry = self.slots[slot as usize].as_mut().expect("occupied");
        entry.expires = expires;
        let pos = entry.volatile_pos;
        if expires != 0 && pos == NOT_VOLATILE {
            entry.volatile_pos = self.volatile.len() as u32;
            self.volatile.push(slot);
        } else if expires == 0 && pos != NOT_VOLATILE {
            entry.volatile_pos = NOT_VOLATILE;
            self.unlink_volatile(pos);
        }
    }

    fn unlink_volatile(&mut self, pos: u32) {
        self.volatile.swap_remove(pos as usize);
        if let Some(&moved) = self.volatile.get(pos as usize) {
            self.entry_mut(moved).volatile_pos = pos;
        }
    }

    fn remove_slot(&mut self, slot: u32) -> Entry {
        let entry = self.slots[slot as usize].take().expect("occupied");
        if let Ok(found) = self.table.find_entry(entry.hash, |&s| s == slot) {
            found.remove();
        }
        if entry.volatile_pos != NOT_VOLATILE {
            self.unlink_volatile(entry.volatile_pos);
        }
        self.used -= entry.mem;
        self.free.push(slot);
        if self.slots.len() > 1024 && self.table.len() * 4 < self.slots.len() {
            self.compact();
        }
        entry
    }

    /// Move every entry to the front of the slab, so that it is dense again.
    fn compact(&mut self) {
        let old = std::mem::take(&mut self.slots);
        self.slots = Vec::with_capacity(self.table.len() * 2);
        self.table.clear();
        self.free.clear();
        self.volatile.clear();
        for mut entry in old.into_iter().flatten() {
            let slot = self.slots.len() as u32;
            if entry.expires != 0 {
                entry.volatile_pos = self.volatile.len() as u32;
                self.volatile.push(slot);
            }
            let hash = entry.hash;
            self.slots.push(Some(entry));
            let slots = &self.slots;
            self.table.insert_unique(hash, slot, |&s| {
                slots[s as usize].as_ref().map_or(0, |e| e.hash)
            });
        }
        self.epoch += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::Str(v.as_bytes().to_vec())
    }

    #[test]
    fn set_get_remove_and_memory() {
        let mut db = Db::new();
        db.set(b"a", s("1"), Ttl::Clear, 0);
        db.set(b"b", s("22"), Ttl::Clear, 0);
        assert_eq!(db.len(), 2);
        let used = db.used_memory();
        assert_eq!(used, 2 * KEY_OVERHEAD + 2 + 1 + 2 + 32);
        assert!(matches!(db.get(b"a", 0), Some(Value::Str(v)) if v == b"1"));
        assert!(db.remove(b"a", 0));
        assert!(!db.remove(b"a", 0));
        assert_eq!(db.used_memory(), KEY_OVERHEAD + 1 + 2 + 16);
        db.clear();
        assert_eq!((db.len(), db.used_memory()), (0, 0));
    }

    #[test]
    fn lazy_and_active_expiry() {
        let mut db = Db::new();
        db.set(b"soon", s("x"), Ttl::At(100), 0);
        db.set(b"later", s("x"), Ttl::At(10_000), 0);
        db.set(b"never", s("x"), Ttl::Clear, 0);
        assert_eq!(db.volatile_len(), 2);
        assert!(db.get(b"soon", 99).is_some());
        assert!(db.get(b"soon", 100).is_none(), "lazily expired on access");
        assert_eq!(db.len(), 2);
        assert_eq!(db.stats.expired_keys, 1);
        // Active expiry removes keys nobody touches.
        for i in 0..1000 {
            db.set(format!("k{i}").as_bytes(), s("v"), Ttl::At(500), 0);
        }
        let mut removed = 0;
        for _ in 0..1000 {
            removed += db.active_expire(600, Duration::from_millis(5));
            if db.len() == 2 {
                break;
            }
        }
        assert_eq!(removed, 1000);
        assert_eq!(db.len(), 2);
        assert_eq!(db.volatile_len(), 1);
    }

    #[test]
    fn scan_returns_every_stable_key_despite_deletes_and_compaction() {
        let mut db = Db::new();
        for i in 0..5000 {
            db.set(format!("k{i}").as_bytes(), s("v"), Ttl::Clear, 0);
        }
        let mut seen = std::collections::HashSet::new();
        let mut cursor = 0;
        let mut deleted = 0;
        loop {
            cursor = db.scan(cursor, 10, 0, |e| {
                seen.insert(e.key().to_vec());
            });
            // Meanwhile delete most keys, but never those ending in 7.
            for _ in 0..40 {
                if deleted < 5000 {
                    if deleted % 10 != 7 {
                        db.remove(format!("k{deleted}").as_bytes(), 0);
                    }
                    deleted += 1;
                }
            }
            if cursor == 0 {
                break;
            }
        }
        assert!(db.epoch > 0, "the slab was compacted during the scan");
        for i in (7..5000).step_by(10) {
            assert!(seen.contains(format!("k{i}").as_bytes()), "k{i} missed");
        }
    }

    #[test]
    fn eviction_prefers_old_keys() {
        let mut db = Db::new();
        for i in 0..100 {
            db.set(format!("k{i}").as_bytes(), s("v"), Ttl::Clear, 0);
        }
        // Touch the upper half.
        for i in 50..100 {
            db.get(format!("k{i}").as_bytes(), 0);
        }
        for _ in 0..40 {
            assert!(db.evict_one());
        }
        let survivors_recent = (50..100)
            .filter(|i| db.contains(format!("k{i}").as_bytes(), 0))
            .count();
        assert!(
            survivors_recent > 35,
            "{survivors_recent} of 50 recent keys left"
        );
        assert_eq!(db.stats.evicted_keys, 40);
    }

    #[test]
    fn rename_keeps_ttl_and_expiry_edits() {
        let mut db = Db::new();
        db.set(b"a", s("1"), Ttl::At(5000), 0);
        assert!(db.rename(b"a", b"b", 0));
        assert_eq!(db.expires(b"b", 0), Some(5000));
        assert!(db.set_expiry(b"b", 0, 0));
        assert_eq!(db.expires(b"b", 0), Some(0));
        assert_eq!(db.volatile_len(), 0);
        assert!(db.set_expiry(b"b", 10, 20), "a past expiry deletes");
        assert!(!db.contains(b"b", 20));
    }
}
