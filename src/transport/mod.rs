//! The transport contract: the only broker-specific layer.
//!
//! A transport offers primitives, not policy. It declares queues, hands out
//! deliveries, settles them as the pipeline decides, publishes with confirms
//! and carries replies. How many attempts, which backoff and what counts as
//! poison are decided once, in the pipeline, for every transport.
//!
//! Contract every implementation must honour (the behaviour suite in
//! `tests/behaviour` checks it):
//! - A delivery that is dropped without being settled goes back to its queue;
//!   nothing is lost because a task ended. Unlike [`Settlement::Return`] it
//!   counts as a delivery, so that a message that keeps killing its worker
//!   runs out of attempts instead of looping forever.
//! - [`Settlement::DeadLetter`] and [`Settlement::Retry`] complete only after
//!   the copy they publish is durable (confirmed); only then is the original
//!   acknowledged.
//! - [`Delivery::delivery_count`] is 1 on the first delivery and grows by one
//!   per failed attempt; [`Settlement::Defer`] and [`Settlement::Return`] do
//!   not count. A message carrying `wharf-attempt: n` (attempts already
//!   made, `docs/wire-format.md`) starts at n + 1; a `wharf-attempt` that
//!   is not a whole number from 0 to `u32::MAX` is not counted, and the
//!   delivery is [malformed](Delivery::with_malformed). Counts saturate.
//! - Higher `priority` is delivered first on a queue declared with priority,
//!   and a waiting low-priority message is not starved forever.
//! - `publish` returns once the broker has the message.

#[cfg(feature = "amqp")]
pub mod amqp;
pub mod binding;
pub mod broker_options;
pub(crate) mod lanes;
pub(crate) mod memory;
#[cfg(feature = "nats")]
pub(crate) mod nats;
pub mod subscription;
#[cfg(any(feature = "amqp", feature = "nats"))]
pub(crate) mod tls;
pub mod topology;
pub(crate) mod window;

use crate::error::BrokerError;
use crate::wire::message::Message;
use futures_util::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub use crate::util::future::{BoxFuture, succeeded};
pub use binding::{Binding, ExchangeKind, HeadersMatch};
pub use subscription::Subscription;
pub use topology::{MAX_STREAM_REPLICAS, QueueType, StreamStorage, Topology};

/// A queue's lease unless its route sets one: how long a delivery (and a
/// store claim or session turn) stays with a worker that stops renewing it.
pub(crate) const DEFAULT_LEASE: Duration = Duration::from_secs(15);

/// A stream of deliveries from one consumer. Dropping it cancels the consumer;
/// deliveries it had not yielded yet go back to the queue.
pub type DeliveryStream = Pin<Box<dyn Stream<Item = Delivery> + Send>>;

/// The queue a route consumes, with what must be declared for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueSpec {
    /// Queue name.
    pub name: String,
    /// Declare the queue with priorities 0–9.
    pub priority: bool,
    /// Whether the broker stores the messages (see
    /// [`RouteOptions::persistent`](crate::RouteOptions::persistent)).
    pub persistent: bool,
    /// How long a delivery may stay unsettled by a worker that stopped
    /// answering before the broker hands it to another, where the broker
    /// keeps such a timer (JetStream's ack wait; RabbitMQ redelivers when
    /// the connection drops). The route's
    /// [`lease`](crate::RouteOptions::lease).
    pub lease: Duration,
    /// How the broker keeps the queue: RabbitMQ's queue type, JetStream's
    /// replicas and storage; the route's settings over the app's defaults.
    /// Unset settings fall to the broker's defaults (see [`Topology`]).
    pub topology: Topology,
    /// RabbitMQ exchanges the queue is bound to (the route's
    /// [`bind`](crate::RouteOptions::bind)); NATS refuses any.
    pub bindings: Vec<Binding>,
    /// NATS subjects the queue takes events from (the route's
    /// [`subscribe`](crate::RouteOptions::subscribe)); other brokers
    /// refuse any.
    pub subscriptions: Vec<Subscription>,
    /// Take the work queue (RabbitMQ) or stream (NATS) as it is: checked
    /// to exist, never declared or compared (the route's
    /// [`existing_queue`](crate::RouteOptions::existing_queue)).
    pub existing: bool,
}

