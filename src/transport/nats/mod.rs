//! The NATS transport (core NATS and JetStream, over `async-nats`), behind
//! the `nats` feature. Naming: [`naming`]; the NATS mapping of wharf's
//! message model: `docs/wire-format.md`.
//!
//! Each queue is a JetStream stream with WorkQueue retention, consumed by a
//! durable pull consumer shared by all workers (one per priority lane when
//! the route uses priority). Retries are naks with a delay (JetStream counts
//! the delivery); deferrals and returns, which must not count, are copies
//! carrying the attempts so far. Dead letters are a stream per queue.

mod acker;
mod adopted;
pub(crate) mod connect_options;
mod connection;
mod consumer;
mod convert;
mod delivery;
mod events;
mod fetch;
mod handback;
mod keepalive;
mod naming;
mod outbox;
mod pull;
mod quarantine;
mod reply;
mod request_form;
mod service;
pub(crate) mod topology;

use crate::error::{BrokerError, BrokerErrorKind};
use crate::transport::broker_options::BrokerOptions;
use crate::transport::{BoxFuture, Delivery, DeliveryStream, QueueSpec, ReplyInbox, Transport};
use crate::wire::message::Message;
use async_nats::jetstream;
use futures_util::TryFutureExt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What every part of the transport shares.
pub(crate) struct Shared {
    /// The connection everything is sent on: publishes, acks, replies,
    /// requests and the JetStream API.
    pub(crate) client: async_nats::Client,
    pub(crate) jetstream: jetstream::Context,
    /// Whether `client` is up.
    pub(crate) connected: watch::Receiver<bool>,
    /// The connection consumers receive on (pull subscriptions, core
    /// services): see [`connection`] for why it is a second one.
    pub(crate) consumer: connection::Connection,
    /// Whether both connections are up (readiness).
    pub(crate) ready: watch::Receiver<bool>,
    /// The runtime the connection's task runs on: what must outlive a
    /// worker's runtime is sent from there (see `acker`'s `Drop`).
    pub(crate) runtime: tokio::runtime::Handle,
    /// Stopped consumers giving back what they held; waited for before
    /// the connection is flushed or closed.
    pub(crate) handbacks: handback::Handbacks,
    /// Unreadable messages this process dead-lettered from streams it reads
    /// through a named consumer, which keep them ([`quarantine`]).
    pub(crate) quarantined: quarantine::Quarantined,
    /// The consumers each route declared here reads through, counted in
    /// its depth ([`events::NamedConsumers`]).
    pub(crate) named_consumers: events::NamedConsumers,
}

/// A NATS connection; async-nats reconnects it by itself.
pub(crate) struct NatsTransport {
    shared: Arc<Shared>,
}

impl NatsTransport {
    /// Connects as `options` say (`nats://`, `tls://`; credentials in the
    /// URL or typed).
    pub(crate) async fn connect(options: &BrokerOptions) -> Result<Self, BrokerError> {
        let main = connection::open(options, "").await?;
        let consumer = connection::open(options, "-consumer").await?;
        let ready = connection::both(main.connected.clone(), consumer.connected.clone());
        let jetstream = jetstream::new(main.client.clone());
        Ok(NatsTransport {
            shared: Arc::new(Shared {
                client: main.client,
                jetstream,
                connected: main.connected,
                consumer,
                ready,
                runtime: tokio::runtime::Handle::current(),
                handbacks: handback::Handbacks::default(),
                quarantined: quarantine::Quarantined::default(),
                named_consumers: events::NamedConsumers::default(),
            }),
        })
    }
}

/// A JetStream publish, confirmed by its stream.
pub(crate) async fn publish_confirmed(
    shared: &Shared,
    subject: String,
    headers: async_nats::HeaderMap,
    body: bytes::Bytes,
) -> Result<(), BrokerError> {
    if try_publish(shared, subject.clone(), headers, body).await? {
        Ok(())
    } else {
        Err(BrokerError::new(
            BrokerErrorKind::Publish,
            format!("no queue holds subject {subject}: the message was not stored (declare the queue first)"),
        ))
    }
}

