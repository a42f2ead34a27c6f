//! Settling one AMQP delivery: acks are coalesced (see [`super::acks`]);
//! retry, deferral and dead-letter copies are published with confirms before
//! the original is acked.

use super::acks::AckBook;
use super::convert;
use super::link::Link;
use crate::error::{BrokerError, BrokerErrorKind};
use crate::transport::{Acker, BoxFuture, Delivery, Settlement, dead_letter_queue, succeeded};
use crate::wire::headers::names;
use crate::wire::message::Message;
use lapin::BasicProperties;
use std::sync::Arc;
use std::time::Duration;

/// What a delivery needs to be settled.
pub(crate) struct AmqpAcker {
    pub(crate) book: Arc<AckBook>,
    pub(crate) tag: u64,
    /// The connection the delivery came on; copies are not published for a
    /// delivery of a connection that ended (the broker redelivers it).
    pub(crate) generation: u64,
    pub(crate) link: Arc<Link>,
    /// The queue it was consumed from.
    pub(crate) queue: Arc<str>,
    /// Properties as received, so copies keep every property and header.
    pub(crate) properties: BasicProperties,
    pub(crate) message: Arc<Message>,
    pub(crate) count: u32,
    pub(crate) settled: bool,
    /// Return a delivery as a copy carrying its attempt count (consumers),
    /// rather than with `basic.nack` (fetches: keeps dead letters in place).
    /// RabbitMQ marks a nacked message redelivered, which would read as one
    /// more attempt.
    pub(crate) return_by_copy: bool,
}

impl AmqpAcker {
    /// Wraps a received delivery.
    pub(crate) fn delivery(self) -> Delivery {
        Delivery::new(self.message.clone(), self.count, Box::new(self))
    }

    fn gone() -> BrokerError {
        BrokerError::new(
            BrokerErrorKind::Connection,
            "the channel this message came on is gone; RabbitMQ redelivers it",
        )
    }

    /// Publishes a copy to `to` (confirmed), then acks the original.
    async fn copy_then_ack(&self, to: Destination, set: &[(&str, String)]) -> Result<(), BrokerError> {
        let conn = self
            .link
            .current()
            .filter(|s| s.generation == self.generation && self.book.alive())
            .ok_or_else(Self::gone)?;
        let target = match to {
            Destination::Delay(delay) => {
                let bucket = super::topology::delay_bucket(delay);
                self.link.delay_queue(&conn, &self.queue, bucket).await?
            }
            Destination::DeadLetters => dead_letter_queue(&self.queue),
            Destination::Queue => self.queue.to_string(),
        };
        let properties = convert::copy_with(&self.properties, set);
        conn.publish(&target, &self.message.body, properties, true)
            .await?;
        self.book.ack(self.tag);
        Ok(())
    }
}

enum Destination {
    Delay(Duration),
    DeadLetters,
    /// Straight back to the work queue.
    Queue,
}

impl Acker for AmqpAcker {
    fn settle(mut self: Box<Self>, settlement: Settlement) -> BoxFuture<'static, Result<(), BrokerError>> {
        self.settled = true;
        if let Settlement::Ack = settlement {
            if self.book.killed() {
                return Box::pin(async { Err(AmqpAcker::gone()) });
            }
            self.book.ack(self.tag);
            return succeeded();
        }
        Box::pin(async move {
            match settlement {
                Settlement::Ack => unreachable!("handled above"),
                // The copy carries the attempts made so far; its next
                // delivery is the next attempt.
                Settlement::Retry { delay } => {
                    let attempts = self.count.to_string();
                    self.copy_then_ack(Destination::Delay(delay), &[(names::ATTEMPT, attempts)])
                        .await
                }
                // Not attempted: the next delivery is this attempt again.
                Settlement::Defer { delay } => {
                    let attempts = self.count.saturating_sub(1).to_string();
                    self.copy_then_ack(Destination::Delay(delay), &[(names::ATTEMPT, attempts)])
                        .await
                }
                Settlement::DeadLetter { message } => {
                    let set = message.wharf_headers();
                    self.copy_then_ack(Destination::DeadLetters, &set).await
                }
                Settlement::Return => {
                    if self.return_by_copy {
                        let attempts = self.count.saturating_sub(1).to_string();
                        let copied = self
                            .copy_then_ack(Destination::Queue, &[(names::ATTEMPT, attempts)])
                            .await;
                        if copied.is_ok() {
                            return Ok(());
                        }
                    }
                    self.book.requeue(self.tag).await.map_err(|e| {
                        BrokerError::new(BrokerErrorKind::Consume, "returning the message failed")
                            .with_source(e)
                    })
                }
            }
        })
    }
}

impl Drop for AmqpAcker {
    fn drop(&mut self) {
        if self.settled || !self.book.alive() {
            return;
        }
        // The transport contract: an unsettled delivery goes back to its
        // queue and counts as a delivery. A classic queue only flags a
        // redelivery (it does not count them), so the message goes back as a
        // copy carrying the attempts so far; a message that keeps killing its
        // pipeline then runs out of attempts instead of looping.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime left: the channel closes with the process, and the
            // broker requeues everything unacked on it.
            return;
        };
        let acker = AmqpAcker {
            book: self.book.clone(),
            tag: self.tag,
            generation: self.generation,
            link: self.link.clone(),
            queue: self.queue.clone(),
            properties: self.properties.clone(),
            message: self.message.clone(),
            count: self.count,
            settled: true,
            return_by_copy: self.return_by_copy,
        };
        runtime.spawn(async move {
            let attempts = acker.count.to_string();
            if let Err(error) = acker
                .copy_then_ack(Destination::Queue, &[(names::ATTEMPT, attempts)])
                .await
            {
                tracing::debug!(error = %crate::error::Chain(&error), "copy not published; returning the original instead");
                let _ = acker.book.requeue(acker.tag).await;
            }
        });
    }
}
