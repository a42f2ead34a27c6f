//! Idempotency and session state behind one small trait.
//!
//! The in-memory store serves one process. Workers that run as several pods
//! share a Redis store (`RedisStore`, feature `redis`) or a NATS KV store
//! (`NatsKvStore`, feature `nats`) through the same trait, so every
//! operation here is a single atomic step on the store's side.

#[cfg(test)]
pub(crate) mod conformance;
mod memory;
#[cfg(feature = "nats")]
mod nats_kv;
#[cfg(feature = "redis")]
mod redis;

pub use memory::{DEFAULT_MAX_KEYS, DEFAULT_MAX_SESSIONS, MemoryStore};
#[cfg(feature = "nats")]
pub use nats_kv::{DEFAULT_BUCKET_PREFIX, MAX_KV_KEY_LEN, NatsKvStore};
#[cfg(feature = "redis")]
pub use redis::RedisStore;

use crate::error::BrokerError;
use crate::util::future::BoxFuture;
use bytes::Bytes;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

/// Proof of an idempotency claim; only its holder can complete or release it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClaimToken(pub u64);

/// A reply kept with a completed idempotency record, so that a duplicate
/// request gets the original reply again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredReply {
    /// Encoded reply body.
    pub body: Bytes,
    /// Its content type.
    pub content_type: Cow<'static, str>,
}

/// Result of trying to claim an idempotency key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Nobody has run it: the claimant runs the handler.
    Acquired(ClaimToken),
    /// Another worker is running it right now (its lease has not expired).
    InProgress,
    /// It ran to completion within the window; here is its reply, if any.
    Done(Option<StoredReply>),
}

/// Result of asking whether a session message may run now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionTurn {
    /// It is this sequence number's turn; the caller holds the session lease.
    Run,
    /// An earlier sequence number has not been handled yet.
    Early {
        /// The sequence number the session waits for.
        next: u64,
    },
    /// This sequence number was handled already (a redelivered copy or a
    /// duplicate): acking it loses nothing.
    Stale {
        /// The sequence number the session waits for.
        next: u64,
    },
    /// The gap policy moved the session past this number before it arrived:
    /// it was never handled, and must not vanish silently.
    Skipped {
        /// The sequence number the session waits for.
        next: u64,
    },
    /// It is this number's turn, but another delivery of it is running.
    Busy,
}

/// Where a session stands, as [`Store::session_position`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionPosition {
    /// The sequence number the session waits for (1 for a new session).
    pub next: u64,
    /// The lowest number above `next` that some worker was told is early
    /// (it exists and waits somewhere): skipping ahead goes no further.
    pub early: Option<u64>,
    /// The highest number above `next` that some worker was told is early:
    /// a gap that dead-letters what waits goes past it.
    pub latest: Option<u64>,
}

/// Gap ranges a store remembers per session, so that a number arriving
/// after the session moved past it is told apart from a repeat.
pub const REMEMBERED_GAPS: usize = 16;

/// A claim token no other process will make: 64 random bits (`src/util/ids.rs`).
pub fn fresh_token() -> ClaimToken {
    ClaimToken(crate::util::ids::claim_token())
}

