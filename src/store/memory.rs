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

use super::{
    Claim, ClaimToken, REMEMBERED_GAPS, SessionPosition, SessionTurn, Store, StoredReply, fresh_token,
};
use crate::error::BrokerError;
use crate::ops::metrics::{STORE_EVICTIONS, STORE_RECORDS};
use crate::util::future::{BoxFuture, succeeded};
use bytes::Bytes;
use metrics::{Counter, Gauge, counter, gauge};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

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

enum RecordState {
    Claimed { token: ClaimToken },
    Done { reply: Option<StoredReply> },
}

struct Record {
    state: RecordState,
    until: Instant,
    /// The map's key, shared with the expiry heap.
    key: Arc<str>,
}

#[derive(Default)]
struct Keys {
    records: HashMap<Arc<str>, Record>,
    /// Expiry times of done records, earliest first; stale entries (the key
    /// was claimed again since) are skipped when they surface.
    expiries: BinaryHeap<Reverse<(Instant, Arc<str>)>>,
}

struct SessionRecord {
    next: u64,
    lease: Option<(u64, Instant)>,
    /// Held for this number until then (see [`Store::session_abort`]).
    hold: Option<(u64, Instant)>,
    /// Lowest and highest numbers reported early (meaningful only while
    /// above `next`).
    early: u64,
    latest: u64,
    /// Ranges the gap policy skipped, newest last.
    gaps: VecDeque<(u64, u64)>,
    state: Option<Bytes>,
    touched: Instant,
}

impl SessionRecord {
    fn new(now: Instant) -> Self {
        SessionRecord {
            next: 1,
            lease: None,
            hold: None,
            early: 0,
            latest: 0,
            gaps: VecDeque::new(),
            state: None,
            touched: now,
        }
    }

    fn early(&self) -> Option<u64> {
        (self.early > self.next).then_some(self.early)
    }

    fn latest(&self) -> Option<u64> {
        (self.latest > self.next).then_some(self.latest)
    }

    /// Whether a worker is at it: a live lease or hold, or numbers reported
    /// early that wait for their turn. Such a session is never evicted.
    fn in_use(&self, now: Instant) -> bool {
        matches!(self.lease, Some((_, until)) if until > now)
            || matches!(self.hold, Some((_, until)) if until > now)
            || self.early().is_some()
    }
}

#[derive(Default)]
struct Sessions {
    map: HashMap<String, SessionRecord>,
    ops_since_sweep: usize,
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

