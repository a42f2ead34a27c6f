//! Declaring and deleting what a queue needs on JetStream: its stream (all
//! priority lanes), its dead-letter queue's stream, its delay stream and
//! their durable pull consumers. Declaring is idempotent.

use super::Shared;
use super::naming::{self, CONSUMER, DELAY_CONSUMER};
use crate::error::{BrokerError, BrokerErrorKind};
use crate::transport::lanes::MAX_PRIORITY;
use crate::transport::{QueueSpec, dead_letter_queue};
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use std::time::Duration;

/// Ack wait of the consumers wharf reads itself (dead letters, delays):
/// they settle at once.
const INTERNAL_ACK_WAIT: Duration = Duration::from_secs(30);
/// JetStream's de-duplication window for `Nats-Msg-Id`.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Unsettled messages a consumer may have across all workers.
const MAX_ACK_PENDING: i64 = 100_000;

pub(crate) fn declare_error(what: &str, e: impl std::fmt::Display) -> BrokerError {
    BrokerError::new(BrokerErrorKind::Declare, format!("declaring {what} failed: {e}"))
}

/// Declares `spec`'s stream, consumers, dead-letter queue and delay stream.
pub(crate) async fn declare(shared: &Shared, spec: &QueueSpec) -> Result<(), BrokerError> {
    naming::check_queue(&spec.name)?;
    if !spec.persistent {
        // A core NATS service: no stream may capture its subjects.
        let dead = work_stream(shared, &dead_letter_queue(&spec.name)).await?;
        consumer(&dead, CONSUMER, String::new(), &[], INTERNAL_ACK_WAIT).await?;
        return Ok(());
    }
    let work = work_stream(shared, &spec.name).await?;
    if spec.priority {
        for lane in 0..=MAX_PRIORITY as u8 {
            consumer(
                &work,
                &naming::lane_consumer(lane),
                naming::subject(&spec.name, lane),
                &[CONSUMER],
                spec.lease,
            )
            .await?;
        }
    } else {
        let lanes: Vec<String> = (0..=MAX_PRIORITY as u8).map(naming::lane_consumer).collect();
        let lanes: Vec<&str> = lanes.iter().map(String::as_str).collect();
        consumer(&work, CONSUMER, String::new(), &lanes, spec.lease).await?;
    }
    let dead = work_stream(shared, &dead_letter_queue(&spec.name)).await?;
    consumer(&dead, CONSUMER, String::new(), &[], INTERNAL_ACK_WAIT).await?;
    let delay = delay_stream(shared, &spec.name).await?;
    consumer(&delay, DELAY_CONSUMER, String::new(), &[], INTERNAL_ACK_WAIT).await?;
    Ok(())
}

/// The stream holding `queue`, created when missing.
pub(crate) async fn work_stream(shared: &Shared, queue: &str) -> Result<stream::Stream, BrokerError> {
    let name = naming::stream(queue);
    create_stream(shared, name, naming::subjects(queue)).await
}

/// The delay stream of `queue`, created when missing.
pub(crate) async fn delay_stream(shared: &Shared, queue: &str) -> Result<stream::Stream, BrokerError> {
    let name = naming::delay_stream(queue);
    create_stream(shared, name, vec![naming::delay_subject(queue)]).await
}

async fn create_stream(
    shared: &Shared,
    name: String,
    subjects: Vec<String>,
) -> Result<stream::Stream, BrokerError> {
    let config = stream::Config {
        name: name.clone(),
        subjects,
        retention: RetentionPolicy::WorkQueue,
        storage: StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    };
    shared
        .jetstream
        .get_or_create_stream(config)
        .await
        .map_err(|e| declare_error(&format!("stream {name}"), e))
}

/// A durable pull consumer that redelivers after `ack_wait` (an existing
/// one is updated to it). `conflicting` consumers (the other layout of a
/// route whose priority setting changed) are deleted if creating this one
/// fails because of them: a WorkQueue stream allows no overlap.
async fn consumer(
    stream: &stream::Stream,
    name: &str,
    filter_subject: String,
    conflicting: &[&str],
    ack_wait: Duration,
) -> Result<PullConsumer, BrokerError> {
    let config = pull::Config {
        durable_name: Some(name.to_owned()),
        filter_subject,
        ack_policy: AckPolicy::Explicit,
        ack_wait,
        max_deliver: -1,
        max_ack_pending: MAX_ACK_PENDING,
        ..Default::default()
    };
    match stream.get_or_create_consumer(name, config.clone()).await {
        // A consumer made with another ack wait (an older wharf's, or a
        // route whose lease changed) is brought to this one: the server
        // updates a durable consumer in place when only such settings differ.
        Ok(consumer) if consumer.cached_info().config.ack_wait != ack_wait => {
            tracing::info!(
                consumer = name,
                was = ?consumer.cached_info().config.ack_wait,
                now = ?ack_wait,
                "updating the consumer's ack wait to the route's lease"
            );
            stream
                .create_consumer(config)
                .await
                .map_err(|e| declare_error(&format!("consumer {name} (updating its ack wait)"), e))
        }
        Ok(consumer) => Ok(consumer),
        Err(first) if !conflicting.is_empty() => {
            for other in conflicting {
                if stream.delete_consumer(other).await.is_ok() {
                    tracing::warn!(
                        consumer = other,
                        "deleted a consumer of the route's other priority layout"
                    );
                }
            }
            stream
                .get_or_create_consumer(name, config)
                .await
                .map_err(|e| declare_error(&format!("consumer {name} (first try: {first})"), e))
        }
        Err(e) => Err(declare_error(&format!("consumer {name}"), e)),
    }
}

/// Messages waiting in `queue`, not counting delivered, unsettled ones.
pub(crate) async fn depth(shared: &Shared, queue: &str) -> Result<u64, BrokerError> {
    naming::check_queue(queue)?;
    let Ok(stream) = shared.jetstream.get_stream(naming::stream(queue)).await else {
        return Ok(0);
    };
    let mut names = vec![CONSUMER.to_owned()];
    names.extend((0..=MAX_PRIORITY as u8).map(naming::lane_consumer));
    let mut found = false;
    let mut waiting = 0;
    for name in names {
        if let Ok(mut consumer) = stream.get_consumer::<pull::Config>(&name).await
            && let Ok(info) = consumer.info().await
        {
            found = true;
            waiting += info.num_pending;
        }
    }
    if found {
        Ok(waiting)
    } else {
        let mut stream = stream;
        let info = stream.info().await.map_err(|e| declare_error(queue, e))?;
        Ok(info.state.messages)
    }
}

/// Deletes `queue`'s stream, its dead-letter queue's and its delay stream.
pub(crate) async fn delete(shared: &Shared, queue: &str) -> Result<(), BrokerError> {
    naming::check_queue(queue)?;
    for name in [
        naming::stream(queue),
        naming::stream(&dead_letter_queue(queue)),
        naming::delay_stream(queue),
    ] {
        match shared.jetstream.delete_stream(&name).await {
            Ok(_) => {}
            Err(e) if e.to_string().contains("not found") => {}
            Err(e) => {
                return Err(BrokerError::new(
                    BrokerErrorKind::Declare,
                    format!("deleting stream {name} failed: {e}"),
                ));
            }
        }
    }
    Ok(())
}
