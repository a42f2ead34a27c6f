//! The records this process last wrote, with their revisions: the next
//! write to such a key goes out at once at the remembered revision instead
//! of reading the key first.
//!
//! Nothing here is trusted: every write is still a compare-and-set at the
//! revision, so a record another worker changed meanwhile makes the write
//! fail, the key is forgotten and read again. An answer that changes
//! nothing (a duplicate, an early number) is never given from here; it is
//! read again first. The cost is one round trip where the guess was stale.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Mutex;

/// Keys remembered at most; when full, everything is forgotten at once
/// (the map only saves reads, it is never needed).
const CAPACITY: usize = 65_536;

/// A record as this process last wrote it.
#[derive(Clone)]
pub(super) struct Known {
    /// Its revision (the stream sequence of the write).
    pub(super) revision: u64,
    /// Its value.
    pub(super) value: Bytes,
    /// When it was written.
    pub(super) written: async_nats::datetime::DateTime,
}

/// Records by KV key (the `k.`/`s.` prefixes keep the buckets apart).
#[derive(Default)]
pub(super) struct KnownRecords {
    map: Mutex<HashMap<String, Known>>,
}

impl KnownRecords {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Known>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn get(&self, key: &str) -> Option<Known> {
        self.lock().get(key).cloned()
    }

    /// Remembers `key` as written at `revision` with `value`.
    pub(super) fn wrote(&self, key: &str, revision: u64, value: Bytes) {
        let mut map = self.lock();
        if map.len() >= CAPACITY && !map.contains_key(key) {
            map.clear();
        }
        let known = Known {
            revision,
            value,
            written: async_nats::datetime::now(),
        };
        match map.get_mut(key) {
            Some(slot) => *slot = known,
            None => {
                map.insert(key.to_owned(), known);
            }
        }
    }

    pub(super) fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_last_write_and_forgets_when_full() {
        let known = KnownRecords::default();
        known.wrote("s.a", 3, Bytes::from_static(b"x"));
        known.wrote("s.a", 5, Bytes::from_static(b"y"));
        let a = known.get("s.a").expect("remembered");
        assert_eq!((a.revision, &a.value[..]), (5, &b"y"[..]));
        known.forget("s.a");
        assert!(known.get("s.a").is_none());
        for i in 0..CAPACITY {
            known.wrote(&format!("k.{i}"), 1, Bytes::new());
        }
        assert_eq!(known.len(), CAPACITY);
        known.wrote("k.one-more", 1, Bytes::new());
        assert_eq!(known.len(), 1, "a full map starts again");
    }
}
