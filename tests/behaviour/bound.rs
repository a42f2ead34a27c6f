//! The bound-route variants of the suite (`amqp_bound`, `nats_bound`,
//! `nats_consumed`): every route the cases start takes its messages
//! through an exchange or an event subject instead of its queue, and every
//! publish to such a queue goes out that way. So each semantic is shown to
//! hold for routes bound to events (`RouteOptions::bind`,
//! `RouteOptions::subscribe`), on NATS both sourced into the route's
//! stream (`nats_bound`) and read through a durable consumer named for
//! the route (`nats_consumed`, `Subscription::consumer`; the consumer is
//! deleted with the queue).
//!
//! A transport wrapper does it, so the cases stay as they are: its
//! `declare` adds a direct binding (RabbitMQ, routing key = the queue) or a
//! subscription (NATS, subject `wharftest-bound.<queue>` in the stream
//! `WHARFTEST_BOUND`, or `wharftest-consumed.<queue>` in
//! `WHARFTEST_CONSUMED`, which the harness makes) to each route, and its
//! `publish` to a queue so declared goes to the exchange or subject. Routes that cannot be bound
//! (priority lanes and core services on NATS) and queues nobody declared
//! are left as they are.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use wharf::transport::{BoxFuture, Delivery, DeliveryStream, QueueSpec, ReplyInbox, Transport};
use wharf::{Binding, BrokerError, Message, Subscription};

/// The exchange of the RabbitMQ variant.
const EXCHANGE: &str = "wharf-test.bound";
/// The event streams and subject prefixes of the NATS variants: one each,
/// as JetStream de-duplicates message ids per stream, and both variants
/// publish the cases' ids at once.
const STREAMS: [(&str, &str); 2] = [
    ("WHARFTEST_BOUND", "wharftest-bound"),
    ("WHARFTEST_CONSUMED", "wharftest-consumed"),
];

pub struct Bound {
    inner: Arc<dyn Transport>,
    /// Queues declared with a binding or subscription.
    bound: Mutex<HashSet<String>>,
    /// `nats_consumed`: the event stream's consumers are made and deleted
    /// through this.
    #[cfg(feature = "nats")]
    consumers: Option<async_nats::jetstream::Context>,
}

impl Bound {
    pub fn new(inner: Arc<dyn Transport>) -> Self {
        Bound {
            inner,
            bound: Mutex::default(),
            #[cfg(feature = "nats")]
            consumers: None,
        }
    }

    /// The `nats_consumed` variant: each route reads the event stream
    /// through a consumer of its own.
    #[cfg(feature = "nats")]
    pub fn through_consumers(inner: Arc<dyn Transport>, jetstream: async_nats::jetstream::Context) -> Self {
        Bound {
            consumers: Some(jetstream),
            ..Bound::new(inner)
        }
    }

    /// The NATS variant's event stream and subject prefix.
    fn events(&self) -> (&'static str, &'static str) {
        STREAMS[usize::from(self.consumer("").is_some())]
    }

    /// The consumer a route on `queue` reads through, in `nats_consumed`.
    fn consumer(&self, queue: &str) -> Option<String> {
        #[cfg(feature = "nats")]
        if self.consumers.is_some() {
            return Some(queue.replace('.', "_"));
        }
        let _ = queue;
        None
    }

    fn nats(&self) -> bool {
        self.inner.kind() == "nats"
    }
}

/// Makes the event stream of a NATS variant (`consumed` or not),
/// capturing every case's subjects (`wharftest-bound.>`), kept 10 minutes.
/// Its de-duplication window is 10 s: the cases' message ids are the same
/// in every run, and a run a minute after another must not lose them.
#[cfg(feature = "nats")]
pub async fn nats_event_stream(url: &str, consumed: bool) -> Result<async_nats::jetstream::Context, String> {
    let client = async_nats::connect(url).await.map_err(|e| e.to_string())?;
    let jetstream = async_nats::jetstream::new(client);
    let (stream, subjects) = STREAMS[usize::from(consumed)];
    jetstream
        .create_or_update_stream(async_nats::jetstream::stream::Config {
            name: stream.to_owned(),
            subjects: vec![format!("{subjects}.>")],
            max_age: std::time::Duration::from_secs(600),
            duplicate_window: std::time::Duration::from_secs(10),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(jetstream)
}

impl Bound {
    /// `spec` with the binding or subscription of the variant, and whether
    /// it could be given one (see the module's documentation).
    fn with_events(&self, spec: &QueueSpec) -> (QueueSpec, bool) {
        let mut spec = spec.clone();
        let bindable = !self.nats() || (!spec.priority && spec.persistent);
        if bindable && self.nats() {
            let (stream, subjects) = self.events();
            let subject = format!("{subjects}.{}", spec.name);
            spec.subscriptions.push(match self.consumer(&spec.name) {
                // Made by wharf: only the stream is the harness's.
                Some(consumer) => Subscription::new(stream, subject).consumer(consumer),
                None => Subscription::new(stream, subject).existing(),
            });
        } else if bindable {
            spec.bindings.push(Binding::direct(EXCHANGE, spec.name.clone()));
        }
        (spec, bindable)
    }
}

impl Transport for Bound {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn declare(&self, spec: &QueueSpec) -> BoxFuture<'_, Result<(), BrokerError>> {
        let (spec, bindable) = self.with_events(spec);
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
        // As the app gives it: with what declare added (a consumer to read).
        let (spec, _) = self.with_events(spec);
        Box::pin(async move { self.inner.consume(&spec, prefetch).await })
    }

    fn publish(&self, queue: &str, message: Message) -> BoxFuture<'_, Result<(), BrokerError>> {
        if !self.bound.lock().unwrap().contains(queue) {
            return self.inner.publish(queue, message);
        }
        if self.nats() && message.priority.is_none_or(|p| p == 0) {
            let subject = format!("{}.{queue}", self.events().1);
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
        #[cfg(feature = "nats")]
        if let (Some(jetstream), Some(consumer)) = (self.consumers.clone(), self.consumer(queue)) {
            let queue = queue.to_owned();
            return Box::pin(async move {
                if let Ok(stream) = jetstream.get_stream(STREAMS[1].0).await {
                    let _ = stream.delete_consumer(&consumer).await;
                }
                self.inner.delete(&queue).await
            });
        }
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
