//! The NATS KV buckets of the runs: their statistics on the server, and
//! deleting them.

use crate::kv_stats::KvServerStats;
use std::sync::Mutex;
use std::time::Duration;

/// The buckets of a store, by its bucket prefix.
const BUCKETS: [&str; 2] = ["idempotency", "sessions"];

/// A connection of the bench's own to NATS, for statistics and deleting
/// buckets.
pub struct Kv {
    client: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
    /// The bucket prefixes handed out and not yet cleared.
    prefixes: Mutex<Vec<String>>,
}

impl Kv {
    /// Connects, or `None` when the server cannot be reached within 3 s.
    pub async fn connect(url: &str) -> Option<Kv> {
        let client = tokio::time::timeout(
            Duration::from_secs(3),
            async_nats::ConnectOptions::new()
                .connection_timeout(Duration::from_secs(2))
                .connect(url),
        )
        .await
        .ok()?
        .ok()?;
        Some(Kv {
            jetstream: async_nats::jetstream::new(client.clone()),
            client,
            prefixes: Mutex::new(Vec::new()),
        })
    }

    /// A bucket prefix of run `run` of this bench, to be cleared.
    pub fn new_prefix(&self, run_id: &str, run: u64) -> String {
        let prefix = format!("wbench_{run_id}_{run}");
        self.prefixes.lock().unwrap().push(prefix.clone());
        prefix
    }

    /// The server's figures now: the last sequence numbers of the streams
    /// of the buckets of `prefix` (`KV_<prefix>_idempotency`, `…_sessions`),
    /// and JetStream's API request count of the account.
    pub async fn stats(&self, prefix: &str) -> KvServerStats {
        let mut writes = 0;
        for bucket in BUCKETS {
            if let Ok(mut stream) = self.jetstream.get_stream(format!("KV_{prefix}_{bucket}")).await
                && let Ok(info) = stream.info().await
            {
                writes += info.state.last_sequence;
            }
        }
        KvServerStats {
            writes,
            api: self.api_total().await,
        }
    }

    /// `api.total` of the account's JetStream info (`$JS.API.INFO`, read
    /// as JSON: async-nats' `query_account` cannot parse nats-server 2.9's
    /// answer); this request counts as one.
    async fn api_total(&self) -> Option<u64> {
        let reply = self.client.request("$JS.API.INFO", "".into()).await.ok()?;
        let info: serde_json::Value = serde_json::from_slice(&reply.payload).ok()?;
        info.get("api")?.get("total")?.as_u64()
    }

    /// Deletes the buckets of the prefixes handed out so far.
    pub async fn clear(&self) {
        let prefixes = std::mem::take(&mut *self.prefixes.lock().unwrap());
        for prefix in prefixes {
            for bucket in BUCKETS {
                // A bucket never created (a run that failed early) is no error.
                let _ = self
                    .jetstream
                    .delete_key_value(format!("{prefix}_{bucket}"))
                    .await;
            }
        }
    }
}
