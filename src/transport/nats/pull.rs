//! A JetStream pull consumer's messages, read from a subscription of
//! wharf's own: pull requests to `$JS.API.CONSUMER.MSG.NEXT.<stream>.
//! <consumer>` with a private inbox as their reply subject (ADR-13), the
//! delivered messages read from that inbox as plain core NATS messages.
//!
//! async-nats' own pull stream does the same and then wraps each message
//! with a clone of its JetStream context, for `ack()`; wharf acks through
//! its own acker and threw the clone away: about 630 instructions and
//! several reference counts on cache lines every thread shares, per
//! message (7 % of the consumer's cycles, measured with `perf record`).
//! Its idle-heartbeat check also dropped and made a timer whenever the
//! subscription ran dry; here one timer checks every two heartbeats
//! whether anything arrived.
//!
//! What is asked for and not yet received is counted (`pending`); once
//! half a batch is left, the next request goes out, so messages keep
//! coming while the received ones are handled. The server gives up on a
//! request with a status message (408 when it expires, 409 when it is cut
//! short) saying how many messages it no longer owes; those are taken off
//! the count. A request can also vanish without a word: the server
//! restarted, or the connection dropped. After a reconnect (counted by
//! the transport), and, while connected, when a watchdog that looks every
//! two heartbeats finds nothing heard from the server since its last
//! look, the count starts again from zero with a new request. No request
//! goes out while disconnected.

use super::Shared;
use super::keepalive::{self, Inbox, Keep};
use crate::error::{BrokerError, BrokerErrorKind};
use crate::transport::BoxFuture;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::message::OutboundMessage;
use async_nats::{Message, StatusCode, Subject};
use futures_util::{FutureExt, Stream, StreamExt};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::watch;

/// Idle heartbeat asked of the server: while a request waits with nothing
/// to deliver, the server says so this often.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long one pull request stays open at the server.
const EXPIRES: Duration = Duration::from_secs(30);
/// The JetStream API's subject prefix (wharf uses no domain).
const API_PREFIX: &str = "$JS.API";
/// Header of a 408/409 status: the messages the request no longer owes.
const PENDING_MESSAGES: &str = "Nats-Pending-Messages";

/// Messages of one durable pull consumer; ends (with an error) only when
/// the consumer cannot be read any more (deleted, the connection closed).
pub(crate) struct Pull {
    shared: std::sync::Arc<Shared>,
    /// The subscription's messages (shared with the consumer's keeper).
    messages: Arc<Mutex<Inbox>>,
    inbox: Subject,
    /// `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`.
    next: Subject,
    /// The pull request's body, the same every time.
    request: bytes::Bytes,
    batch: usize,
    /// Messages asked for and neither received nor given up by the server.
    pending: usize,
    /// A pull request being handed to the client.
    sending: Option<BoxFuture<'static, Result<(), async_nats::PublishError>>>,
    /// Fires every two heartbeats; `heard` says whether anything came
    /// from the server meanwhile.
    watchdog: Pin<Box<tokio::time::Sleep>>,
    heard: bool,
    /// Resolves with the new count when the connection has come back
    /// after a loss since the count this subscription last saw.
    reconnected: BoxFuture<'static, u64>,
    heartbeat: Duration,
    /// Times a request was presumed lost and asked again.
    restarts: u64,
    /// The consumer's name, for messages.
    name: String,
}

/// Opens a pull subscription of `consumer`, `batch` messages per request;
/// `keep` keeps what waits in it alive (see [`keepalive`](super::keepalive)).
pub(crate) async fn open(
    shared: &std::sync::Arc<Shared>,
    consumer: &PullConsumer,
    batch: usize,
    keep: Option<&Keep>,
) -> Result<Pull, BrokerError> {
    open_with(shared, consumer, batch, EXPIRES, HEARTBEAT, keep).await
}

