//! Declaring and deleting what a queue needs on JetStream: its stream (all
//! priority lanes), its dead-letter queue's stream, its delay stream and
//! their durable pull consumers. Declaring is idempotent.
//!
//! The three streams get the route's replicas and storage
//! ([`Topology`]). A stream that exists with other ones is an error naming
//! both and the way out; a setting nobody chose is not checked.

use super::Shared;
use super::naming::{self, CONSUMER, DELAY_CONSUMER};
use crate::error::{BrokerError, BrokerErrorKind};
use crate::transport::lanes::MAX_PRIORITY;
use crate::transport::topology::{StreamStorage, Topology};
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
pub(crate) const MAX_ACK_PENDING: i64 = 100_000;

pub(crate) fn declare_error(what: &str, e: impl std::fmt::Display) -> BrokerError {
    BrokerError::new(BrokerErrorKind::Declare, format!("declaring {what} failed: {e}"))
}

/// Declares `spec`'s stream, consumers, dead-letter queue and delay stream.
pub(crate) async fn declare(shared: &Shared, spec: &QueueSpec) -> Result<(), BrokerError> {
    naming::check_queue(&spec.name)?;
    spec.topology
        .check()
        .map_err(|e| BrokerError::new(BrokerErrorKind::Config, format!("queue {:?}: {e}", spec.name)))?;
    let topology = &spec.topology;
    if let Some(binding) = spec.bindings.first() {
        return Err(crate::transport::no_exchanges("nats", binding.exchange()));
    }
    crate::transport::subscription::check_route(
        &spec.name,
        &spec.subscriptions,
        spec.priority,
        spec.persistent,
    )?;
    if !spec.persistent {
        // A core NATS service: no stream may capture its subjects.
        let dead = work_stream(shared, &dead_letter_queue(&spec.name), topology).await?;
        consumer(&dead, CONSUMER, String::new(), &[], INTERNAL_ACK_WAIT).await?;
        return Ok(());
    }
    let work = route_stream(shared, spec).await?;
    if !spec.subscriptions.is_empty() {
        super::events::subscribe(shared, &work, spec).await?;
    }
    if spec.existing {
        super::adopted::check_consumers(&spec.name, &work).await?;
    }
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
    let dead = work_stream(shared, &dead_letter_queue(&spec.name), topology).await?;
    consumer(&dead, CONSUMER, String::new(), &[], INTERNAL_ACK_WAIT).await?;
    let delay = delay_stream(shared, &spec.name, topology).await?;
    consumer(&delay, DELAY_CONSUMER, String::new(), &[], INTERNAL_ACK_WAIT).await?;
    Ok(())
}

/// The stream holding `queue`, created when missing, as `topology` asks.
pub(crate) async fn work_stream(
    shared: &Shared,
    queue: &str,
    topology: &Topology,
) -> Result<stream::Stream, BrokerError> {
    let name = naming::stream(queue);
    let what = format!("stream {name} (queue {queue:?})");
    create_stream(shared, name, what, naming::subjects(queue), topology).await
}

/// The stream holding `spec`'s queue: taken as it is
/// ([`existing`](QueueSpec::existing)), else created when missing as its
/// topology asks.
pub(crate) async fn route_stream(shared: &Shared, spec: &QueueSpec) -> Result<stream::Stream, BrokerError> {
    match spec.existing {
        true => super::adopted::work_stream(shared, &spec.name).await,
        false => work_stream(shared, &spec.name, &spec.topology).await,
    }
}

/// The delay stream of `queue`, created when missing, as `topology` asks.
pub(crate) async fn delay_stream(
    shared: &Shared,
    queue: &str,
    topology: &Topology,
) -> Result<stream::Stream, BrokerError> {
    let name = naming::delay_stream(queue);
    let what = format!("delay stream {name} (queue {queue:?})");
    create_stream(shared, name, what, vec![naming::delay_subject(queue)], topology).await
}

/// JetStream's storage type for `storage`.
pub(crate) fn storage_type(storage: StreamStorage) -> StorageType {
    match storage {
        StreamStorage::File => StorageType::File,
        StreamStorage::Memory => StorageType::Memory,
    }
}

/// `file` or `memory`, as wharf names JetStream's storage types.
pub(crate) fn storage_name(storage: StorageType) -> &'static str {
    match storage {
        StorageType::File => "file",
        StorageType::Memory => "memory",
    }
}

/// Replicas as a stream's configuration holds them (0 is the server's
/// default, one).
pub(crate) fn replicas(configured: usize) -> usize {
    configured.max(1)
}

async fn create_stream(
    shared: &Shared,
    name: String,
    what: String,
    subjects: Vec<String>,
    topology: &Topology,
) -> Result<stream::Stream, BrokerError> {
    let config = stream::Config {
        name: name.clone(),
        subjects,
        retention: RetentionPolicy::WorkQueue,
        storage: storage_type(topology.stream_storage.unwrap_or(StreamStorage::File)),
        num_replicas: topology.stream_replicas.unwrap_or(1),
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    };
    let stream = shared
        .jetstream
        .get_or_create_stream(config.clone())
        .await
        .map_err(|e| creation_error(&what, config.num_replicas, e))?;
    let exists = &stream.cached_info().config;
    match diverges(
        exists.num_replicas,
        exists.storage,
        topology.stream_replicas,
        topology.stream_storage,
    ) {
        Some(difference) => Err(diverged(&what, &difference, &how_to_fix_stream(&name))),
        None => Ok(stream),
    }
}

