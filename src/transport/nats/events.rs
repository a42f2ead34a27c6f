//! Events on the team's own subjects ([`Subscription`]): the stream that
//! captures them, declared or checked, and the route's work stream
//! sourcing the matching ones from it.
//!
//! | what | how |
//! |---|---|
//! | event stream, when wharf declares it | subjects: the pattern; limits retention, `max_age` of the subscription (7 days by default); the route's replicas and storage; 2 min duplicate window |
//! | event stream that exists | must capture the pattern and not be a work queue (each message would go to one reader only) |
//! | the route's work stream | sources the event stream, filtered by the pattern, from the event stream's next sequence when the source was added |
//!
//! The sourced messages keep their subjects (`orders.eu.created`) in the
//! route's stream, where its consumer (no filter) reads them with the rest.

use super::Shared;
use super::topology::{creation_error, declare_error, storage_type};
use crate::error::{BrokerError, BrokerErrorKind};
use crate::transport::subscription::{Subscription, covers};
use crate::transport::topology::{StreamStorage, Topology};
use async_nats::jetstream::stream::{self, RetentionPolicy, Source};
use std::time::Duration;

/// JetStream's de-duplication window for `Nats-Msg-Id` on event streams
/// wharf declares.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Declares or checks each subscription's event stream, then adds the
/// sources `work` lacks (existing sources are kept: never removed).
pub(crate) async fn subscribe(
    shared: &Shared,
    work: &stream::Stream,
    subscriptions: &[Subscription],
    topology: &Topology,
) -> Result<(), BrokerError> {
    let mut next = Vec::with_capacity(subscriptions.len());
    for subscription in subscriptions {
        next.push(event_stream(shared, subscription, topology).await?);
    }
    let mut config = work.cached_info().config.clone();
    let mut sources = config.sources.clone().unwrap_or_default();
    let mut added = false;
    for (subscription, next) in subscriptions.iter().zip(next) {
        let present = sources.iter().any(|source| {
            source.name == subscription.stream()
                && source.filter_subject.as_deref() == Some(subscription.subject())
        });
        if !present {
            sources.push(Source {
                name: subscription.stream().to_owned(),
                filter_subject: Some(subscription.subject().to_owned()),
                // Events from now on, as a new RabbitMQ binding gets them:
                // not the stream's history. By the stream's sequence, not a
                // time, so that no clock decides.
                start_sequence: Some(next),
                ..Default::default()
            });
            added = true;
        }
    }
    if added {
        let name = config.name.clone();
        config.sources = Some(sources);
        shared.jetstream.update_stream(&config).await.map_err(|e| {
            BrokerError::new(
                BrokerErrorKind::Declare,
                format!("adding the event sources of stream {name} failed: {e}"),
            )
        })?;
    }
    Ok(())
}

/// The stream capturing `subscription`'s subject: checked, or declared
/// when missing and not [`existing`](Subscription::existing). Returns the
/// sequence its next message will get.
async fn event_stream(
    shared: &Shared,
    subscription: &Subscription,
    topology: &Topology,
) -> Result<u64, BrokerError> {
    let name = subscription.stream();
    let what = format!("event stream {name}");
    let stream = match shared.jetstream.get_stream(name).await {
        Ok(stream) => stream,
        Err(e) if e.to_string().contains("not found") => {
            if subscription.takes_existing() {
                return Err(config_error(format!(
                    "{subscription}: stream {name:?} does not exist, and the subscription takes it as it \
                     is (Subscription::existing): create it first (its owner's service, `nats stream add \
                     {name} --subjects '{}'`), or drop .existing() and wharf declares it",
                    subscription.subject()
                )));
            }
            let config = stream::Config {
                name: name.to_owned(),
                subjects: vec![subscription.subject().to_owned()],
                retention: RetentionPolicy::Limits,
                max_age: subscription.event_max_age(),
                storage: storage_type(topology.stream_storage.unwrap_or(StreamStorage::File)),
                num_replicas: topology.stream_replicas.unwrap_or(1),
                duplicate_window: DUPLICATE_WINDOW.min(subscription.event_max_age()),
                ..Default::default()
            };
            // Another worker may create it meanwhile: get_or_create.
            shared
                .jetstream
                .get_or_create_stream(config.clone())
                .await
                .map_err(|e| match e.to_string() {
                    text if text.contains("overlap") => config_error(format!(
                        "{subscription}: another stream already captures subjects overlapping {:?} \
                         ({text}): subscribe through that stream (Subscription::new(<its name>, …))",
                        subscription.subject()
                    )),
                    _ => creation_error(&what, config.num_replicas, e),
                })?
        }
        Err(e) => return Err(declare_error(&what, e)),
    };
    let config = &stream.cached_info().config;
    if !config
        .subjects
        .iter()
        .any(|captured| covers(captured, subscription.subject()))
    {
        return Err(config_error(format!(
            "{subscription}: stream {name:?} captures {:?}, which does not cover {:?}: subscribe to \
             what it captures, or add the subject to it (`nats stream edit {name} --subjects …`)",
            config.subjects,
            subscription.subject()
        )));
    }
    if config.retention == RetentionPolicy::WorkQueue {
        return Err(config_error(format!(
            "{subscription}: stream {name:?} is a work queue (each message goes to one reader), so \
             several services cannot each get every event: give it limits or interest retention, \
             or consume it as a queue"
        )));
    }
    Ok(stream.cached_info().state.last_sequence.saturating_add(1))
}

fn config_error(message: String) -> BrokerError {
    BrokerError::new(BrokerErrorKind::Config, message)
}
