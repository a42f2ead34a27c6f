//! What became of each tracked message: the routes' settle listener and
//! the reply recorder write here; [`Tracked`](super::Tracked) reads.
//!
//! A tracked message is known by its allocation: the in-memory broker
//! delivers the very `Arc<Message>` the kit published, on every attempt
//! (a retry puts the same message back), so two messages with the same
//! message id — a publisher's re-sent duplicate — are still told apart.
//! Its [`Tracked`](super::Tracked) holds the `Arc` and removes the entry
//! when dropped, so the address is not reused while the entry lives.

use super::settled::{End, Settled};
use crate::ops::dead_letters::DeadLetter;
use crate::pipeline::{Handled, SettleEvent};
use crate::wire::message::Message;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// The tracked messages of one [`TestBroker`](super::TestBroker).
#[derive(Default)]
pub(super) struct Tracker {
    entries: Mutex<HashMap<usize, Entry>>,
    /// The order in which messages were tracked.
    next_order: AtomicU64,
    /// Woken whenever an entry changes.
    pub(super) changed: Notify,
}

/// One tracked message.
struct Entry {
    /// Where its reply goes and the correlation id it will carry (its
    /// correlation id, else its message id, else none).
    reply_key: Option<(String, Option<String>)>,
    /// Its place in the order of tracking: of several messages a reply
    /// could answer, the earliest tracked without a reply takes it.
    order: u64,
    reply: Option<Message>,
    /// Every settlement of it so far: attempt and outcome.
    seen: Vec<(u32, Handled)>,
    retries: u32,
    end: Option<(End, u32)>,
}

/// The key of a tracked message: the address of its allocation.
pub(super) fn key_of(message: &Arc<Message>) -> usize {
    Arc::as_ptr(message).addr()
}

impl Tracker {
    fn entries(&self) -> MutexGuard<'_, HashMap<usize, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts tracking `message` (before it is published); the caller
    /// keeps the `Arc` until it calls [`forget`](Self::forget). A reply to
    /// `reply_to` carrying its correlation id (or its message id) is
    /// taken as its reply.
    pub(super) fn track(&self, message: &Arc<Message>) -> usize {
        let key = key_of(message);
        let reply_key = message.reply_to.as_ref().map(|address| {
            let correlation = message.correlation_id.as_ref().or(message.message_id.as_ref());
            (address.clone(), correlation.cloned())
        });
        let order = self.next_order.fetch_add(1, Ordering::Relaxed);
        self.entries().insert(
            key,
            Entry {
                reply_key,
                order,
                reply: None,
                seen: Vec::new(),
                retries: 0,
                end: None,
            },
        );
        key
    }

    /// Stops tracking (its [`Tracked`](super::Tracked) was dropped).
    pub(super) fn forget(&self, key: usize) {
        self.entries().remove(&key);
    }

    /// The settle listener of every route started by the kit.
    pub(super) fn settled(&self, event: &SettleEvent<'_>) {
        let key = key_of(event.message);
        {
            let mut entries = self.entries();
            let Some(entry) = entries.get_mut(&key) else {
                return;
            };
            entry.seen.push((event.attempt, event.outcome));
            let dead_letter = || DeadLetter {
                message: event
                    .dead_letter
                    .cloned()
                    .unwrap_or_else(|| event.message.as_ref().clone()),
            };
            let end = match event.outcome {
                Handled::Retried => {
                    entry.retries += 1;
                    None
                }
                // Back to the broker without using an attempt: it comes again.
                Handled::Deferred | Handled::Returned => None,
                Handled::Acked => Some(End::Acked),
                Handled::Duplicate => Some(End::Duplicate),
                Handled::DeadLettered => Some(End::DeadLettered(dead_letter())),
                Handled::Rejected => Some(End::Rejected(dead_letter())),
            };
            if let Some(end) = end {
                entry.end = Some((end, event.attempt.max(1)));
            }
        }
        self.changed.notify_waiters();
    }

    /// A reply a handler sent to `address`: the reply of the tracked
    /// message it answers, if any. (Replies go out before their request is
    /// settled.) Several tracked messages may match — copies of one request
    /// with the same correlation id, or requests without any id to a named
    /// queue — and take the replies in the order they were tracked: copies
    /// of one request get the same reply (a duplicate's is the stored one).
    pub(super) fn replied(&self, address: &str, reply: &Message) {
        let correlation = reply.correlation_id.as_deref();
        let mut entries = self.entries();
        let waiting = entries
            .values_mut()
            .filter(|entry| {
                entry.end.is_none()
                    && entry.reply.is_none()
                    && entry
                        .reply_key
                        .as_ref()
                        .is_some_and(|(to, id)| to == address && id.as_deref() == correlation)
            })
            .min_by_key(|entry| entry.order);
        if let Some(entry) = waiting {
            entry.reply = Some(reply.clone());
        }
    }

    /// The outcome of the message at `key`, once it has one.
    pub(super) fn outcome(&self, key: usize) -> Option<Settled> {
        let entries = self.entries();
        let entry = entries.get(&key)?;
        let (end, attempts) = entry.end.clone()?;
        Some(Settled {
            end,
            attempts,
            retries: entry.retries,
            reply: entry.reply.clone(),
        })
    }

    /// What happened to the message at `key` so far, in words.
    pub(super) fn history(&self, key: usize) -> String {
        let entries = self.entries();
        let Some(entry) = entries.get(&key) else {
            return "nothing (no longer tracked)".to_owned();
        };
        if entry.seen.is_empty() {
            return "no settlement of it".to_owned();
        }
        let mut text = String::new();
        for (attempt, outcome) in &entry.seen {
            if !text.is_empty() {
                text.push_str(", ");
            }
            let what = match outcome {
                Handled::Acked => "acked",
                Handled::Retried => "failed, to be retried",
                Handled::DeadLettered => "dead-lettered",
                Handled::Rejected => "rejected",
                Handled::Duplicate => "acked as a duplicate",
                Handled::Deferred => "deferred (back to the broker for later)",
                Handled::Returned => "returned to the broker (shutdown)",
            };
            let _ = write!(text, "attempt {attempt} {what}");
        }
        text
    }

    /// Whether the message at `key` was ever settled.
    pub(super) fn seen_any(&self, key: usize) -> bool {
        self.entries()
            .get(&key)
            .is_some_and(|entry| !entry.seen.is_empty())
    }
}