/// Shared idempotency and session state.
///
/// Keys arrive already scoped by queue. Every method is one atomic operation.
pub trait Store: Send + Sync + 'static {
    /// Claims `key` for `lease` unless it is done or claimed by someone else.
    /// A claim whose lease ran out (a crashed worker) can be taken over.
    fn claim(&self, key: &str, lease: Duration) -> BoxFuture<'_, Result<Claim, BrokerError>>;

    /// Marks `key` done for `ttl`, keeping `reply` for duplicate requests.
    fn complete(
        &self,
        key: &str,
        token: ClaimToken,
        reply: Option<StoredReply>,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), BrokerError>>;

    /// Gives up a claim so that the message can run again (it failed).
    fn release(&self, key: &str, token: ClaimToken) -> BoxFuture<'_, Result<(), BrokerError>>;

    /// Extends the claim of `key` to `lease` from now if `token` still
    /// holds it; `false` when it does not (completed, released, or taken
    /// over after its lease ran out). A worker renews every claim it holds
    /// every third of the lease, so that the lease only bounds how long a
    /// crashed worker's claims block others.
    fn renew_claim(
        &self,
        key: &str,
        token: ClaimToken,
        lease: Duration,
    ) -> BoxFuture<'_, Result<bool, BrokerError>>;

    /// Asks whether `sequence` may run now; on [`SessionTurn::Run`] the
    /// session is leased to the caller for `lease` (and no longer held). On
    /// [`SessionTurn::Busy`] the session is held for `sequence` for `lease`:
    /// the asker has it and asks again. An early number is
    /// remembered (the lowest and highest ones) for [`SessionPosition`]; a number
    /// below `next` inside a remembered gap is [`SessionTurn::Skipped`].
    fn session_begin(
        &self,
        session: &str,
        sequence: u64,
        lease: Duration,
    ) -> BoxFuture<'_, Result<SessionTurn, BrokerError>>;

    /// Extends the session's lease to `lease` from now if it is still
    /// leased for `sequence`; `false` when it is not (finished, aborted, or
    /// taken over after the lease ran out). See [`Store::renew_claim`].
    fn session_renew(
        &self,
        session: &str,
        sequence: u64,
        lease: Duration,
    ) -> BoxFuture<'_, Result<bool, BrokerError>>;

    /// `sequence` is finished (handled or dead-lettered): the session moves
    /// on to `sequence + 1` and the lease ends.
    fn session_finish(&self, session: &str, sequence: u64) -> BoxFuture<'_, Result<(), BrokerError>>;

    /// `sequence` is finished and the caller holds `sequence + 1` (it
    /// waits in this worker): the session moves on and that number's turn
    /// is asked for, in one step where the store can, as
    /// [`session_finish`](Store::session_finish) followed by
    /// [`session_begin`](Store::session_begin)`(sequence + 1, lease)` would.
    /// `Ok(None)`: finished, but the turn could not be asked (ask again);
    /// `Err`: not finished.
    fn session_finish_and_begin(
        &self,
        session: &str,
        sequence: u64,
        lease: Duration,
    ) -> BoxFuture<'_, Result<Option<SessionTurn>, BrokerError>> {
        let session = session.to_owned();
        Box::pin(async move {
            self.session_finish(&session, sequence).await?;
            let Some(following) = sequence.checked_add(1) else {
                return Ok(None);
            };
            match self.session_begin(&session, following, lease).await {
                Ok(turn) => Ok(Some(turn)),
                Err(error) => {
                    tracing::warn!(error = %crate::error::Chain(&error), "session moved on, but its next turn could not be asked for");
                    Ok(None)
                }
            }
        })
    }

    /// `sequence` will be tried again later: the lease ends, the session
    /// still waits for `sequence`, and for `hold` it is *held* for it — the
    /// number exists (it comes back from the broker), so no gap policy may
    /// move the session past it, in this worker or another.
    fn session_abort(
        &self,
        session: &str,
        sequence: u64,
        hold: Duration,
    ) -> BoxFuture<'_, Result<(), BrokerError>>;

    /// Where `session` stands.
    fn session_position(&self, session: &str) -> BoxFuture<'_, Result<SessionPosition, BrokerError>>;

    /// Moves the session from waiting for `from` to waiting for `to`, if it
    /// still waits for `from` and it is neither leased nor held, and remembers
    /// `from..to` as a gap (the last [`REMEMBERED_GAPS`] of them). Returns
    /// whether it moved.
    fn session_skip(&self, session: &str, from: u64, to: u64) -> BoxFuture<'_, Result<bool, BrokerError>>;

    /// The handler-owned checkpoint of `session`.
    fn session_state(&self, session: &str) -> BoxFuture<'_, Result<Option<Bytes>, BrokerError>>;

    /// Replaces the handler-owned checkpoint of `session`.
    fn set_session_state(&self, session: &str, value: Bytes) -> BoxFuture<'_, Result<(), BrokerError>>;

    /// Sessions whose turn ended or that moved, in any worker, while some
    /// worker may wait for them (it was told a later number is early, or
    /// found its number busy), as the store hears of them: a worker holding
    /// a later number of one asks again at once instead of at its watcher's
    /// next look. Turns nobody waits for need not be announced. `None` (the default)
    /// where the store cannot tell; waiting sessions are then re-checked on
    /// a timer only. A store shared by processes should provide it. An
    /// empty name means the store may have missed changes (it reconnected):
    /// every waiting session looks again.
    fn session_changes(&self) -> Option<tokio::sync::broadcast::Receiver<Arc<str>>> {
        None
    }

    /// Registers the store's own metrics with the process's `metrics`
    /// recorder, so that they are exported from the start. An app calls it
    /// as it starts, after installing its exporter ([`App::http`](crate::App::http)).
    /// The default registers none; the in-memory store reports its size
    /// and evictions.
    fn register_metrics(&self) {}
}
