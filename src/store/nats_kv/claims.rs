//! Idempotency records: claim, complete, release and renew, each a read
//! and a write at the revision read, again on a conflict.

use super::NatsKvStore;
use super::keys::kv_key;
use super::kv::{Guess, MAX_TRIES};
use super::records::{KeyRecord, KeyState, Reply, after, encode};
use crate::error::BrokerError;
use crate::store::{Claim, ClaimToken, StoredReply, fresh_token};
use crate::wire::timestamp::unix_millis as now_ms;
use std::sync::atomic::Ordering;
use std::time::Duration;

impl NatsKvStore {
    /// `requested`, cut to the longest window the idempotency bucket keeps.
    pub(super) fn window(&self, requested: Duration) -> Duration {
        if requested <= self.max_window || self.max_window.is_zero() {
            return requested;
        }
        if !self.warned_window.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                requested = ?requested,
                kept = ?self.max_window,
                "an idempotency window or lease is longer than the NATS KV store keeps records; \
                 it is cut (raise it with NatsKvStore::with_max_idempotency_window)"
            );
        }
        self.max_window
    }

    pub(super) async fn claim_now(&self, key: &str, lease: Duration) -> Result<Claim, BrokerError> {
        self.check_connected()?;
        let bucket = &self.buckets().await?.keys;
        let kv_key = kv_key("k.", key)?;
        let lease = self.window(lease);
        let token = fresh_token();
        for attempt in 0..MAX_TRIES {
            // A new key is the common case: the first try writes at once.
            let loaded = self
                .load_for(bucket, &kv_key, attempt, Guess::KnownOrAbsent)
                .await?;
            let now = now_ms();
            if let Some(record) = loaded.decode::<KeyRecord>(&kv_key)?
                && record.until_ms > now
            {
                if loaded.guessed {
                    self.known.forget(&kv_key);
                    continue;
                }
                return Ok(match record.state {
                    KeyState::Claimed(_) => Claim::InProgress,
                    KeyState::Done(reply) => Claim::Done(reply.map(StoredReply::from)),
                });
            }
            // Absent, deleted, or past its lease or window.
            let record = KeyRecord {
                until_ms: after(now, lease),
                state: KeyState::Claimed(token.0),
            };
            if self
                .write(bucket, &kv_key, encode(&record)?, loaded.revision)
                .await?
            {
                return Ok(Claim::Acquired(token));
            }
        }
        Err(self.contended(&kv_key))
    }

    pub(super) async fn complete_now(
        &self,
        key: &str,
        reply: Option<StoredReply>,
        ttl: Duration,
    ) -> Result<(), BrokerError> {
        self.check_connected()?;
        let bucket = &self.buckets().await?.keys;
        let kv_key = kv_key("k.", key)?;
        let ttl = self.window(ttl);
        let reply = reply.map(Reply::from);
        for attempt in 0..MAX_TRIES {
            let loaded = self.load_for(bucket, &kv_key, attempt, Guess::Known).await?;
            let now = now_ms();
            // Completing after the lease was taken over (another token)
            // still records the result: the handler did run. A record that
            // is already done keeps its first reply.
            if let Some(record) = loaded.decode::<KeyRecord>(&kv_key)?
                && record.until_ms > now
                && matches!(record.state, KeyState::Done(_))
            {
                if loaded.guessed {
                    self.known.forget(&kv_key);
                    continue;
                }
                return Ok(());
            }
            let record = KeyRecord {
                until_ms: after(now, ttl),
                state: KeyState::Done(reply.clone()),
            };
            if self
                .write(bucket, &kv_key, encode(&record)?, loaded.revision)
                .await?
            {
                // This process has no further use for it.
                self.known.forget(&kv_key);
                return Ok(());
            }
        }
        Err(self.contended(&kv_key))
    }

    pub(super) async fn release_now(&self, key: &str, token: ClaimToken) -> Result<(), BrokerError> {
        self.check_connected()?;
        let bucket = &self.buckets().await?.keys;
        let kv_key = kv_key("k.", key)?;
        for attempt in 0..MAX_TRIES {
            let loaded = self.load_for(bucket, &kv_key, attempt, Guess::Known).await?;
            let held = loaded
                .decode::<KeyRecord>(&kv_key)?
                .is_some_and(|r| matches!(r.state, KeyState::Claimed(t) if t == token.0));
            if !held && loaded.guessed {
                self.known.forget(&kv_key);
                continue;
            }
            if !held || self.delete(bucket, &kv_key, loaded.revision).await? {
                return Ok(());
            }
        }
        Err(self.contended(&kv_key))
    }

    pub(super) async fn renew_claim_now(
        &self,
        key: &str,
        token: ClaimToken,
        lease: Duration,
    ) -> Result<bool, BrokerError> {
        self.check_connected()?;
        let bucket = &self.buckets().await?.keys;
        let kv_key = kv_key("k.", key)?;
        let lease = self.window(lease);
        for attempt in 0..MAX_TRIES {
            let loaded = self.load_for(bucket, &kv_key, attempt, Guess::Known).await?;
            let now = now_ms();
            let record = loaded.decode::<KeyRecord>(&kv_key)?;
            let held = record
                .as_ref()
                .is_some_and(|r| r.until_ms > now && matches!(r.state, KeyState::Claimed(t) if t == token.0));
            if !held && loaded.guessed {
                self.known.forget(&kv_key);
                continue;
            }
            let Some(mut record) = record.filter(|_| held) else {
                return Ok(false);
            };
            record.until_ms = after(now, lease);
            if self
                .write(bucket, &kv_key, encode(&record)?, loaded.revision)
                .await?
            {
                return Ok(true);
            }
        }
        Err(self.contended(&kv_key))
    }
}
