//! Consuming a route's queue from JetStream: one pull subscription per
//! consumer (one, or one per priority lane), polled inside the delivery
//! stream, and a background task that moves due deferred copies from the
//! delay stream back to the queue.
//!
//! With priority, each lane holds at most one received message at a time;
//! the highest waiting lane goes first, with the same bounded starvation as
//! the in-memory queue ([`crate::transport::lanes`]). Messages still on the server are
//! pulled lane by lane as the lanes empty, so a waiting high-priority message
//! overtakes a backlog of low ones.

use super::acker::{Held, Mode, Source, now_ms};
use super::convert::LANE;
use super::delivery::{AckPrefix, delivery};
use super::keepalive::{self, Keep};
use super::naming::{self, CONSUMER, DELAY_CONSUMER};
use super::pull::{self, Pull};
use super::{Shared, acker, convert, events, handback, publish_confirmed, quarantine, topology};
use crate::error::{BrokerError, BrokerErrorKind};
use crate::transport::lanes::{Lanes, MAX_PRIORITY};
use crate::transport::topology::Topology;
use crate::transport::window::Window;
use crate::transport::{BoxFuture, Delivery, DeliveryStream, QueueSpec};
use async_nats::jetstream::consumer::PullConsumer;
use futures_util::StreamExt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Wait before re-opening after a failure.
const REOPEN_DELAY: Duration = Duration::from_millis(500);
/// Longest a starting consumer waits for a higher lane's first message
/// before it serves a lower lane.
const START_WAIT: Duration = Duration::from_millis(500);

struct ConsumerState {
    /// The connection, the queue, the window and the closing token, shared
    /// with every delivery.
    source: Arc<Source>,
    spec: QueueSpec,
    batch: usize,
    /// Pull subscriptions, by lane (without priority: the route's own, then
    /// those of the consumers its subscriptions name).
    pulls: Vec<Pull>,
    /// Without priority, the subscription polled first next time: each
    /// gets its turn.
    turn: usize,
    /// Received messages not handed out yet, at most one per lane.
    waiting: Lanes<Held>,
    /// At most `prefetch` deliveries out and unsettled.
    window: Arc<Window>,
    /// Lanes that held messages on the server when the subscriptions
    /// opened and have not delivered one yet. Until each has (or
    /// [`START_WAIT`] has passed), no lane below it is served: the lanes'
    /// first batches arrive in no set order, and a worker starting on a
    /// backlog must still take its high-priority messages first. (With
    /// several workers, a lane's messages may all go to the others: this
    /// one then waits the full [`START_WAIT`] once, at start.)
    awaited: Vec<bool>,
    start_wait: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Opening the pull subscriptions, while `pulls` is empty.
    opening: Option<BoxFuture<'static, Result<Opened, BrokerError>>>,
    /// The pause before opening again after a failure.
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Stops the delay mover when the state is dropped.
    stop: CancellationToken,
    /// The source's `closed` token: cancelled by the hand-back once the
    /// subscriptions are closed ([`handback::hand_back`]).
    closed: CancellationToken,
    /// Reads the delivery counts.
    ack_prefix: AckPrefix,
    /// Resolves when the consuming connection came back after a loss:
    /// the stream is then scanned for unreadable messages.
    reconnected: BoxFuture<'static, u64>,
    /// A scan for unreadable messages under way ([`quarantine::scan`]).
    scanning: Option<BoxFuture<'static, Result<Vec<Delivery>, BrokerError>>>,
    /// Another scan was asked for while one was under way (the connection
    /// came back, say): scan again when it is done (what was delivered
    /// since may not have been read); `true` after a reconnect.
    rescan: Option<bool>,
    /// Unreadable messages found, to hand out (the pipeline rejects them).
    unreadable: Vec<Delivery>,
}

