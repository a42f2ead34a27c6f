//! Reading and writing one KV key at the revision read: the compare-and-set
//! every operation that changes a record is built on.

use super::NatsKvStore;
use super::keys::shorten;
use super::records::decode;
use crate::error::{BrokerError, BrokerErrorKind};
use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::de::DeserializeOwned;

/// How often an operation starts again after concurrent writes before it
/// gives up.
pub(super) const MAX_TRIES: usize = 64;

/// A key as read: its revision (0 when the bucket holds nothing for it), its
/// value (`None` when absent, deleted or purged) and when it was written.
pub(super) struct Loaded {
    pub(super) revision: u64,
    pub(super) value: Option<Bytes>,
    created: Option<async_nats::datetime::DateTime>,
    /// Not read from the server but guessed (`known.rs`): good for a write
    /// at its revision, not for an answer without one.
    pub(super) guessed: bool,
}

/// What an operation's first try takes the key to hold before reading it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Guess {
    /// What this process last wrote, if it remembers; else it reads.
    Known,
    /// What this process last wrote, or else nothing (a new idempotency
    /// key: the claim is a create at revision 0).
    KnownOrAbsent,
}

impl Loaded {
    pub(super) fn decode<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, BrokerError> {
        self.value.as_deref().map(|v| decode(key, v)).transpose()
    }
}

impl NatsKvStore {
    pub(super) fn check_connected(&self) -> Result<(), BrokerError> {
        // While disconnected, async-nats would buffer a write and send it
        // after the reconnect, long after the caller was told it failed.
        if self.client.connection_state() == async_nats::connection::State::Connected {
            Ok(())
        } else {
            Err(BrokerError::new(
                BrokerErrorKind::Connection,
                "not connected to NATS (reconnecting): the store cannot be used",
            ))
        }
    }

    pub(super) async fn load(&self, bucket: &kv::Store, key: &str) -> Result<Loaded, BrokerError> {
        if self.leader_reads_always || reads_from_leader(bucket) {
            return load_from_leader(bucket, key).await;
        }
        match bucket.entry(key).await {
            Ok(None) => Ok(Loaded {
                revision: 0,
                value: None,
                created: None,
                guessed: false,
            }),
            Ok(Some(entry)) => Ok(Loaded {
                revision: entry.revision,
                value: (entry.operation == kv::Operation::Put).then_some(entry.value),
                created: Some(entry.created),
                guessed: false,
            }),
            Err(e) => Err(op_error("reading", bucket, key, e)),
        }
    }

    /// The key for try number `attempt` of an operation: on the first,
    /// guessed as `guess` says (no round trip); on later ones, and where
    /// there is nothing to guess from, read from the server.
    pub(super) async fn load_for(
        &self,
        bucket: &kv::Store,
        key: &str,
        attempt: usize,
        guess: Guess,
    ) -> Result<Loaded, BrokerError> {
        if attempt == 0 {
            if let Some(known) = self.known.get(key) {
                return Ok(Loaded {
                    revision: known.revision,
                    value: Some(known.value),
                    created: Some(known.written),
                    guessed: true,
                });
            }
            if guess == Guess::KnownOrAbsent {
                return Ok(Loaded {
                    revision: 0,
                    value: None,
                    created: None,
                    guessed: true,
                });
            }
        }
        self.load(bucket, key).await
    }

    /// Writes `value` if `key` is still at `revision` (0: no message for
    /// it); `false` when another write came first.
    pub(super) async fn write(
        &self,
        bucket: &kv::Store,
        key: &str,
        value: Bytes,
        revision: u64,
    ) -> Result<bool, BrokerError> {
        self.check_connected()?;
        // Not `kv::Store::create`: it tries revision 0, reads the key again
        // and retries at a tombstone's revision; the revision read here
        // already says which applies.
        match bucket.update(key, value.clone(), revision).await {
            Ok(written) => {
                self.known.wrote(key, written, value);
                Ok(true)
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                self.known.forget(key);
                Ok(false)
            }
            Err(e) => {
                self.known.forget(key);
                Err(op_error("writing", bucket, key, e))
            }
        }
    }

