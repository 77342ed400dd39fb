//! The values a key can hold, each keeping an estimate of the memory it uses.
//!
//! The estimate is what `maxmemory` is enforced against (and what `INFO memory` reports as
//! `used_memory`): the bytes of every key, field and member plus a fixed overhead per
//! element for the allocation and the container's slot. It is updated in O(1) on every
//! change, never recomputed by walking a collection. It is an approximation — allocator
//! rounding and container spare capacity are not seen — documented as such in the README.

use std::collections::{BTreeSet, VecDeque};

use foldhash::fast::RandomState;
use hashbrown::HashMap;
use indexmap::IndexSet;

/// Estimated overhead of one key in the keyspace (slot, table entry, header).
pub const KEY_OVERHEAD: usize = 64;
/// Estimated overhead of one list element.
const LIST_ITEM: usize = 32;
/// Estimated overhead of one hash field (two allocations and a table slot).
const HASH_ITEM: usize = 64;
/// Estimated overhead of one set member.
const SET_ITEM: usize = 40;
/// Estimated overhead of one sorted-set member (in the map and in the ordered index).
const ZSET_ITEM: usize = 96;

/// A key's value.
#[derive(Debug)]
pub enum Value {
    /// A string (also integers and floats, as Redis stores them).
    Str(Vec<u8>),
    /// A list.
    List(List),
    /// A hash of fields to values.
    Hash(Hash),
    /// A set of members.
    Set(Set),
    /// A sorted set.
    ZSet(ZSet),
}

impl Value {
    /// The type name `TYPE` reports.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::List(_) => "list",
            Value::Hash(_) => "hash",
            Value::Set(_) => "set",
            Value::ZSet(_) => "zset",
        }
    }

    /// Estimated bytes used (without the key).
    pub fn mem(&self) -> usize {
        match self {
            Value::Str(s) => s.len() + 16,
            Value::List(l) => l.bytes + 32,
            Value::Hash(h) => h.bytes + 48,
            Value::Set(s) => s.bytes + 48,
            Value::ZSet(z) => z.bytes + 64,
        }
    }

    /// Whether a collection has become empty (Redis then deletes the key).
    pub fn is_empty_collection(&self) -> bool {
        match self {
            Value::Str(_) => false,
            Value::List(l) => l.items.is_empty(),
            Value::Hash(h) => h.map.is_empty(),
            Value::Set(s) => s.members.is_empty(),
            Value::ZSet(z) => z.scores.is_empty(),
        }
    }
}

/// A list: a deque of elements.
#[derive(Debug, Default)]
pub struct List {
    items: VecDeque<Vec<u8>>,
    bytes: usize,
}

impl List {
    /// Elements.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Add at the head.
    pub fn push_front(&mut self, item: &[u8]) {
        self.bytes += item.len() + LIST_ITEM;
        self.items.push_front(item.to_vec());
    }

    /// Add at the tail.
    pub fn push_back(&mut self, item: &[u8]) {
        self.bytes += item.len() + LIST_ITEM;
        self.items.push_back(item.to_vec());
    }

    /// Remove from the head.
    pub fn pop_front(&mut self) -> Option<Vec<u8>> {
        let item = self.items.pop_front()?;
        self.bytes -= item.len() + LIST_ITEM;
        Some(item)
    }

    /// Remove from the tail.
    pub fn pop_back(&mut self) -> Option<Vec<u8>> {
        let item = self.items.pop_back()?;
        self.bytes -= item.len() + LIST_ITEM;
        Some(item)
    }

    /// Elements `start..=end` (already clamped).
    pub fn range(&self, start: usize, end: usize) -> impl ExactSizeIterator<Item = &[u8]> {
        self.items.range(start..=end).map(Vec::as_slice)
    }
}

/// A hash.
#[derive(Debug, Default)]
pub struct Hash {
    map: HashMap<Box<[u8]>, Vec<u8>, RandomState>,
    bytes: usize,
}

impl Hash {
    /// Fields.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Set a field; whether it is new.
    pub fn set(&mut self, field: &[u8], value: &[u8]) -> bool {
        if let Some(old) = self.map.get_mut(field) {
            self.bytes = self.bytes - old.len() + value.len();
            old.clear();
            old.extend_from_slice(value);
            false
        } else {
            self.bytes += field.len() + value.len() + HASH_ITEM;
            self.map.insert(field.into(), value.to_vec());
            true
        }
    }

    /// A field's value.
    pub fn get(&self, field: &[u8]) -> Option<&[u8]> {
        self.map.get(field).map(Vec::as_slice)
    }

    /// Remove a field; whether it existed.
    pub fn remove(&mut self, field: &[u8]) -> bool {
        match self.map.remove_entry(field) {
            Some((f, v)) => {
                self.bytes -= f.len() + v.len() + HASH_ITEM;
                true
            }
            None => false,
        }
    }

    /// Every field and value.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&[u8], &[u8])> {
        self.map.iter().map(|(f, v)| (&f[..], &v[..]))
    }
}

/// A set. An `IndexSet` so that `SPOP` removes a random member in O(1).
#[derive(Debug, Default)]
pub struct Set {
    members: IndexSet<Box<[u8]>, RandomState>,
    bytes: usize,
}

