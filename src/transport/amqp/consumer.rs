//! Consuming a route's queue: one channel per consumer, resumed on every new
//! connection, with deliveries held in priority lanes until the pipeline takes
//! them.
//!
//! RabbitMQ delivers strictly by priority, so a stream of high-priority
//! messages would starve a low one for ever. Here the deliveries the broker
//! has already sent (up to the prefetch window) wait in the same lanes as the
//! in-memory queue's, with the same bounded starvation: within the prefetch
//! window a low-priority message waits behind at most a few higher ones.
//!
//! The route's delivery stream reads lapin's consumer itself: each poll
//! moves whatever has arrived into the lanes and hands out the first in
//! line, so a delivery goes from lapin's I/O thread to the route's task with
//! no task in between (a relay task cost a wake-up, often of the other
//! tokio worker, per message). A task of the consumer's own only opens the
//! channel and consumer for each connection, and closes them when the connection
//! ends, the consumer fails or the stream is dropped.

use super::acker::AmqpAcker;
use super::acks::AckBook;
use super::convert;
use super::link::{Connected, Link};
use super::topology::connection_error;
use crate::error::BrokerError;
use crate::transport::lanes::Lanes;
use crate::transport::{Delivery, DeliveryStream, QueueSpec, Settlement};
use futures_util::StreamExt;
use futures_util::task::AtomicWaker;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, DropGuard};

/// How long a consumer whose channel failed waits before it opens another
/// on the same connection.
const REOPEN_PAUSE: Duration = Duration::from_millis(500);

/// What the delivery stream and the consumer's task share.
struct Shared {
    link: Arc<Link>,
    queue: Arc<str>,
    /// Received deliveries the pipeline has not taken yet, with the connection
    /// each came on.
    lanes: Mutex<Lanes<(u64, Delivery)>>,
    /// The consumer of the current connection, while there is one.
    active: Mutex<Option<Active>>,
    /// The delivery stream's waker, for a consumer opened while it waits.
    reader: AtomicWaker,
    /// The active consumer ended (its channel failed).
    ended: Notify,
}

/// A consumer on one channel of one connection.
struct Active {
    consumer: lapin::Consumer,
    book: Arc<AckBook>,
    generation: u64,
    ended: bool,
}

impl Shared {
    fn lanes(&self) -> MutexGuard<'_, Lanes<(u64, Delivery)>> {
        self.lanes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn active(&self) -> MutexGuard<'_, Option<Active>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves what the consumer has received into the lanes and takes the
    /// first in line (one lock of each for all that has arrived; lock
    /// order: active, then lanes).
    fn receive(&self, cx: &mut Context<'_>) -> Option<Delivery> {
        let mut active = self.active();
        let mut lanes = self.lanes();
        if let Some(active) = active.as_mut().filter(|a| !a.ended) {
            self.receive_into(active, &mut lanes, cx);
        }
        lanes.pop().map(|(_, delivery)| delivery)
    }

    fn receive_into(&self, active: &mut Active, lanes: &mut Lanes<(u64, Delivery)>, cx: &mut Context<'_>) {
        loop {
            let delivery = match active.consumer.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(delivery))) => delivery,
                Poll::Ready(Some(Err(error))) => {
                    tracing::warn!(queue = %self.queue, error = %crate::error::Chain(&error), "consumer interrupted; resuming");
                    active.end(self);
                    return;
                }
                Poll::Ready(None) => {
                    active.end(self);
                    return;
                }
                Poll::Pending => return,
            };
            active.book.delivered(delivery.delivery_tag);
            let message = Arc::new(convert::to_message(&delivery.properties, delivery.data));
            let (count, malformed) =
                convert::delivery_count(&message, &delivery.properties, delivery.redelivered);
            let acker = AmqpAcker {
                book: active.book.clone(),
                tag: delivery.delivery_tag,
                generation: active.generation,
                link: self.link.clone(),
                queue: self.queue.clone(),
                properties: delivery.properties,
                message,
                count,
                settled: false,
                return_by_copy: true,
            };
            let delivery = match malformed {
                Some(why) => acker.delivery().with_malformed(why),
                None => acker.delivery(),
            };
            let priority = delivery.message.priority;
            lanes.push(priority, (active.generation, delivery));
        }
    }

    /// Drops the deliveries of an ended connection unsettled: their channel is
    /// gone and the broker redelivers them.
    fn forget_generation(&self, generation: u64) {
        let mut lanes = self.lanes();
        let kept: Vec<(u64, Delivery)> = lanes
            .drain()
            .into_iter()
            .filter(|(g, _)| *g != generation)
            .collect();
        for (g, delivery) in kept {
            let priority = delivery.message.priority;
            lanes.push(priority, (g, delivery));
        }
    }
}

impl Active {
    /// The consumer's stream ended: its acks can no longer be sent, and the
    /// consumer's task opens another.
    fn end(&mut self, shared: &Shared) {
        self.ended = true;
        self.book.kill();
        shared.ended.notify_one();
    }
}

struct Stream {
    shared: Arc<Shared>,
    _stop: DropGuard,
}

impl futures_util::Stream for Stream {
    type Item = Delivery;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        let shared = &self.shared;
        shared.reader.register(cx.waker());
        match shared.receive(cx) {
            Some(delivery) => Poll::Ready(Some(delivery)),
            None => Poll::Pending,
        }
    }
}

