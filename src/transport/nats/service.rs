//! A route with `persistent(false)`: a core NATS service. It listens on
//! every lane of its queue (`wharf.*.<queue>`) in the queue group `wharf`,
//! so each request goes to one worker, with no stream in between; and on
//! the subjects of its core subscriptions (`Subscription::core`) in a group
//! of its own, so each service gets every event. Nothing
//! is stored: failed attempts and deferrals wait in the worker's memory, a
//! stopping worker passes what it did not start back to the subject (another
//! worker may take it), and dead letters go to the queue's dead-letter
//! stream like any other.
//!
//! What a stopping worker did not start includes what its subscriptions
//! still buffer: when the delivery stream is dropped, each subscription is
//! drained (unsubscribed, and read to its end) and every message it held is
//! passed on as well, once a round trip on the receiving connection has
//! shown that the server read the unsubscribes (so that no copy passed on
//! can come back to this worker). async-nats ends a drained subscription
//! without waiting for the server: a message the server was routing to it
//! in that moment is dropped, as core NATS delivers at most once.

use super::naming::{self, any_lane};
use super::{Shared, convert, core_publish, publish_confirmed, topology};
use crate::error::{BrokerError, BrokerErrorKind};
use crate::transport::{
    Acker, BoxFuture, Delivery, DeliveryStream, QueueSpec, Settlement, dead_letter_queue, succeeded,
};
use crate::wire::attempt_header;
use crate::wire::headers::names;
use crate::wire::message::Message;
use async_nats::Subscriber;
use async_nats::{HeaderMap, Subject};
use futures_util::StreamExt;
use futures_util::stream::SelectAll;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::sync::mpsc;

/// The queue group every worker of a service joins.
const GROUP: &str = "wharf";
/// How long a stopping worker waits for the server to confirm that its
/// subscriptions ended (a lost connection never does).
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Subscribes to `spec`'s subjects in the service's queue group.
pub(crate) async fn consume(
    shared: Arc<Shared>,
    spec: QueueSpec,
    _prefetch: usize,
) -> Result<DeliveryStream, BrokerError> {
    topology::declare(&shared, &spec).await?;
    let subscribe = async |subject: String, group: String| {
        shared
            .consumer
            .client
            .queue_subscribe(subject.clone(), group)
            .await
            .map_err(|e| {
                BrokerError::new(
                    BrokerErrorKind::Consume,
                    format!("cannot subscribe the service to {subject}"),
                )
                .with_source(e)
            })
    };
    let mut subscribers = vec![subscribe(any_lane(&spec.name), GROUP.to_owned()).await?];
    // Events on the team's subjects: one group per route (per service),
    // so each service gets every event and its workers share them.
    for events in spec.subscriptions.iter().filter(|s| s.is_core()) {
        subscribers.push(subscribe(events.subject().to_owned(), format!("wharf.{}", spec.name)).await?);
    }
    let (again, mut retries) = mpsc::unbounded_channel::<Delivery>();
    let route = Arc::new(Route {
        shared,
        queue: spec.name.as_str().into(),
        again,
    });
    let mut subscriptions = Subscriptions {
        route: route.clone(),
        all: futures_util::stream::select_all(subscribers),
    };
    let stream = futures_util::stream::poll_fn(move |cx| {
        // Retries first, without registering this task with their channel
        // (two atomic read-modify-writes per request, and most polls find
        // none); it registers below, before waiting.
        if let Ok(delivery) = retries.try_recv() {
            return Poll::Ready(Some(delivery));
        }
        match subscriptions.all.poll_next_unpin(cx) {
            Poll::Ready(Some(raw)) => Poll::Ready(Some(received(&route, raw))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match retries.poll_recv(cx) {
                Poll::Ready(Some(delivery)) => Poll::Ready(Some(delivery)),
                // The route holds a sender while the stream lives.
                Poll::Ready(None) | Poll::Pending => Poll::Pending,
            },
        }
    });
    Ok(Box::pin(stream))
}

/// A received message as a delivery of `route`.
fn received(route: &Arc<Route>, raw: async_nats::Message) -> Delivery {
    let message = convert::to_message(
        raw.subject.as_str(),
        raw.headers.as_ref(),
        raw.payload,
        raw.reply.as_ref().map(|r| r.as_str()),
    );
    // A malformed count is not a count; the pipeline rejects it.
    let (attempts, malformed) = match attempt_header::carried(message.header(names::ATTEMPT)) {
        Ok(attempts) => (attempts, None),
        Err(why) => (0, Some(why)),
    };
    let acker = ServiceAcker {
        route: route.clone(),
        subject: raw.subject,
        reply: raw.reply,
        headers: raw.headers,
        message: Arc::new(message),
        count: attempts.saturating_add(1),
        settled: false,
    };
    let delivery = acker.delivery();
    match malformed {
        Some(why) => delivery.with_malformed(why),
        None => delivery,
    }
}

/// A service's subscriptions. Dropped with the delivery stream, they give
/// back what they still hold ([`hand_back`]).
struct Subscriptions {
    route: Arc<Route>,
    all: SelectAll<Subscriber>,
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        let subscribers: Vec<Subscriber> = std::mem::take(&mut self.all).into_iter().collect();
        let shared = self.route.shared.clone();
        shared
            .handbacks
            .spawn(&shared, hand_back(self.route.clone(), subscribers));
    }
}

