//! Acknowledging the fast way without weakening at-least-once.
//!
//! Awaiting one `basic.ack` per message costs far more than handling a small
//! message. So acks on a consumer channel are coalesced: an ack is recorded
//! here, and a flusher sends `basic.ack` with `multiple = true` for the
//! highest delivery tag below which *every* delivery on the channel is
//! settled — never one that would also ack a message still being handled.
//! It flushes after [`FLUSH_BATCH`] acks or [`FLUSH_INTERVAL`], whichever
//! comes first. Acks stuck behind a long-running handler (tags above an
//! unsettled one) are sent one by one after [`STUCK_AFTER`], so they do not
//! hold the prefetch window.
//!
//! Everything else (return to the queue) is sent at once, on its own. A book
//! belongs to one channel of one session; once that channel is gone, its
//! acks are dropped: the broker redelivers those messages.

use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Acks that trigger a flush at once.
pub(crate) const FLUSH_BATCH: usize = 32;
/// Longest an ack waits to be sent.
pub(crate) const FLUSH_INTERVAL: Duration = Duration::from_millis(5);
/// Acks behind an unsettled delivery for this long are sent individually.
pub(crate) const STUCK_AFTER: Duration = Duration::from_millis(50);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Slot {
    /// Delivered, not settled.
    Open,
    /// Acked here, not yet sent.
    Acked(Instant),
    /// Settled at the broker (acked individually, or returned).
    Done,
}

struct Book {
    /// Tag of `slots[0]`.
    first: u64,
    slots: VecDeque<Slot>,
    unsent: usize,
}

/// The acks of one consumer channel.
pub(crate) struct AckBook {
    channel: Channel,
    book: Mutex<Book>,
    flush_now: Notify,
    /// An ack arrived while none was waiting to be sent.
    first_ack: Notify,
    dead: AtomicBool,
    stop: CancellationToken,
}

impl AckBook {
    /// A book for a fresh consumer channel (its tags start at 1), with its
    /// flusher task.
    pub(crate) fn start(channel: Channel) -> Arc<Self> {
        let book = Arc::new(AckBook {
            channel,
            book: Mutex::new(Book {
                first: 1,
                slots: VecDeque::new(),
                unsent: 0,
            }),
            flush_now: Notify::new(),
            first_ack: Notify::new(),
            dead: AtomicBool::new(false),
            stop: CancellationToken::new(),
        });
        tokio::spawn(book.clone().flusher());
        book
    }

    fn lock(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The channel the acks go to.
    pub(crate) fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Whether acks here can still reach the broker.
    pub(crate) fn alive(&self) -> bool {
        !self.dead.load(Ordering::Relaxed) && self.channel.status().connected()
    }

    /// The channel died (or its session ended): nothing more is sent.
    pub(crate) fn kill(&self) {
        self.dead.store(true, Ordering::Relaxed);
        self.stop.cancel();
    }

    /// Records a delivery (tags arrive in order).
    pub(crate) fn delivered(&self, tag: u64) {
        let mut book = self.lock();
        let expected = book.first + book.slots.len() as u64;
        if tag != expected {
            // Not the tag sequence we track (should not happen on a
            // consume-only channel): settle this one individually.
            tracing::debug!(tag, expected, "delivery tag out of sequence");
        }
        while book.first + (book.slots.len() as u64) <= tag {
            book.slots.push_back(Slot::Open);
        }
    }

    fn slot(book: &mut Book, tag: u64) -> Option<&mut Slot> {
        let index = tag.checked_sub(book.first)?;
        book.slots.get_mut(usize::try_from(index).ok()?)
    }

    /// Records an ack, to be sent by the flusher.
    pub(crate) fn ack(&self, tag: u64) {
        let flush = {
            let mut book = self.lock();
            match Self::slot(&mut book, tag) {
                Some(slot @ Slot::Open) => *slot = Slot::Acked(Instant::now()),
                _ => return,
            }
            book.unsent += 1;
            (book.unsent == 1, book.unsent >= FLUSH_BATCH)
        };
        if flush.0 {
            self.first_ack.notify_one();
        }
        if flush.1 {
            self.flush_now.notify_one();
        }
    }

    /// Returns a delivery to its queue now (not coalesced).
    pub(crate) async fn requeue(&self, tag: u64) -> Result<(), lapin::Error> {
        let options = BasicNackOptions {
            multiple: false,
            requeue: true,
        };
        // Sent before the slot counts as settled, so that no coalesced
        // multiple-ack can overtake it and ack the message instead.
        let sent = self.channel.basic_nack(tag, options).await;
        if let Some(slot) = Self::slot(&mut self.lock(), tag) {
            *slot = Slot::Done;
        }
        sent
    }

    async fn flusher(self: Arc<Self>) {
        loop {
            // Idle until there is something to send: an idle route costs no
            // wake-ups. (A permit stored by `notify_one` covers an ack that
            // lands between the check and the wait.)
            if self.lock().unsent == 0 {
                tokio::select! {
                    () = self.first_ack.notified() => {}
                    () = self.stop.cancelled() => return,
                }
            }
            let stop = tokio::select! {
                () = self.flush_now.notified() => false,
                () = tokio::time::sleep(FLUSH_INTERVAL) => false,
                () = self.stop.cancelled() => true,
            };
            if self.dead.load(Ordering::Relaxed) || !self.channel.status().connected() {
                return;
            }
            self.flush().await;
            if stop {
                return;
            }
        }
    }

    /// Sends what can be sent: one multiple-ack for the settled prefix, and
    /// individual acks for those stuck behind an open delivery.
    pub(crate) async fn flush(&self) {
        let (multiple, single) = {
            let mut book = self.lock();
            if book.unsent == 0 {
                return;
            }
            let mut multiple = None;
            while let Some(front) = book.slots.front().copied() {
                match front {
                    Slot::Open => break,
                    Slot::Acked(_) => multiple = Some(book.first),
                    Slot::Done => {}
                }
                book.slots.pop_front();
                book.first += 1;
            }
            let now = Instant::now();
            let first = book.first;
            let mut single = Vec::new();
            for (offset, slot) in book.slots.iter_mut().enumerate() {
                if let Slot::Acked(at) = *slot
                    && now.duration_since(at) >= STUCK_AFTER
                {
                    *slot = Slot::Done;
                    single.push(first + offset as u64);
                }
            }
            book.unsent = book.slots.iter().filter(|s| matches!(s, Slot::Acked(_))).count();
            (multiple, single)
        };
        if let Some(tag) = multiple
            && let Err(error) = self
                .channel
                .basic_ack(tag, BasicAckOptions { multiple: true })
                .await
        {
            tracing::warn!(%error, tag, "acks not sent; the broker will redeliver those messages");
            self.kill();
            return;
        }
        for tag in single {
            if let Err(error) = self
                .channel
                .basic_ack(tag, BasicAckOptions { multiple: false })
                .await
            {
                tracing::warn!(%error, tag, "ack not sent; the broker will redeliver that message");
                self.kill();
                return;
            }
        }
    }
}
