//! A single-process store: idempotency records and session state in memory.
//!
//! Both are capped, so that a stream of keys or session ids can not grow
//! the process without bound within the idempotency window or the session
//! TTL: past [`MemoryStore::with_max_keys`] records, the completed record
//! closest to its expiry goes first; past [`MemoryStore::with_max_sessions`]
//! sessions, the longest idle ones go. Nothing in use is ever evicted (a
//! claim being run, a leased or held session, one with early numbers
//! waiting): when only such entries fill the store, a new one is let in
//! above the cap (they are bounded by the messages this process holds).
//! Evictions are counted in `wharf_store_evictions_total` and the sizes are
//! reported in `wharf_store_records`.

mod claims;
mod sessions;
#[cfg(test)]
mod tests;

use self::claims::Keys;
use self::sessions::Sessions;
use super::{Claim, ClaimToken, SessionPosition, SessionTurn, Store, StoredReply};
use crate::error::BrokerError;
use crate::ops::metrics::{STORE_EVICTIONS, STORE_RECORDS};
use crate::util::future::{BoxFuture, succeeded};
use bytes::Bytes;
use metrics::{Counter, Gauge, counter, gauge};
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
// Tokio's clock: a paused test clock moves leases and timeouts on too.
use tokio::time::Instant;

/// How long an idle session's state is kept before it is forgotten.
const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Idempotency records a [`MemoryStore`] keeps unless
/// [`MemoryStore::with_max_keys`] says otherwise: about 22 MB (measured
/// 220 bytes per record with a 23-byte key and no stored reply; a stored
/// reply adds its body).
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// Sessions a [`MemoryStore`] keeps unless
/// [`MemoryStore::with_max_sessions`] says otherwise: about 26 MB
/// (measured 256 bytes per session with a 24-byte id and no checkpoint; a
/// checkpoint adds its size).
pub const DEFAULT_MAX_SESSIONS: usize = 100_000;

/// Idempotency and session state for one process.
///
/// Correct for any number of routes and tasks in one process; workers in
/// several processes need a shared store (`RedisStore`, `NatsKvStore`):
/// this one does not see the keys and sessions of another process.
///
/// It keeps at most [`DEFAULT_MAX_KEYS`] idempotency records and
/// [`DEFAULT_MAX_SESSIONS`] sessions unless told otherwise; see the module
/// docs for what is evicted first.
pub struct MemoryStore {
    keys: Mutex<Keys>,
    sessions: Mutex<Sessions>,
    session_ttl: Duration,
    max_keys: usize,
    max_sessions: usize,
    /// Registered by [`Store::register_metrics`] (an app starting).
    metrics: OnceLock<StoreMetrics>,
    /// Whether a full store was logged already (once per kind).
    warned_keys_full: AtomicBool,
    warned_sessions_full: AtomicBool,
}

/// The `kind` label values of the store metrics.
const IDEMPOTENCY: &str = "idempotency";
const SESSION: &str = "session";

struct StoreMetrics {
    records: Gauge,
    sessions: Gauge,
    records_evicted: Counter,
    sessions_evicted: Counter,
}