/// Drains `subscribers` and passes on every message they still held, as
/// one never attempted here: an event to the service's own lane 0, a
/// request back to its subject, for the service's other workers.
async fn hand_back(route: Arc<Route>, mut subscribers: Vec<Subscriber>) {
    for subscriber in &mut subscribers {
        if let Err(error) = subscriber.drain().await {
            tracing::warn!(queue = %route.queue, error = %crate::error::Chain(&error), "cannot end a subscription of the stopping service");
        }
    }
    let mut held = Vec::new();
    let reading = async {
        for mut subscriber in subscribers {
            while let Some(raw) = subscriber.next().await {
                held.push(raw);
            }
        }
        // The server has read the unsubscribes once this returns: a copy
        // passed on from now on goes to another worker.
        super::pull::round_trip(&route.shared.consumer.client).await
    };
    match tokio::time::timeout(DRAIN_LIMIT, reading).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::warn!(queue = %route.queue, error = %crate::error::Chain(&*error), "no round trip after ending the stopping service's subscriptions");
        }
        Err(_) => {
            tracing::warn!(queue = %route.queue, "ending the stopping service's subscriptions timed out");
        }
    }
    let count = held.len();
    let mut failed = 0;
    for raw in held {
        if let Err(error) = received(&route, raw).settle(Settlement::Return).await {
            failed += 1;
            tracing::warn!(queue = %route.queue, error = %crate::error::Chain(&error), "passing on a message of the stopping service failed");
        }
    }
    tracing::debug!(queue = %route.queue, count, failed, "passed on what the stopping service's subscriptions held");
}

/// What every request of one service shares, behind one reference count
/// (each request took and dropped four: the connection's, the queue's and
/// the retry channel's two).
struct Route {
    shared: Arc<Shared>,
    queue: Arc<str>,
    /// Retries and deferrals come back to this worker's stream through it.
    again: mpsc::UnboundedSender<Delivery>,
}

struct ServiceAcker {
    route: Arc<Route>,
    /// The request as received: its subject, reply subject and headers
    /// (its payload is the message's body).
    subject: Subject,
    reply: Option<Subject>,
    headers: Option<HeaderMap>,
    message: Arc<Message>,
    count: u32,
    settled: bool,
}

impl ServiceAcker {
    fn delivery(self) -> Delivery {
        Delivery::new(self.message.clone(), self.count, Box::new(self))
    }

    /// The same message again in this worker, after `delay`, as delivery
    /// number `count`.
    fn again(&self, delay: std::time::Duration, count: u32) {
        let acker = ServiceAcker {
            route: self.route.clone(),
            subject: self.subject.clone(),
            reply: self.reply.clone(),
            headers: self.headers.clone(),
            message: self.message.clone(),
            count,
            settled: false,
        };
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let sender = acker.route.again.clone();
            if let Err(mpsc::error::SendError(delivery)) = sender.send(acker.delivery()) {
                // The route stopped meanwhile: pass it on to another worker.
                delivery.settle(Settlement::Return).await.ok();
            }
        });
    }

    /// Back on the subject for any worker of the group (attempts so far in
    /// `wharf-attempt`).
    async fn pass_on(&self, attempts: u32) -> Result<(), BrokerError> {
        let headers = convert::copy_headers(self.headers.as_ref(), &[(names::ATTEMPT, attempts.to_string())]);
        let failed =
            |e| BrokerError::new(BrokerErrorKind::Publish, "passing the request on failed").with_source(e);
        let body = self.message.body.clone();
        // An event from the team's subjects goes to this route's own lane
        // 0, for its workers only: on the event subject the other services
        // would get it again.
        let subject = match naming::lane_of(self.subject.as_str()) {
            Some(_) => self.subject.clone(),
            None => Subject::from(naming::subject(&self.route.queue, 0)),
        };
        core_publish(&self.route.shared, subject, self.reply.clone(), headers, body)
            .await
            .map_err(failed)
    }
}

impl Acker for ServiceAcker {
    fn settle(mut self: Box<Self>, settlement: Settlement) -> BoxFuture<'static, Result<(), BrokerError>> {
        self.settled = true;
        match settlement {
            Settlement::Ack => succeeded(),
            Settlement::Retry { delay } => {
                self.again(delay, self.count.saturating_add(1));
                succeeded()
            }
            Settlement::Defer { delay } => {
                self.again(delay, self.count);
                succeeded()
            }
            Settlement::DeadLetter { message } => Box::pin(async move {
                let changes = message.wharf_headers();
                let headers = convert::copy_headers(self.headers.as_ref(), &changes);
                let lane = naming::lane_of(self.subject.as_str()).unwrap_or(0);
                let subject = naming::subject(&dead_letter_queue(&self.route.queue), lane);
                publish_confirmed(&self.route.shared, subject, headers, self.message.body.clone()).await
            }),
            Settlement::Return => Box::pin(async move { self.pass_on(self.count.saturating_sub(1)).await }),
        }
    }
}

impl Drop for ServiceAcker {
    fn drop(&mut self) {
        if !self.settled && tokio::runtime::Handle::try_current().is_ok() {
            // Counts as a delivery, like a broker's redelivery.
            self.again(std::time::Duration::ZERO, self.count.saturating_add(1));
        }
    }
}