/// Starts consuming `spec`. Dropping the stream ends the pull requests and
/// gives back at once what was received and not handed out (see
/// [`handback`]).
pub(crate) fn consume(shared: Arc<Shared>, spec: QueueSpec, prefetch: usize) -> DeliveryStream {
    let stop = CancellationToken::new();
    let closed = CancellationToken::new();
    tokio::spawn(move_deferred(
        shared.clone(),
        spec.name.clone(),
        spec.topology,
        stop.clone(),
    ));
    let keep = Arc::new(Keep::default());
    tokio::spawn(keepalive::keep_alive(
        shared.clone(),
        keep.clone(),
        spec.lease,
        stop.clone(),
    ));
    let batch = if spec.priority {
        prefetch.div_ceil(4).max(1)
    } else {
        prefetch.max(1)
    };
    let window = Window::new(prefetch);
    let state = ConsumerState {
        source: Arc::new(Source {
            queue: spec.name.as_str().into(),
            shared: shared.clone(),
            mode: Mode::Consumer,
            window: Some(window.clone()),
            closed: Some(closed.clone()),
            keep: Some(keep),
        }),
        waiting: Lanes::new(spec.priority),
        spec,
        batch,
        pulls: Vec::new(),
        turn: 0,
        window,
        awaited: Vec::new(),
        start_wait: None,
        opening: None,
        pause: None,
        stop,
        closed,
        ack_prefix: AckPrefix::default(),
        reconnected: pull::reconnection(shared.consumer.reconnects.clone()),
        scanning: None,
        rescan: None,
        unreadable: Vec::new(),
    };
    // Polled in place: an async loop (or `unfold`) would move the state in
    // and out of a future for every message.
    let mut state = state;
    Box::pin(futures_util::stream::poll_fn(move |cx| {
        state.poll_next(cx).map(Some)
    }))
}

impl Drop for ConsumerState {
    fn drop(&mut self) {
        self.stop.cancel();
        let handback = handback::hand_back(
            self.source.clone(),
            std::mem::take(&mut self.pulls),
            self.waiting.drain(),
            self.closed.clone(),
        );
        self.source.shared.handbacks.spawn(&self.source.shared, handback);
    }
}

/// Pull subscriptions just opened, highest lane last.
struct Opened {
    pulls: Vec<Pull>,
    /// Whether each lane held messages when its subscription opened.
    awaited: Vec<bool>,
}

impl ConsumerState {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Delivery> {
        loop {
            self.poll_quarantine(cx);
            if let Some(unreadable) = self.unreadable.pop() {
                return Poll::Ready(unreadable);
            }
            if let Some(pause) = self.pause.as_mut() {
                ready!(pause.as_mut().poll(cx));
                self.pause = None;
            }
            if self.pulls.is_empty() {
                let opening = self.opening.get_or_insert_with(|| {
                    let keep = self.source.keep.clone();
                    Box::pin(open(
                        self.source.shared.clone(),
                        self.spec.clone(),
                        self.batch,
                        keep,
                    ))
                });
                let opened = ready!(opening.as_mut().poll(cx));
                self.opening = None;
                match opened {
                    Ok(opened) => self.opened(opened),
                    Err(error) => {
                        tracing::warn!(queue = %self.source.queue, error = %crate::error::Chain(&error), "cannot consume yet; retrying");
                        self.pause = Some(Box::pin(tokio::time::sleep(REOPEN_DELAY)));
                        continue;
                    }
                }
            }
            ready!(self.window.poll_room(cx));
            match ready!(self.poll_lanes(cx)) {
                Ok(delivery) => return Poll::Ready(delivery),
                Err(error) => {
                    tracing::warn!(queue = %self.source.queue, error = %crate::error::Chain(&error), "pull subscription failed; re-opening");
                    self.pulls.clear();
                    self.pause = Some(Box::pin(tokio::time::sleep(REOPEN_DELAY)));
                }
            }
        }
    }

    /// Starts a scan for unreadable messages when the consuming connection
    /// came back, and collects what a scan found.
    fn poll_quarantine(&mut self, cx: &mut Context<'_>) {
        if self.reconnected.as_mut().poll(cx).is_ready() {
            let reconnects = self.source.shared.consumer.reconnects.clone();
            self.reconnected = pull::reconnection(reconnects);
            self.scan(true);
        }
        let Some(scanning) = self.scanning.as_mut() else {
            return;
        };
        let Poll::Ready(found) = scanning.as_mut().poll(cx) else {
            return;
        };
        self.scanning = None;
        match found {
            Ok(found) => self.unreadable.extend(found),
            Err(error) => {
                // The next loss of the connection (which such a message
                // causes when it comes again) scans again.
                tracing::warn!(queue = %self.source.queue, error = %crate::error::Chain(&error), "scanning for unreadable messages failed");
            }
        }
        if let Some(reconnected) = self.rescan.take() {
            self.scan(reconnected);
            cx.waker().wake_by_ref();
        }
    }