async fn open_with(
    shared: &std::sync::Arc<Shared>,
    consumer: &PullConsumer,
    batch: usize,
    expires: Duration,
    heartbeat: Duration,
    keep: Option<&Keep>,
) -> Result<Pull, BrokerError> {
    let info = consumer.cached_info();
    let next = format!(
        "{API_PREFIX}.CONSUMER.MSG.NEXT.{}.{}",
        info.stream_name, info.name
    );
    let batch = batch.max(1);
    let request = format!(
        "{{\"batch\":{batch},\"expires\":{},\"idle_heartbeat\":{}}}",
        expires.as_nanos(),
        heartbeat.as_nanos()
    );
    let inbox = Subject::from(shared.consumer.client.new_inbox());
    let subscriber = shared
        .consumer
        .client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| failed(&info.name, e))?;
    let messages = Inbox::new(subscriber);
    if let Some(keep) = keep {
        keep.watch(&messages);
    }
    Ok(Pull {
        shared: shared.clone(),
        messages,
        inbox,
        next: Subject::from(next),
        request: bytes::Bytes::from(request),
        batch,
        pending: 0,
        sending: None,
        watchdog: Box::pin(tokio::time::sleep(heartbeat * 2)),
        // The first check finds "heard": a subscription not polled for a
        // while after opening (its worker busy) is not taken for lost.
        heard: true,
        reconnected: reconnection(shared.consumer.reconnects.clone()),
        heartbeat,
        restarts: 0,
        name: info.name.clone(),
    })
}

fn failed(consumer: &str, e: impl std::fmt::Display) -> BrokerError {
    BrokerError::new(
        BrokerErrorKind::Consume,
        format!("consuming from JetStream (consumer {consumer}) failed: {e}"),
    )
}

/// Resolves with the reconnect count once it differs from what it is now
/// (never if its sender is gone). The count is read here, not when the
/// future is first polled: a subscription is polled only when its worker
/// has room, and a reconnect in between must not go unseen.
pub(crate) fn reconnection(mut reconnects: watch::Receiver<u64>) -> BoxFuture<'static, u64> {
    let seen = *reconnects.borrow_and_update();
    Box::pin(async move {
        loop {
            if reconnects.changed().await.is_err() {
                return std::future::pending().await;
            }
            let now = *reconnects.borrow_and_update();
            if now != seen {
                return now;
            }
        }
    })
}

impl Pull {
    /// Asks for another batch if half of the last is in (or none is owed),
    /// and drives a request being handed over.
    fn poll_request(&mut self, cx: &mut Context<'_>) -> Result<(), BrokerError> {
        // Not while disconnected: async-nats would keep the request and
        // send it after the reconnect, beside the reconnect's own.
        if self.sending.is_none()
            && self.pending <= self.batch / 2
            && *self.shared.consumer.connected.borrow()
        {
            use async_nats::client::traits::Publisher;
            let client = self.shared.consumer.client.clone();
            let request = OutboundMessage {
                subject: self.next.clone(),
                reply: Some(self.inbox.clone()),
                headers: None,
                payload: self.request.clone(),
            };
            self.sending = Some(Box::pin(async move { client.publish_message(request).await }));
            self.pending += self.batch;
        }
        if let Some(sending) = self.sending.as_mut()
            && let Poll::Ready(result) = sending.poll_unpin(cx)
        {
            self.sending = None;
            result.map_err(|e| failed(&self.name, e))?;
        }
        Ok(())
    }

    /// The server no longer owes what it was asked for: ask again (unless
    /// a request is being sent right now: it is the new one).
    fn start_over(&mut self, why: &str) {
        tracing::debug!(consumer = %self.name, why, "pull request presumed lost; asking again");
        self.pending = if self.sending.is_some() { self.batch } else { 0 };
        self.restarts += 1;
    }

    /// A status message: counts taken off, or the end of this consumer.
    fn status(&mut self, status: StatusCode, message: &Message) -> Result<(), BrokerError> {
        match status {
            StatusCode::IDLE_HEARTBEAT => Ok(()),
            StatusCode::TIMEOUT | StatusCode::REQUEST_TERMINATED | StatusCode::NOT_FOUND => {
                let description = message.description.as_deref().unwrap_or_default();
                if description == "Consumer Deleted"
                    || description == "Consumer is push based"
                    || description.starts_with("Exceeded MaxRequest")
                {
                    return Err(failed(&self.name, description));
                }
                // Without the header, the whole of one request.
                let gone = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(PENDING_MESSAGES))
                    .and_then(|v| v.as_str().trim().parse().ok())
                    .unwrap_or(self.batch);
                self.pending = self.pending.saturating_sub(gone);
                Ok(())
            }
            StatusCode::NO_RESPONDERS => Err(failed(&self.name, "no JetStream responders")),
            other => Err(failed(
                &self.name,
                format!(
                    "unexpected status {other} ({})",
                    message.description.as_deref().unwrap_or("no description")
                ),
            )),
        }
    }
}

/// How long closing a subscription may take before what has not arrived
/// is left to the ack wait (the connection is down, say).
const CLOSE_LIMIT: Duration = Duration::from_secs(2);

