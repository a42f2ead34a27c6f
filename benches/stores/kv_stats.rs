//! What a run asked of the NATS KV store: messages on the store's own
//! connection (its client's statistics) and the server's view (writes
//! stored in the buckets, JetStream API requests).

use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The server's counters at one moment (see [`crate::kv::Kv::stats`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct KvServerStats {
    /// Sum of the last sequence numbers of the two buckets' streams: the
    /// writes (puts, creates, updates, deletes) they stored so far.
    pub writes: u64,
    /// `api.total` of the account's JetStream info, if it could be read.
    pub api: Option<u64>,
}

/// The change of a store's counters over a run.
#[derive(Clone, Copy, Debug, Default)]
pub struct KvStats {
    /// Messages the store's connection sent (`out_messages`): KV requests
    /// (gets, creates, updates) and publishes.
    pub sent: u64,
    /// Messages it received (`in_messages`): replies, and the session
    /// changes its watch on the sessions bucket heard.
    pub received: u64,
    /// Writes the buckets' streams stored.
    pub writes: u64,
    /// JetStream API requests of the whole account (the transport's too on
    /// NATS, and anyone else's on the server), less the one that reads it.
    pub api: Option<u64>,
}

/// The store connection's and the server's counters at the start of a run.
pub struct KvBefore {
    client: Arc<async_nats::Statistics>,
    sent: u64,
    received: u64,
    server: KvServerStats,
}

impl KvBefore {
    pub fn take(client: Arc<async_nats::Statistics>, server: KvServerStats) -> Self {
        KvBefore {
            sent: client.out_messages.load(Ordering::Relaxed),
            received: client.in_messages.load(Ordering::Relaxed),
            client,
            server,
        }
    }

    /// The change up to now, `server` being the server's counters now.
    pub fn since(&self, server: KvServerStats) -> KvStats {
        KvStats {
            sent: self.client.out_messages.load(Ordering::Relaxed) - self.sent,
            received: self.client.in_messages.load(Ordering::Relaxed) - self.received,
            writes: server.writes.saturating_sub(self.server.writes),
            api: server
                .api
                .zip(self.server.api)
                .map(|(now, then)| now.saturating_sub(then).saturating_sub(1)),
        }
    }
}
