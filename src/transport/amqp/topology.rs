//! What wharf declares on RabbitMQ, and the names it uses.
//!
//! | queue | name | arguments |
//! |---|---|---|
//! | work queue of a route | `<queue>` | durable; `x-queue-type`: the route's [`QueueType`]; `x-max-priority: 9` with priority (classic only); `x-delivery-limit:` [`QUORUM_DELIVERY_LIMIT`] when quorum |
//! | dead-letter queue | `<queue>.dlq` | durable |
//! | delay queue | `<queue>.delay.<ms>ms` | durable; `x-message-ttl: <ms>`; dead-letters to the default exchange with routing key `<queue>` |
//!
//! A route's queue is also bound to the exchanges of its bindings
//! (`exchanges.rs`); its dead-letter and delay queues never are.
//!
//! Retries and deferrals wait in delay queues. Every message in a delay
//! queue has the same time to live (the queue's), so they expire strictly in
//! arrival order and a long delay never holds back a short one — which
//! per-message TTL in a single queue would, as RabbitMQ expires messages only
//! at the head of a queue. A requested delay is rounded up to the next
//! bucket in [`DELAY_BUCKETS_MS`].
//!
//! A queue that exists with other arguments (another type, priority, an
//! older wharf's quorum queue without `x-delivery-limit`) is refused by
//! RabbitMQ (`PRECONDITION_FAILED`); wharf reports it as a
//! [`Config`](BrokerErrorKind::Config) error naming the queue, what exists,
//! what wharf asked for and how to migrate.

use crate::error::{BrokerError, BrokerErrorKind};
use crate::transport::{QueueSpec, dead_letter_queue};
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
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

pub(crate) use crate::transport::topology::QueueType;

/// The `x-delivery-limit` of quorum work queues: 2^31 − 1, the largest
/// value of the argument's integer, so that the broker never drops a
/// message for its redeliveries (RabbitMQ 4 limits quorum queues to 20 by
/// default, and drops the message when no dead-letter exchange is set).
/// wharf counts the broker's redeliveries among the attempts and
/// dead-letters the message itself after `max_attempts` (see
/// `docs/amqp.md`, "Quorum queues: who decides").
pub const QUORUM_DELIVERY_LIMIT: i32 = i32::MAX;

/// A failed declaration: a [`Config`](BrokerErrorKind::Config) error
/// explaining the divergence when the queue exists with other arguments,
/// else a [`Declare`](BrokerErrorKind::Declare) error.
fn declare_error(queue: &str, error: lapin::Error) -> BrokerError {
    let refused = match error.kind() {
        lapin::ErrorKind::ProtocolError(amqp)
            if matches!(
                amqp.kind(),
                AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)
            ) =>
        {
            inequivalent(queue, amqp.get_message().as_str())
        }
        _ => None,
    };
    match refused {
        Some(message) => BrokerError::new(BrokerErrorKind::Config, message),
        None => BrokerError::new(
            BrokerErrorKind::Declare,
            format!("cannot declare queue {queue:?}"),
        ),
    }
    .with_source(error)
}

/// A failed passive declaration of a queue the route takes as it is.
fn existing_error(queue: &str, error: lapin::Error) -> BrokerError {
    let refusal = match error.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => match amqp.kind() {
            AMQPErrorKind::Soft(refusal) => Some(refusal.clone()),
            _ => None,
        },
        _ => None,
    };
    match refusal {
        Some(AMQPSoftError::NOTFOUND) => BrokerError::new(
            BrokerErrorKind::Config,
            format!(
                "queue {queue:?} does not exist, and the route takes it as it is \
                 (RouteOptions::existing_queue): create it first, or drop existing_queue() and wharf \
                 declares it"
            ),
        ),
        Some(AMQPSoftError::RESOURCELOCKED) => BrokerError::new(
            BrokerErrorKind::Config,
            format!(
                "queue {queue:?} is exclusive to the connection that declared it, so no worker of wharf's \
                 can consume it: its owner must declare it without `exclusive`"
            ),
        ),
        _ => BrokerError::new(BrokerErrorKind::Declare, format!("cannot check queue {queue:?}")),
    }
    .with_source(error)
}

/// What RabbitMQ's "inequivalent arg" refusal of `queue` means, and the
/// way out; `None` for another refusal. RabbitMQ says, for example,
/// `PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'q' in
/// vhost '/': received the value 'quorum' of type 'longstr' but current is
/// none`.
fn inequivalent(queue: &str, refusal: &str) -> Option<String> {
    let rest = refusal.split_once("inequivalent arg '")?.1;
    let (argument, rest) = rest.split_once('\'')?;
    let (_, rest) = rest.split_once("': received ")?;
    let (asked, exists) = rest.rsplit_once(" but current is ")?;
    let (asked, exists) = (argument_value(asked), argument_value(exists));
    let setting = match argument {
        "x-queue-type" => "the queue type is the route's RouteOptions::queue_type, else the app's \
                           (App::queue_type, WHARF_QUEUE_TYPE), else the broker URL's ?queue_type=, \
                           else classic"
            .to_owned(),
        "x-max-priority" => "priority (RouteOptions::priority)".to_owned(),
        "x-delivery-limit" => format!(
            "the delivery limit wharf gives quorum queues ({QUORUM_DELIVERY_LIMIT}) so that max_attempts \
             decides (docs/amqp.md): the queue was declared by an older wharf or another program"
        ),
        _ => "how wharf declares it (docs/amqp.md, Topology)".to_owned(),
    };
    Some(format!(
        "queue {queue:?} exists with {argument} {exists}, and wharf declares it with {argument} {asked}: \
         {setting}. RabbitMQ cannot change an existing queue's arguments: declare it as it is, or \
         migrate: stop the workers, move or drain its messages (a shovel to a new queue), delete it \
         (Broker::delete_queue, rabbitmqctl delete_queue) and start them again"
    ))
}