impl QueueSpec {
    /// A persistent queue without priorities, with the default lease and
    /// nothing chosen of its [`Topology`].
    pub fn new(name: impl Into<String>) -> Self {
        QueueSpec {
            name: name.into(),
            priority: false,
            persistent: true,
            lease: crate::transport::DEFAULT_LEASE,
            topology: Topology::default(),
            bindings: Vec::new(),
            subscriptions: Vec::new(),
            existing: false,
        }
    }

    /// The name of this queue's dead-letter queue.
    pub fn dead_letter_queue(&self) -> String {
        dead_letter_queue(&self.name)
    }
}

/// The refusal of a broker without exchanges to publish to `exchange` or
/// bind a queue to it.
pub(crate) fn no_exchanges(kind: &str, exchange: &str) -> BrokerError {
    BrokerError::new(
        crate::error::BrokerErrorKind::Config,
        format!(
            "exchange {exchange:?}: exchanges are RabbitMQ's, and this broker is {kind}; \
             publish to a queue, or use RabbitMQ (docs/amqp.md, \"Exchanges and routing keys\")"
        ),
    )
}

/// The refusal of a broker without JetStream subjects to publish to
/// `subject` or subscribe a route to it.
pub(crate) fn no_subjects(kind: &str, subject: &str) -> BrokerError {
    BrokerError::new(
        crate::error::BrokerErrorKind::Config,
        format!(
            "subject {subject:?}: event subjects are NATS's, and this broker is {kind}; \
             on RabbitMQ bind the route to an exchange (docs/nats.md, \"Events on your own subjects\")"
        ),
    )
}

/// The dead-letter queue of `queue`: `<queue>.dlq` on every broker.
pub fn dead_letter_queue(queue: &str) -> String {
    format!("{queue}.dlq")
}

/// How a delivery is finished.
#[derive(Debug)]
pub enum Settlement {
    /// Done: remove the message.
    Ack,
    /// A failed attempt: deliver again after `delay`, counting the attempt.
    Retry {
        /// How long to wait before the next attempt.
        delay: Duration,
    },
    /// Not handled yet (e.g. its session is not ready or a duplicate is still
    /// running elsewhere): deliver again after `delay` without counting an attempt.
    Defer {
        /// How long to wait.
        delay: Duration,
    },
    /// Publish `message` (the original plus reason headers) to the queue's
    /// dead-letter queue, confirmed, then remove the original.
    DeadLetter {
        /// The dead letter to store (boxed: settling is on every message's
        /// path, dead-lettering is not).
        message: Box<Message>,
    },
    /// Put the message back now without counting an attempt (shutdown).
    Return,
}

/// Settles one delivery. Implemented by each transport; a delivery carries
/// its own acker, as lapin's deliveries do.
pub trait Acker: Send + Sync + 'static {
    /// Settles the delivery this acker belongs to.
    fn settle(self: Box<Self>, settlement: Settlement) -> BoxFuture<'static, Result<(), BrokerError>>;
}

/// A message handed to a consumer, not yet settled.
pub struct Delivery {
    /// The message.
    pub message: Arc<Message>,
    /// 1 on the first delivery; grows with each failed attempt.
    pub delivery_count: u32,
    acker: Box<dyn Acker>,
    /// Why the transport could not read the message as it was sent (see
    /// [`Delivery::malformed`]).
    malformed: Option<Box<str>>,
}

