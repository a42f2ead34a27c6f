//! Opening the two buckets (creating them, or adjusting their `max_age`),
//! once per store. A bucket that exists with other replicas or storage
//! than the store asks for is an error, not silently used.

use super::NatsKvStore;
use crate::error::{BrokerError, BrokerErrorKind};
use crate::transport::nats::topology as stream_topology;
use crate::transport::topology::{StreamStorage, Topology};
use async_nats::jetstream::{self, kv};
use std::time::Duration;

/// The longest bucket prefix accepted.
const MAX_PREFIX_LEN: usize = 64;

pub(super) struct Buckets {
    pub(super) keys: kv::Store,
    pub(super) sessions: kv::Store,
}

impl NatsKvStore {
    pub(super) fn bucket_names(&self) -> [String; 2] {
        [
            format!("{}_idempotency", self.prefix),
            format!("{}_sessions", self.prefix),
        ]
    }

    pub(super) async fn buckets(&self) -> Result<&Buckets, BrokerError> {
        self.buckets
            .get_or_try_init(|| async {
                let valid = !self.prefix.is_empty()
                    && self.prefix.len() <= MAX_PREFIX_LEN
                    && self
                        .prefix
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if !valid {
                    return Err(BrokerError::new(
                        BrokerErrorKind::Config,
                        format!(
                            "{:?} cannot prefix NATS KV bucket names: use 1 to {MAX_PREFIX_LEN} ASCII letters, digits, '_' and '-'",
                            self.prefix
                        ),
                    ));
                }
                Topology {
                    stream_replicas: self.replicas,
                    ..Topology::default()
                }
                .check()
                .map_err(|e| BrokerError::new(BrokerErrorKind::Config, format!("NATS KV store: {e}")))?;
                self.check_connected()?;
                let [keys, sessions] = self.bucket_names();
                // Refused before anything is created, so that the way out
                // (one replica) is not blocked by a bucket made here.
                if let Some(replicas) = self.replicas {
                    self.refuse_unsafe_replicas(&keys, replicas)?;
                }
                let keys = self
                    .open_bucket(keys, self.max_window, "wharf idempotency records")
                    .await?;
                let sessions = self
                    .open_bucket(sessions, self.session_ttl, "wharf session turns and checkpoints")
                    .await?;
                Ok(Buckets { keys, sessions })
            })
            .await
    }

    pub(super) async fn open_bucket(
        &self,
        name: String,
        max_age: Duration,
        description: &str,
    ) -> Result<kv::Store, BrokerError> {
        use jetstream::stream::{Config, DiscardPolicy};
        // The stream a KV bucket is, as `create_key_value` would configure
        // it. Not `create_key_value` itself: it first asks for the
        // account's info, which async-nats 0.51 cannot parse from
        // nats-server 2.9.
        let config = Config {
            name: format!("KV_{name}"),
            description: Some(description.to_owned()),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            max_messages: -1,
            max_bytes: -1,
            max_message_size: -1,
            max_age,
            storage: stream_topology::storage_type(self.storage.unwrap_or(StreamStorage::File)),
            num_replicas: self.replicas.unwrap_or(1),
            discard: DiscardPolicy::New,
            allow_rollup: true,
            deny_delete: true,
            deny_purge: false,
            allow_direct: true,
            ..Default::default()
        };
        let failed = |e: &dyn std::fmt::Display| {
            BrokerError::new(
                BrokerErrorKind::Declare,
                format!("opening the NATS KV bucket {name} failed: {e}"),
            )
        };
        let mut replicas = config.num_replicas;
        if let Err(created) = self.jetstream.create_stream(config).await {
            // It exists with other settings: keep them (placement; replicas
            // and storage unless this store asks for others), except
            // `max_age`, which the records rely on.
            let stream = match self.jetstream.get_stream(format!("KV_{name}")).await {
                Ok(stream) => stream,
                Err(e) if e.to_string().contains("not found") => {
                    let what = format!("the NATS KV bucket {name}");
                    return Err(stream_topology::creation_error(&what, replicas, created));
                }
                Err(e) => return Err(failed(&format_args!("{created}; {e}"))),
            };
            let mut config = stream.cached_info().config.clone();
            replicas = config.num_replicas;
            if let Some(difference) =
                stream_topology::diverges(config.num_replicas, config.storage, self.replicas, self.storage)
            {
                return Err(stream_topology::diverged(
                    &format!("the NATS KV bucket {name} (stream KV_{name})"),
                    &difference,
                    &format!(
                        "Either ask for what exists (NatsKvStore::with_replicas / with_storage, \
                         WHARF_STORE_REPLICAS), or change the bucket: replicas can be changed in place \
                         on a cluster (`nats stream edit KV_{name} --replicas N`), storage cannot: \
                         delete the bucket (`nats kv rm {name}`: idempotency records and session \
                         positions are lost, so stop the workers first) or use another bucket prefix"
                    ),
                ));
            }
            if config.max_age != max_age {
                tracing::info!(
                    bucket = %name,
                    from = ?config.max_age,
                    to = ?max_age,
                    "setting the max_age of the NATS KV bucket"
                );
                config.max_age = max_age;
                if !max_age.is_zero() {
                    config.duplicate_window = config.duplicate_window.min(max_age);
                }
                self.jetstream
                    .update_stream(&config)
                    .await
                    .map_err(|e| failed(&e))?;
            }
        }
        self.refuse_unsafe_replicas(&name, replicas)?;
        self.jetstream.get_key_value(&name).await.map_err(|e| failed(&e))
    }

