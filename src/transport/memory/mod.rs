//! The in-process transport: every primitive of the transport contract,
//! without a broker, for the quick start, examples and unit tests.
//!
//! Messages live only as long as the process. Everything else behaves as on
//! the real brokers: priorities, delayed redelivery, delivery counts, a
//! dead-letter queue per queue, and reply addresses.

mod consumer;
mod exchanges;
mod queue;

use crate::error::BrokerError;
use crate::transport::{
    BoxFuture, Delivery, DeliveryStream, QueueSpec, ReplyInbox, RequestSender, Transport, dead_letter_queue,
    succeeded,
};
use crate::wire::message::Message;
use queue::Queue;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};

/// An in-process broker. Clones share the same queues.
#[derive(Clone)]
pub(crate) struct MemoryTransport {
    inner: Arc<Inner>,
}

struct Inner {
    queues: Mutex<HashMap<String, Arc<Queue>>>,
    exchanges: Mutex<exchanges::Exchanges>,
    inboxes: Inboxes,
    next_inbox: AtomicU64,
    connected: watch::Sender<bool>,
}

type Inboxes = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Message>>>>;

impl MemoryTransport {
    fn inboxes(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<Message>>> {
        self.inner.inboxes.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn new() -> Self {
        MemoryTransport {
            inner: Arc::new(Inner {
                queues: Mutex::new(HashMap::new()),
                exchanges: Mutex::default(),
                inboxes: Arc::new(Mutex::new(HashMap::new())),
                next_inbox: AtomicU64::new(1),
                connected: watch::channel(true).0,
            }),
        }
    }

    /// Publishes `message` itself, not a copy: its deliveries carry this
    /// very `Arc`, by which `wharf::testing` knows them.
    pub(crate) fn publish_shared(&self, queue: &str, message: Arc<Message>) {
        self.queue(queue).push(message, 0);
    }

    fn queue(&self, name: &str) -> Arc<Queue> {
        let mut queues = self.inner.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(queue) = queues.get(name) {
            return queue.clone();
        }
        let queue = Arc::new(Queue::new(false));
        queues.insert(name.to_owned(), queue.clone());
        queue
    }
}

/// Every in-memory operation completes at once and cannot fail.
fn done<T: Send + 'static>(value: T) -> BoxFuture<'static, Result<T, BrokerError>> {
    Box::pin(std::future::ready(Ok(value)))
}

impl Transport for MemoryTransport {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn declare(&self, spec: &QueueSpec) -> BoxFuture<'_, Result<(), BrokerError>> {
        if let Some(subscription) = spec.subscriptions.first() {
            let error = crate::transport::no_subjects("memory", subscription.subject());
            return Box::pin(std::future::ready(Err(error)));
        }
        let queue = self.queue(&spec.name);
        if spec.priority {
            queue.enable_priority();
        }
        self.queue(&spec.dead_letter_queue());
        let mut exchanges = self.inner.exchanges.lock().unwrap_or_else(|p| p.into_inner());
        for binding in &spec.bindings {
            if let Err(error) = exchanges.bind(&spec.name, binding) {
                return Box::pin(std::future::ready(Err(error)));
            }
        }
        succeeded()
    }

    fn consume(
        &self,
        spec: &QueueSpec,
        prefetch: usize,
    ) -> BoxFuture<'_, Result<DeliveryStream, BrokerError>> {
        let queue = self.queue(&spec.name);
        let dead_letters = self.queue(&spec.dead_letter_queue());
        done(consumer::stream(queue, dead_letters, prefetch))
    }

    fn publish(&self, queue: &str, message: Message) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.queue(queue).push(Arc::new(message), 0);
        succeeded()
    }

    fn publish_to_exchange(
        &self,
        exchange: &str,
        routing_key: &str,
        message: Message,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        let routed = self
            .inner
            .exchanges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .route(exchange, routing_key, &message);
        match routed {
            Ok(queues) => {
                let message = Arc::new(message);
                for queue in queues {
                    self.queue(&queue).push(message.clone(), 0);
                }
                succeeded()
            }
            Err(error) => Box::pin(std::future::ready(Err(error))),
        }
    }

    fn reply(&self, address: &str, message: Message) -> BoxFuture<'_, Result<(), BrokerError>> {
        let inbox = self.inboxes().get(address).cloned();
        match inbox {
            // A requester that has gone away no longer wants the reply, as
            // with a broker's temporary reply queue.
            Some(sender) => drop(sender.send(message)),
            None if address.starts_with(INBOX_PREFIX) => {
                tracing::debug!(
                    address = crate::util::log_text::Logged::id(address).value(),
                    "reply inbox is gone; reply dropped"
                );
            }
            None => self.queue(address).push(Arc::new(message), 0),
        }
        succeeded()
    }

    /// Any queue name or inbox but the empty string, which names nothing.
    fn check_reply_address(&self, address: &str) -> Result<(), String> {
        if address.is_empty() {
            return Err("it is empty".to_owned());
        }
        Ok(())
    }

    fn reply_inbox(&self) -> BoxFuture<'_, Result<ReplyInbox, BrokerError>> {
        let n = self.inner.next_inbox.fetch_add(1, Ordering::Relaxed);
        let address = format!("{INBOX_PREFIX}{n}");
        let (sender, receiver) = mpsc::unbounded_channel();
        self.inboxes().insert(address.clone(), sender);
        let registration = InboxRegistration {
            inboxes: self.inner.inboxes.clone(),
            address: address.clone(),
        };
        let replies = futures_util::stream::unfold((receiver, registration), |(mut rx, reg)| async move {
            rx.recv().await.map(|m| (m, (rx, reg)))
        });
        done(ReplyInbox {
            address,
            replies: Box::pin(replies),
            requests: Box::new(self.clone()),
        })
    }

    fn fetch(&self, queue: &str, max: usize) -> BoxFuture<'_, Result<Vec<Delivery>, BrokerError>> {
        let source = self.queue(queue);
        let dead_letters = self.queue(&dead_letter_queue(queue));
        let deliveries = std::iter::from_fn(|| source.pop())
            .take(max)
            .map(|entry| consumer::delivery(entry, &source, &dead_letters, None))
            .collect();
        done(deliveries)
    }

    fn depth(&self, queue: &str) -> BoxFuture<'_, Result<u64, BrokerError>> {
        done(self.queue(queue).len() as u64)
    }

    fn delete(&self, queue: &str) -> BoxFuture<'_, Result<(), BrokerError>> {
        let mut queues = self.inner.queues.lock().unwrap_or_else(|p| p.into_inner());
        queues.remove(queue);
        queues.remove(&dead_letter_queue(queue));
        // RabbitMQ drops a deleted queue's bindings with it.
        self.inner
            .exchanges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unbind_queue(queue);
        succeeded()
    }

    /// Always connected: there is no connection to lose.
    fn connected(&self) -> watch::Receiver<bool> {
        self.inner.connected.subscribe()
    }

    /// Nothing is held back.
    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }

    /// There is no connection to close: the queues live as long as any
    /// [`Broker`](crate::Broker) handle, so a worker started again on the
    /// same broker sees the messages the previous one returned.
    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
}

/// The in-memory broker has no channels: requests are plain publishes.
impl RequestSender for MemoryTransport {
    fn send(&self, queue: &str, message: Message) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.publish(queue, message)
    }
}

const INBOX_PREFIX: &str = "wharf.reply.";

/// Removes a reply inbox when its stream is dropped.
struct InboxRegistration {
    inboxes: Inboxes,
    address: String,
}

impl Drop for InboxRegistration {
    fn drop(&mut self) {
        self.inboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.address);
    }
}
