//! What wharf declares on RabbitMQ, and the names it uses.
//!
//! | queue | name | arguments |
//! |---|---|---|
//! | work queue of a route | `<queue>` | durable; `x-max-priority: 9` with priority; `x-queue-type: quorum` with quorum queues |
//! | dead-letter queue | `<queue>.dlq` | durable |
//! | delay queue | `<queue>.delay.<ms>ms` | durable; `x-message-ttl: <ms>`; dead-letters to the default exchange with routing key `<queue>` |
//!
//! Retries and deferrals wait in delay queues. Every message in a delay
//! queue has the same time to live (the queue's), so they expire strictly in
//! arrival order and a long delay never holds back a short one — which
//! per-message TTL in a single queue would, as RabbitMQ expires messages only
//! at the head of a queue. A requested delay is rounded up to the next
//! bucket in [`DELAY_BUCKETS_MS`].

use crate::error::{BrokerError, BrokerErrorKind};
use crate::transport::{QueueSpec, dead_letter_queue};
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection};
use std::time::Duration;

/// The delay buckets, in milliseconds: 100 ms to 24 h.
pub const DELAY_BUCKETS_MS: [u64; 18] = [
    100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000, 600_000, 1_800_000,
    3_600_000, 7_200_000, 21_600_000, 43_200_000, 86_400_000,
];

/// The bucket a delay waits in: the smallest one at least as long (the
/// largest for longer delays).
pub(crate) fn delay_bucket(delay: Duration) -> u64 {
    let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    DELAY_BUCKETS_MS
        .iter()
        .copied()
        .find(|bucket| *bucket >= ms)
        .unwrap_or(DELAY_BUCKETS_MS[DELAY_BUCKETS_MS.len() - 1])
}

/// The delay queue of `queue` for a bucket.
pub(crate) fn delay_queue(queue: &str, bucket_ms: u64) -> String {
    format!("{queue}.delay.{bucket_ms}ms")
}

/// Classic or quorum work queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum QueueType {
    Classic,
    Quorum,
}

fn declare_error(queue: &str, error: lapin::Error) -> BrokerError {
    BrokerError::new(
        BrokerErrorKind::Declare,
        format!("cannot declare queue {queue:?}"),
    )
    .with_source(error)
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// Declares a route's work queue and dead-letter queue (idempotent).
pub(crate) async fn declare_route(
    channel: &Channel,
    spec: &QueueSpec,
    queue_type: QueueType,
) -> Result<(), BrokerError> {
    if spec.priority && queue_type == QueueType::Quorum {
        return Err(BrokerError::new(
            BrokerErrorKind::Config,
            format!(
                "queue {:?}: priority needs a classic queue (RabbitMQ 3.10 quorum queues have no priorities)",
                spec.name
            ),
        ));
    }
    let mut arguments = FieldTable::default();
    if spec.priority {
        arguments.insert("x-max-priority".into(), AMQPValue::LongInt(9));
    }
    if queue_type == QueueType::Quorum {
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(LongString::from("quorum")),
        );
    }
    channel
        .queue_declare(spec.name.as_str().into(), durable(), arguments)
        .await
        .map_err(|e| declare_error(&spec.name, e))?;
    let dead_letters = spec.dead_letter_queue();
    channel
        .queue_declare(dead_letters.as_str().into(), durable(), FieldTable::default())
        .await
        .map_err(|e| declare_error(&dead_letters, e))?;
    Ok(())
}

/// Declares the delay queue of `queue` for `bucket_ms` (idempotent).
pub(crate) async fn declare_delay(
    channel: &Channel,
    queue: &str,
    bucket_ms: u64,
) -> Result<String, BrokerError> {
    let name = delay_queue(queue, bucket_ms);
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-message-ttl".into(),
        AMQPValue::LongLongInt(i64::try_from(bucket_ms).unwrap_or(i64::MAX)),
    );
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from("")),
    );
    arguments.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(LongString::from(queue)),
    );
    channel
        .queue_declare(name.as_str().into(), durable(), arguments)
        .await
        .map_err(|e| declare_error(&name, e))?;
    Ok(name)
}

/// Deletes a queue and its dead-letter and delay queues. A queue that does
/// not exist closes the channel on some RabbitMQ versions, so each delete
/// gets a channel of its own.
pub(crate) async fn delete_all(connection: &Connection, queue: &str) -> Result<(), BrokerError> {
    let mut names = vec![queue.to_owned(), dead_letter_queue(queue)];
    names.extend(DELAY_BUCKETS_MS.iter().map(|ms| delay_queue(queue, *ms)));
    for name in names {
        let channel = connection.create_channel().await.map_err(connection_error)?;
        let name: ShortString = name.into();
        if let Err(error) = channel
            .queue_delete(name.clone(), QueueDeleteOptions::default())
            .await
        {
            tracing::debug!(queue = %name, error = %crate::error::Chain(&error), "queue not deleted (probably missing)");
        }
        let _ = channel.close(200, "wharf: done".into()).await;
    }
    Ok(())
}

pub(crate) fn connection_error(error: lapin::Error) -> BrokerError {
    BrokerError::new(BrokerErrorKind::Connection, "RabbitMQ connection failed").with_source(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_round_up_to_the_next_bucket() {
        assert_eq!(delay_bucket(Duration::ZERO), 100);
        assert_eq!(delay_bucket(Duration::from_millis(100)), 100);
        assert_eq!(delay_bucket(Duration::from_millis(101)), 200);
        assert_eq!(delay_bucket(Duration::from_millis(1_500)), 2_000);
        assert_eq!(delay_bucket(Duration::from_secs(60)), 60_000);
        assert_eq!(delay_bucket(Duration::from_secs(10 * 24 * 3600)), 86_400_000);
        assert_eq!(delay_queue("orders", 500), "orders.delay.500ms");
    }
}
