//! The key-value store one worker's connections share.
//!
//! A plain `HashMap` behind the protocol's `Rc<RefCell<_>>`: the host calls a worker's
//! consumers from one thread, one callback at a time, so no lock is needed. Its size is
//! bounded: at most `max_keys` entries, each no longer than a command line.

use std::collections::HashMap;

/// The store is full: a new key was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

/// Keys and values, as bytes.
#[derive(Debug)]
pub struct Store {
    entries: HashMap<Vec<u8>, Vec<u8>>,
    max_keys: usize,
}

impl Store {
    /// An empty store that holds at most `max_keys` keys.
    pub fn new(max_keys: usize) -> Store {
        Store {
            entries: HashMap::new(),
            max_keys,
        }
    }

    /// Store `value` under `key`, replacing any old value; a new key is refused when the
    /// store is full.
    pub fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), Full> {
        if let Some(old) = self.entries.get_mut(key) {
            old.clear();
            old.extend_from_slice(value);
            return Ok(());
        }
        if self.entries.len() >= self.max_keys {
            return Err(Full);
        }
        self.entries.insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    /// The value under `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.entries.get(key).map(Vec::as_slice)
    }

    /// Remove `key`; whether it was there.
    pub fn remove(&mut self, key: &[u8]) -> bool {
        self.entries.remove(key).is_some()
    }

    /// How many keys are stored.
    pub fn count(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_key_count_but_replacing_always_works() {
        let mut store = Store::new(1);
        assert_eq!(store.set(b"a", b"1"), Ok(()));
        assert_eq!(store.set(b"b", b"2"), Err(Full));
        assert_eq!(store.set(b"a", b"3"), Ok(()));
        assert_eq!(store.get(b"a"), Some(&b"3"[..]));
        assert!(store.remove(b"a"));
        assert!(!store.remove(b"a"));
        assert_eq!(store.set(b"b", b"2"), Ok(()));
        assert_eq!(store.count(), 1);
    }
}