/// A reply published to `address` as a core subject: a successful JSON
/// reply to a lean request without headers.
fn publish_reply(
    shared: &Shared,
    address: String,
    mut message: Message,
) -> BoxFuture<'_, Result<(), BrokerError>> {
    fn failed(e: async_nats::PublishError) -> BrokerError {
        // An invalid subject is the address itself: no retry can help.
        let kind = match e.kind() {
            async_nats::PublishErrorKind::InvalidSubject => BrokerErrorKind::Address,
            _ => BrokerErrorKind::Publish,
        };
        BrokerError::new(kind, "publishing the reply failed").with_source(e)
    }
    let headers = if convert::is_bare_reply(&message) {
        async_nats::HeaderMap::new()
    } else {
        convert::strip_lean_reply(&mut message);
        convert::headers(&message, false)
    };
    Box::pin(core_publish(shared, address.into(), None, headers, message.body).map_err(failed))
}

/// A core NATS publish that hands its subjects to the client as they are
/// (no headers when `headers` is empty). `Client::publish` and its kin take
/// `impl ToSubject`, which copies a `String` and clones a `Subject`: an
/// allocation per subject and message that this path does not make. The
/// subject is checked as `publish` checks it; `reply` is not, so it must be
/// one wharf made or one the server sent.
pub(crate) fn core_publish(
    shared: &Shared,
    subject: async_nats::Subject,
    reply: Option<async_nats::Subject>,
    headers: async_nats::HeaderMap,
    payload: bytes::Bytes,
) -> impl Future<Output = Result<(), async_nats::PublishError>> + Send + '_ {
    use async_nats::client::traits::Publisher;
    shared
        .client
        .publish_message(outbound(subject, reply, headers, payload))
}

/// A core NATS message as async-nats takes it (no headers when `headers`
/// is empty).
pub(crate) fn outbound(
    subject: async_nats::Subject,
    reply: Option<async_nats::Subject>,
    headers: async_nats::HeaderMap,
    payload: bytes::Bytes,
) -> async_nats::message::OutboundMessage {
    async_nats::message::OutboundMessage {
        subject,
        reply,
        headers: (!headers.is_empty()).then_some(headers),
        payload,
    }
}

/// A JetStream publish, confirmed by its stream; `false` when no stream
/// holds the subject.
async fn try_publish(
    shared: &Shared,
    subject: String,
    headers: async_nats::HeaderMap,
    body: bytes::Bytes,
) -> Result<bool, BrokerError> {
    // While disconnected, async-nats would keep the message in its buffer
    // and send it after the reconnect, long after the publish ack timed
    // out: the caller, told it failed, would publish it again.
    if !*shared.connected.borrow() {
        return Err(BrokerError::new(
            BrokerErrorKind::Connection,
            format!("not connected to NATS (reconnecting): nothing was published to {subject}"),
        ));
    }
    let failed = |e: &dyn std::fmt::Display| {
        BrokerError::new(
            BrokerErrorKind::Publish,
            format!("publishing to {subject} failed: {e}"),
        )
    };
    let ack = shared
        .jetstream
        .publish_with_headers(subject.clone(), headers, body)
        .await
        .map_err(|e| failed(&e))?;
    match ack.await {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == jetstream::context::PublishErrorKind::StreamNotFound => Ok(false),
        Err(e) => Err(failed(&e)),
    }
}

