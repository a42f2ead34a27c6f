//! Acknowledging the fast way without weakening at-least-once.
//!
//! Awaiting one `basic.ack` per message costs far more than handling a small
//! message. So acks on a consumer channel are coalesced: an ack is recorded
//! here, and `basic.ack` with `multiple = true` goes out for the highest
//! delivery tag below which *every* delivery on the channel is settled —
//! never one that would also ack a message still being handled. The ack
//! that completes a batch of [`FLUSH_BATCH`] (or half the prefetch window,
//! if that is smaller) sends it at once (queued for
//! lapin's I/O thread, not awaited: no task wakes for it); a flusher task
//! ticks every [`FLUSH_INTERVAL`] while acks are unsent, and sleeps while
//! none are. Acks stuck behind a long-running handler (tags above an
//! unsettled one) are sent one by one after [`STUCK_AFTER`], so they do not
//! hold the prefetch window; behind a delivery held that long already (a
//! session message waiting for its turn) they are sent at once.
//!
//! Everything else (return to the queue) is sent at once, on its own. A book
//! belongs to one channel of one connection; once that channel is gone, its
//! acks are dropped: the broker redelivers those messages.

use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Acks that trigger a flush at once (fewer on a channel whose prefetch
/// window could not hold them: half the window).
pub(crate) const FLUSH_BATCH: usize = 64;
/// Longest an ack waits to be sent.
pub(crate) const FLUSH_INTERVAL: Duration = Duration::from_millis(5);
/// Acks behind an unsettled delivery for this long are sent individually.
pub(crate) const STUCK_AFTER: Duration = Duration::from_millis(50);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum TagState {
    /// Delivered (then), not settled.
    Open(Instant),
    /// Acked here, not yet sent.
    Acked(Instant),
    /// Settled at the broker (acked individually, or returned).
    Done,
}

struct Book {
    /// Tag of `slots[0]`.
    first: u64,
    slots: VecDeque<TagState>,
    /// Acks recorded and not sent.
    unsent: usize,
    /// The flusher will tick again (it sleeps only while nothing is unsent).
    flusher_armed: bool,
}

/// The acks of one consumer channel.
pub(crate) struct AckBook {
    channel: Channel,
    book: Mutex<Book>,
    /// An ack arrived while none was waiting to be sent.
    first_ack: Notify,
    dead: AtomicBool,
    stop: CancellationToken,
    /// Acks that are sent at once, from [`AckBook::ack`].
    batch: usize,
}

impl AckBook {
    /// A book for a fresh consumer channel (its tags start at 1) with at
    /// most `prefetch` unsettled deliveries (0: no limit), with its flusher
    /// task.
    pub(crate) fn start(channel: Channel, prefetch: usize) -> Arc<Self> {
        let batch = match prefetch {
            0 => FLUSH_BATCH,
            window => FLUSH_BATCH.min(window.div_ceil(2)),
        };
        let book = Arc::new(AckBook {
            channel,
            book: Mutex::new(Book {
                first: 1,
                slots: VecDeque::new(),
                unsent: 0,
                flusher_armed: false,
            }),
            first_ack: Notify::new(),
            dead: AtomicBool::new(false),
            stop: CancellationToken::new(),
            batch,
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

    /// Whether [`kill`](Self::kill) was called. Cheaper than
    /// [`alive`](Self::alive), which reads the channel's state (a lock that
    /// lapin's I/O thread takes for every frame): the settling path of every
    /// message uses this, and a channel that closed without it is still
    /// caught where acks are sent (`basic.ack` fails, and the book dies).
    pub(crate) fn killed(&self) -> bool {
        self.dead.load(Ordering::Relaxed)
    }

    /// The channel died (or its connection ended): nothing more is sent.
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
        let now = Instant::now();
        while book.first + (book.slots.len() as u64) <= tag {
            book.slots.push_back(TagState::Open(now));
        }
    }

    fn slot(book: &mut Book, tag: u64) -> Option<&mut TagState> {
        let index = tag.checked_sub(book.first)?;
        book.slots.get_mut(usize::try_from(index).ok()?)
    }

    /// Records an ack. A full batch whose tags are all settled is sent at
    /// once, from here; the rest is left to the flusher's next tick.
    pub(crate) fn ack(&self, tag: u64) {
        let wake_flusher = {
            let mut book = self.lock();
            let now = Instant::now();
            match Self::slot(&mut book, tag) {
                Some(slot @ TagState::Open(_)) => *slot = TagState::Acked(now),
                _ => return,
            }
            book.unsent += 1;
            let held = Self::held_long(&book, now);
            if held || (book.unsent >= self.batch && matches!(book.slots.front(), Some(TagState::Acked(_)))) {
                // Not awaited: the frame is queued in order (under the
                // book's lock) and a failed channel is noticed by its
                // consumer, whose messages the broker then redelivers.
                drop(self.send(&mut book, held));
            }
            let idle = !book.flusher_armed && book.unsent > 0;
            book.flusher_armed |= idle;
            idle
        };
        if wake_flusher {
            self.first_ack.notify_one();
        }
    }

    /// Whether the oldest unsettled delivery has been held for
    /// [`STUCK_AFTER`]: acks behind it would wait for it.
    fn held_long(book: &Book, now: Instant) -> bool {
        book.slots
            .iter()
            .find_map(|slot| match slot {
                TagState::Open(at) => Some(now.duration_since(*at) >= STUCK_AFTER),
                _ => None,
            })
            .unwrap_or(false)
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
            *slot = TagState::Done;
        }
        sent
    }

    async fn flusher(self: Arc<Self>) {
        loop {
            // Idle until there is something to send: an idle route costs no
            // wake-ups. (A permit stored by `notify_one` covers an ack that
            // lands between the check and the wait.)
            if !self.lock().flusher_armed {
                tokio::select! {
                    () = self.first_ack.notified() => {}
                    () = self.stop.cancelled() => return,
                }
            }
            let stop = tokio::select! {
                () = tokio::time::sleep(FLUSH_INTERVAL) => false,
                () = self.stop.cancelled() => true,
            };
            if self.dead.load(Ordering::Relaxed) || !self.channel.status().connected() {
                return;
            }
            {
                let mut book = self.lock();
                drop(self.send(&mut book, true));
                book.flusher_armed = book.unsent > 0;
            }
            if stop {
                return;
            }
        }
    }

    /// Sends every ack that can be sent now, and waits until lapin has
    /// written them.
    pub(crate) async fn flush(&self) {
        let sent = self.send(&mut self.lock(), true);
        for ack in sent {
            if let Err(error) = ack.await {
                tracing::warn!(error = %crate::error::Chain(&error), "acks not sent; the broker will redeliver those messages");
                self.kill();
                return;
            }
        }
    }

    /// Queues one multiple-ack for the settled prefix and, with `stuck`,
    /// individual acks for those held behind an open delivery for
    /// [`STUCK_AFTER`]. Called under the book's lock, so frames leave in
    /// the order their tags were settled here: a multiple-ack for a lower
    /// tag never follows one for a higher tag (RabbitMQ would close the
    /// channel). Returns the sends lapin has yet to write.
    fn send(&self, book: &mut Book, stuck: bool) -> Vec<Pending<'_>> {
        let mut pending = Vec::new();
        if book.unsent == 0 || self.dead.load(Ordering::Relaxed) {
            return pending;
        }
        let mut multiple = None;
        while let Some(front) = book.slots.front().copied() {
            match front {
                TagState::Open(_) => break,
                TagState::Acked(_) => {
                    multiple = Some(book.first);
                    book.unsent -= 1;
                }
                TagState::Done => {}
            }
            book.slots.pop_front();
            book.first += 1;
        }
        let mut single = Vec::new();
        if stuck && book.unsent > 0 {
            let now = Instant::now();
            // Behind a delivery held long, every ack is stuck.
            let behind_held = Self::held_long(book, now);
            let first = book.first;
            for (offset, slot) in book.slots.iter_mut().enumerate() {
                if let TagState::Acked(at) = *slot
                    && (behind_held || now.duration_since(at) >= STUCK_AFTER)
                {
                    *slot = TagState::Done;
                    book.unsent -= 1;
                    single.push(first + offset as u64);
                }
            }
        }
        let acks = multiple.map(|tag| (tag, true)).into_iter();
        for (tag, multiple) in acks.chain(single.into_iter().map(|tag| (tag, false))) {
            let mut ack: Pending<'_> = Box::pin(self.channel.basic_ack(tag, BasicAckOptions { multiple }));
            match ack.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(error)) => {
                    tracing::warn!(error = %crate::error::Chain(&error), tag, "acks not sent; the broker will redeliver those messages");
                    self.kill();
                    break;
                }
                Poll::Pending => pending.push(ack),
            }
        }
        pending
    }
}

