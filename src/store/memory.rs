//! A single-process store: idempotency records and session state in memory.

use super::{
    Claim, ClaimToken, REMEMBERED_GAPS, SessionPosition, SessionTurn, Store, StoredReply, fresh_token,
};
use crate::error::BrokerError;
use crate::transport::{BoxFuture, succeeded};
use bytes::Bytes;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an idle session's state is kept before it is forgotten.
const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Idempotency and session state for one process.
///
/// Correct for any number of routes and tasks in one process; workers in
/// several processes need a shared store.
pub struct MemoryStore {
    keys: Mutex<Keys>,
    sessions: Mutex<Sessions>,
    session_ttl: Duration,
}

enum State {
    Claimed { token: ClaimToken },
    Done { reply: Option<StoredReply> },
}

struct Record {
    state: State,
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

struct Session {
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

impl Session {
    fn new(now: Instant) -> Self {
        Session {
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
}

#[derive(Default)]
struct Sessions {
    map: HashMap<String, Session>,
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
        }
    }

    /// Forgets sessions idle for longer than `ttl` (default 7 days).
    pub fn with_session_ttl(mut self, ttl: Duration) -> Self {
        self.session_ttl = ttl;
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
        }
        sessions
    }

    fn claim_now(&self, key: &str, lease: Duration) -> Claim {
        let now = Instant::now();
        let mut keys = self.keys();
        while let Some(Reverse((until, _))) = keys.expiries.peek() {
            if *until > now {
                break;
            }
            let Reverse((until, expired)) = keys.expiries.pop().expect("peeked");
            if keys
                .records
                .get(&expired)
                .is_some_and(|r| r.until == until && matches!(r.state, State::Done { .. }))
            {
                keys.records.remove(&expired);
            }
        }
        let token = fresh_token();
        let claimed = State::Claimed { token };
        let until = now + lease;
        if let Some(record) = keys.records.get_mut(key) {
            if record.until > now {
                return match &record.state {
                    State::Done { reply } => Claim::Done(reply.clone()),
                    State::Claimed { .. } => Claim::InProgress,
                };
            }
            // Expired: a crashed claimant's lease, or a record past its window.
            record.state = claimed;
            record.until = until;
            return Claim::Acquired(token);
        }
        let key: Arc<str> = key.into();
        keys.records.insert(
            key.clone(),
            Record {
                state: claimed,
                until,
                key,
            },
        );
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
            Some(record) if matches!(record.state, State::Done { .. }) => return,
            Some(record) => {
                record.state = State::Done { reply };
                record.until = until;
                record.key.clone()
            }
            None => {
                let shared: Arc<str> = key.into();
                let record = Record {
                    state: State::Done { reply },
                    until,
                    key: shared.clone(),
                };
                keys.records.insert(shared.clone(), record);
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
            .is_some_and(|r| matches!(r.state, State::Claimed { token: t } if t == token))
        {
            keys.records.remove(key);
        }
    }

    fn begin_now(&self, session: &str, sequence: u64, lease: Duration) -> SessionTurn {
        let now = Instant::now();
        let mut sessions = self.sessions();
        let entry = match sessions.map.get_mut(session) {
            Some(entry) => entry,
            None => sessions
                .map
                .entry(session.to_owned())
                .or_insert_with(|| Session::new(now)),
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

    fn session_begin(
        &self,
        session: &str,
        sequence: u64,
        lease: Duration,
    ) -> BoxFuture<'_, Result<SessionTurn, BrokerError>> {
        ready(self.begin_now(session, sequence, lease))
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
        let entry = sessions
            .map
            .entry(session.to_owned())
            .or_insert_with(|| Session::new(now));
        entry.state = Some(value);
        entry.touched = now;
        succeeded()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conforms() {
        super::super::conformance::all(&MemoryStore::new(), "memory").await;
    }
}