    /// Makes room for one more idempotency record: evicts completed
    /// records, closest to expiry first, while the store is full.
    fn make_room_for_key(&self, keys: &mut Keys) {
        let mut evicted = 0u64;
        while keys.records.len() >= self.max_keys {
            let Some(Reverse((until, key))) = keys.expiries.pop() else {
                // Claims being run fill it: let this one in above the cap.
                break;
            };
            if keys
                .records
                .get(&key)
                .is_some_and(|r| r.until == until && matches!(r.state, RecordState::Done { .. }))
            {
                keys.records.remove(&key);
                evicted += 1;
            }
        }
        if evicted > 0 {
            if let Some(metrics) = self.metrics.get() {
                metrics.records_evicted.increment(evicted);
            }
            if !self.warned_keys_full.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    max_keys = self.max_keys,
                    "the in-memory store is full: the completed idempotency records closest to \
                     expiry are evicted, and a duplicate of one runs again (raise the cap with \
                     MemoryStore::with_max_keys, or use a shared store)"
                );
            }
        }
    }

    fn report_keys(&self, keys: &Keys) {
        if let Some(metrics) = self.metrics.get() {
            metrics.records.set(keys.records.len() as f64);
        }
    }

    /// Makes room for one more session: forgets expired sessions, then the
    /// longest idle ones nobody is at, down to nine tenths of the cap.
    fn make_room_for_session(&self, sessions: &mut Sessions, now: Instant) {
        if sessions.map.len() < self.max_sessions {
            return;
        }
        let ttl = self.session_ttl;
        sessions
            .map
            .retain(|_, s| s.in_use(now) || now.duration_since(s.touched) < ttl);
        if sessions.map.len() < self.max_sessions {
            return;
        }
        let keep = self.max_sessions - self.max_sessions / 10 - 1;
        let mut idle: Vec<Instant> = sessions
            .map
            .values()
            .filter(|s| !s.in_use(now))
            .map(|s| s.touched)
            .collect();
        let surplus = sessions.map.len().saturating_sub(keep).min(idle.len());
        if surplus == 0 {
            // Sessions in use fill it: let this one in above the cap.
            return;
        }
        let (_, &mut newest_evicted, _) = idle.select_nth_unstable(surplus - 1);
        drop(idle);
        let before = sessions.map.len();
        let mut left = surplus;
        sessions.map.retain(|_, s| {
            if left == 0 || s.touched > newest_evicted || s.in_use(now) {
                return true;
            }
            left -= 1;
            false
        });
        let evicted = (before - sessions.map.len()) as u64;
        if let Some(metrics) = self.metrics.get() {
            metrics.sessions_evicted.increment(evicted);
        }
        if !self.warned_sessions_full.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                max_sessions = self.max_sessions,
                evicted,
                "the in-memory store is full: the longest idle sessions are evicted, and one \
                 that comes back starts from sequence 1 (raise the cap with \
                 MemoryStore::with_max_sessions, or use a shared store)"
            );
        }
    }

    /// Adds `session`, known to be missing, after making room for it.
    fn new_session<'a>(
        &self,
        sessions: &'a mut Sessions,
        session: &str,
        now: Instant,
    ) -> &'a mut SessionRecord {
        self.make_room_for_session(sessions, now);
        sessions.map.insert(session.to_owned(), SessionRecord::new(now));
        self.report_sessions(sessions);
        sessions.map.get_mut(session).expect("just inserted")
    }

    fn report_sessions(&self, sessions: &Sessions) {
        if let Some(metrics) = self.metrics.get() {
            metrics.sessions.set(sessions.map.len() as f64);
        }
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

    fn claim_now(&self, key: &str, lease: Duration) -> Claim {
        let now = Instant::now();
        let mut keys = self.keys();
        let mut purged = false;
        while let Some(Reverse((until, _))) = keys.expiries.peek() {
            if *until > now {
                break;
            }
            let Reverse((until, expired)) = keys.expiries.pop().expect("peeked");
            if keys
                .records
                .get(&expired)
                .is_some_and(|r| r.until == until && matches!(r.state, RecordState::Done { .. }))
            {
                keys.records.remove(&expired);
                purged = true;
            }
        }
        if purged {
            self.report_keys(&keys);
        }
        let token = fresh_token();
        let claimed = RecordState::Claimed { token };
        let until = now + lease;
        if let Some(record) = keys.records.get_mut(key) {
            if record.until > now {
                return match &record.state {
                    RecordState::Done { reply } => Claim::Done(reply.clone()),
                    RecordState::Claimed { .. } => Claim::InProgress,
                };
            }
            // Expired: a crashed claimant's lease, or a record past its window.
            record.state = claimed;
            record.until = until;
            return Claim::Acquired(token);
        }
        self.make_room_for_key(&mut keys);
        let key: Arc<str> = key.into();
        keys.records.insert(
            key.clone(),
            Record {
                state: claimed,
                until,
                key,
            },
        );
        self.report_keys(&keys);
        Claim::Acquired(token)
    }

    fn complete_now(&self, key: &str, reply: Option<StoredReply>, ttl: Duration) {
        let until = Instant::now() + ttl;
        let mut keys = self.keys();
        // Completing after the lease was taken over (another token) still
        // records the result: the handler did run, and a later duplicate
        // must not run it again. A record that is already done keeps its
        // first reply.
        let shared = match keys.records.get_mut(key) {
            Some(record) if matches!(record.state, RecordState::Done { .. }) => return,
            Some(record) => {
                record.state = RecordState::Done { reply };
                record.until = until;
                record.key.clone()
            }
            None => {
                self.make_room_for_key(&mut keys);
                let shared: Arc<str> = key.into();
                let record = Record {
                    state: RecordState::Done { reply },
                    until,
                    key: shared.clone(),
                };
                keys.records.insert(shared.clone(), record);
                self.report_keys(&keys);
                shared
            }
        };
        keys.expiries.push(Reverse((until, shared)));
    }

    fn release_now(&self, key: &str, token: ClaimToken) {
        let mut keys = self.keys();
        if keys
            .records
            .get(key)
            .is_some_and(|r| matches!(r.state, RecordState::Claimed { token: t } if t == token))
        {
            keys.records.remove(key);
            self.report_keys(&keys);
        }
    }

    fn renew_claim_now(&self, key: &str, token: ClaimToken, lease: Duration) -> bool {
        let now = Instant::now();
        let mut keys = self.keys();
        match keys.records.get_mut(key) {
            Some(record)
                if record.until > now
                    && matches!(record.state, RecordState::Claimed { token: t } if t == token) =>
            {
                record.until = now + lease;
                true
            }
            _ => false,
        }
    }

    fn renew_turn_now(&self, session: &str, sequence: u64, lease: Duration) -> bool {
        let now = Instant::now();
        let mut sessions = self.sessions();
        match sessions.map.get_mut(session) {
            Some(entry) if matches!(entry.lease, Some((s, until)) if s == sequence && until > now) => {
                entry.lease = Some((sequence, now + lease));
                entry.touched = now;
                true
            }
            _ => false,
        }
    }

    fn begin_now(&self, session: &str, sequence: u64, lease: Duration) -> SessionTurn {
        let now = Instant::now();
        let mut sessions = self.sessions();
        let entry = match sessions.map.get_mut(session) {
            Some(entry) => entry,
            None => self.new_session(&mut sessions, session, now),
        };
        entry.touched = now;
        let next = entry.next;
        if sequence < next {
            if entry
                .gaps
                .iter()
                .any(|&(from, to)| (from..to).contains(&sequence))
            {
                return SessionTurn::Skipped { next };
            }
            return SessionTurn::Stale { next };
        }
        if sequence > next {
            if entry.early().is_none_or(|early| sequence < early) {
                entry.early = sequence;
            }
            if entry.latest().is_none_or(|latest| sequence > latest) {
                entry.latest = sequence;
            }
            return SessionTurn::Early { next };
        }
        match entry.lease {
            Some((_, until)) if until > now => {
                let until = now + lease;
                if entry.hold.is_none_or(|(_, held)| held < until) {
                    entry.hold = Some((sequence, until));
                }
                SessionTurn::Busy
            }
            _ => {
                entry.lease = Some((sequence, now + lease));
                entry.hold = None;
                SessionTurn::Run
            }
        }
    }

    /// Ends `sequence`'s lease: finished (`hold` none: the session moves
    /// on) or to be tried again (held for `hold`).
    fn end_now(&self, session: &str, sequence: u64, hold: Option<Duration>) {
        let now = Instant::now();
        let mut sessions = self.sessions();
        if let Some(entry) = sessions.map.get_mut(session) {
            if matches!(entry.lease, Some((s, _)) if s == sequence) {
                entry.lease = None;
            }
            match hold {
                None => {
                    if entry.next == sequence {
                        entry.next = sequence.saturating_add(1);
                    }
                    if matches!(entry.hold, Some((s, _)) if s == sequence) {
                        entry.hold = None;
                    }
                }
                Some(hold) if !hold.is_zero() && entry.next == sequence => {
                    let until = now + hold;
                    if entry.hold.is_none_or(|(_, held)| held < until) {
                        entry.hold = Some((sequence, until));
                    }
                }
                Some(_) => {}
            }
            entry.touched = now;
        }
    }

    fn skip_now(&self, session: &str, from: u64, to: u64) -> bool {
        let now = Instant::now();
        let mut sessions = self.sessions();
        let Some(entry) = sessions.map.get_mut(session) else {
            return false;
        };
        let leased = matches!(entry.lease, Some((_, until)) if until > now);
        let held = matches!(entry.hold, Some((_, until)) if until > now);
        if entry.next != from || leased || held {
            return false;
        }
        entry.next = to;
        if from < to {
            if entry.gaps.len() == REMEMBERED_GAPS {
                entry.gaps.pop_front();
            }
            entry.gaps.push_back((from, to));
        }
        entry.touched = now;
        true
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

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn conforms() {
        super::super::conformance::all(&MemoryStore::new(), "memory").await;
    }

    /// Runs `key` to completion, kept for `window`.
    fn run(store: &MemoryStore, key: &str, window: Duration) {
        assert!(
            matches!(store.claim_now(key, LEASE), Claim::Acquired(_)),
            "{key} is new"
        );
        store.complete_now(key, None, window);
    }

    /// The keys the store holds, sorted.
    fn kept(store: &MemoryStore) -> Vec<String> {
        let mut keys: Vec<String> = store.keys().records.keys().map(|k| k.to_string()).collect();
        keys.sort();
        keys
    }

    #[test]
    fn the_key_cap_evicts_the_oldest_completed_record_first() {
        let store = MemoryStore::new().with_max_keys(3);
        for key in ["a", "b", "c", "d", "e"] {
            run(&store, key, HOUR);
            assert!(store.keys().records.len() <= 3);
        }
        assert_eq!(kept(&store), ["c", "d", "e"]);
        assert_eq!(
            store.claim_now("e", LEASE),
            Claim::Done(None),
            "kept: a duplicate"
        );
        assert!(
            matches!(store.claim_now("a", LEASE), Claim::Acquired(_)),
            "evicted: it runs again"
        );
    }

    #[test]
    fn the_key_cap_evicts_the_record_closest_to_expiry_first() {
        // Routes with different windows: what expires soonest goes first,
        // whatever its age.
        let store = MemoryStore::new().with_max_keys(3);
        run(&store, "long", 24 * HOUR);
        run(&store, "short", HOUR);
        run(&store, "middle", 2 * HOUR);
        run(&store, "new", 24 * HOUR);
        assert_eq!(kept(&store), ["long", "middle", "new"]);
        run(&store, "newer", 24 * HOUR);
        assert_eq!(kept(&store), ["long", "new", "newer"]);
    }

    #[test]
    fn claims_being_run_are_never_evicted() {
        let store = MemoryStore::new().with_max_keys(2);
        for key in ["a", "b", "c"] {
            assert!(matches!(store.claim_now(key, LEASE), Claim::Acquired(_)));
        }
        // Nothing completed to evict: the third claim is let in above the cap.
        assert_eq!(kept(&store), ["a", "b", "c"]);
        store.complete_now("a", None, HOUR);
        assert!(matches!(store.claim_now("d", LEASE), Claim::Acquired(_)));
        assert_eq!(kept(&store), ["b", "c", "d"], "only the completed record went");
        for key in ["b", "c", "d"] {
            assert_eq!(store.claim_now(key, LEASE), Claim::InProgress, "{key}");
        }
    }

    /// Handles `sequence` of `session` to the end.
    fn handle(store: &MemoryStore, session: &str, sequence: u64) {
        assert_eq!(store.begin_now(session, sequence, LEASE), SessionTurn::Run);
        store.end_now(session, sequence, None);
    }

    fn has_session(store: &MemoryStore, session: &str) -> bool {
        store.sessions.lock().unwrap().map.contains_key(session)
    }

    #[test]
    fn the_session_cap_evicts_the_longest_idle_sessions() {
        let store = MemoryStore::new().with_max_sessions(10);
        for i in 0..30 {
            handle(&store, &format!("s{i}"), 1);
            assert!(store.sessions.lock().unwrap().map.len() <= 10);
        }
        assert!(has_session(&store, "s29") && has_session(&store, "s25"));
        assert!(!has_session(&store, "s0") && !has_session(&store, "s19"));
        // One that was used again lately stays.
        let store = MemoryStore::new().with_max_sessions(10);
        handle(&store, "busy", 1);
        for i in 0..30 {
            handle(&store, &format!("s{i}"), 1);
            handle(&store, "busy", i + 2);
        }
        assert_eq!(store.begin_now("busy", 32, LEASE), SessionTurn::Run);
    }

    #[test]
    fn sessions_in_use_are_never_evicted() {
        let store = MemoryStore::new().with_max_sessions(4);
        // Leased (running), held (a retry comes back), waiting (early numbers).
        assert_eq!(store.begin_now("leased", 1, LEASE), SessionTurn::Run);
        assert_eq!(store.begin_now("held", 1, LEASE), SessionTurn::Run);
        store.end_now("held", 1, Some(LEASE));
        assert_eq!(
            store.begin_now("waiting", 2, LEASE),
            SessionTurn::Early { next: 1 }
        );
        assert_eq!(store.begin_now("leased-too", 1, LEASE), SessionTurn::Run);
        for i in 0..5 {
            handle(&store, &format!("idle{i}"), 1);
        }
        // Full of sessions in use: the new ones came in above the cap, and
        // only idle ones were evicted.
        for session in ["leased", "held", "waiting", "leased-too", "idle4"] {
            assert!(has_session(&store, session), "{session}");
        }
        assert!(!has_session(&store, "idle0"));
        assert_eq!(store.begin_now("leased", 1, LEASE), SessionTurn::Busy);
        assert!(!store.skip_now("held", 1, 2), "still held");
        let early = store.sessions.lock().unwrap().map["waiting"].early();
        assert_eq!(early, Some(2), "the early number is remembered");
    }

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
    }

    #[test]
    fn evictions_and_sizes_are_reported_as_metrics() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let exposition = recorder.handle();
        let store = MemoryStore::new().with_max_keys(2).with_max_sessions(10);
        metrics::with_local_recorder(&recorder, || store.register_metrics());
        let text = exposition.render();
        for series in [
            r#"wharf_store_records{kind="idempotency"}"#,
            r#"wharf_store_records{kind="session"}"#,
            r#"wharf_store_evictions_total{kind="idempotency"}"#,
            r#"wharf_store_evictions_total{kind="session"}"#,
        ] {
            assert_eq!(
                sample(&text, series),
                Some(0.0),
                "{series} from the start:\n{text}"
            );
        }
        for key in ["a", "b", "c", "d", "e"] {
            run(&store, key, HOUR);
        }
        for i in 0..11 {
            handle(&store, &format!("s{i}"), 1);
        }
        let text = exposition.render();
        let value = |series| sample(&text, series).unwrap_or_else(|| panic!("{series} in\n{text}"));
        assert_eq!(value(r#"wharf_store_evictions_total{kind="idempotency"}"#), 3.0);
        assert_eq!(value(r#"wharf_store_records{kind="idempotency"}"#), 2.0);
        // The eleventh session evicted the two longest idle (down to 9/10 of
        // the cap, less one for it).
        assert_eq!(value(r#"wharf_store_evictions_total{kind="session"}"#), 2.0);
        assert_eq!(value(r#"wharf_store_records{kind="session"}"#), 9.0);
    }
}
