//! Idempotency and session state behind one small trait.
//!
//! The in-memory store serves one process. Workers that run as several pods
//! share a Redis or NATS KV store (a later feature) through the same trait,
//! so every operation here is a single atomic step on the store's side.

mod memory;

pub use memory::MemoryStore;

use crate::error::BrokerError;
use crate::transport::BoxFuture;
use bytes::Bytes;
use std::borrow::Cow;
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
    /// This sequence number was handled (or skipped) already.
    Stale {
        /// The sequence number the session waits for.
        next: u64,
    },
    /// It is this number's turn, but another delivery of it is running.
    Busy,
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

    /// Asks whether `sequence` may run now; on [`SessionTurn::Run`] the
    /// session is leased to the caller for `lease`.
    fn session_begin(
        &self,
        session: &str,
        sequence: u64,
        lease: Duration,
    ) -> BoxFuture<'_, Result<SessionTurn, BrokerError>>;

    /// `sequence` is finished (handled or dead-lettered): the session moves
    /// on to `sequence + 1` and the lease ends.
    fn session_finish(&self, session: &str, sequence: u64) -> BoxFuture<'_, Result<(), BrokerError>>;

    /// `sequence` will be tried again later: the lease ends, the session
    /// still waits for `sequence`.
    fn session_abort(&self, session: &str, sequence: u64) -> BoxFuture<'_, Result<(), BrokerError>>;

    /// The sequence number `session` waits for (1 for a new session).
    fn session_next(&self, session: &str) -> BoxFuture<'_, Result<u64, BrokerError>>;

    /// Moves the session from waiting for `from` to waiting for `to`, if it
    /// still waits for `from` and nobody holds its lease. Returns whether it moved.
    fn session_skip(&self, session: &str, from: u64, to: u64) -> BoxFuture<'_, Result<bool, BrokerError>>;

    /// The handler-owned checkpoint of `session`.
    fn session_state(&self, session: &str) -> BoxFuture<'_, Result<Option<Bytes>, BrokerError>>;

    /// Replaces the handler-owned checkpoint of `session`.
    fn set_session_state(&self, session: &str, value: Bytes) -> BoxFuture<'_, Result<(), BrokerError>>;
}
