//! Keeping a worker's messages its own while it lives: in-progress acks.
//!
//! JetStream hands a message to another worker when the one it was
//! delivered to has not acked it within the consumer's ack wait. The ack
//! wait is therefore how long a crashed worker's messages stay out of
//! reach, and it must also outlast everything a live worker does with a
//! message: waiting in its subscription behind a backlog, waiting for its
//! session's turn, running its handler. So wharf keeps the ack wait short
//! (the route's lease) and sends `+WPI` ("work in progress", which starts
//! the ack wait over) for every message a worker holds for longer than a
//! third of it: a live worker keeps its messages for as long as it needs
//! them, and a dead one loses them within one ack wait.
//!
//! One keeper task per consumer does this every third of the ack wait.
//! It knows the deliveries handed out and not settled ([`Keep::hold`],
//! registered where a message leaves its subscription), and it reads the
//! subscriptions itself when the consumer does not (its handlers are all
//! busy): a message that waits there is taken off into the subscription's
//! own queue ([`Inbox`]), where the consumer finds it first.

use super::Shared;
use async_nats::{Message, Subject, Subscriber};
use bytes::Bytes;
use futures_util::StreamExt;
use slab::Slab;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A subscription's messages, read by its consumer and, when the consumer
/// does not, by the keeper.
pub(crate) struct Inbox {
    /// `None` once the subscription is closed.
    pub(crate) subscriber: Option<Subscriber>,
    /// Messages the keeper took off the subscription, oldest first, with
    /// the round they were taken in. The consumer takes these first.
    pub(crate) taken: VecDeque<(Message, u32)>,
    /// The waker the consumer last polled the subscription with: the
    /// keeper polls with it too (so no wakeup meant for the consumer is
    /// lost) and wakes it when it took something.
    pub(crate) waker: Option<Waker>,
}

impl Inbox {
    pub(crate) fn new(subscriber: Subscriber) -> Arc<Mutex<Inbox>> {
        Arc::new(Mutex::new(Inbox {
            subscriber: Some(subscriber),
            taken: VecDeque::new(),
            waker: None,
        }))
    }

    /// The next message: one the keeper took, else the subscription's.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.waker = Some(cx.waker().clone());
        }
        if let Some((message, _)) = self.taken.pop_front() {
            return Poll::Ready(Some(message));
        }
        match self.subscriber.as_mut() {
            Some(subscriber) => subscriber.poll_next_unpin(cx),
            None => Poll::Ready(None),
        }
    }
}

/// Locks an inbox (a panic elsewhere does not make it unusable).
pub(crate) fn lock(inbox: &Mutex<Inbox>) -> MutexGuard<'_, Inbox> {
    inbox.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a consumer's keeper keeps alive.
#[derive(Default)]
pub(crate) struct Keep {
    /// Deliveries handed out and not settled: their ack subjects and the
    /// round they were handed out in.
    held: Mutex<Slab<(Subject, u32)>>,
    /// The consumer's subscriptions.
    inboxes: Mutex<Vec<Weak<Mutex<Inbox>>>>,
    /// The keeper's rounds so far.
    round: AtomicU32,
}

impl Keep {
    fn held(&self) -> MutexGuard<'_, Slab<(Subject, u32)>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds a delivery whose ack subject is `subject` until [`release`]:
    /// returns its key.
    ///
    /// [`release`]: Keep::release
    pub(crate) fn hold(&self, subject: Subject) -> usize {
        let round = self.round.load(Ordering::Relaxed);
        self.held().insert((subject, round))
    }

    /// Stops holding the delivery with `key`.
    pub(crate) fn release(&self, key: usize) {
        self.held().try_remove(key);
    }

    /// Keeps `inbox` alive too, for as long as its consumer has it.
    pub(crate) fn watch(&self, inbox: &Arc<Mutex<Inbox>>) {
        let mut inboxes = self.inboxes.lock().unwrap_or_else(|e| e.into_inner());
        inboxes.retain(|inbox| inbox.strong_count() > 0);
        inboxes.push(Arc::downgrade(inbox));
    }

    fn holds_nothing(&self) -> bool {
        self.held().is_empty()
    }

    /// One round: the ack subjects of every message held since before the
    /// previous round, including those waiting in the subscriptions.
    fn due(&self) -> Vec<Subject> {
        let round = self.round.fetch_add(1, Ordering::Relaxed) + 1;
        let old = |since: u32| since.wrapping_add(1) < round;
        let mut due: Vec<Subject> = self
            .held()
            .iter()
            .filter(|(_, (_, since))| old(*since))
            .map(|(_, (subject, _))| subject.clone())
            .collect();
        let inboxes: Vec<_> = {
            let inboxes = self.inboxes.lock().unwrap_or_else(|e| e.into_inner());
            inboxes.iter().filter_map(Weak::upgrade).collect()
        };
        for inbox in inboxes {
            let mut inbox = lock(&inbox);
            let inbox = &mut *inbox;
            if let (Some(waker), Some(subscriber)) = (inbox.waker.clone(), inbox.subscriber.as_mut()) {
                let mut cx = Context::from_waker(&waker);
                let before = inbox.taken.len();
                while let Poll::Ready(Some(message)) = subscriber.poll_next_unpin(&mut cx) {
                    inbox.taken.push_back((message, round));
                }
                if inbox.taken.len() > before {
                    waker.wake_by_ref();
                }
            }
            due.extend(
                inbox
                    .taken
                    .iter()
                    .filter(|(_, since)| *since < round)
                    .filter_map(|(message, _)| message.reply.clone())
                    .filter(|reply| reply.starts_with("$JS.ACK.")),
            );
        }
        due
    }
}

/// Sends `+WPI` for what `keep` holds every `ack_wait / 3`, until `stop`
/// and then until it holds nothing more (handlers still finishing after
/// their consumer stopped keep their messages).
pub(crate) async fn keep_alive(
    shared: Arc<Shared>,
    keep: Arc<Keep>,
    ack_wait: Duration,
    stop: CancellationToken,
) {
    let period = (ack_wait / 3).max(Duration::from_millis(100));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        if stop.is_cancelled() && keep.holds_nothing() {
            return;
        }
        for subject in keep.due() {
            let progress = Bytes::from_static(b"+WPI");
            let sent =
                super::core_publish(&shared, subject, None, async_nats::HeaderMap::new(), progress).await;
            if sent.is_err() {
                // Disconnected: the ack waits run on at the server.
                break;
            }
        }
    }
}