impl Pull {
    /// Ends the subscription and returns the stored messages it received
    /// and did not hand out, so that they can be given back at once.
    ///
    /// The server forgets a pull request whose reply subject has no
    /// subscriber left, so after the `UNSUB` nothing more is delivered to
    /// this worker. async-nats (0.51) ends a drained subscription on its
    /// next turn, without waiting for the server to answer, and its
    /// `flush` only writes out its buffer: neither says the server has read
    /// the `UNSUB`. Until it has, the request is still served, and what the
    /// server sends to it meanwhile is dropped by the client and waits out
    /// the ack wait. So the close ends with a round trip on the consuming
    /// connection ([`round_trip`]): once it returns, the server has read
    /// the `UNSUB`, and a copy given back from now on, on either
    /// connection, cannot go to this worker's request. (A message the
    /// server was sending to the request as the drain went out can still
    /// be lost that way; it comes back after the ack wait.)
    pub(crate) async fn close(self) -> Vec<Message> {
        let (subscriber, taken) = {
            let mut messages = keepalive::lock(&self.messages);
            (messages.subscriber.take(), std::mem::take(&mut messages.taken))
        };
        let mut left: Vec<Message> = taken
            .into_iter()
            .map(|(message, _)| message)
            .filter(is_stored)
            .collect();
        let Some(mut subscriber) = subscriber else {
            return left;
        };
        let closing = async {
            if subscriber.drain().await.is_err() {
                return;
            }
            while let Some(message) = subscriber.next().await {
                if is_stored(&message) {
                    left.push(message);
                }
            }
            if let Err(error) = round_trip(&self.shared.consumer.client).await {
                tracing::debug!(consumer = %self.name, error = %crate::error::Chain(&*error), "no round trip after closing the pull subscription");
            }
        };
        if tokio::time::timeout(CLOSE_LIMIT, closing).await.is_err() {
            tracing::debug!(consumer = %self.name, "closing the pull subscription timed out");
        }
        left
    }
}

/// Returns once the server has read everything sent on `client` before
/// the call: a message of its own, sent to itself on the same connection,
/// has come back (the server reads a connection's operations in order).
pub(crate) async fn round_trip(
    client: &async_nats::Client,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let probe = Subject::from(client.new_inbox());
    let mut echo = client.subscribe(probe.clone()).await?;
    client.publish(probe, bytes::Bytes::new()).await?;
    echo.next().await.ok_or("the probe's subscription ended")?;
    Ok(())
}

/// Whether `message` is a stored message (its reply subject is a JetStream
/// ack subject), not a status message of the server's.
fn is_stored(message: &Message) -> bool {
    message
        .reply
        .as_deref()
        .is_some_and(|reply| reply.starts_with("$JS.ACK."))
}

impl Stream for Pull {
    type Item = Result<Message, BrokerError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Err(error) = this.poll_request(cx) {
                return Poll::Ready(Some(Err(error)));
            }
            let next = keepalive::lock(&this.messages).poll_next(cx);
            match next {
                Poll::Ready(Some(message)) => {
                    this.heard = true;
                    match message.status {
                        // A stored message (it has an ack subject) is one
                        // whatever its first header line says: a publisher
                        // may write `NATS/1.0 503` there, and the server
                        // stores and delivers it as it came. Only the
                        // server's own status messages have no reply.
                        Some(status) if status != StatusCode::OK && !is_stored(&message) => {
                            if let Err(error) = this.status(status, &message) {
                                return Poll::Ready(Some(Err(error)));
                            }
                            continue;
                        }
                        _ => {
                            this.pending = this.pending.saturating_sub(1);
                            return Poll::Ready(Some(Ok(message)));
                        }
                    }
                }
                Poll::Ready(None) => {
                    return Poll::Ready(Some(Err(failed(&this.name, "the subscription ended"))));
                }
                Poll::Pending => {}
            }
            if this.reconnected.as_mut().poll(cx).is_ready() {
                this.reconnected = reconnection(this.shared.consumer.reconnects.clone());
                this.start_over("reconnected");
                continue;
            }
            if this.watchdog.as_mut().poll(cx).is_ready() {
                let deadline = tokio::time::Instant::now() + this.heartbeat * 2;
                this.watchdog.as_mut().reset(deadline);
                // Silence while disconnected says nothing: the reconnect
                // asks again.
                if !std::mem::take(&mut this.heard) && *this.shared.consumer.connected.borrow() {
                    this.start_over("no heartbeat");
                }
                continue;
            }
            return Poll::Pending;
        }
    }
}

