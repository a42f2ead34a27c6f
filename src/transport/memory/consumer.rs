//! Consuming from an in-memory queue: a delivery stream with prefetch, and
//! the acker that settles each delivery.

use super::queue::{Entry, Queue};
use crate::error::BrokerError;
use crate::transport::window::{Window, WindowPlace};
use crate::transport::{Acker, BoxFuture, Delivery, DeliveryStream, Settlement};
use crate::wire::attempt_header;
use crate::wire::headers::names;
use std::sync::Arc;

struct Consumer {
    queue: Arc<Queue>,
    dead_letters: Arc<Queue>,
    window: Arc<Window>,
}

impl Consumer {
    async fn next(&self) -> Delivery {
        loop {
            std::future::poll_fn(|cx| self.window.poll_room(cx)).await;
            if let Some(entry) = self.queue.pop() {
                return self.deliver(entry);
            }
            let available = self.queue.available.notified();
            tokio::pin!(available);
            available.as_mut().enable();
            if let Some(entry) = self.queue.pop() {
                return self.deliver(entry);
            }
            match self.queue.next_due() {
                Some(due) => {
                    tokio::select! {
                        () = available => {}
                        () = tokio::time::sleep_until(due) => {}
                    }
                }
                None => available.await,
            }
        }
    }

    fn deliver(&self, entry: Entry) -> Delivery {
        delivery(entry, &self.queue, &self.dead_letters, Some(self.window.take()))
    }
}

/// A consumer on `queue` with at most `prefetch` unsettled deliveries.
pub(crate) fn stream(queue: Arc<Queue>, dead_letters: Arc<Queue>, prefetch: usize) -> DeliveryStream {
    let consumer = Consumer {
        queue,
        dead_letters,
        window: Window::new(prefetch),
    };
    Box::pin(futures_util::stream::unfold(consumer, |consumer| async move {
        let delivery = consumer.next().await;
        Some((delivery, consumer))
    }))
}

/// Wraps a popped entry as a delivery settled back into these queues. Its
/// count is the attempts the message was published with (`wharf-attempt`,
/// as on the brokers) plus the queue's deliveries of it.
pub(crate) fn delivery(
    entry: Entry,
    queue: &Arc<Queue>,
    dead_letters: &Arc<Queue>,
    window: Option<WindowPlace>,
) -> Delivery {
    let message = entry.message.clone();
    let (carried, malformed) = match attempt_header::carried(message.header(names::ATTEMPT)) {
        Ok(attempts) => (attempts, None),
        Err(why) => (0, Some(why)),
    };
    let count = carried.saturating_add(entry.deliveries);
    let acker = MemoryAcker {
        entry: Some(entry),
        queue: queue.clone(),
        dead_letters: dead_letters.clone(),
        window,
    };
    let delivery = Delivery::new(message, count, Box::new(acker));
    match malformed {
        Some(why) => delivery.with_malformed(why),
        None => delivery,
    }
}

struct MemoryAcker {
    entry: Option<Entry>,
    queue: Arc<Queue>,
    dead_letters: Arc<Queue>,
    /// Its place in the consumer's window; freed when it is settled.
    window: Option<WindowPlace>,
}

impl MemoryAcker {
    /// Settles; `None` is a delivery dropped unsettled (its worker died or
    /// its pipeline panicked).
    fn finish(&mut self, settlement: Option<Settlement>) {
        let Some(mut entry) = self.entry.take() else {
            return;
        };
        drop(self.window.take());
        let Some(settlement) = settlement else {
            // Back to the head of the queue, and the delivery counts: the
            // message was being handled. A message that keeps killing its
            // worker reaches max_attempts and is dead-lettered.
            self.queue.push_front(entry);
            return;
        };
        match settlement {
            Settlement::Ack => {}
            Settlement::Retry { delay } => self.queue.push_after(entry, delay),
            Settlement::Defer { delay } => {
                entry.deliveries -= 1;
                self.queue.push_after(entry, delay);
            }
            Settlement::DeadLetter { message } => self.dead_letters.push(Arc::new(*message), 0),
            Settlement::Return => {
                entry.deliveries -= 1;
                self.queue.push_front(entry);
            }
        }
    }
}

impl Acker for MemoryAcker {
    fn settle(mut self: Box<Self>, settlement: Settlement) -> BoxFuture<'static, Result<(), BrokerError>> {
        self.finish(Some(settlement));
        crate::transport::succeeded()
    }
}

impl Drop for MemoryAcker {
    fn drop(&mut self) {
        // The transport contract: an unsettled delivery goes back to its queue.
        self.finish(None);
    }
}