/// An ack lapin has queued but not yet written.
type Pending<'a> = Pin<Box<dyn Future<Output = Result<(), lapin::Error>> + Send + 'a>>;

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use lapin::options::{
        BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions, QueueDeleteOptions,
    };
    use lapin::types::FieldTable;
    use lapin::{BasicProperties, Connection, ConnectionProperties};

    /// A channel with `count` deliveries received from a fresh queue, or
    /// `None` (said loudly; a failure with `CI=true`) without RabbitMQ.
    async fn deliveries(count: u16) -> Option<(Connection, Channel, String, Vec<u64>)> {
        let url = std::env::var("WHARF_TEST_AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
        if let Err(why) = crate::test_support::broker_reachable(&url) {
            crate::test_support::skip("amqp::acks::tests", &format!("RabbitMQ is not reachable: {why}"));
            return None;
        }
        let connection = match Connection::connect(&url, ConnectionProperties::default()).await {
            Ok(connection) => connection,
            Err(error) => {
                crate::test_support::skip(
                    "amqp::acks::tests",
                    &format!("RabbitMQ is not reachable ({error})"),
                );
                return None;
            }
        };
        let channel = connection.create_channel().await.unwrap();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let queue = format!("wharf-test.acks.{}.{nanos:x}", std::process::id());
        let options = QueueDeclareOptions {
            auto_delete: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(queue.as_str().into(), options, FieldTable::default())
            .await
            .unwrap();
        for _ in 0..count {
            channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    b"{}",
                    BasicProperties::default(),
                )
                .await
                .unwrap();
        }
        channel
            .basic_qos(count, BasicQosOptions::default())
            .await
            .unwrap();
        let mut consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let mut tags = Vec::new();
        while tags.len() < usize::from(count) {
            tags.push(consumer.next().await.unwrap().unwrap().delivery_tag);
        }
        Some((connection, channel, queue, tags))
    }

    /// With a prefetch window smaller than two batches, half the window is
    /// a batch: otherwise a full batch could never build up, and every ack
    /// would wait for the flusher's timer with the window full.
    #[tokio::test]
    async fn acks_behind_a_long_held_delivery_go_at_once() {
        // A session message waiting for its turn holds tag 1; deferrals of
        // later ones must not wait behind it, or the window stays full.
        let Some((connection, channel, queue, tags)) = deliveries(4).await else {
            return;
        };
        let book = AckBook::start(channel.clone(), 64);
        for &tag in &tags {
            book.delivered(tag);
        }
        book.ack(tags[1]);
        assert_eq!(book.lock().unsent, 1, "behind a fresh delivery, an ack waits");
        tokio::time::sleep(STUCK_AFTER + Duration::from_millis(10)).await;
        book.ack(tags[2]);
        assert_eq!(
            book.lock().unsent,
            0,
            "behind a delivery held for {STUCK_AFTER:?}, acks are sent at once"
        );
        book.ack(tags[0]);
        book.ack(tags[3]);
        book.flush().await;
        let _ = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
        let _ = connection.close(200, "test done".into()).await;
    }

    #[tokio::test]
    async fn a_small_window_sends_half_the_window_at_once() {
        let Some((connection, channel, queue, tags)) = deliveries(8).await else {
            return;
        };
        let book = AckBook::start(channel.clone(), 8);
        for &tag in &tags {
            book.delivered(tag);
        }
        for &tag in &tags[..3] {
            book.ack(tag);
        }
        assert_eq!(book.lock().unsent, 3, "below half the window, acks wait");
        book.ack(tags[3]);
        assert_eq!(book.lock().unsent, 0, "half the window went out at once");
        for &tag in &tags[4..] {
            book.ack(tag);
        }
        assert_eq!(book.lock().unsent, 0);
        book.flush().await;
        let _ = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
        let _ = connection.close(200, "test done".into()).await;
    }
}