    /// Starts a scan for unreadable messages, or another one after the one
    /// under way; `reconnected` when the receiving connection came back
    /// (see [`quarantine::scan`]).
    fn scan(&mut self, reconnected: bool) {
        if self.scanning.is_some() {
            self.rescan = Some(self.rescan.unwrap_or(false) || reconnected);
        } else {
            let shared = self.source.shared.clone();
            let spec = self.spec.clone();
            let scan = async move { quarantine::scan(&shared, &spec, reconnected).await };
            self.scanning = Some(Box::pin(scan));
        }
    }

    fn opened(&mut self, opened: Opened) {
        self.scan(false);
        self.start_wait = (self.spec.priority && opened.awaited.contains(&true))
            .then(|| Box::pin(tokio::time::sleep(START_WAIT)));
        self.pulls = opened.pulls;
        self.awaited = opened.awaited;
    }

    /// Fills empty lanes from their subscriptions, then hands out the lane
    /// whose turn it is. A message becomes a delivery where it is received:
    /// a JetStream message is some hundred bytes, copied at every move.
    fn poll_lanes(&mut self, cx: &mut Context<'_>) -> Poll<Result<Delivery, BrokerError>> {
        if !self.spec.priority {
            // One subscription and nothing to order: hand each message on as
            // it comes (a message moved through the lanes is copied twice
            // more, and it is some hundred bytes).
            return self.poll_single(cx);
        }
        for lane in 0..self.pulls.len() {
            let priority = Some(lane as u8);
            while self.waiting.lane_is_empty(priority) {
                match self.pulls[lane].poll_next_unpin(cx) {
                    Poll::Ready(Some(Ok(message))) => {
                        // Held from here: it may wait in its lane.
                        let held = self.source.hold(&message);
                        self.waiting.push(priority, (message, held));
                    }
                    Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(error)),
                    Poll::Ready(None) => {
                        return Poll::Ready(Err(BrokerError::new(
                            BrokerErrorKind::Consume,
                            "the pull subscription ended",
                        )));
                    }
                    Poll::Pending => break,
                }
            }
        }
        if self.waits_for_higher_lane(cx) {
            return Poll::Pending;
        }
        match self.waiting.pop() {
            Some((message, held)) => Poll::Ready(Ok(self.delivery(message, held))),
            None => Poll::Pending,
        }
    }

    /// The next message of a route without priority: from its one
    /// subscription, or in turns from its own and its named consumers'.
    fn poll_single(&mut self, cx: &mut Context<'_>) -> Poll<Result<Delivery, BrokerError>> {
        let count = self.pulls.len();
        for offset in 0..count {
            let at = (self.turn + offset) % count;
            let next = match self.pulls[at].poll_next_unpin(cx) {
                Poll::Ready(next) => next,
                Poll::Pending => continue,
            };
            self.turn = (at + 1) % count;
            return Poll::Ready(match next {
                Some(Ok(message)) => Ok(self.delivery(message, None)),
                Some(Err(error)) => Err(error),
                None => Err(BrokerError::new(
                    BrokerErrorKind::Consume,
                    "the pull subscription ended",
                )),
            });
        }
        Poll::Pending
    }

    /// Whether a lane known to hold messages, above every lane that has
    /// one ready, has yet to deliver its first (see `awaited`).
    fn waits_for_higher_lane(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(wait) = self.start_wait.as_mut() else {
            return false;
        };
        let lanes = self.awaited.len();
        for lane in 0..lanes {
            if !self.waiting.lane_is_empty(Some(lane as u8)) {
                self.awaited[lane] = false;
            }
        }
        let ready = (0..lanes)
            .rev()
            .find(|&l| !self.waiting.lane_is_empty(Some(l as u8)));
        let Some(awaited) = (0..lanes).rev().find(|&l| self.awaited[l]) else {
            self.start_wait = None;
            return false;
        };
        if ready.is_some_and(|ready| ready > awaited) {
            return false;
        }
        if wait.as_mut().poll(cx).is_ready() {
            // Waited long enough: serve what is there.
            self.start_wait = None;
            return false;
        }
        true
    }

    fn delivery(&mut self, message: async_nats::Message, held: Option<usize>) -> Delivery {
        let delivered = self.ack_prefix.delivered(message.reply.as_deref());
        delivery(&self.source, message, delivered, held)
    }
}