/// Starts consuming `spec` with `prefetch` unsettled deliveries at most.
/// Dropping the stream cancels the consumer and returns what it had
/// received but not handed out.
pub(crate) fn consume(link: Arc<Link>, spec: QueueSpec, prefetch: usize) -> DeliveryStream {
    let shared = Arc::new(Shared {
        link,
        queue: spec.name.as_str().into(),
        lanes: Mutex::new(Lanes::new(spec.priority)),
        active: Mutex::new(None),
        reader: AtomicWaker::new(),
        ended: Notify::new(),
    });
    let stop = CancellationToken::new();
    tokio::spawn(run(shared.clone(), prefetch, stop.clone()));
    Box::pin(Stream {
        shared,
        _stop: stop.drop_guard(),
    })
}

/// Why a consumer stopped.
enum Stopped {
    /// The link moved on to another connection (or has none).
    SessionEnded,
    /// The consumer ended on a live connection (its channel failed).
    ConsumerEnded,
    /// The stream was dropped.
    Stop,
}

async fn run(shared: Arc<Shared>, prefetch: usize, stop: CancellationToken) {
    let mut connections = shared.link.connections();
    let mut last = 0;
    loop {
        let conn = tokio::select! {
            () = stop.cancelled() => break,
            conn = connections.wait_for(|s| s.as_ref().is_some_and(|s| s.generation > last)) => match conn {
                Ok(conn) => conn.clone().expect("waited for a connection"),
                Err(_) => break,
            },
        };
        let stopped = match open(&shared, &conn, prefetch).await {
            Ok(()) => watch(&shared, &conn, &stop).await,
            Err(error) => {
                tracing::warn!(queue = %shared.queue, error = %crate::error::Chain(&error), "cannot start the consumer; retrying");
                Stopped::ConsumerEnded
            }
        };
        let active = shared.active().take();
        if let Stopped::Stop = stopped {
            // Handlers still running settle through this channel's book.
            if let Some(active) = active {
                give_back_in_flight(active).await;
            }
            break;
        }
        if let Some(active) = &active {
            active.book.kill();
        }
        if stop.is_cancelled() {
            break;
        }
        // A consumer that ended while its connection lives (a channel error)
        // starts again on the same connection after a pause.
        if shared
            .link
            .current()
            .is_some_and(|s| s.generation == conn.generation)
        {
            tokio::time::sleep(REOPEN_PAUSE).await;
            last = conn.generation - 1;
        } else {
            last = conn.generation;
            shared.forget_generation(conn.generation);
        }
    }
    // Stopped: what was received but not handed out goes back now, not
    // counted as a delivery (it was never attempted).
    let waiting = shared.lanes().drain();
    for (_, delivery) in waiting {
        let _ = delivery.settle(Settlement::Return).await;
    }
}

/// Opens a channel and a consumer on `conn` for the delivery stream.
async fn open(shared: &Shared, conn: &Arc<Connected>, prefetch: usize) -> Result<(), BrokerError> {
    let channel = conn.connection.create_channel().await.map_err(connection_error)?;
    let prefetch = u16::try_from(prefetch).unwrap_or(u16::MAX);
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .map_err(connection_error)?;
    let consumer = channel
        .basic_consume(
            (&*shared.queue).into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(connection_error)?;
    let book = AckBook::start(channel, usize::from(prefetch));
    shared.link.track(&book);
    *shared.active() = Some(Active {
        consumer,
        book,
        generation: conn.generation,
        ended: false,
    });
    shared.reader.wake();
    Ok(())
}

/// Waits until the consumer must stop, and says why.
async fn watch(shared: &Shared, conn: &Arc<Connected>, stop: &CancellationToken) -> Stopped {
    // Leave as soon as the link has moved on (its connection failed), even
    // if this consumer's stream has not noticed yet.
    let mut connections = shared.link.connections();
    let generation = conn.generation;
    let moved_on = connections.wait_for(|s| s.as_ref().is_none_or(|s| s.generation != generation));
    tokio::pin!(moved_on);
    loop {
        tokio::select! {
            _ = &mut moved_on => return Stopped::SessionEnded,
            () = stop.cancelled() => return Stopped::Stop,
            () = shared.ended.notified() => {
                // A notification left over from an earlier consumer is not
                // this one's end.
                if shared.active().as_ref().is_none_or(|a| a.ended) {
                    return Stopped::ConsumerEnded;
                }
            }
        }
    }
}

/// The stream was dropped: cancel the consumer, and give back what is
/// already on its way (a message returned by another task a moment ago
/// would otherwise sit unacked on this channel) until the consumer ends.
async fn give_back_in_flight(active: Active) {
    let Active {
        mut consumer, book, ..
    } = active;
    let channel = book.channel().clone();
    let _ = channel
        .basic_cancel(consumer.tag(), BasicCancelOptions::default())
        .await;
    while let Ok(Some(Ok(delivery))) = tokio::time::timeout(Duration::from_secs(2), consumer.next()).await {
        book.delivered(delivery.delivery_tag);
        let _ = book.requeue(delivery.delivery_tag).await;
    }
}