impl StoreMetrics {
    fn register() -> Self {
        StoreMetrics {
            records: gauge!(STORE_RECORDS, "kind" => IDEMPOTENCY),
            sessions: gauge!(STORE_RECORDS, "kind" => SESSION),
            records_evicted: counter!(STORE_EVICTIONS, "kind" => IDEMPOTENCY),
            sessions_evicted: counter!(STORE_EVICTIONS, "kind" => SESSION),
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore {
            keys: Mutex::new(Keys::default()),
            sessions: Mutex::new(Sessions::default()),
            session_ttl: DEFAULT_SESSION_TTL,
            max_keys: DEFAULT_MAX_KEYS,
            max_sessions: DEFAULT_MAX_SESSIONS,
            metrics: OnceLock::new(),
            warned_keys_full: AtomicBool::new(false),
            warned_sessions_full: AtomicBool::new(false),
        }
    }

    /// Forgets sessions idle for longer than `ttl` (default 7 days).
    pub fn with_session_ttl(mut self, ttl: Duration) -> Self {
        self.session_ttl = ttl;
        self
    }

    /// Keeps at most `max` idempotency records (default
    /// [`DEFAULT_MAX_KEYS`], at least 1). A new key past it evicts the
    /// completed record closest to its expiry (with one idempotency window
    /// for all routes, the oldest): a duplicate of an evicted key runs its
    /// handler again. A claim being run is never evicted; when claims alone
    /// fill the store, a new one is let in above `max`.
    pub fn with_max_keys(mut self, max: usize) -> Self {
        self.max_keys = max.max(1);
        self
    }

    /// Keeps at most `max` sessions (default [`DEFAULT_MAX_SESSIONS`], at
    /// least 1). A new session past it evicts the longest idle sessions,
    /// down to nine tenths of `max` (so that the search for them is rare):
    /// an evicted session that comes back starts again from sequence 1,
    /// like one forgotten after its TTL. A session a worker is at (leased,
    /// held, or with early numbers waiting) is never evicted; when only
    /// such sessions fill the store, a new one is let in above `max`.
    pub fn with_max_sessions(mut self, max: usize) -> Self {
        self.max_sessions = max.max(1);
        self
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, Keys> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.ops_since_sweep += 1;
        if sessions.ops_since_sweep > sessions.map.len().max(4096) {
            sessions.ops_since_sweep = 0;
            let now = Instant::now();
            let ttl = self.session_ttl;
            sessions
                .map
                .retain(|_, s| s.lease.is_some() || now.duration_since(s.touched) < ttl);
            self.report_sessions(&sessions);
        }
        sessions
    }
}

fn ready<T: Send + 'static>(value: T) -> BoxFuture<'static, Result<T, BrokerError>> {
    Box::pin(std::future::ready(Ok(value)))
}

impl Store for MemoryStore {
    fn register_metrics(&self) {
        let metrics = self.metrics.get_or_init(StoreMetrics::register);
        let records = self.keys().records.len();
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner()).map.len();
        metrics.records.set(records as f64);
        metrics.sessions.set(sessions as f64);
    }

    fn claim(&self, key: &str, lease: Duration) -> BoxFuture<'_, Result<Claim, BrokerError>> {
        ready(self.claim_now(key, lease))
    }

    fn complete(
        &self,
        key: &str,
        token: ClaimToken,
        reply: Option<StoredReply>,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        let _ = token;
        self.complete_now(key, reply, ttl);
        succeeded()
    }

    fn release(&self, key: &str, token: ClaimToken) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.release_now(key, token);
        succeeded()
    }

    fn renew_claim(
        &self,
        key: &str,
        token: ClaimToken,
        lease: Duration,
    ) -> BoxFuture<'_, Result<bool, BrokerError>> {
        ready(self.renew_claim_now(key, token, lease))
    }

    fn session_begin(
        &self,
        session: &str,
        sequence: u64,
        lease: Duration,
    ) -> BoxFuture<'_, Result<SessionTurn, BrokerError>> {
        ready(self.begin_now(session, sequence, lease))
    }

    fn session_renew(
        &self,
        session: &str,
        sequence: u64,
        lease: Duration,
    ) -> BoxFuture<'_, Result<bool, BrokerError>> {
        ready(self.renew_turn_now(session, sequence, lease))
    }

    fn session_finish(&self, session: &str, sequence: u64) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.end_now(session, sequence, None);
        succeeded()
    }

    fn session_abort(
        &self,
        session: &str,
        sequence: u64,
        hold: Duration,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.end_now(session, sequence, Some(hold));
        succeeded()
    }

    fn session_position(&self, session: &str) -> BoxFuture<'_, Result<SessionPosition, BrokerError>> {
        let sessions = self.sessions();
        ready(sessions.map.get(session).map_or(
            SessionPosition {
                next: 1,
                early: None,
                latest: None,
            },
            |s| SessionPosition {
                next: s.next,
                early: s.early(),
                latest: s.latest(),
            },
        ))
    }

    fn session_skip(&self, session: &str, from: u64, to: u64) -> BoxFuture<'_, Result<bool, BrokerError>> {
        ready(self.skip_now(session, from, to))
    }

    fn session_state(&self, session: &str) -> BoxFuture<'_, Result<Option<Bytes>, BrokerError>> {
        ready(self.sessions().map.get(session).and_then(|s| s.state.clone()))
    }

    fn set_session_state(&self, session: &str, value: Bytes) -> BoxFuture<'_, Result<(), BrokerError>> {
        let now = Instant::now();
        let mut sessions = self.sessions();
        let entry = match sessions.map.get_mut(session) {
            Some(entry) => entry,
            None => self.new_session(&mut sessions, session, now),
        };
        entry.state = Some(value);
        entry.touched = now;
        succeeded()
    }
}