impl Set {
    /// Members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Add a member; whether it is new.
    pub fn insert(&mut self, member: &[u8]) -> bool {
        if self.members.contains(member) {
            return false;
        }
        self.bytes += member.len() + SET_ITEM;
        self.members.insert(member.into())
    }

    /// Whether `member` is in the set.
    pub fn contains(&self, member: &[u8]) -> bool {
        self.members.contains(member)
    }

    /// Remove a member; whether it was there.
    pub fn remove(&mut self, member: &[u8]) -> bool {
        let removed = self.members.swap_remove(member);
        if removed {
            self.bytes -= member.len() + SET_ITEM;
        }
        removed
    }

    /// Remove the member at `index` (`random % len`).
    pub fn pop_at(&mut self, index: usize) -> Option<Box<[u8]>> {
        let member = self.members.swap_remove_index(index)?;
        self.bytes -= member.len() + SET_ITEM;
        Some(member)
    }

    /// Every member.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> {
        self.members.iter().map(|m| &m[..])
    }
}

/// A score with a total order (Redis refuses NaN scores, so none is ever stored).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score(pub f64);

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A sorted set: members by score, ties broken by the member's bytes (as Redis orders).
#[derive(Debug, Default)]
pub struct ZSet {
    scores: HashMap<Box<[u8]>, f64, RandomState>,
    order: BTreeSet<(Score, Box<[u8]>)>,
    bytes: usize,
}

impl ZSet {
    /// Members.
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// A member's score.
    pub fn score(&self, member: &[u8]) -> Option<f64> {
        self.scores.get(member).copied()
    }

    /// Set a member's score (adding it if new); whether it is new.
    pub fn set(&mut self, member: &[u8], score: f64) -> bool {
        let score = if score == 0.0 { 0.0 } else { score }; // -0 sorts as 0
        match self.scores.get_mut(member) {
            Some(old) => {
                if *old != score {
                    self.order.remove(&(Score(*old), member.into()));
                    self.order.insert((Score(score), member.into()));
                    *old = score;
                }
                false
            }
            None => {
                self.bytes += 2 * member.len() + ZSET_ITEM;
                self.scores.insert(member.into(), score);
                self.order.insert((Score(score), member.into()));
                true
            }
        }
    }

    /// Remove a member; whether it was there.
    pub fn remove(&mut self, member: &[u8]) -> bool {
        match self.scores.remove(member) {
            Some(score) => {
                self.order.remove(&(Score(score), member.into()));
                self.bytes -= 2 * member.len() + ZSET_ITEM;
                true
            }
            None => false,
        }
    }

    /// Remove and return the member with the lowest score.
    pub fn pop_min(&mut self) -> Option<(Box<[u8]>, f64)> {
        let (score, member) = self.order.pop_first()?;
        self.scores.remove(&member);
        self.bytes -= 2 * member.len() + ZSET_ITEM;
        Some((member, score.0))
    }

    /// Members in ascending order from rank `start`, `count` of them.
    pub fn range_asc(&self, start: usize, count: usize) -> impl Iterator<Item = (&[u8], f64)> {
        self.order
            .iter()
            .skip(start)
            .take(count)
            .map(|(s, m)| (&m[..], s.0))
    }

    /// Members in descending order from reverse rank `start`, `count` of them.
    pub fn range_desc(&self, start: usize, count: usize) -> impl Iterator<Item = (&[u8], f64)> {
        self.order
            .iter()
            .rev()
            .skip(start)
            .take(count)
            .map(|(s, m)| (&m[..], s.0))
    }

    /// Members with `min <= score <= max` (each bound exclusive if flagged), ascending.
    pub fn range_by_score(
        &self,
        min: (f64, bool),
        max: (f64, bool),
    ) -> impl DoubleEndedIterator<Item = (&[u8], f64)> {
        self.order
            .iter()
            .skip_while(move |(s, _)| s.0 < min.0 || (min.1 && s.0 == min.0))
            .take_while(move |(s, _)| s.0 < max.0 || (!max.1 && s.0 == max.0))
            .map(|(s, m)| (&m[..], s.0))
            .collect::<Vec<_>>()
            .into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_estimates_follow_changes() {
        let mut l = List::default();
        l.push_back(b"abc");
        l.push_front(b"x");
        let v = Value::List(l);
        assert_eq!(v.mem(), 32 + 3 + 1 + 2 * LIST_ITEM);
        let Value::List(mut l) = v else {
            unreachable!()
        };
        l.pop_back();
        l.pop_front();
        assert_eq!(Value::List(l).mem(), 32);

        let mut h = Hash::default();
        assert!(h.set(b"f", b"v1"));
        assert!(!h.set(b"f", b"value"));
        assert_eq!(h.bytes, 1 + 5 + HASH_ITEM);
        assert!(h.remove(b"f"));
        assert_eq!(h.bytes, 0);

        let mut z = ZSet::default();
        z.set(b"a", 2.0);
        z.set(b"b", 1.0);
        z.set(b"a", 0.5);
        let asc: Vec<_> = z.range_asc(0, 10).collect();
        assert_eq!(asc, [(&b"a"[..], 0.5), (&b"b"[..], 1.0)]);
        assert_eq!(z.pop_min().unwrap().0.as_ref(), b"a");
        z.pop_min();
        assert_eq!(z.bytes, 0);
    }
}
