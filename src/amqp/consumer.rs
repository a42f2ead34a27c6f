//! Consuming a route's queue: one channel per consumer, resumed on every new
//! session, with deliveries held in priority lanes until the pipeline takes
//! them.
//!
//! RabbitMQ delivers strictly by priority, so a stream of high-priority
//! messages would starve a low one for ever. Here the deliveries the broker
//! has already sent (up to the prefetch window) wait in the same lanes as the
//! in-memory queue's, with the same bounded starvation: within the prefetch
//! window a low-priority message waits behind at most a few higher ones.

use super::acker::AmqpAcker;
use super::acks::AckBook;
use super::convert;
use super::link::{Link, Session};
use super::topology::connection_error;
use crate::error::BrokerError;
use crate::lanes::Lanes;
use crate::transport::{Delivery, DeliveryStream, QueueSpec};
use futures_util::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, DropGuard};

/// Received deliveries the pipeline has not taken yet.
struct Buffer {
    lanes: Mutex<Lanes<(u64, Delivery)>>,
    arrived: Notify,
}

impl Buffer {
    fn lock(&self) -> MutexGuard<'_, Lanes<(u64, Delivery)>> {
        self.lanes.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn next(&self) -> Delivery {
        loop {
            if let Some((_, delivery)) = self.lock().pop() {
                return delivery;
            }
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some((_, delivery)) = self.lock().pop() {
                return delivery;
            }
            arrived.await;
        }
    }

    /// Drops the deliveries of an ended session unsettled: their channel is
    /// gone and the broker redelivers them.
    fn forget_session(&self, generation: u64) {
        let mut lanes = self.lock();
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

struct Stream {
    buffer: Arc<Buffer>,
    _stop: DropGuard,
}

/// Starts consuming `spec` with `prefetch` unsettled deliveries at most.
/// Dropping the stream cancels the consumer and returns what it had
/// received but not handed out.
pub(crate) fn consume(link: Arc<Link>, spec: QueueSpec, prefetch: usize) -> DeliveryStream {
    let buffer = Arc::new(Buffer {
        lanes: Mutex::new(Lanes::new(spec.priority)),
        arrived: Notify::new(),
    });
    let stop = CancellationToken::new();
    tokio::spawn(run(link, spec, prefetch, buffer.clone(), stop.clone()));
    let stream = Stream {
        buffer,
        _stop: stop.drop_guard(),
    };
    Box::pin(futures_util::stream::unfold(stream, |stream| async move {
        let delivery = stream.buffer.next().await;
        Some((delivery, stream))
    }))
}

async fn run(
    link: Arc<Link>,
    spec: QueueSpec,
    prefetch: usize,
    buffer: Arc<Buffer>,
    stop: CancellationToken,
) {
    let queue: Arc<str> = spec.name.as_str().into();
    let mut sessions = link.sessions();
    let mut last = 0;
    loop {
        let session = tokio::select! {
            () = stop.cancelled() => break,
            session = sessions.wait_for(|s| s.as_ref().is_some_and(|s| s.generation > last)) => match session {
                Ok(session) => session.clone().expect("waited for a session"),
                Err(_) => break,
            },
        };
        let consumed = consume_session(&link, &session, &queue, prefetch, &buffer, &stop).await;
        if let Err(error) = &consumed {
            tracing::warn!(queue = %queue, %error, "consumer interrupted; resuming");
        }
        if stop.is_cancelled() {
            break;
        }
        // A consumer that ended while its session lives (a channel error)
        // starts again on the same session after a pause.
        if link.current().is_some_and(|s| s.generation == session.generation) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            last = session.generation - 1;
        } else {
            last = session.generation;
            buffer.forget_session(session.generation);
        }
    }
    // Stopped: what was received but not handed out goes back now, not
    // counted as a delivery (it was never attempted).
    let waiting = buffer.lock().drain();
    for (_, delivery) in waiting {
        let _ = delivery.settle(crate::transport::Settlement::Return).await;
    }
}

async fn consume_session(
    link: &Arc<Link>,
    session: &Arc<Session>,
    queue: &Arc<str>,
    prefetch: usize,
    buffer: &Arc<Buffer>,
    stop: &CancellationToken,
) -> Result<(), BrokerError> {
    let channel = session
        .connection
        .create_channel()
        .await
        .map_err(connection_error)?;
    let prefetch = u16::try_from(prefetch).unwrap_or(u16::MAX);
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .map_err(connection_error)?;
    let mut consumer = channel
        .basic_consume(
            (&**queue).into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(connection_error)?;
    let book = AckBook::start(channel.clone());
    link.track(&book);
    // Leave as soon as the link has moved on (its connection failed), even
    // if this consumer's stream has not noticed yet.
    let mut sessions = link.sessions();
    let generation = session.generation;
    let moved_on = async move {
        let moved = sessions.wait_for(|s| s.as_ref().is_none_or(|s| s.generation != generation));
        let _ = moved.await.map(|_| ());
    };
    tokio::pin!(moved_on);
    loop {
        let next = tokio::select! {
            _ = &mut moved_on => {
                book.kill();
                return Ok(());
            }
            () = stop.cancelled() => {
                let _ = channel.basic_cancel(consumer.tag(), BasicCancelOptions::default()).await;
                // Deliveries already on their way (a message returned by
                // another task a moment ago) would otherwise sit unacked on
                // this channel: take them until the consumer ends.
                while let Ok(Some(Ok(delivery))) =
                    tokio::time::timeout(Duration::from_secs(2), consumer.next()).await
                {
                    book.delivered(delivery.delivery_tag);
                    let _ = book.requeue(delivery.delivery_tag).await;
                }
                return Ok(());
            }
            next = consumer.next() => next,
        };
        let delivery = match next {
            Some(Ok(delivery)) => delivery,
            Some(Err(error)) => {
                book.kill();
                return Err(connection_error(error));
            }
            None => {
                book.kill();
                return Ok(());
            }
        };
        book.delivered(delivery.delivery_tag);
        let count = convert::delivery_count(&delivery.properties, delivery.redelivered);
        let message = Arc::new(convert::to_message(&delivery.properties, delivery.data));
        let acker = AmqpAcker {
            book: book.clone(),
            tag: delivery.delivery_tag,
            generation: session.generation,
            link: link.clone(),
            queue: queue.clone(),
            properties: delivery.properties,
            message,
            count,
            settled: false,
            return_by_copy: true,
        };
        let delivery = acker.delivery();
        let priority = delivery.message.priority;
        buffer.lock().push(priority, (session.generation, delivery));
        buffer.arrived.notify_one();
    }
}
