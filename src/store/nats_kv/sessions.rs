//! Session turns (begin, renew, end, skip, position) and checkpoints.

use super::NatsKvStore;
use super::keys::kv_key;
use super::kv::{Guess, MAX_TRIES, op_error};
use super::records::{SessionRecord, after, encode};
use crate::error::BrokerError;
use crate::store::{REMEMBERED_GAPS, SessionPosition, SessionTurn};
use crate::wire::timestamp::unix_millis as now_ms;
use bytes::Bytes;
use std::time::Duration;

impl NatsKvStore {
    pub(super) async fn renew_turn_now(
        &self,
        session: &str,
        sequence: u64,
        lease: Duration,
    ) -> Result<bool, BrokerError> {
        self.check_connected()?;
        let bucket = &self.buckets().await?.sessions;
        let kv_key = kv_key("s.", session)?;
        for attempt in 0..MAX_TRIES {
            let loaded = self.load_for(bucket, &kv_key, attempt, Guess::Known).await?;
            let now = now_ms();
            let record = loaded.decode::<SessionRecord>(&kv_key)?;
            let leased = record
                .as_ref()
                .is_some_and(|r| matches!(r.lease, Some((s, until)) if s == sequence && until > now));
            if !leased && loaded.guessed {
                self.known.forget(&kv_key);
                continue;
            }
            let Some(mut record) = record.filter(|_| leased) else {
                return Ok(false);
            };
            record.lease = Some((sequence, after(now, lease)));
            if self
                .write(bucket, &kv_key, encode(&record)?, loaded.revision)
                .await?
            {
                return Ok(true);
            }
        }
        Err(self.contended(&kv_key))
    }

    pub(super) async fn begin_now(
        &self,
        session: &str,
        sequence: u64,
        lease: Duration,
    ) -> Result<SessionTurn, BrokerError> {
        self.check_connected()?;
        let bucket = &self.buckets().await?.sessions;
        let kv_key = kv_key("s.", session)?;
        for attempt in 0..MAX_TRIES {
            let loaded = self.load_for(bucket, &kv_key, attempt, Guess::Known).await?;
            let mut record = loaded.decode::<SessionRecord>(&kv_key)?.unwrap_or_default();
            let (turn, changed) = record.begin(sequence, lease, now_ms());
            if !changed {
                if loaded.guessed {
                    self.known.forget(&kv_key);
                    continue;
                }
                self.renew(bucket, &kv_key, &loaded).await;
                return Ok(turn);
            }
            if self
                .write(bucket, &kv_key, encode(&record)?, loaded.revision)
                .await?
            {
                return Ok(turn);
            }
        }
        Err(self.contended(&kv_key))
    }

    /// Ends `sequence`'s lease: finished (`hold` none: the session moves
    /// on, its hold for the number ends) or to be tried again (held for
    /// `hold`).
    pub(super) async fn end_now(
        &self,
        session: &str,
        sequence: u64,
        hold: Option<Duration>,
    ) -> Result<(), BrokerError> {
        self.check_connected()?;
        let bucket = &self.buckets().await?.sessions;
        let kv_key = kv_key("s.", session)?;
        for attempt in 0..MAX_TRIES {
            let loaded = self.load_for(bucket, &kv_key, attempt, Guess::Known).await?;
            let Some(mut record) = loaded.decode::<SessionRecord>(&kv_key)? else {
                return Ok(());
            };
            let now = now_ms();
            let waiting = record.waited_for(now);
            let changed = record.end(sequence, hold, now);
            if !changed {
                if loaded.guessed {
                    self.known.forget(&kv_key);
                    continue;
                }
                self.renew(bucket, &kv_key, &loaded).await;
                return Ok(());
            }
            if self
                .write(bucket, &kv_key, encode(&record)?, loaded.revision)
                .await?
            {
                if waiting {
                    self.announce(&kv_key).await;
                }
                return Ok(());
            }
        }
        Err(self.contended(&kv_key))
    }