/// Declares what is missing and opens the pull subscriptions of `spec`.
async fn open(
    shared: Arc<Shared>,
    spec: QueueSpec,
    batch: usize,
    keep: Option<Arc<Keep>>,
) -> Result<Opened, BrokerError> {
    topology::declare(&shared, &spec).await?;
    let stream = topology::route_stream(&shared, &spec).await?;
    // The consumers its subscriptions name, read beside its own (a route
    // with them has no priority lanes: `subscription::check_route`). The
    // prefetch is shared among them: one worker must not hold each one's.
    let named = events::named_consumers(&shared, &spec).await?;
    let batch = batch.div_ceil(1 + named.len()).max(1);
    // Highest lane first, so its pull request is the first served.
    let names: Vec<String> = if spec.priority {
        (0..=MAX_PRIORITY as u8)
            .rev()
            .map(naming::lane_consumer)
            .collect()
    } else {
        vec![CONSUMER.to_owned()]
    };
    let mut pulls = Vec::with_capacity(names.len());
    let mut awaited = Vec::with_capacity(names.len());
    for name in names {
        let consumer: PullConsumer = stream
            .get_consumer(&name)
            .await
            .map_err(|e| topology::declare_error(&format!("consumer {name}"), e))?;
        awaited.push(consumer.cached_info().num_pending > 0);
        pulls.push(pull::open(&shared, &consumer, batch, keep.as_deref()).await?);
    }
    pulls.reverse();
    awaited.reverse();
    for consumer in named {
        pulls.push(pull::open(&shared, &consumer, batch, keep.as_deref()).await?);
    }
    Ok(Opened { pulls, awaited })
}

/// Moves deferred copies whose time has come from the delay stream back to
/// their queue, until `stop`.
async fn move_deferred(shared: Arc<Shared>, queue: String, layout: Topology, stop: CancellationToken) {
    while !stop.is_cancelled() {
        if let Err(error) = move_due(&shared, &queue, &layout, &stop).await {
            tracing::debug!(%queue, error = %crate::error::Chain(&error), "delay mover stopped; restarting");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(REOPEN_DELAY) => {}
        }
    }
}

/// Moves due copies until `stop`; then gives back (naks) what its
/// subscription received and did not look at, so that another worker's
/// mover takes it at once.
async fn move_due(
    shared: &Arc<Shared>,
    queue: &str,
    layout: &Topology,
    stop: &CancellationToken,
) -> Result<(), BrokerError> {
    let opening = async {
        let stream = topology::delay_stream(shared, queue, layout).await?;
        let consumer: PullConsumer = stream
            .get_consumer(DELAY_CONSUMER)
            .await
            .map_err(|e| topology::declare_error(DELAY_CONSUMER, e))?;
        pull::open(shared, &consumer, 64, None).await
    };
    let mut messages = tokio::select! {
        _ = stop.cancelled() => return Ok(()),
        opened = opening => opened?,
    };
    let moved = move_each(shared, queue, stop, &mut messages).await;
    for message in messages.close().await {
        if let Some(ack_subject) = message.reply {
            acker::nak(shared, ack_subject, Duration::ZERO).await?;
        }
    }
    moved
}

async fn move_each(
    shared: &Arc<Shared>,
    queue: &str,
    stop: &CancellationToken,
    messages: &mut Pull,
) -> Result<(), BrokerError> {
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            next = messages.next() => next,
        };
        let Some(next) = next else {
            return Ok(());
        };
        let message = next?;
        let Some(ack_subject) = message.reply.clone() else {
            continue;
        };
        let headers = message.headers.clone().unwrap_or_default();
        let header = |name: &str| {
            headers
                .get_last(name)
                .and_then(|v| v.as_str().trim().parse::<u64>().ok())
        };
        let now = now_ms();
        if let Some(due) = header(convert::NOT_BEFORE)
            && due > now
        {
            acker::nak(shared, ack_subject, Duration::from_millis(due - now)).await?;
            continue;
        }
        let lane = header(LANE).unwrap_or(0).min(MAX_PRIORITY as u64) as u8;
        // The copy keeps its Nats-Msg-Id: if this task dies between the
        // publish and the ack, the second move is a duplicate the queue's
        // stream drops.
        let subject = naming::subject(queue, lane);
        match publish_confirmed(shared, subject, headers, message.payload.clone()).await {
            Ok(()) => acker::ack(shared, ack_subject).await?,
            Err(error) => {
                tracing::warn!(%queue, error = %crate::error::Chain(&error), "moving a deferred message back failed; retrying");
                acker::nak(shared, ack_subject, Duration::from_secs(1)).await?;
            }
        }
    }
}
