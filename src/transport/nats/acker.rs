//! Settling one JetStream delivery. Acks and naks are core NATS messages to
//! the delivery's ack subject. A retry is a nak with the backoff delay
//! (JetStream counts the delivery); a deferral or a return must not count,
//! so it is a copy carrying the attempts so far, published (confirmed)
//! before the original is acked; so is a dead letter.

use super::keepalive::Keep;
use super::naming;
use super::{Shared, convert, core_publish, publish_confirmed};
use crate::error::{BrokerError, BrokerErrorKind};
use crate::transport::window::Window;
use crate::transport::{Acker, BoxFuture, Delivery, Settlement, dead_letter_queue};
use crate::wire::headers::names;
use crate::wire::message::Message;
use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How a delivery that is returned goes back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A route's consumer: returned as a copy that keeps its attempt count.
    Consumer,
    /// An inspection fetch (dead letters): returned in place with a nak.
    Fetch,
}

/// What every delivery of one consumer (or one inspection fetch) shares,
/// behind one reference count: each delivery then costs one atomic
/// increment and decrement for all of it. (Atomic read-modify-writes were
/// most of what wharf's consumer spent beyond the raw client's per message:
/// measured with `perf annotate`, see docs/performance.md.)
pub(crate) struct Source {
    pub(crate) shared: Arc<Shared>,
    /// The queue it consumes.
    pub(crate) queue: Arc<str>,
    pub(crate) mode: Mode,
    /// A consumer's window, which each of its deliveries holds a place in
    /// until it is dropped (none for a fetch).
    pub(crate) window: Option<Arc<Window>>,
    /// Cancelled once the consumer's pull subscriptions are closed
    /// (consumers; see the `Drop` impl of [`NatsAcker`]).
    pub(crate) closed: Option<CancellationToken>,
    /// Keeps a consumer's deliveries alive while they are held (none for a
    /// fetch).
    pub(crate) keep: Option<Arc<Keep>>,
}

/// A received message and its key in the consumer's [`Keep`], if held.
pub(crate) type Held = (async_nats::Message, Option<usize>);

impl Source {
    /// Holds `message` in the consumer's keep, if there is one.
    pub(crate) fn hold(&self, message: &async_nats::Message) -> Option<usize> {
        let keep = self.keep.as_ref()?;
        Some(keep.hold(message.reply.clone()?))
    }
}

/// What a delivery needs to be settled.
pub(crate) struct NatsAcker {
    pub(crate) source: Arc<Source>,
    pub(crate) ack_subject: Subject,
    /// Headers as received, so copies keep every header.
    pub(crate) headers: Option<HeaderMap>,
    pub(crate) message: Arc<Message>,
    pub(crate) count: u32,
    pub(crate) settled: bool,
    /// Its key in the consumer's keep, while it is held.
    pub(crate) held: Option<usize>,
}

/// How long the copy of a delivery dropped unsettled waits for its consumer
/// to close, when the consumer lives on (see the `Drop` impl).
const ORPHAN_GRACE: Duration = Duration::from_millis(100);

pub(crate) use crate::wire::timestamp::unix_millis as now_ms;

/// Sends `-NAK` with a delay (none: at once) to an ack subject.
pub(crate) async fn nak(shared: &Shared, ack_subject: Subject, delay: Duration) -> Result<(), BrokerError> {
    let body = if delay.is_zero() {
        Bytes::from_static(b"-NAK")
    } else {
        Bytes::from(format!("-NAK {{\"delay\":{}}}", delay.as_nanos()))
    };
    send(shared, ack_subject, body).await
}

/// Sends `+ACK` to an ack subject.
pub(crate) async fn ack(shared: &Shared, ack_subject: Subject) -> Result<(), BrokerError> {
    send(shared, ack_subject, Bytes::from_static(b"+ACK")).await
}

async fn send(shared: &Shared, ack_subject: Subject, body: Bytes) -> Result<(), BrokerError> {
    let headers = HeaderMap::new();
    core_publish(shared, ack_subject, None, headers, body)
        .await
        .map_err(settling_failed)
}

