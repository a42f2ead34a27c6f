//! The bound-route variant of the suite (`amqp_bound`, `nats_bound`):
//! every route the cases start takes its messages through an exchange or
//! an event subject instead of its queue, and every publish to such a
//! queue goes out that way. So each semantic is shown to hold for routes
//! bound to events (`RouteOptions::bind`, `RouteOptions::subscribe`).
//!
//! A transport wrapper does it, so the cases stay as they are: its
//! `declare` adds a direct binding (RabbitMQ, routing key = the queue) or a
//! subscription (NATS, subject `wharftest-bound.<queue>` in the stream
//! `WHARFTEST_BOUND`, which the harness makes) to each route, and its `publish` to a queue so
//! declared goes to the exchange or subject. Routes that cannot be bound
//! (priority lanes and core services on NATS) and queues nobody declared
//! are left as they are.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use wharf::transport::{BoxFuture, Delivery, DeliveryStream, QueueSpec, ReplyInbox, Transport};
use wharf::{Binding, BrokerError, Message, Subscription};

/// The exchange of the RabbitMQ variant.
const EXCHANGE: &str = "wharf-test.bound";
/// The event stream and subject prefix of the NATS variant.
const STREAM: &str = "WHARFTEST_BOUND";
const SUBJECTS: &str = "wharftest-bound";

pub struct Bound {
    inner: Arc<dyn Transport>,
    /// Queues declared with a binding or subscription.
    bound: Mutex<HashSet<String>>,
}

impl Bound {
    pub fn new(inner: Arc<dyn Transport>) -> Self {
        Bound {
            inner,
            bound: Mutex::default(),
        }
    }

    fn nats(&self) -> bool {
        self.inner.kind() == "nats"
    }
}

/// Makes the NATS variant's event stream, capturing every case's subjects
/// (`wharftest-bound.>`), kept 10 minutes.
#[cfg(feature = "nats")]
pub async fn nats_event_stream(url: &str) -> Result<(), String> {
    let client = async_nats::connect(url).await.map_err(|e| e.to_string())?;
    let jetstream = async_nats::jetstream::new(client);
    jetstream
        .get_or_create_stream(async_nats::jetstream::stream::Config {
            name: STREAM.to_owned(),
            subjects: vec![format!("{SUBJECTS}.>")],
            max_age: std::time::Duration::from_secs(600),
            ..Default::default()
        })
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

impl Transport for Bound {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn declare(&self, spec: &QueueSpec) -> BoxFuture<'_, Result<(), BrokerError>> {
        let mut spec = spec.clone();
        let bindable = !self.nats() || (!spec.priority && spec.persistent);
        if bindable {
            if self.nats() {
                let subscription = Subscription::new(STREAM, format!("{SUBJECTS}.{}", spec.name)).existing();
                spec.subscriptions.push(subscription);
            } else {
                spec.bindings.push(Binding::direct(EXCHANGE, spec.name.clone()));
            }
        }
        Box::pin(async move {
            self.inner.declare(&spec).await?;
            if bindable {
                self.bound.lock().unwrap().insert(spec.name.clone());
            }
            Ok(())
        })
    }

    fn consume(
        &self,
        spec: &QueueSpec,
        prefetch: usize,
    ) -> BoxFuture<'_, Result<DeliveryStream, BrokerError>> {
        self.inner.consume(spec, prefetch)
    }

    fn publish(&self, queue: &str, message: Message) -> BoxFuture<'_, Result<(), BrokerError>> {
        if !self.bound.lock().unwrap().contains(queue) {
            return self.inner.publish(queue, message);
        }
        if self.nats() && message.priority.is_none_or(|p| p == 0) {
            let subject = format!("{SUBJECTS}.{queue}");
            return Box::pin(async move { self.inner.publish_to_subject(&subject, message).await });
        }
        if self.nats() {
            // A priority NATS cannot carry on an event subject.
            return self.inner.publish(queue, message);
        }
        let queue = queue.to_owned();
        Box::pin(async move { self.inner.publish_to_exchange(EXCHANGE, &queue, message).await })
    }

    fn publish_to_exchange(
        &self,
        exchange: &str,
        routing_key: &str,
        message: Message,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.inner.publish_to_exchange(exchange, routing_key, message)
    }

    fn publish_to_subject(&self, subject: &str, message: Message) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.inner.publish_to_subject(subject, message)
    }

    fn reply(&self, address: &str, message: Message) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.inner.reply(address, message)
    }

    fn check_reply_address(&self, address: &str) -> Result<(), String> {
        self.inner.check_reply_address(address)
    }

    fn reply_inbox(&self) -> BoxFuture<'_, Result<ReplyInbox, BrokerError>> {
        self.inner.reply_inbox()
    }

    fn fetch(&self, queue: &str, max: usize) -> BoxFuture<'_, Result<Vec<Delivery>, BrokerError>> {
        self.inner.fetch(queue, max)
    }

    fn depth(&self, queue: &str) -> BoxFuture<'_, Result<u64, BrokerError>> {
        self.inner.depth(queue)
    }

    fn delete(&self, queue: &str) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.bound.lock().unwrap().remove(queue);
        self.inner.delete(queue)
    }

    fn connected(&self) -> watch::Receiver<bool> {
        self.inner.connected()
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        self.inner.flush()
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        self.inner.close()
    }
}
