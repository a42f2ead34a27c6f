//! A started app under test: publish, await outcomes, inspect what the
//! handlers published and replied.

use super::test_broker::TestBroker;
use super::tracked::Tracked;
use crate::app::broker::Broker;
use crate::app::running::{Running, ShutdownReport};
use crate::client::{Client, RemoteError};
use crate::ops::dead_letters::DeadLetter;
use crate::ops::stats::RouteStats;
use crate::wire::codec::Codec;
use crate::wire::message::Message;
use futures_util::{FutureExt, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// An app started by [`TestBroker::start`]: publishes tracked messages,
/// and shows what the handlers published, replied and dead-lettered.
///
/// Dropping it stops the app as [`Running`] does; [`shutdown`](Self::shutdown)
/// drains it gracefully.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), wharf::BrokerError> {
/// use wharf::testing::TestBroker;
/// use wharf::{App, Context, Error};
///
/// async fn ship(ctx: Context, order: u64) -> Result<(), Error> {
///     ctx.publish("shipments", &format!("order {order}")).await
/// }
///
/// let kit = TestBroker::new();
/// let app = kit.start(App::new(kit.broker()).route("orders", ship)).await?;
/// assert!(app.publish("orders", &7u64).outcome().await.is_acked());
/// assert_eq!(app.published_as::<String>("shipments"), ["order 7"]);
/// app.shutdown().await;
/// # Ok(()) }
/// ```
pub struct TestApp {
    pub(super) kit: TestBroker,
    pub(super) running: Running,
}

impl TestApp {
    /// Publishes `value` as JSON to `queue` and tracks it.
    ///
    /// # Panics
    ///
    /// When `value` cannot be encoded as JSON.
    pub fn publish<T: Serialize + ?Sized>(&self, queue: &str, value: &T) -> Tracked {
        let message = Message::json(value)
            .unwrap_or_else(|error| panic!("cannot encode the message for {queue:?} as JSON: {error}"));
        self.send(queue, message)
    }

    /// Publishes `message` as it is (headers, idempotency key, session and
    /// sequence, message id, priority, reply address: see [`Message`]'s
    /// builders) and tracks it. A reply to its own reply address is
    /// recorded as its [`reply`](super::Settled::reply).
    pub fn send(&self, queue: &str, message: Message) -> Tracked {
        let number = self.kit.shared.next.fetch_add(1, Ordering::Relaxed);
        let label = match &message.message_id {
            Some(id) => format!("message {id:?}"),
            None => format!("message #{number} (no message id)"),
        };
        let message = Arc::new(message);
        let key = self.kit.shared.tracker.track(&message);
        self.kit.shared.memory.publish_shared(queue, message.clone());
        Tracked {
            tracker: self.kit.shared.tracker.clone(),
            key,
            message,
            queue: queue.to_owned(),
            label,
            limits: self.kit.limits,
        }
    }

    /// Publishes `message` as a request, its reply to come to the kit's
    /// reply address (with a correlation id of the kit's, unless it has
    /// one, and the correlation id as its message id, unless it has one,
    /// as [`Client::request`] does), and tracks it: the reply is in its
    /// [`Settled::reply`](super::Settled::reply).
    pub fn send_request(&self, queue: &str, mut message: Message) -> Tracked {
        self.drain_replies();
        let number = self.kit.shared.next.fetch_add(1, Ordering::Relaxed);
        let correlation = message
            .correlation_id
            .get_or_insert_with(|| format!("wharf-testing-{number}"))
            .clone();
        message.message_id.get_or_insert(correlation);
        message.reply_to = Some(self.kit.shared.reply_address.clone());
        self.send(queue, message)
    }

    /// Sends `request` as JSON to `queue` and returns the handler's reply
    /// decoded into `Resp`, or its error reply, once the request has ended
    /// (however many retries that takes: no request timeout applies, only
    /// the kit's [outcome limits](TestBroker::outcome_limits)).
    ///
    /// # Panics
    ///
    /// As [`Tracked::outcome`] and [`Settled::reply`](super::Settled::reply) do: when the request
    /// does not end in time, gets no reply, or a reply that does not
    /// decode into `Resp`.
    pub async fn request<Req, Resp>(&self, queue: &str, request: &Req) -> Result<Resp, RemoteError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let message = Message::json(request)
            .unwrap_or_else(|error| panic!("cannot encode the request for {queue:?} as JSON: {error}"));
        let settled = self.send_request(queue, message).outcome().await;
        settled.reply()
    }

    /// The messages published to `queue` so far, oldest first, by
    /// handlers ([`Context::publish`](crate::Context::publish)), clients
    /// and dead-letter replays; not the ones this kit published. Whether
    /// or not a route consumes `queue`.
    pub fn published(&self, queue: &str) -> Vec<Message> {
        self.kit.shared.record.published(queue)
    }

    /// [`published`](Self::published), each decoded into `T` by its
    /// content type.
    ///
    /// # Panics
    ///
    /// When one does not decode into `T`, saying which.
    pub fn published_as<T: DeserializeOwned>(&self, queue: &str) -> Vec<T> {
        self.published(queue)
            .iter()
            .enumerate()
            .map(|(n, message)| {
                Codec::from_content_type(message.content_type.as_deref())
                    .and_then(|codec| codec.decode(&message.body))
                    .unwrap_or_else(|error| {
                        panic!(
                            "message {n} published to {queue:?} does not decode into {}: {error}",
                            std::any::type_name::<T>()
                        )
                    })
            })
            .collect()
    }

    /// Every reply handlers sent so far, with the address it went to,
    /// oldest first (the replies of tracked requests included).
    pub fn replies(&self) -> Vec<(String, Message)> {
        self.kit.shared.record.replies()
    }

    /// The dead letters waiting in `queue`'s dead-letter queue, oldest
    /// first, left in place.
    pub async fn dead_letters(&self, queue: &str) -> Vec<DeadLetter> {
        self.broker()
            .dead_letters(queue)
            .list(usize::MAX)
            .await
            .expect("the in-memory broker cannot fail")
    }

    /// Counters of the route on `queue`.
    pub fn stats(&self, queue: &str) -> RouteStats {
        self.running.stats(queue)
    }

    /// The broker the app runs on (the kit's).
    pub fn broker(&self) -> Broker {
        self.kit.broker()
    }

    /// A client on the kit's broker; what it publishes is recorded.
    pub fn client(&self) -> Client {
        self.kit.broker().client()
    }

    /// The running app: health, stats, the HTTP listener's address.
    pub fn running(&self) -> &Running {
        &self.running
    }

    /// Shuts the app down gracefully (see [`Running::shutdown`]).
    pub async fn shutdown(self) -> ShutdownReport {
        self.running.shutdown().await
    }

    /// Empties the kit's reply address: every reply was recorded on the
    /// way in.
    fn drain_replies(&self) {
        let mut replies = self.kit.shared.replies.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(Some(_)) = replies.next().now_or_never() {}
    }
}

impl std::fmt::Debug for TestApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApp").finish_non_exhaustive()
    }
}
