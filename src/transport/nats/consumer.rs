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

use super::acker::{Held, Mode, NatsAcker, Source, now_ms};
use super::convert::LANE;
use super::keepalive::{self, Keep};
use super::naming::{self, CONSUMER, DELAY_CONSUMER};
use super::pull::{self, Pull};
use super::{Shared, acker, convert, handback, publish_confirmed, quarantine, topology};
use crate::error::{BrokerError, BrokerErrorKind};
use crate::transport::lanes::{Lanes, MAX_PRIORITY};
use crate::transport::window::Window;
use crate::transport::{BoxFuture, Delivery, DeliveryStream, QueueSpec};
use crate::wire::attempt_header;
use crate::wire::headers::names;
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
    /// Pull subscriptions, by lane (one without priority).
    pulls: Vec<Pull>,
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
    /// The connection came back while a scan was under way: scan again
    /// when it is done (what was delivered since may not have been read).
    rescan: bool,
    /// Unreadable messages found, to hand out (the pipeline rejects them).
    unreadable: Vec<Delivery>,
}

/// Starts consuming `spec`. Dropping the stream ends the pull requests and
/// gives back at once what was received and not handed out (see
/// [`handback`]).
pub(crate) fn consume(shared: Arc<Shared>, spec: QueueSpec, prefetch: usize) -> DeliveryStream {
    let stop = CancellationToken::new();
    let closed = CancellationToken::new();
    tokio::spawn(move_deferred(shared.clone(), spec.name.clone(), stop.clone()));
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
        rescan: false,
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
                        tracing::warn!(queue = %self.source.queue, %error, "cannot consume yet; retrying");
                        self.pause = Some(Box::pin(tokio::time::sleep(REOPEN_DELAY)));
                        continue;
                    }
                }
            }
            ready!(self.window.poll_room(cx));
            match ready!(self.poll_lanes(cx)) {
                Ok(delivery) => return Poll::Ready(delivery),
                Err(error) => {
                    tracing::warn!(queue = %self.source.queue, %error, "pull subscription failed; re-opening");
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
            self.scan();
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
                tracing::warn!(queue = %self.source.queue, %error, "scanning for unreadable messages failed");
            }
        }
        if std::mem::take(&mut self.rescan) {
            self.scan();
            cx.waker().wake_by_ref();
        }
    }

    /// Starts a scan for unreadable messages, or another one after the one
    /// under way.
    fn scan(&mut self) {
        if self.scanning.is_some() {
            self.rescan = true;
        } else {
            let shared = self.source.shared.clone();
            let queue = self.source.queue.clone();
            let priority = self.spec.priority;
            let scan = async move { quarantine::scan(&shared, &queue, priority).await };
            self.scanning = Some(Box::pin(scan));
        }
    }

    fn opened(&mut self, opened: Opened) {
        self.scan();
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

    /// The next message of a route without priority: its one subscription.
    fn poll_single(&mut self, cx: &mut Context<'_>) -> Poll<Result<Delivery, BrokerError>> {
        match ready!(self.pulls[0].poll_next_unpin(cx)) {
            Some(Ok(message)) => Poll::Ready(Ok(self.delivery(message, None))),
            Some(Err(error)) => Poll::Ready(Err(error)),
            None => Poll::Ready(Err(BrokerError::new(
                BrokerErrorKind::Consume,
                "the pull subscription ended",
            ))),
        }
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
    let stream = topology::work_stream(&shared, &spec.name).await?;
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
    Ok(Opened { pulls, awaited })
}

/// A received JetStream message as a delivery. Its count is the attempts
/// a copy carries plus JetStream's deliveries of this message (`delivered`,
/// read from its ack subject: [`AckPrefix::delivered`]). A consumer's
/// delivery takes a place in its window here, which its acker frees when
/// it is dropped, and is kept alive ([`keepalive`]) until then: `held` is
/// its key if it is held already (it waited in a lane).
pub(crate) fn delivery(
    source: &Arc<Source>,
    mut message: async_nats::Message,
    delivered: Option<u64>,
    held: Option<usize>,
) -> Delivery {
    let delivered = delivered
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
        .unwrap_or(1)
        .max(1);
    let held = held.or_else(|| source.hold(&message));
    let headers = message.headers.take();
    let wharf = convert::to_message(message.subject.as_str(), headers.as_ref(), message.payload, None);
    // A malformed count is not a count: the delivery counts only what
    // JetStream counted, and the pipeline rejects it.
    let (attempts, malformed) = match attempt_header::carried(wharf.header(names::ATTEMPT)) {
        Ok(attempts) => (attempts, None),
        Err(why) => (0, Some(why)),
    };
    let ack_subject = message.reply.unwrap_or_else(|| "".into());
    if let Some(window) = &source.window {
        window.acquire();
    }
    let delivery = NatsAcker {
        source: source.clone(),
        ack_subject,
        headers,
        message: Arc::new(wharf),
        count: attempts.saturating_add(delivered),
        settled: false,
        held,
    }
    .delivery();
    match malformed {
        Some(why) => delivery.with_malformed(why),
        None => delivery,
    }
}

/// The delivery count in a JetStream ack subject (ADR-15):
/// `$JS.ACK.<stream>.<consumer>.<delivered>.…` (7 tokens after the prefix,
/// older servers) or `$JS.ACK.<domain>.<account hash>.<stream>.<consumer>.
/// <delivered>.…` (9 or more). Only that token is parsed:
/// `jetstream::Message::info` also parses the sequences and the timestamp,
/// about 2,000 instructions per message, a quarter of wharf's own cost on
/// this path.
pub(crate) fn delivered_count(ack_subject: &str) -> Option<u64> {
    delivered_at(ack_subject).map(|(_, count)| count)
}

/// [`delivered_count`] and where its token starts in `ack_subject`.
fn delivered_at(ack_subject: &str) -> Option<(usize, u64)> {
    const PREFIX: &str = "$JS.ACK.";
    let rest = ack_subject.strip_prefix(PREFIX)?.as_bytes();
    // Where the first five tokens start, and how many tokens there are: a
    // plain byte loop (the subject is short; `split('.')` searched for each
    // dot with memchr, about 450 instructions per message).
    let mut starts = [0usize; 5];
    let mut count = 1;
    for (at, byte) in rest.iter().enumerate() {
        if *byte == b'.' {
            if let Some(start) = starts.get_mut(count) {
                *start = at + 1;
            }
            count += 1;
        }
    }
    let index = match count {
        7 => 2,
        9.. => 4,
        _ => return None,
    };
    Some((
        PREFIX.len() + starts[index],
        leading_number(&rest[starts[index]..])?,
    ))
}

/// The number in the token `rest` starts with.
fn leading_number(rest: &[u8]) -> Option<u64> {
    let token = &rest[..rest.iter().position(|b| *b == b'.').unwrap_or(rest.len())];
    std::str::from_utf8(token).ok()?.parse().ok()
}

/// What a consumer's ack subjects hold before the delivery count
/// (`$JS.ACK.<stream>.<consumer>.`, or with the domain and account hash
/// first), learnt from the last message. A message whose ack subject starts
/// the same way has its count read right after it: finding the count's
/// token took about 500 instructions per message, comparing the start
/// about 20.
#[derive(Default)]
pub(crate) struct AckPrefix(String);

impl AckPrefix {
    /// The delivery count in `ack_subject` ([`delivered_count`]).
    pub(crate) fn delivered(&mut self, ack_subject: Option<&str>) -> Option<u64> {
        let ack_subject = ack_subject?;
        if !self.0.is_empty()
            && let Some(rest) = ack_subject.strip_prefix(self.0.as_str())
            && let Some(count) = leading_number(rest.as_bytes())
        {
            // Past the prefix the remaining tokens are not counted: a
            // subject cut short after the count still reads (servers send
            // none).
            return Some(count);
        }
        let (at, count) = delivered_at(ack_subject)?;
        self.0.clear();
        self.0.push_str(&ack_subject[..at]);
        Some(count)
    }
}

/// Moves deferred copies whose time has come from the delay stream back to
/// their queue, until `stop`.
async fn move_deferred(shared: Arc<Shared>, queue: String, stop: CancellationToken) {
    while !stop.is_cancelled() {
        if let Err(error) = move_due(&shared, &queue, &stop).await {
            tracing::debug!(%queue, %error, "delay mover stopped; restarting");
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
async fn move_due(shared: &Arc<Shared>, queue: &str, stop: &CancellationToken) -> Result<(), BrokerError> {
    let opening = async {
        let stream = topology::delay_stream(shared, queue).await?;
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
                tracing::warn!(%queue, %error, "moving a deferred message back failed; retrying");
                acker::nak(shared, ack_subject, Duration::from_secs(1)).await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{AckPrefix, delivered_count};

    #[test]
    fn the_ack_prefix_reads_counts_as_the_full_parse_does() {
        let subjects = [
            "$JS.ACK.WORK.wharf.3.17.12.1733350000000000000.0",
            "$JS.ACK.WORK.wharf.1.18.13.1733350000000000001.5",
            "$JS.ACK.WORK.wharf.12.19.14.1733350000000000002.4",
            // Another lane's consumer of the same stream.
            "$JS.ACK.WORK.wharf-p9.2.20.1.1733350000000000003.0",
            "$JS.ACK.WORK.wharf.7.21.15.1733350000000000004.0",
            // Domain and account hash first, as newer servers send.
            "$JS.ACK._.ACCHASH.WORK.wharf.5.17.12.1733350000000000000.0",
            "$JS.ACK._.ACCHASH.WORK.wharf.6.18.13.1733350000000000000.0.RANDOM",
            "$JS.ACK.WORK.wharf.4.22.16.1733350000000000005.0",
            // Not ack subjects, or no count where it belongs.
            "$JS.ACK.WORK.wharf.x.17.12.1.0",
            "$JS.ACK.WORK.wharf..17.12.1.0",
            "_INBOX.abc.3",
            "$JS.ACK.WORK.wharf.8.23.17.1733350000000000006.0",
        ];
        let mut prefix = AckPrefix::default();
        for subject in subjects {
            assert_eq!(
                prefix.delivered(Some(subject)),
                delivered_count(subject),
                "{subject}"
            );
        }
        assert_eq!(
            prefix.0, "$JS.ACK.WORK.wharf.",
            "learnt from the last good subject"
        );
        assert_eq!(prefix.delivered(None), None);
        // The one difference: what follows the count is not checked.
        assert_eq!(delivered_count("$JS.ACK.WORK.wharf.3"), None);
        assert_eq!(prefix.delivered(Some("$JS.ACK.WORK.wharf.3")), Some(3));
    }

    #[test]
    fn the_delivery_count_comes_from_either_ack_subject_format() {
        // nats-server 2.9 sends the 7-token form; newer ones may add the
        // domain, the account hash and a trailing random token.
        assert_eq!(
            delivered_count("$JS.ACK.WORK.wharf.3.17.12.1733350000000000000.0"),
            Some(3)
        );
        assert_eq!(
            delivered_count("$JS.ACK._.ACCHASH.WORK.wharf.5.17.12.1733350000000000000.0"),
            Some(5)
        );
        assert_eq!(
            delivered_count("$JS.ACK.hub.ACCHASH.WORK.wharf.2.17.12.1733350000000000000.0.RANDOM"),
            Some(2)
        );
        assert_eq!(delivered_count("$JS.ACK.WORK.wharf.x.17.12.1.0"), None);
        assert_eq!(delivered_count("$JS.ACK.WORK.wharf.3"), None);
        assert_eq!(delivered_count("_INBOX.abc.3"), None);
        assert_eq!(delivered_count("$JS.ACK.WORK.wharf..17.12.1.0"), None, "empty");
        assert_eq!(
            delivered_count("$JS.ACK.WORK.wharf.18446744073709551615.17.12.1.0"),
            Some(u64::MAX)
        );
        assert_eq!(
            delivered_count("$JS.ACK.WORK.wharf.18446744073709551616.17.12.1.0"),
            None,
            "past u64::MAX"
        );
    }
}