    /// Finishes `sequence` and asks for `sequence + 1`'s turn, in one write.
    pub(super) async fn pass_now(
        &self,
        session: &str,
        sequence: u64,
        lease: Duration,
    ) -> Result<Option<SessionTurn>, BrokerError> {
        let Some(following) = sequence.checked_add(1) else {
            self.end_now(session, sequence, None).await?;
            return Ok(None);
        };
        self.check_connected()?;
        let bucket = &self.buckets().await?.sessions;
        let kv_key = kv_key("s.", session)?;
        for attempt in 0..MAX_TRIES {
            let loaded = self.load_for(bucket, &kv_key, attempt, Guess::Known).await?;
            let Some(mut record) = loaded.decode::<SessionRecord>(&kv_key)? else {
                // Unknown (forgotten): finishing changes nothing; ask as usual.
                return self.begin_now(session, following, lease).await.map(Some);
            };
            let now = now_ms();
            let waiting = record.waited_for(now);
            let ended = record.end(sequence, None, now);
            let (turn, began) = record.begin(following, lease, now);
            if !ended && !began {
                if loaded.guessed {
                    self.known.forget(&kv_key);
                    continue;
                }
                self.renew(bucket, &kv_key, &loaded).await;
                return Ok(Some(turn));
            }
            if self
                .write(bucket, &kv_key, encode(&record)?, loaded.revision)
                .await?
            {
                if waiting && ended {
                    self.announce(&kv_key).await;
                }
                return Ok(Some(turn));
            }
        }
        Err(self.contended(&kv_key))
    }

    pub(super) async fn position_now(&self, session: &str) -> Result<SessionPosition, BrokerError> {
        self.check_connected()?;
        let bucket = &self.buckets().await?.sessions;
        let kv_key = kv_key("s.", session)?;
        let record = self
            .load(bucket, &kv_key)
            .await?
            .decode::<SessionRecord>(&kv_key)?
            .unwrap_or_default();
        Ok(SessionPosition {
            next: record.next,
            early: record.early(),
            latest: record.latest(),
        })
    }

    pub(super) async fn skip_now(&self, session: &str, from: u64, to: u64) -> Result<bool, BrokerError> {
        self.check_connected()?;
        let bucket = &self.buckets().await?.sessions;
        let kv_key = kv_key("s.", session)?;
        for _ in 0..MAX_TRIES {
            let loaded = self.load(bucket, &kv_key).await?;
            let Some(mut record) = loaded.decode::<SessionRecord>(&kv_key)? else {
                return Ok(false);
            };
            let now = now_ms();
            let leased = matches!(record.lease, Some((_, until)) if until > now);
            let held = matches!(record.hold, Some((_, until)) if until > now);
            if record.next != from || leased || held {
                return Ok(false);
            }
            record.next = to;
            if from < to {
                if record.gaps.len() >= REMEMBERED_GAPS {
                    let excess = record.gaps.len() + 1 - REMEMBERED_GAPS;
                    record.gaps.drain(..excess);
                }
                record.gaps.push((from, to));
            }
            if self
                .write(bucket, &kv_key, encode(&record)?, loaded.revision)
                .await?
            {
                self.announce(&kv_key).await;
                return Ok(true);
            }
        }
        Err(self.contended(&kv_key))
    }

    pub(super) async fn state_now(&self, session: &str) -> Result<Option<Bytes>, BrokerError> {
        self.check_connected()?;
        let bucket = &self.buckets().await?.sessions;
        let kv_key = kv_key("st.", session)?;
        let loaded = self.load(bucket, &kv_key).await?;
        self.renew(bucket, &kv_key, &loaded).await;
        Ok(loaded.value)
    }

    pub(super) async fn set_state_now(&self, session: &str, value: Bytes) -> Result<(), BrokerError> {
        self.check_connected()?;
        let bucket = &self.buckets().await?.sessions;
        let kv_key = kv_key("st.", session)?;
        bucket
            .put(&kv_key, value)
            .await
            .map(|_| ())
            .map_err(|e| op_error("writing", bucket, &kv_key, e))
    }
}