    /// A replicated bucket on a nats-server that does not serialise
    /// compare-and-set writes on replicated streams is refused: the
    /// store's claims and session turns would not exclude each other.
    fn refuse_unsafe_replicas(&self, name: &str, replicas: usize) -> Result<(), BrokerError> {
        let version = self.client.server_info().version;
        if replicas <= 1 || !cas_unsafe_when_replicated(&version) {
            return Ok(());
        }
        let (major, minor, patch) = CAS_SAFE_WHEN_REPLICATED;
        Err(BrokerError::new(
            BrokerErrorKind::Config,
            format!(
                "the NATS KV bucket {name} has {replicas} replicas, and nats-server {version} does not \
                 serialise compare-and-set writes on replicated streams (nats-server issue 4320, \
                 fixed in {major}.{minor}.{patch}): two workers could both claim one idempotency key or \
                 session turn. Upgrade the servers to {major}.{minor}.{patch} or later, or use one \
                 replica (NatsKvStore::with_replicas(1), WHARF_STORE_REPLICAS=1)"
            ),
        ))
    }
}

/// The first nats-server release whose expected-last-subject-sequence
/// check is part of the replicated write (nats-server PR 4319): before it,
/// two concurrent KV updates at one revision could both succeed on an R>1
/// stream.
const CAS_SAFE_WHEN_REPLICATED: (u64, u64, u64) = (2, 9, 21);

/// Whether a server reporting `version` (`2.9.10`, `2.10.26-RC.1`) is older
/// than [`CAS_SAFE_WHEN_REPLICATED`]; a version that does not parse is
/// taken as new enough.
pub(super) fn cas_unsafe_when_replicated(version: &str) -> bool {
    let release = version
        .trim_start_matches('v')
        .split(['-', '+'])
        .next()
        .unwrap_or_default();
    let mut parts = release.split('.').map(str::parse::<u64>);
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor)), Some(Ok(patch))) => {
            (major, minor, patch) < CAS_SAFE_WHEN_REPLICATED
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::cas_unsafe_when_replicated;

    #[test]
    fn servers_before_2_9_21_are_unsafe_for_replicated_buckets() {
        for old in ["2.9.10", "v2.9.20", "2.8.4", "1.4.0", "2.9.20-RC.1"] {
            assert!(cas_unsafe_when_replicated(old), "{old}");
        }
        for new in [
            "2.9.21",
            "2.9.25",
            "2.10.0",
            "2.10.26-RC.2",
            "3.0.0",
            "garbage",
            "",
        ] {
            assert!(!cas_unsafe_when_replicated(new), "{new}");
        }
    }
}
