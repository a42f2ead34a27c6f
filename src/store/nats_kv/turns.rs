//! The decisions of a session's turn on its record, apart from reading and
//! writing it: asking for a number's turn, and ending one.

use super::records::{SessionRecord, after};
use crate::store::SessionTurn;
use std::time::Duration;

impl SessionRecord {
    /// Asks for `sequence`'s turn at `now_ms`; returns the answer and
    /// whether the record changed (and must be written).
    pub(super) fn begin(&mut self, sequence: u64, lease: Duration, now_ms: u64) -> (SessionTurn, bool) {
        let before = (self.early, self.latest, self.hold);
        let next = self.next;
        let turn = if sequence < next {
            if self.gaps.iter().any(|&(from, to)| (from..to).contains(&sequence)) {
                SessionTurn::Skipped { next }
            } else {
                SessionTurn::Stale { next }
            }
        } else if sequence > next {
            if self.early().is_none_or(|early| sequence < early) {
                self.early = sequence;
            }
            if self.latest().is_none_or(|latest| sequence > latest) {
                self.latest = sequence;
            }
            SessionTurn::Early { next }
        } else {
            match self.lease {
                Some((_, until)) if until > now_ms => {
                    // Held for the asker (its runner may have crashed).
                    let until = after(now_ms, lease);
                    if self.hold.is_none_or(|(_, held)| held < until) {
                        self.hold = Some((sequence, until));
                    }
                    SessionTurn::Busy
                }
                _ => {
                    self.lease = Some((sequence, after(now_ms, lease)));
                    self.hold = None;
                    SessionTurn::Run
                }
            }
        };
        let changed = matches!(turn, SessionTurn::Run) || (self.early, self.latest, self.hold) != before;
        (turn, changed)
    }

    /// Ends `sequence`'s lease: finished (`hold` none: the session moves on,
    /// its hold for the number ends) or to be tried again (held for
    /// `hold`). Returns whether the record changed.
    pub(super) fn end(&mut self, sequence: u64, hold: Option<Duration>, now_ms: u64) -> bool {
        let mut changed = false;
        if matches!(self.lease, Some((s, _)) if s == sequence) {
            self.lease = None;
            changed = true;
        }
        match hold {
            None => {
                if self.next == sequence {
                    self.next = sequence.saturating_add(1);
                    changed = true;
                }
                if matches!(self.hold, Some((s, _)) if s == sequence) {
                    self.hold = None;
                    changed = true;
                }
            }
            Some(hold) if !hold.is_zero() && self.next == sequence => {
                let until = after(now_ms, hold);
                if self.hold.is_none_or(|(_, held)| held < until) {
                    self.hold = Some((sequence, until));
                    changed = true;
                }
            }
            Some(_) => {}
        }
        changed
    }
}