    /// Deletes `key` if it is still at `revision`.
    pub(super) async fn delete(
        &self,
        bucket: &kv::Store,
        key: &str,
        revision: u64,
    ) -> Result<bool, BrokerError> {
        self.check_connected()?;
        self.known.forget(key);
        match bucket.delete_expect_revision(key, Some(revision)).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(op_error("deleting", bucket, key, e)),
        }
    }

    /// Writes an unchanged session record or checkpoint again once it is
    /// older than half the session TTL, so that a session still in use is
    /// not forgotten. A failure only means it was not renewed this time.
    pub(super) async fn renew(&self, bucket: &kv::Store, key: &str, loaded: &Loaded) {
        let (Some(created), Some(value)) = (loaded.created, &loaded.value) else {
            return;
        };
        if self.session_ttl.is_zero() {
            return;
        }
        let old = async_nats::datetime::add_std_duration(created, self.session_ttl / 2)
            .is_ok_and(|half| half < async_nats::datetime::now());
        if old && let Err(error) = self.write(bucket, key, value.clone(), loaded.revision).await {
            tracing::debug!(error = %crate::error::Chain(&error), "renewing a session record failed");
        }
    }

    pub(super) fn contended(&self, key: &str) -> BrokerError {
        BrokerError::new(
            BrokerErrorKind::Store,
            format!(
                "NATS KV key {} changed under {MAX_TRIES} attempts in a row; gave up",
                shorten(key)
            ),
        )
    }
}

/// Whether a key of `bucket` is read from its stream's leader rather than
/// with a direct get. A replicated bucket allows direct gets (as `nats kv
/// add` makes it), and any replica answers them: a replica still catching
/// up after its server restarted answers with a record older than the last
/// write. A session finish read that way saw its number already passed or
/// not yet reached, wrote nothing, and the session stalled on a lease that
/// had run out (the NATS failover case of the cluster tests). The leader
/// answers with every write it acknowledged. One replica is its own leader.
fn reads_from_leader(bucket: &kv::Store) -> bool {
    let config = &bucket.stream.cached_info().config;
    config.allow_direct && config.num_replicas > 1
}

/// Reads `key` from the leader of `bucket`'s stream, as
/// [`kv::Store::entry`] does on a bucket without direct gets.
async fn load_from_leader(bucket: &kv::Store, key: &str) -> Result<Loaded, BrokerError> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    let subject = format!("{}{key}", bucket.prefix);
    match bucket.stream.get_last_raw_message_by_subject(&subject).await {
        Ok(message) => Ok(Loaded {
            revision: message.sequence,
            value: is_put(&message.headers).then_some(message.payload),
            created: Some(message.time),
            guessed: false,
        }),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(Loaded {
            revision: 0,
            value: None,
            created: None,
            guessed: false,
        }),
        Err(e) => Err(op_error("reading", bucket, key, e)),
    }
}

/// Whether a KV message holds a value: not a delete or purge marker, by the
/// `KV-Operation` header or a server's marker (`Nats-Marker-Reason`).
fn is_put(headers: &async_nats::HeaderMap) -> bool {
    let operation = headers.get("KV-Operation").map(|op| op.as_str());
    operation.is_none_or(|op| op == "PUT") && headers.get("Nats-Marker-Reason").is_none()
}

pub(super) fn op_error(
    what: &str,
    bucket: &kv::Store,
    key: &str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> BrokerError {
    BrokerError::new(
        BrokerErrorKind::Store,
        format!(
            "{what} NATS KV key {} in bucket {} failed",
            shorten(key),
            bucket.name
        ),
    )
    .with_source(e)
}

#[cfg(test)]
mod tests {
    use super::is_put;
    use async_nats::HeaderMap;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, *value);
        }
        headers
    }

    #[test]
    fn a_value_is_a_put_and_markers_are_not() {
        assert!(is_put(&headers(&[])));
        assert!(is_put(&headers(&[("KV-Operation", "PUT")])));
        assert!(!is_put(&headers(&[("KV-Operation", "DEL")])));
        assert!(!is_put(&headers(&[("KV-Operation", "PURGE")])));
        assert!(!is_put(&headers(&[("Nats-Marker-Reason", "MaxAge")])));
    }
}
