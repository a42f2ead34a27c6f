//! Consuming from an in-memory queue: a delivery stream with prefetch, and
//! the acker that settles each delivery.

use super::queue::{Entry, Queue};
use crate::error::BrokerError;
use crate::transport::{Acker, BoxFuture, Delivery, DeliveryStream, Settlement};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Notify;

/// Prefetch accounting shared by a consumer and its deliveries' ackers.
pub(crate) struct Credit {
    unsettled: AtomicUsize,
    limit: usize,
    freed: Notify,
}

impl Credit {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Credit {
            unsettled: AtomicUsize::new(0),
            limit: limit.max(1),
            freed: Notify::new(),
        })
    }

    fn release(&self) {
        if self.unsettled.fetch_sub(1, Ordering::AcqRel) == self.limit {
            self.freed.notify_one();
        }
    }
}

struct Consumer {
    queue: Arc<Queue>,
    dead_letters: Arc<Queue>,
    credit: Arc<Credit>,
}

impl Consumer {
    async fn next(&self) -> Delivery {
        loop {
            if self.credit.unsettled.load(Ordering::Acquire) >= self.credit.limit {
                let freed = self.credit.freed.notified();
                tokio::pin!(freed);
                freed.as_mut().enable();
                if self.credit.unsettled.load(Ordering::Acquire) >= self.credit.limit {
                    freed.await;
                }
                continue;
            }
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
                        () = tokio::time::sleep_until(due.into()) => {}
                    }
                }
                None => available.await,
            }
        }
    }

    fn deliver(&self, entry: Entry) -> Delivery {
        self.credit.unsettled.fetch_add(1, Ordering::AcqRel);
        delivery(entry, &self.queue, &self.dead_letters, Some(self.credit.clone()))
    }
}

/// A consumer on `queue` with at most `prefetch` unsettled deliveries.
pub(crate) fn stream(queue: Arc<Queue>, dead_letters: Arc<Queue>, prefetch: usize) -> DeliveryStream {
    let consumer = Consumer {
        queue,
        dead_letters,
        credit: Credit::new(prefetch),
    };
    Box::pin(futures_util::stream::unfold(consumer, |consumer| async move {
        let delivery = consumer.next().await;
        Some((delivery, consumer))
    }))
}

/// Wraps a popped entry as a delivery settled back into these queues.
pub(crate) fn delivery(
    entry: Entry,
    queue: &Arc<Queue>,
    dead_letters: &Arc<Queue>,
    credit: Option<Arc<Credit>>,
) -> Delivery {
    let message = entry.message.clone();
    let count = entry.deliveries;
    let acker = MemoryAcker {
        entry: Some(entry),
        queue: queue.clone(),
        dead_letters: dead_letters.clone(),
        credit,
    };
    Delivery::new(message, count, Box::new(acker))
}

struct MemoryAcker {
    entry: Option<Entry>,
    queue: Arc<Queue>,
    dead_letters: Arc<Queue>,
    credit: Option<Arc<Credit>>,
}

impl MemoryAcker {
    /// Settles; `None` is a delivery dropped unsettled (its worker died or
    /// its pipeline panicked).
    fn finish(&mut self, settlement: Option<Settlement>) {
        let Some(mut entry) = self.entry.take() else {
            return;
        };
        if let Some(credit) = self.credit.take() {
            credit.release();
        }
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