/// How a stream that exists differs from what was asked (`None` for a
/// setting nobody chose): `"1 replica and file storage, and this asks
/// for 3 replicas"`; `None` when it does not.
pub(crate) fn diverges(
    replicas_now: usize,
    storage_now: StorageType,
    replicas: Option<usize>,
    storage: Option<StreamStorage>,
) -> Option<String> {
    let replicas_now = self::replicas(replicas_now);
    let mut asked = Vec::new();
    if let Some(replicas) = replicas.filter(|r| *r != replicas_now) {
        asked.push(plural(replicas, "replica"));
    }
    if let Some(storage) = storage.filter(|s| storage_type(*s) != storage_now) {
        asked.push(format!("{storage} storage"));
    }
    if asked.is_empty() {
        return None;
    }
    Some(format!(
        "{} and {} storage, and this asks for {}",
        plural(replicas_now, "replica"),
        storage_name(storage_now),
        asked.join(" and ")
    ))
}

fn plural(count: usize, what: &str) -> String {
    if count == 1 {
        format!("1 {what}")
    } else {
        format!("{count} {what}s")
    }
}

/// The [`Config`](BrokerErrorKind::Config) error of a stream (or KV
/// bucket) that exists otherwise than asked.
pub(crate) fn diverged(what: &str, difference: &str, fix: &str) -> BrokerError {
    BrokerError::new(
        BrokerErrorKind::Config,
        format!("{what} exists with {difference}. {fix}"),
    )
}

/// The way out for a route's stream `name`.
fn how_to_fix_stream(name: &str) -> String {
    format!(
        "Either ask for what exists (RouteOptions::stream_replicas / stream_storage, App::stream_replicas \
         / stream_storage, WHARF_STREAM_REPLICAS / WHARF_STREAM_STORAGE), or change the stream: replicas \
         can be changed in place on a cluster (`nats stream edit {name} --replicas N`; the queue's \
         dead-letter and delay streams too), storage cannot: drain the queue and delete its streams \
         (Broker::delete_queue, `nats stream rm {name}`), or move the messages to a new queue, and \
         start again"
    )
}

/// A stream or bucket that could not be created, with the likely reason
/// when JetStream has too few servers for its replicas: a server outside
/// a cluster says "replicas > 1 not supported in non-clustered mode"
/// (error code 10074), a cluster with too few JetStream servers (or too
/// little room on them) "insufficient resources" (10023).
pub(crate) fn creation_error(what: &str, replicas: usize, error: impl std::fmt::Display) -> BrokerError {
    let error = error.to_string();
    let too_few = ["insufficient resources", "not supported in non-clustered mode"];
    if replicas > 1 && too_few.iter().any(|reason| error.contains(reason)) {
        return BrokerError::new(
            BrokerErrorKind::Config,
            format!(
                "declaring {what} failed: {error}: {replicas} replicas need a JetStream cluster of at least \
                 {replicas} servers with room for them; on a single server ask for 1 replica"
            ),
        );
    }
    declare_error(what, error)
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

/// Messages waiting in `queue`, not counting delivered, unsettled ones;
/// with the events waiting in the consumers it reads through, where this
/// process declared it.
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
    let named = super::events::waiting_in_named(shared, queue).await;
    if found {
        Ok(waiting + named)
    } else {
        let mut stream = stream;
        let info = stream.info().await.map_err(|e| declare_error(queue, e))?;
        Ok(info.state.messages + named)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_was_asked_for_is_compared() {
        use StreamStorage::{File, Memory};
        assert_eq!(diverges(1, StorageType::File, None, None), None);
        assert_eq!(
            diverges(0, StorageType::File, Some(1), Some(File)),
            None,
            "0 is one"
        );
        assert_eq!(diverges(3, StorageType::Memory, None, Some(Memory)), None);
        assert_eq!(
            diverges(1, StorageType::File, Some(3), None).as_deref(),
            Some("1 replica and file storage, and this asks for 3 replicas")
        );
        assert_eq!(
            diverges(3, StorageType::File, Some(3), Some(Memory)).as_deref(),
            Some("3 replicas and file storage, and this asks for memory storage")
        );
        assert_eq!(
            diverges(1, StorageType::Memory, Some(5), Some(File)).as_deref(),
            Some("1 replica and memory storage, and this asks for 5 replicas and file storage")
        );
    }

    #[test]
    fn too_few_servers_for_the_replicas_is_said_so() {
        let error = creation_error(
            "stream S",
            3,
            "jetstream error: insufficient resources (code 503, error code 10023)",
        );
        assert_eq!(error.kind(), BrokerErrorKind::Config);
        assert!(
            error
                .to_string()
                .contains("3 replicas need a JetStream cluster of at least 3 servers"),
            "{error}"
        );
        let other = creation_error("stream S", 1, "jetstream error: something else");
        assert_eq!(other.kind(), BrokerErrorKind::Declare);
        assert_eq!(
            other.to_string(),
            "declaring stream S failed: jetstream error: something else"
        );
    }
}
