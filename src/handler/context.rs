//! The handler's view of wharf: attempt number, publishing, session state.

use crate::error::{BrokerError, BrokerErrorKind, Error};
use crate::handler::extract::{FromMessage, Incoming, Rejection};
use crate::handler::route_shared::RouteShared;
use crate::wire::message::Message;
use crate::wire::trace_context::TraceContext;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// Handler context: which attempt this is, publishing further messages, and
/// the per-session checkpoint.
///
/// ```
/// use wharf::{Context, Error};
/// #[derive(serde::Deserialize, serde::Serialize)]
/// struct Order { id: u64 }
///
/// async fn place(ctx: Context, order: Order) -> Result<(), Error> {
///     if ctx.attempt() > 1 {
///         tracing::info!(attempt = ctx.attempt(), "retrying order {}", order.id);
///     }
///     ctx.publish("shipments", &order).await?;
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct Context {
    route: Arc<RouteShared>,
    message: Arc<Message>,
    attempt: u32,
    trace: Option<Arc<TraceContext>>,
}

impl<S> FromMessage<S> for Context {
    fn from_message(incoming: &Incoming<'_>, _: &S) -> Result<Self, Rejection> {
        Ok(Context {
            route: incoming.route.clone(),
            message: incoming.message.clone(),
            attempt: incoming.attempt,
            trace: incoming.trace.cloned(),
        })
    }
}

impl Context {
    /// 1 on the first attempt, 2 on the first retry, …
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The route's `max_attempts`.
    pub fn max_attempts(&self) -> u32 {
        self.route.max_attempts
    }

    /// True when a retryable failure now would dead-letter the message.
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.route.max_attempts
    }

    /// The queue being consumed.
    pub fn queue(&self) -> &str {
        &self.route.queue
    }

    /// The message being handled.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// Publishes `value` as JSON to `queue`, confirmed by the broker.
    ///
    /// Published at once, not held until the handler succeeds: a handler that
    /// fails after publishing and is retried publishes again. Give such
    /// messages an idempotency key derived from this message's.
    pub async fn publish<T: Serialize + ?Sized>(&self, queue: &str, value: &T) -> Result<(), Error> {
        let message = Message::json(value).map_err(Error::permanent)?;
        self.send(queue, message).await
    }

    /// Publishes a message to `queue`, confirmed by the broker. When the
    /// message being handled carries a W3C `traceparent`, the new message
    /// carries the trace on (with this handling as its parent) unless it
    /// has a `traceparent` of its own.
    pub async fn send(&self, queue: &str, message: Message) -> Result<(), Error> {
        let message = self.traced(message);
        self.route
            .transport
            .publish(queue, message)
            .await
            .map_err(publish_failure)
    }

    /// Publishes `value` as JSON to a RabbitMQ `exchange` with
    /// `routing_key`, confirmed by the broker, as
    /// [`Client::publish_to_exchange`](crate::Client::publish_to_exchange)
    /// does; published at once, like [`publish`](Context::publish).
    pub async fn publish_to_exchange<T: Serialize + ?Sized>(
        &self,
        exchange: &str,
        routing_key: &str,
        value: &T,
    ) -> Result<(), Error> {
        let message = Message::json(value).map_err(Error::permanent)?;
        self.send_to_exchange(exchange, routing_key, message).await
    }

    /// Publishes a message to a RabbitMQ `exchange` with `routing_key`,
    /// carrying the trace on as [`send`](Context::send) does.
    pub async fn send_to_exchange(
        &self,
        exchange: &str,
        routing_key: &str,
        message: Message,
    ) -> Result<(), Error> {
        let message = self.traced(message);
        self.route
            .transport
            .publish_to_exchange(exchange, routing_key, message)
            .await
            .map_err(publish_failure)
    }

    /// Publishes `value` as JSON to a NATS `subject`, confirmed, as
    /// [`Client::publish_to_subject`](crate::Client::publish_to_subject)
    /// does; published at once, like [`publish`](Context::publish).
    pub async fn publish_to_subject<T: Serialize + ?Sized>(
        &self,
        subject: &str,
        value: &T,
    ) -> Result<(), Error> {
        let message = Message::json(value).map_err(Error::permanent)?;
        self.send_to_subject(subject, message).await
    }

    /// Publishes a message to a NATS `subject`, carrying the trace on as
    /// [`send`](Context::send) does.
    pub async fn send_to_subject(&self, subject: &str, message: Message) -> Result<(), Error> {
        let message = self.traced(message);
        self.route
            .transport
            .publish_to_subject(subject, message)
            .await
            .map_err(publish_failure)
    }

    /// `message`, carrying the trace of the message being handled on.
    fn traced(&self, mut message: Message) -> Message {
        if let Some(trace) = &self.trace {
            trace.stamp(&mut message);
        }
        message
    }

    /// The checkpoint this session's handler saved last, decoded from JSON.
    /// `None` for a new session; an error for a message without a session.
    pub async fn session_state<T: DeserializeOwned>(&self) -> Result<Option<T>, Error> {
        let key = self.session_key()?;
        match self.route.store.session_state(&key).await? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::permanent(format!("session state does not decode: {e}"))),
        }
    }

    /// Saves a checkpoint for this session (JSON), for a later message of the
    /// session or a retry after a crash to resume from.
    pub async fn set_session_state<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), Error> {
        let key = self.session_key()?;
        let bytes = serde_json::to_vec(value).map_err(Error::permanent)?;
        self.route.store.set_session_state(&key, bytes.into()).await?;
        Ok(())
    }

    fn session_key(&self) -> Result<String, Error> {
        match self.message.session_id() {
            Some(session) => Ok(crate::handler::route_shared::scoped_key(
                &self.route.queue,
                session,
            )),
            None => Err(Error::permanent(BrokerError::new(
                BrokerErrorKind::Store,
                "session state needs a message with a session-id header",
            ))),
        }
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("queue", &self.route.queue)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

/// A failed publish as the handler's failure: one that can never succeed
/// (a priority NATS has no lane for, an exchange on a broker without
/// exchanges) is permanent, since retrying would fail the same way.
fn publish_failure(error: crate::BrokerError) -> Error {
    if error.is_permanent() {
        Error::permanent(error)
    } else {
        Error::new(error)
    }
}
