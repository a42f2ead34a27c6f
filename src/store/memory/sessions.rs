//! Session turns: begin, renew, end and skip, and the cap on how many
//! sessions are kept.

use super::MemoryStore;
use crate::store::{REMEMBERED_GAPS, SessionTurn};
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::Duration;
// Tokio's clock: a paused test clock moves leases and timeouts on too.
use tokio::time::Instant;

pub(super) struct SessionRecord {
    pub(super) next: u64,
    pub(super) lease: Option<(u64, Instant)>,
    /// Held for this number until then (see
    /// [`Store::session_abort`](crate::store::Store::session_abort)).
    hold: Option<(u64, Instant)>,
    /// Lowest and highest numbers reported early (meaningful only while
    /// above `next`).
    early: u64,
    latest: u64,
    /// Ranges the gap policy skipped, newest last.
    gaps: VecDeque<(u64, u64)>,
    pub(super) state: Option<Bytes>,
    pub(super) touched: Instant,
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

    pub(super) fn early(&self) -> Option<u64> {
        (self.early > self.next).then_some(self.early)
    }

    pub(super) fn latest(&self) -> Option<u64> {
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
pub(super) struct Sessions {
    pub(super) map: HashMap<String, SessionRecord>,
    pub(super) ops_since_sweep: usize,
}

impl MemoryStore {
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
    pub(super) fn new_session<'a>(
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

    pub(super) fn report_sessions(&self, sessions: &Sessions) {
        if let Some(metrics) = self.metrics.get() {
            metrics.sessions.set(sessions.map.len() as f64);
        }
    }

    pub(super) fn renew_turn_now(&self, session: &str, sequence: u64, lease: Duration) -> bool {
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

    pub(super) fn begin_now(&self, session: &str, sequence: u64, lease: Duration) -> SessionTurn {
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
    pub(super) fn end_now(&self, session: &str, sequence: u64, hold: Option<Duration>) {
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

    pub(super) fn skip_now(&self, session: &str, from: u64, to: u64) -> bool {
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