impl Transport for NatsTransport {
    fn kind(&self) -> &'static str {
        "nats"
    }

    fn declare(&self, spec: &QueueSpec) -> BoxFuture<'_, Result<(), BrokerError>> {
        let spec = spec.clone();
        Box::pin(async move { topology::declare(&self.shared, &spec).await })
    }

    fn consume(
        &self,
        spec: &QueueSpec,
        prefetch: usize,
    ) -> BoxFuture<'_, Result<DeliveryStream, BrokerError>> {
        let spec = spec.clone();
        Box::pin(async move {
            naming::check_queue(&spec.name)?;
            if spec.persistent {
                Ok(consumer::consume(self.shared.clone(), spec, prefetch))
            } else {
                service::consume(self.shared.clone(), spec, prefetch).await
            }
        })
    }

    fn publish(&self, queue: &str, message: Message) -> BoxFuture<'_, Result<(), BrokerError>> {
        let queue = queue.to_owned();
        Box::pin(async move {
            naming::check_queue(&queue)?;
            let lane = naming::lane(message.priority)?;
            let copy = message.header(crate::wire::headers::names::REPLAYED_AT).is_some();
            let headers = convert::headers(&message, copy);
            let subject = naming::subject(&queue, lane);
            publish_confirmed(&self.shared, subject, headers, message.body).await
        })
    }

    fn publish_to_subject(&self, subject: &str, message: Message) -> BoxFuture<'_, Result<(), BrokerError>> {
        let subject = subject.to_owned();
        Box::pin(async move {
            if let Some(why) = crate::transport::subscription::subject_problem(&subject, false) {
                return Err(BrokerError::new(
                    BrokerErrorKind::Config,
                    format!("publishing to subject {subject:?}: {why}"),
                ));
            }
            let headers = convert::headers(&message, false);
            if try_publish(&self.shared, subject.clone(), headers, message.body).await? {
                Ok(())
            } else {
                Err(BrokerError::new(
                    BrokerErrorKind::Publish,
                    format!(
                        "no JetStream stream captures subject {subject:?} (no responders): create the \
                         stream, or start a route subscribed to it first (docs/nats.md)"
                    ),
                ))
            }
        })
    }

    /// A reply to an inbox (`_INBOX.…`) is a core NATS message; a requester
    /// that has gone is not an error; a successful JSON reply to a request
    /// with no correlation id (a lean request: its reply subject is its
    /// correlation) has no headers. A reply to any other address goes to
    /// the queue of that name if there is one (confirmed), else to the
    /// address as a core subject.
    fn reply(&self, address: &str, mut message: Message) -> BoxFuture<'_, Result<(), BrokerError>> {
        message.reply_to = None;
        if address.starts_with("_INBOX.") || naming::check_queue(address).is_err() {
            // Not a queue: decided here, so that the future of every reply
            // is not as large as a confirmed JetStream publish's.
            return publish_reply(&self.shared, address.to_owned(), message);
        }
        let address = address.to_owned();
        Box::pin(async move {
            let subject = naming::subject(&address, message.priority.unwrap_or(0));
            let headers = convert::headers(&message, false);
            if try_publish(&self.shared, subject, headers, message.body.clone()).await? {
                return Ok(());
            }
            publish_reply(&self.shared, address, message).await
        })
    }

    /// A subject a message can be published to: see
    /// [`naming::check_reply_subject`].
    fn check_reply_address(&self, address: &str) -> Result<(), String> {
        naming::check_reply_subject(address)
    }

    fn reply_inbox(&self) -> BoxFuture<'_, Result<ReplyInbox, BrokerError>> {
        Box::pin(reply::open(self.shared.clone()))
    }

    fn fetch(&self, queue: &str, max: usize) -> BoxFuture<'_, Result<Vec<Delivery>, BrokerError>> {
        let queue = queue.to_owned();
        Box::pin(async move { fetch::fetch(&self.shared, &queue, max).await })
    }

    fn depth(&self, queue: &str) -> BoxFuture<'_, Result<u64, BrokerError>> {
        let queue = queue.to_owned();
        Box::pin(async move { topology::depth(&self.shared, &queue).await })
    }

    fn delete(&self, queue: &str) -> BoxFuture<'_, Result<(), BrokerError>> {
        let queue = queue.to_owned();
        Box::pin(async move { topology::delete(&self.shared, &queue).await })
    }

    fn connected(&self) -> watch::Receiver<bool> {
        self.shared.ready.clone()
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.shared.handbacks.finish().await;
            let _ = tokio::time::timeout(Duration::from_secs(5), self.shared.client.flush()).await;
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.shared.handbacks.finish().await;
            let consumer = self.shared.consumer.client.drain();
            let _ = tokio::time::timeout(Duration::from_secs(5), consumer).await;
            let _ = tokio::time::timeout(Duration::from_secs(5), self.shared.client.drain()).await;
        })
    }
}