fn settling_failed(e: async_nats::PublishError) -> BrokerError {
    BrokerError::new(BrokerErrorKind::Connection, "settling the message failed").with_source(e)
}

impl NatsAcker {
    /// Wraps a received delivery.
    pub(crate) fn delivery(self) -> Delivery {
        Delivery::new(self.message.clone(), self.count, Box::new(self))
    }

    fn lane(&self) -> u8 {
        self.message.priority.unwrap_or(0)
    }

    /// Publishes a copy (confirmed), then acks the original.
    async fn copy_then_ack(&self, subject: String, changes: &[(&str, String)]) -> Result<(), BrokerError> {
        let headers = convert::copy_headers(self.headers.as_ref(), changes);
        publish_confirmed(&self.source.shared, subject, headers, self.message.body.clone()).await?;
        ack(&self.source.shared, self.ack_subject.clone()).await
    }

    /// Back to the work queue as a copy that has made `attempts` attempts.
    async fn return_copy(&self, attempts: u32) -> Result<(), BrokerError> {
        let subject = naming::subject(&self.source.queue, self.lane());
        self.copy_then_ack(subject, &[(names::ATTEMPT, attempts.to_string())])
            .await
    }

    /// Returns this delivery once its consumer's pull subscriptions are
    /// closed (`closing` cancelled), from the connection's runtime.
    ///
    /// Only a stopping worker returns deliveries, and its pull requests
    /// are open until its consumer has been dropped and closed them: a copy
    /// published before then is delivered to them, and if it reaches the
    /// client after the subscription ended there, it is dropped and waits
    /// out the ack wait (the worker's consume loop returns the delivery it
    /// took last before it drops its consumer, so its copy raced that very
    /// close). After the close, the copy goes to another worker at once.
    /// The transport waits for it before it flushes or closes
    /// ([`Handbacks`](super::handback::Handbacks)); if the consumer is not
    /// dropped within [`CLOSE_WAIT`], the copy goes out regardless.
    fn return_after_close(self: Box<Self>, closing: CancellationToken) {
        let shared = self.source.shared.clone();
        shared.handbacks.spawn(&shared, async move {
            tokio::select! {
                () = closing.cancelled() => {}
                () = tokio::time::sleep(CLOSE_WAIT) => {}
            }
            if let Err(error) = self.return_copy(self.count.saturating_sub(1)).await {
                tracing::warn!(queue = %self.source.queue, error = %crate::error::Chain(&error), "giving a message back failed");
            }
        });
    }
}

/// How long a returned delivery waits for its consumer to be closed: a
/// close takes at most about two seconds (the pull subscriptions' limit).
const CLOSE_WAIT: Duration = Duration::from_secs(3);

impl Acker for NatsAcker {
    fn settle(mut self: Box<Self>, settlement: Settlement) -> BoxFuture<'static, Result<(), BrokerError>> {
        self.settled = true;
        if let Settlement::Ack = settlement {
            // The common case gets a future of its own: the one below is as
            // large as its largest arm (a confirmed JetStream publish, some
            // kilobytes), and allocating that for every ack cost more than
            // the ack itself. The acker goes along (its place in the window
            // is freed once the ack is handed over) rather than its
            // connection being cloned out of it, and the publish is awaited
            // directly, not through `ack`: each layer of async functions
            // adds to the future copied into the box.
            let ack_subject = std::mem::replace(&mut self.ack_subject, Subject::from_static(""));
            return Box::pin(async move {
                let body = Bytes::from_static(b"+ACK");
                core_publish(&self.source.shared, ack_subject, None, HeaderMap::new(), body)
                    .await
                    .map_err(settling_failed)
            });
        }
        Box::pin(async move {
            match settlement {
                Settlement::Ack => ack(&self.source.shared, self.ack_subject.clone()).await,
                Settlement::Retry { delay } => {
                    nak(&self.source.shared, self.ack_subject.clone(), delay).await
                }
                // Not attempted: the copy's next delivery is this attempt again.
                Settlement::Defer { delay } => {
                    let due = now_ms() + delay.as_millis() as u64;
                    let changes = [
                        (names::ATTEMPT, self.count.saturating_sub(1).to_string()),
                        (convert::NOT_BEFORE, due.to_string()),
                        (convert::LANE, self.lane().to_string()),
                    ];
                    self.copy_then_ack(naming::delay_subject(&self.source.queue), &changes)
                        .await
                }
                Settlement::DeadLetter { message } => {
                    let changes = message.wharf_headers();
                    let subject = naming::subject(&dead_letter_queue(&self.source.queue), self.lane());
                    self.copy_then_ack(subject, &changes).await
                }
                Settlement::Return => match self.source.mode {
                    Mode::Consumer => {
                        if let Some(closing) = self.source.closed.clone().filter(|c| !c.is_cancelled()) {
                            self.return_after_close(closing);
                            return Ok(());
                        }
                        self.return_copy(self.count.saturating_sub(1)).await
                    }
                    Mode::Fetch => nak(&self.source.shared, self.ack_subject.clone(), Duration::ZERO).await,
                },
            }
        })
    }
}

