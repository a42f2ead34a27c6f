//! Dead letters for operators: inspecting, replaying and purging a queue's
//! dead-letter queue. Why a message was dead-lettered is part of the wire
//! format ([`DeadLetterReason`]).

use crate::error::BrokerError;
use crate::transport::{Settlement, Transport, dead_letter_queue};
use crate::wire::dead_letter_reason::DeadLetterReason;
use crate::wire::headers::names;
use crate::wire::message::Message;
use std::sync::Arc;

/// A message in a dead-letter queue: the original body and headers plus
/// wharf's record of what went wrong.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    /// The message as stored, including the `wharf-*` headers.
    pub message: Message,
}

impl DeadLetter {
    /// Why it was dead-lettered.
    pub fn reason(&self) -> Option<DeadLetterReason> {
        self.message.header(names::DEAD_LETTER_REASON)?.parse().ok()
    }

    /// Kind of the last failure (`decode`, `handler`, `panic`, `timeout`, …).
    pub fn error_kind(&self) -> Option<&str> {
        self.message.header(names::ERROR_KIND)
    }

    /// Message of the last failure.
    pub fn error_message(&self) -> Option<&str> {
        self.message.header(names::ERROR_MESSAGE)
    }

    /// The queue it came from.
    pub fn origin_queue(&self) -> Option<&str> {
        self.message.header(names::ORIGIN_QUEUE)
    }

    /// Attempts made before it was dead-lettered.
    pub fn attempts(&self) -> Option<u32> {
        self.message.header(names::ATTEMPT)?.parse().ok()
    }

    /// When it was dead-lettered (RFC 3339).
    pub fn failed_at(&self) -> Option<&str> {
        self.message.header(names::FAILED_AT)
    }

    /// The original message, as it was before it was dead-lettered.
    pub fn original(&self) -> Message {
        let mut original = self.message.clone();
        for name in [
            names::DEAD_LETTER_REASON,
            names::ERROR_KIND,
            names::ERROR_MESSAGE,
            names::ORIGIN_QUEUE,
            names::HANDLER,
            names::FAILED_AT,
            names::ATTEMPT,
            names::REPLAYED_AT,
        ] {
            original.headers.remove(name);
        }
        original
    }
}

/// The dead-letter queue of one queue; from [`Broker::dead_letters`](crate::Broker::dead_letters).
#[derive(Clone)]
pub struct DeadLetters {
    transport: Arc<dyn Transport>,
    queue: String,
}

impl DeadLetters {
    pub(crate) fn new(transport: Arc<dyn Transport>, queue: &str) -> Self {
        DeadLetters {
            transport,
            queue: queue.to_owned(),
        }
    }

    /// Name of the dead-letter queue.
    pub fn queue(&self) -> String {
        dead_letter_queue(&self.queue)
    }

    /// Up to `max` dead letters, left in the queue.
    pub async fn list(&self, max: usize) -> Result<Vec<DeadLetter>, BrokerError> {
        let deliveries = self.transport.fetch(&self.queue(), max).await?;
        let letters = deliveries
            .iter()
            .map(|d| DeadLetter {
                message: d.message.as_ref().clone(),
            })
            .collect();
        // Put them back last-first so the queue keeps its order.
        for delivery in deliveries.into_iter().rev() {
            delivery.settle(Settlement::Return).await?;
        }
        Ok(letters)
    }

    /// Removes and returns up to `max` dead letters.
    pub async fn take(&self, max: usize) -> Result<Vec<DeadLetter>, BrokerError> {
        let deliveries = self.transport.fetch(&self.queue(), max).await?;
        let mut letters = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            letters.push(DeadLetter {
                message: delivery.message.as_ref().clone(),
            });
            delivery.settle(Settlement::Ack).await?;
        }
        Ok(letters)
    }

    /// Publishes up to `max` dead letters back to the queue they came from,
    /// without wharf's failure headers, so they get a fresh set of attempts.
    /// They carry `wharf-replayed-at`, which lets a session message run
    /// although its session has moved past it. Returns how many were replayed.
    pub async fn replay(&self, max: usize) -> Result<usize, BrokerError> {
        let deliveries = self.transport.fetch(&self.queue(), max).await?;
        let count = deliveries.len();
        for delivery in deliveries {
            let letter = DeadLetter {
                message: delivery.message.as_ref().clone(),
            };
            let target = letter.origin_queue().unwrap_or(&self.queue).to_owned();
            let mut original = letter.original();
            original.headers.insert(
                names::REPLAYED_AT,
                crate::wire::timestamp::rfc3339(std::time::SystemTime::now()),
            );
            self.transport.publish(&target, original).await?;
            delivery.settle(Settlement::Ack).await?;
        }
        Ok(count)
    }

    /// Deletes every dead letter; returns how many.
    pub async fn purge(&self) -> Result<usize, BrokerError> {
        let mut purged = 0;
        loop {
            let batch = self.transport.fetch(&self.queue(), 256).await?;
            if batch.is_empty() {
                return Ok(purged);
            }
            purged += batch.len();
            for delivery in batch {
                delivery.settle(Settlement::Ack).await?;
            }
        }
    }
}