impl Delivery {
    /// A delivery settled through `acker`.
    pub fn new(message: Arc<Message>, delivery_count: u32, acker: Box<dyn Acker>) -> Self {
        Delivery {
            message,
            delivery_count,
            acker,
            malformed: None,
        }
    }

    /// A delivery of a message the transport could not read as it was sent
    /// (its headers, say): the pipeline dead-letters it at once as invalid
    /// input, with `why` as the explanation. `message` is what could be
    /// read of it.
    pub fn malformed(
        message: Arc<Message>,
        delivery_count: u32,
        acker: Box<dyn Acker>,
        why: impl Into<Box<str>>,
    ) -> Self {
        Delivery {
            malformed: Some(why.into()),
            ..Delivery::new(message, delivery_count, acker)
        }
    }

    /// Marks this delivery [`malformed`](Delivery::malformed): the
    /// transport found, after making it, that the message cannot be read
    /// as it was sent (a `wharf-attempt` header that is not a number of
    /// attempts, say).
    pub fn with_malformed(mut self, why: impl Into<Box<str>>) -> Self {
        self.malformed = Some(why.into());
        self
    }

    /// Why the transport could not read the message, for a
    /// [`malformed`](Delivery::malformed) delivery.
    pub fn malformed_reason(&self) -> Option<&str> {
        self.malformed.as_deref()
    }

    /// Settles the delivery.
    pub fn settle(self, settlement: Settlement) -> BoxFuture<'static, Result<(), BrokerError>> {
        self.acker.settle(settlement)
    }
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .field("delivery_count", &self.delivery_count)
            .finish_non_exhaustive()
    }
}

/// A private address that replies are delivered to, for the request client.
pub struct ReplyInbox {
    /// The address to put in requests' `reply_to`.
    pub address: String,
    /// Replies as they arrive (already acknowledged).
    pub replies: Pin<Box<dyn Stream<Item = Message> + Send>>,
    /// Publishes the requests whose replies come here. Some brokers require
    /// it (RabbitMQ's direct reply-to only answers requests published on the
    /// channel that consumes the replies).
    pub requests: Box<dyn RequestSender>,
}

/// Publishes requests for a [`ReplyInbox`].
pub trait RequestSender: Send + Sync + 'static {
    /// Publishes a request to `queue`, confirmed by the broker; an error if
    /// no queue of that name exists.
    fn send(&self, queue: &str, message: Message) -> BoxFuture<'_, Result<(), BrokerError>>;

    /// Publishes `message` as the request with correlation id `id`, whose
    /// reply is to come to `reply_to` (the inbox's address). By default the
    /// message carries both, and `id` as its message id unless it has one,
    /// and goes out with [`RequestSender::send`]; a transport that carries
    /// them otherwise (NATS: in the reply subject) sets only what it sends.
    /// `in_flight`: the requests of this reply address awaiting replies,
    /// this one included; a transport may hold a request back a moment to
    /// publish it together with others when there are others (NATS).
    fn send_request(
        &self,
        queue: &str,
        id: &str,
        reply_to: &str,
        mut message: Message,
        in_flight: usize,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        let _ = in_flight;
        message.correlation_id = Some(id.to_owned());
        message.reply_to = Some(reply_to.to_owned());
        if message.message_id.is_none() {
            message.message_id = Some(id.to_owned());
        }
        self.send(queue, message)
    }

    /// Whether requests can still be sent, and their replies arrive, this
    /// way. A client opens a new reply address when not (RabbitMQ: the
    /// channel of a direct reply-to consumer dies with its connection).
    fn is_open(&self) -> bool {
        true
    }
}