/// An argument value as RabbitMQ quotes it: `none`, `'classic'` or `the
/// value '9' of type 'signedint'`.
fn argument_value(quoted: &str) -> &str {
    let quoted = quoted.trim();
    let quoted = quoted.strip_prefix("the value ").unwrap_or(quoted);
    let quoted = quoted.split(" of type ").next().unwrap_or(quoted);
    quoted.trim_matches('\'')
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// Declares a route's work queue and dead-letter queue (idempotent). The
/// work queue's type is the route's, else `default_type` (the broker URL's).
pub(crate) async fn declare_route(
    channel: &Channel,
    spec: &QueueSpec,
    default_type: QueueType,
) -> Result<(), BrokerError> {
    let queue_type = spec.topology.queue_type.unwrap_or(default_type);
    if spec.priority && queue_type == QueueType::Quorum {
        return Err(BrokerError::new(
            BrokerErrorKind::Config,
            format!(
                "queue {:?}: priority needs a classic queue (RabbitMQ 3.10 quorum queues have no priorities)",
                spec.name
            ),
        ));
    }
    if spec.existing {
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(spec.name.as_str().into(), passive, FieldTable::default())
            .await
            .map_err(|e| existing_error(&spec.name, e))?;
    } else {
        channel
            .queue_declare(
                spec.name.as_str().into(),
                durable(),
                work_arguments(spec, queue_type),
            )
            .await
            .map_err(|e| declare_error(&spec.name, e))?;
    }
    let dead_letters = spec.dead_letter_queue();
    channel
        .queue_declare(dead_letters.as_str().into(), durable(), FieldTable::default())
        .await
        .map_err(|e| declare_error(&dead_letters, e))?;
    Ok(())
}

/// The arguments of a work queue of `queue_type`. The type is always
/// given, so that a vhost's default queue type (RabbitMQ 3.13 and later)
/// does not decide it.
fn work_arguments(spec: &QueueSpec, queue_type: QueueType) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from(queue_type.as_str())),
    );
    if spec.priority {
        arguments.insert("x-max-priority".into(), AMQPValue::LongInt(9));
    }
    if queue_type == QueueType::Quorum {
        arguments.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(QUORUM_DELIVERY_LIMIT),
        );
    }
    arguments
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

    #[test]
    fn inequivalent_arguments_are_explained() {
        // As RabbitMQ 3.10 words them.
        let refusal = |argument: &str, rest: &str| {
            format!("PRECONDITION_FAILED - inequivalent arg '{argument}' for queue 'q' in vhost '/': {rest}")
        };
        let to_quorum = inequivalent(
            "q",
            &refusal(
                "x-queue-type",
                "received the value 'quorum' of type 'longstr' but current is none",
            ),
        )
        .unwrap();
        assert!(
            to_quorum.starts_with(
                "queue \"q\" exists with x-queue-type none, and wharf declares it with x-queue-type quorum: \
                 the queue type is the route's RouteOptions::queue_type"
            ),
            "{to_quorum}"
        );
        assert!(to_quorum.contains("WHARF_QUEUE_TYPE"), "{to_quorum}");
        assert!(
            to_quorum.contains("delete it (Broker::delete_queue"),
            "{to_quorum}"
        );
        let to_classic = inequivalent(
            "q",
            &refusal("x-queue-type", "received 'classic' but current is 'quorum'"),
        )
        .unwrap();
        assert!(
            to_classic.starts_with(
                "queue \"q\" exists with x-queue-type quorum, and wharf declares it with x-queue-type classic"
            ),
            "{to_classic}"
        );
        let limit = inequivalent(
            "q",
            &refusal(
                "x-delivery-limit",
                "received the value '2147483647' of type 'signedint' but current is none",
            ),
        )
        .unwrap();
        assert!(
            limit.starts_with("queue \"q\" exists with x-delivery-limit none, and wharf declares it with x-delivery-limit 2147483647: the delivery limit wharf gives quorum queues"),
            "{limit}"
        );
        let priority = inequivalent(
            "q",
            &refusal(
                "x-max-priority",
                "received none but current is the value '9' of type 'signedint'",
            ),
        )
        .unwrap();
        assert!(priority.contains("x-max-priority 9, and wharf declares it with x-max-priority none: priority (RouteOptions::priority)"), "{priority}");
        assert_eq!(
            inequivalent(
                "q",
                "PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue 'q' in vhost '/' of queue type rabbit_quorum_queue"
            ),
            None
        );
    }
}
