//! The kit's transport: the in-memory broker, with a record of every
//! message published and every reply sent through it.

use super::tracker::Tracker;
use crate::error::BrokerError;
use crate::transport::memory::MemoryTransport;
use crate::transport::{
    BoxFuture, Delivery, DeliveryStream, QueueSpec, ReplyInbox, RequestSender, Transport,
};
use crate::wire::message::Message;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// What went through the kit's broker, oldest first.
#[derive(Default)]
pub(super) struct Record {
    /// Queue and message of every publish (by handlers, clients, replays;
    /// not the kit's own).
    published: Mutex<Vec<(String, Message)>>,
    /// Address and message of every reply.
    replies: Mutex<Vec<(String, Message)>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Record {
    /// The messages published to `queue`.
    pub(super) fn published(&self, queue: &str) -> Vec<Message> {
        lock(&self.published)
            .iter()
            .filter(|(to, _)| to == queue)
            .map(|(_, message)| message.clone())
            .collect()
    }

    /// Every reply with its address.
    pub(super) fn replies(&self) -> Vec<(String, Message)> {
        lock(&self.replies).clone()
    }

    fn publish(&self, queue: &str, message: &Message) {
        lock(&self.published).push((queue.to_owned(), message.clone()));
    }
}

/// The in-memory transport, recording as it goes.
pub(super) struct Recording {
    pub(super) memory: MemoryTransport,
    pub(super) record: Arc<Record>,
    pub(super) tracker: Arc<Tracker>,
}

impl Transport for Recording {
    fn kind(&self) -> &'static str {
        self.memory.kind()
    }

    fn declare(&self, spec: &QueueSpec) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.memory.declare(spec)
    }

    fn consume(
        &self,
        spec: &QueueSpec,
        prefetch: usize,
    ) -> BoxFuture<'_, Result<DeliveryStream, BrokerError>> {
        self.memory.consume(spec, prefetch)
    }

    fn publish(&self, queue: &str, message: Message) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.record.publish(queue, &message);
        self.memory.publish(queue, message)
    }

    /// Recorded under the exchange's name (`published("<exchange>")`),
    /// then routed to the bound queues as the in-memory broker does.
    fn publish_to_exchange(
        &self,
        exchange: &str,
        routing_key: &str,
        message: Message,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.record.publish(exchange, &message);
        self.memory.publish_to_exchange(exchange, routing_key, message)
    }

    fn publish_to_subject(&self, subject: &str, message: Message) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.memory.publish_to_subject(subject, message)
    }

    fn reply(&self, address: &str, message: Message) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.tracker.replied(address, &message);
        lock(&self.record.replies).push((address.to_owned(), message.clone()));
        self.memory.reply(address, message)
    }

    fn check_reply_address(&self, address: &str) -> Result<(), String> {
        self.memory.check_reply_address(address)
    }

    fn reply_inbox(&self) -> BoxFuture<'_, Result<ReplyInbox, BrokerError>> {
        let record = self.record.clone();
        let opening = self.memory.reply_inbox();
        Box::pin(async move {
            let mut inbox = opening.await?;
            inbox.requests = Box::new(RecordingSender {
                inner: inbox.requests,
                record,
            });
            Ok(inbox)
        })
    }

    fn fetch(&self, queue: &str, max: usize) -> BoxFuture<'_, Result<Vec<Delivery>, BrokerError>> {
        self.memory.fetch(queue, max)
    }

    fn depth(&self, queue: &str) -> BoxFuture<'_, Result<u64, BrokerError>> {
        self.memory.depth(queue)
    }

    fn delete(&self, queue: &str) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.memory.delete(queue)
    }

    fn connected(&self) -> watch::Receiver<bool> {
        self.memory.connected()
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        self.memory.flush()
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        self.memory.close()
    }
}

/// Records the requests a [`Client`](crate::Client) on the kit's broker
/// sends (a handler asking another route).
struct RecordingSender {
    inner: Box<dyn RequestSender>,
    record: Arc<Record>,
}

impl RequestSender for RecordingSender {
    fn send(&self, queue: &str, message: Message) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.record.publish(queue, &message);
        self.inner.send(queue, message)
    }

    fn is_open(&self) -> bool {
        self.inner.is_open()
    }
}
