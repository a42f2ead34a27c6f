//! Idempotency records: claim, complete, release and renew, and the cap
//! on how many are kept.

use super::MemoryStore;
use crate::store::{Claim, ClaimToken, StoredReply, fresh_token};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
// Tokio's clock: a paused test clock moves leases and timeouts on too.
use tokio::time::Instant;

enum RecordState {
    Claimed { token: ClaimToken },
    Done { reply: Option<StoredReply> },
}

pub(super) struct Record {
    state: RecordState,
    until: Instant,
    /// The map's key, shared with the expiry heap.
    key: Arc<str>,
}

#[derive(Default)]
pub(super) struct Keys {
    pub(super) records: HashMap<Arc<str>, Record>,
    /// Expiry times of done records, earliest first; stale entries (the key
    /// was claimed again since) are skipped when they surface.
    expiries: BinaryHeap<Reverse<(Instant, Arc<str>)>>,
}

impl MemoryStore {
    /// Makes room for one more idempotency record: evicts completed
    /// records, closest to expiry first, while the store is full.
    fn make_room_for_key(&self, keys: &mut Keys) {
        let mut evicted = 0u64;
        while keys.records.len() >= self.max_keys {
            let Some(Reverse((until, key))) = keys.expiries.pop() else {
                // Claims being run fill it: let this one in above the cap.
                break;
            };
            if keys
                .records
                .get(&key)
                .is_some_and(|r| r.until == until && matches!(r.state, RecordState::Done { .. }))
            {
                keys.records.remove(&key);
                evicted += 1;
            }
        }
        if evicted > 0 {
            if let Some(metrics) = self.metrics.get() {
                metrics.records_evicted.increment(evicted);
            }
            if !self.warned_keys_full.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    max_keys = self.max_keys,
                    "the in-memory store is full: the completed idempotency records closest to \
                     expiry are evicted, and a duplicate of one runs again (raise the cap with \
                     MemoryStore::with_max_keys, or use a shared store)"
                );
            }
        }
    }

    fn report_keys(&self, keys: &Keys) {
        if let Some(metrics) = self.metrics.get() {
            metrics.records.set(keys.records.len() as f64);
        }
    }

    pub(super) fn claim_now(&self, key: &str, lease: Duration) -> Claim {
        let now = Instant::now();
        let mut keys = self.keys();
        let mut purged = false;
        while let Some(Reverse((until, _))) = keys.expiries.peek() {
            if *until > now {
                break;
            }
            let Reverse((until, expired)) = keys.expiries.pop().expect("peeked");
            if keys
                .records
                .get(&expired)
                .is_some_and(|r| r.until == until && matches!(r.state, RecordState::Done { .. }))
            {
                keys.records.remove(&expired);
                purged = true;
            }
        }
        if purged {
            self.report_keys(&keys);
        }
        let token = fresh_token();
        let claimed = RecordState::Claimed { token };
        let until = now + lease;
        if let Some(record) = keys.records.get_mut(key) {
            if record.until > now {
                return match &record.state {
                    RecordState::Done { reply } => Claim::Done(reply.clone()),
                    RecordState::Claimed { .. } => Claim::InProgress,
                };
            }
            // Expired: a crashed claimant's lease, or a record past its window.
            record.state = claimed;
            record.until = until;
            return Claim::Acquired(token);
        }
        self.make_room_for_key(&mut keys);
        let key: Arc<str> = key.into();
        keys.records.insert(
            key.clone(),
            Record {
                state: claimed,
                until,
                key,
            },
        );
        self.report_keys(&keys);
        Claim::Acquired(token)
    }

    pub(super) fn complete_now(&self, key: &str, reply: Option<StoredReply>, ttl: Duration) {
        let until = Instant::now() + ttl;
        let mut keys = self.keys();
        // Completing after the lease was taken over (another token) still
        // records the result: the handler did run, and a later duplicate
        // must not run it again. A record that is already done keeps its
        // first reply.
        let shared = match keys.records.get_mut(key) {
            Some(record) if matches!(record.state, RecordState::Done { .. }) => return,
            Some(record) => {
                record.state = RecordState::Done { reply };
                record.until = until;
                record.key.clone()
            }
            None => {
                self.make_room_for_key(&mut keys);
                let shared: Arc<str> = key.into();
                let record = Record {
                    state: RecordState::Done { reply },
                    until,
                    key: shared.clone(),
                };
                keys.records.insert(shared.clone(), record);
                self.report_keys(&keys);
                shared
            }
        };
        keys.expiries.push(Reverse((until, shared)));
    }

    pub(super) fn release_now(&self, key: &str, token: ClaimToken) {
        let mut keys = self.keys();
        if keys
            .records
            .get(key)
            .is_some_and(|r| matches!(r.state, RecordState::Claimed { token: t } if t == token))
        {
            keys.records.remove(key);
            self.report_keys(&keys);
        }
    }

    pub(super) fn renew_claim_now(&self, key: &str, token: ClaimToken, lease: Duration) -> bool {
        let now = Instant::now();
        let mut keys = self.keys();
        match keys.records.get_mut(key) {
            Some(record)
                if record.until > now
                    && matches!(record.state, RecordState::Claimed { token: t } if t == token) =>
            {
                record.until = now + lease;
                true
            }
            _ => false,
        }
    }
}
