//! One in-memory queue: priority lanes (see [`crate::transport::lanes`]) plus the
//! messages waiting for a delayed redelivery.

use crate::transport::lanes::Lanes;
use crate::wire::message::Message;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
// Tokio's clock, not std's: under a paused test clock (`start_paused`) a
// delayed redelivery is due as soon as the runtime has nothing else to do,
// so a test of a 60 s backoff takes no 60 s.
use tokio::time::Instant;

/// A queued message.
pub(crate) struct Entry {
    pub(crate) message: Arc<Message>,
    /// How many times it has been delivered (and counted) so far.
    pub(crate) deliveries: u32,
}

struct QueueState {
    ready: Lanes<(Arc<Message>, u32)>,
    /// Messages waiting for a delayed redelivery, soonest first. They live
    /// in the queue (not in a timer task) so they outlast the worker, and the
    /// runtime, that settled them.
    delayed: BinaryHeap<Delayed>,
    next_delayed: u64,
}

struct Delayed {
    due: Instant,
    order: u64,
    message: Arc<Message>,
    deliveries: u32,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.order) == (other.due, other.order)
    }
}

impl Eq for Delayed {}

impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Delayed {
    /// Reversed, so that the max-heap yields the soonest first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.due, other.order).cmp(&(self.due, self.order))
    }
}

pub(crate) struct Queue {
    state: Mutex<QueueState>,
    /// Woken when a message arrives.
    pub(crate) available: Notify,
}

impl Queue {
    pub(crate) fn new(priority: bool) -> Self {
        Queue {
            state: Mutex::new(QueueState {
                ready: Lanes::new(priority),
                delayed: BinaryHeap::new(),
                next_delayed: 0,
            }),
            available: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A panic while holding this lock cannot leave the queue half-updated
        // (every operation is a single push or pop), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Turns a plain queue into a priority queue (a queue created by an early
    /// publish before its route declared it with priority).
    pub(crate) fn enable_priority(&self) {
        self.lock().ready.enable_priority(|(m, _)| m.priority);
    }

    /// Appends a message that has been delivered `deliveries` times.
    pub(crate) fn push(&self, message: Arc<Message>, deliveries: u32) {
        self.lock().ready.push(message.priority, (message, deliveries));
        self.available.notify_one();
    }

    /// Puts a returned entry back at the head of its lane.
    pub(crate) fn push_front(&self, entry: Entry) {
        let priority = entry.message.priority;
        self.lock()
            .ready
            .push_front(priority, (entry.message, entry.deliveries));
        self.available.notify_one();
    }

    /// Re-queues an entry that was delivered before, at the back of its
    /// lane, once `delay` has passed.
    pub(crate) fn push_after(&self, entry: Entry, delay: Duration) {
        if delay.is_zero() {
            return self.push(entry.message, entry.deliveries);
        }
        {
            let mut state = self.lock();
            let order = state.next_delayed;
            state.next_delayed += 1;
            state.delayed.push(Delayed {
                due: Instant::now() + delay,
                order,
                message: entry.message,
                deliveries: entry.deliveries,
            });
        }
        // Waiting consumers recompute when to look again.
        self.available.notify_one();
    }

    /// When the next delayed message becomes due, if any.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.lock().delayed.peek().map(|d| d.due)
    }

    /// Takes the next message, counting the delivery.
    pub(crate) fn pop(&self) -> Option<Entry> {
        let mut state = self.lock();
        state.promote_due();
        let (message, deliveries) = state.ready.pop()?;
        Some(Entry {
            message,
            deliveries: deliveries + 1,
        })
    }

    /// Number of messages ready for delivery (delayed ones count once due).
    pub(crate) fn len(&self) -> usize {
        let mut state = self.lock();
        state.promote_due();
        state.ready.len()
    }
}

impl QueueState {
    /// Moves delayed messages whose time has come to the back of their lane.
    fn promote_due(&mut self) {
        if self.delayed.is_empty() {
            return;
        }
        let now = Instant::now();
        while self.delayed.peek().is_some_and(|d| d.due <= now) {
            let Delayed {
                message, deliveries, ..
            } = self.delayed.pop().expect("peeked");
            self.ready.push(message.priority, (message, deliveries));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(priority: u8) -> Arc<Message> {
        Arc::new(Message::new(vec![priority]).with_priority(priority))
    }

    #[test]
    fn delayed_entries_become_ready_when_due() {
        let q = Queue::new(false);
        q.push(msg(1), 0);
        let entry = q.pop().unwrap();
        q.push_after(entry, Duration::from_millis(30));
        assert!(q.pop().is_none(), "not before it is due");
        assert!(q.next_due().is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop().unwrap().deliveries, 2);
        assert!(q.next_due().is_none());
    }

    #[test]
    fn plain_queue_is_fifo_and_counts_deliveries() {
        let q = Queue::new(false);
        q.push(msg(9), 0);
        q.push(msg(1), 0);
        let first = q.pop().unwrap();
        assert_eq!((first.message.body[0], first.deliveries), (9, 1));
        q.push_front(first);
        assert_eq!(q.pop().unwrap().deliveries, 2);
        assert_eq!(q.len(), 1);
    }
}