impl Drop for NatsAcker {
    fn drop(&mut self) {
        if let Some(window) = &self.source.window {
            window.release();
        }
        if let (Some(keep), Some(held)) = (&self.source.keep, self.held) {
            keep.release(held);
        }
        if self.settled {
            return;
        }
        // The transport contract: an unsettled delivery goes back and counts
        // as a delivery. JetStream does not count a nak reliably when the
        // pull request it delivered to is gone with its worker, so a
        // consumer's delivery goes back as a copy carrying the attempts made
        // (the pipeline's own attempt count, as on RabbitMQ) and the original
        // is acked; a fetched one is nakked in place. Both are queued on the
        // client at once where possible: the runtime this delivery lived on
        // may be going away with it.
        let shared = self.source.shared.clone();
        let ack_subject = self.ack_subject.clone();
        let copy = (self.source.mode == Mode::Consumer).then(|| {
            let headers =
                convert::copy_headers(self.headers.as_ref(), &[(names::ATTEMPT, self.count.to_string())]);
            (
                naming::subject(&self.source.queue, self.lane()),
                headers,
                self.message.body.clone(),
            )
        });
        let settle = async move {
            match copy {
                Some((subject, headers, body)) => {
                    // A core publish the stream stores: no ack to wait for.
                    shared
                        .client
                        .publish_with_headers(subject, headers, body)
                        .await
                        .ok()?;
                    shared
                        .client
                        .publish(ack_subject, Bytes::from_static(b"+ACK"))
                        .await
                        .ok()
                }
                None => shared
                    .client
                    .publish(ack_subject, Bytes::from_static(b"-NAK"))
                    .await
                    .ok(),
            }
        };
        // A consumer's pull requests stay open at the server until the
        // consumer's subscriptions are closed, and the copy would be
        // delivered to them: when this worker's runtime is being dropped,
        // with its consumer, the copy would go to the dying worker and wait
        // out the ack wait (30 s). So, while the consumer is open, the copy
        // is sent from the connection's runtime once the consumer has closed
        // (the server has then read its unsubscribes: `Pull::close`), or
        // after ORPHAN_GRACE if the consumer lives on (only this task was
        // dropped).
        if let Some(consumer) = self.source.closed.clone().filter(|c| !c.is_cancelled()) {
            self.source.shared.runtime.spawn(async move {
                tokio::select! {
                    () = consumer.cancelled() => {}
                    () = tokio::time::sleep(ORPHAN_GRACE) => {}
                }
                settle.await;
            });
            return;
        }
        // Unconstrained: a task that used up its tokio budget (or a runtime
        // dropping its tasks) would otherwise see the client's channel as
        // full, and a task spawned on a runtime that is going away never
        // runs; the message would then wait out the ack wait (30 s).
        let mut settle = Box::pin(tokio::task::unconstrained(settle));
        if futures_util::FutureExt::now_or_never(settle.as_mut()).is_none()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(settle);
        }
    }
}