/// A broker back end. See the module documentation for the contract.
pub trait Transport: Send + Sync + 'static {
    /// Short name: `memory`, `amqp` or `nats`.
    fn kind(&self) -> &'static str;

    /// Declares the queue and its dead-letter queue; idempotent.
    fn declare(&self, spec: &QueueSpec) -> BoxFuture<'_, Result<(), BrokerError>>;

    /// Starts consuming with at most `prefetch` unsettled deliveries.
    fn consume(
        &self,
        spec: &QueueSpec,
        prefetch: usize,
    ) -> BoxFuture<'_, Result<DeliveryStream, BrokerError>>;

    /// Publishes to a queue and waits for the broker's confirm.
    fn publish(&self, queue: &str, message: Message) -> BoxFuture<'_, Result<(), BrokerError>>;

    /// Publishes to a RabbitMQ `exchange` with `routing_key`, for the
    /// queues bound to it ([`Binding`]), and waits for the broker's
    /// confirm. A message no queue is bound for is dropped by RabbitMQ, as
    /// an event nobody subscribed to; that is not an error. Brokers without
    /// exchanges refuse with a [`Config`](crate::BrokerErrorKind::Config)
    /// error.
    fn publish_to_exchange(
        &self,
        exchange: &str,
        routing_key: &str,
        message: Message,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        let _ = (routing_key, message);
        let error = no_exchanges(self.kind(), exchange);
        Box::pin(std::future::ready(Err(error)))
    }

    /// Publishes to a NATS `subject` (not one of wharf's own), confirmed by
    /// the JetStream stream that captures it, for the routes subscribed to
    /// it ([`Subscription`]). A subject no stream captures is an error
    /// (`no responders`). Brokers without subjects refuse with a
    /// [`Config`](crate::BrokerErrorKind::Config) error.
    fn publish_to_subject(&self, subject: &str, message: Message) -> BoxFuture<'_, Result<(), BrokerError>> {
        let _ = message;
        let error = no_subjects(self.kind(), subject);
        Box::pin(std::future::ready(Err(error)))
    }

    /// Publishes a reply to a request's reply address (a queue or a broker
    /// reply address). An address the broker refuses as such (one that
    /// [`check_reply_address`](Transport::check_reply_address) should have
    /// refused) is a [`BrokerErrorKind::Address`](crate::BrokerErrorKind::Address)
    /// error, so that the message is not retried for it.
    fn reply(&self, address: &str, message: Message) -> BoxFuture<'_, Result<(), BrokerError>>;

    /// Whether `address`, a received message's reply address, can ever
    /// take a reply on this broker; if not, why (`docs/wire-format.md`,
    /// "Reply addresses"). The pipeline asks before the handler runs and
    /// dead-letters a message whose address can never work (reason
    /// `reply`), instead of running it and retrying a reply that cannot
    /// go out. Checked for every message with a reply address: keep it
    /// cheap. By default every address is accepted.
    fn check_reply_address(&self, address: &str) -> Result<(), String> {
        let _ = address;
        Ok(())
    }

    /// Opens a private reply address for the request client.
    fn reply_inbox(&self) -> BoxFuture<'_, Result<ReplyInbox, BrokerError>>;

    /// Takes up to `max` waiting messages from `queue` without a consumer, for
    /// inspecting and replaying dead letters. Returns what is there now.
    fn fetch(&self, queue: &str, max: usize) -> BoxFuture<'_, Result<Vec<Delivery>, BrokerError>>;

    /// Messages waiting in `queue` (not counting delivered, unsettled ones).
    fn depth(&self, queue: &str) -> BoxFuture<'_, Result<u64, BrokerError>>;

    /// Deletes `queue` and everything wharf declared for it (its dead-letter
    /// queue, delay queues), with the messages in them. Missing queues are
    /// not an error.
    fn delete(&self, queue: &str) -> BoxFuture<'_, Result<(), BrokerError>>;

    /// Whether the broker connection is up, as it changes.
    fn connected(&self) -> watch::Receiver<bool>;

    /// Sends anything held back (coalesced acks) now.
    fn flush(&self) -> BoxFuture<'_, ()>;

    /// Flushes, then closes the connection. Other users of the same broker
    /// lose it too.
    fn close(&self) -> BoxFuture<'_, ()>;
}
