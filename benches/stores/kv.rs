//! The NATS KV buckets of the runs, and deleting them.

use std::sync::Mutex;
use std::time::Duration;

/// A connection of the bench's own to NATS, for deleting buckets.
pub struct Kv {
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
            jetstream: async_nats::jetstream::new(client),
            prefixes: Mutex::new(Vec::new()),
        })
    }

    /// A bucket prefix of run `run` of this bench, to be cleared.
    pub fn new_prefix(&self, run_id: &str, run: u64) -> String {
        let prefix = format!("wbench_{run_id}_{run}");
        self.prefixes.lock().unwrap().push(prefix.clone());
        prefix
    }

    /// Deletes the buckets of the prefixes handed out so far.
    pub async fn clear(&self) {
        let prefixes = std::mem::take(&mut *self.prefixes.lock().unwrap());
        for prefix in prefixes {
            for bucket in ["idempotency", "sessions"] {
                // A bucket never created (a run that failed early) is no error.
                let _ = self
                    .jetstream
                    .delete_key_value(format!("{prefix}_{bucket}"))
                    .await;
            }
        }
    }
}