#[cfg(test)]
mod tests {
    //! Against the NATS server at `WHARF_TEST_NATS_URL` (default
    //! 127.0.0.1:4222), with short expiries and heartbeats; each test makes
    //! a stream of its own and deletes it.

    use super::*;
    use crate::transport::nats::NatsTransport;
    use async_nats::jetstream::{consumer, stream};
    use std::sync::Arc;

    const BATCH: usize = 4;
    const EXPIRY: Duration = Duration::from_millis(1000);
    const BEAT: Duration = Duration::from_millis(250);

    /// A fresh stream with a durable pull consumer; `None` (loudly, and a
    /// failure with `CI=true`) when no server answers.
    async fn setup(what: &str) -> Option<(Arc<Shared>, PullConsumer, String)> {
        let url = std::env::var("WHARF_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
        if let Err(why) = crate::test_support::broker_reachable(&url) {
            crate::test_support::skip(&format!("pull::tests::{what}"), &why);
            return None;
        }
        let transport = match NatsTransport::connect(&crate::BrokerOptions::new(url.as_str())).await {
            Ok(transport) => transport,
            Err(error) => {
                crate::test_support::skip(&format!("pull::tests::{what}"), &error.to_string());
                return None;
            }
        };
        let shared = transport.shared.clone();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!("WHARF_TEST_PULL_{what}_{}_{nanos:x}", std::process::id());
        let stream = shared
            .jetstream
            .create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![name.clone()],
                ..Default::default()
            })
            .await
            .expect("stream created");
        let consumer = stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some("pull".into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .expect("consumer created");
        Some((shared, consumer, name))
    }

    async fn publish(shared: &Shared, subject: &str, count: usize) {
        for i in 0..count {
            shared
                .jetstream
                .publish(subject.to_owned(), format!("m{i}").into())
                .await
                .expect("published")
                .await
                .expect("stored");
        }
    }

    /// Takes `count` messages (acking each) within `limit`.
    async fn take(pull: &mut Pull, count: usize, limit: Duration) {
        tokio::time::timeout(limit, async {
            for _ in 0..count {
                let message = pull.next().await.expect("open").expect("a message");
                let ack = message.reply.expect("an ack subject");
                pull.shared.client.publish(ack, "+ACK".into()).await.unwrap();
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{count} messages not received within {limit:?}"));
    }

    #[tokio::test]
    async fn expired_requests_are_asked_again_without_a_restart() {
        let Some((shared, consumer, name)) = setup("expiry").await else {
            return;
        };
        let mut pull = open_with(&shared, &consumer, BATCH, EXPIRY, BEAT, None)
            .await
            .unwrap();
        publish(&shared, &name, 2).await;
        take(&mut pull, 2, Duration::from_secs(5)).await;
        // Idle through several expiries: each 408 gives back what its
        // request still owed, and a new request goes out; heartbeats keep
        // the watchdog quiet.
        let idle = tokio::time::timeout(EXPIRY * 3 + EXPIRY / 2, pull.next()).await;
        assert!(idle.is_err(), "nothing to deliver, got {:?}", idle.ok());
        assert_eq!(
            pull.restarts, 0,
            "heartbeats came, so no request was presumed lost"
        );
        publish(&shared, &name, 2 * BATCH + 1).await;
        take(&mut pull, 2 * BATCH + 1, Duration::from_secs(5)).await;
        assert_eq!(pull.restarts, 0);
        drop(pull);
        shared.jetstream.delete_stream(&name).await.unwrap();
    }

    #[tokio::test]
    async fn a_lost_request_is_noticed_and_asked_again() {
        let Some((shared, consumer, name)) = setup("lost").await else {
            return;
        };
        let started = std::time::Instant::now();
        let mut pull = open_with(&shared, &consumer, BATCH, EXPIRY, BEAT, None)
            .await
            .unwrap();
        // As if a request were out that the server has forgotten (it
        // restarted, say): nothing is asked for, and nothing comes.
        pull.pending = BATCH;
        publish(&shared, &name, 3).await;
        take(&mut pull, 3, Duration::from_secs(5)).await;
        assert_eq!(pull.restarts, 1, "the watchdog noticed once");
        assert!(
            started.elapsed() >= BEAT * 2,
            "delivered after {:?}, before the watchdog could fire",
            started.elapsed()
        );
        drop(pull);
        shared.jetstream.delete_stream(&name).await.unwrap();
    }
}
