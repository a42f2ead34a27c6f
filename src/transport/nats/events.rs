//! Events on the team's own subjects ([`Subscription`]): the stream that
//! captures them, declared or checked, and the route's work stream
//! sourcing the matching ones from it.
//!
//! | what | how |
//! |---|---|
//! | event stream, when wharf declares it | subjects: the pattern; limits retention, `max_age` of the subscription (7 days by default); the route's replicas and storage; 2 min duplicate window |
//! | event stream that exists | must capture the pattern and not be a work queue (each message would go to one reader only) |
//! | the route's work stream | sources the event stream, filtered by the pattern, from the event stream's next sequence when the source was added |
//! | a consumer the subscription names ([`Subscription::consumer`]) | instead of the source: read by the route's workers beside its own consumer; created when missing (pull, explicit acks, the pattern as filter, the route's lease as ack wait, unlimited deliveries, new events only, or all on a work queue), checked when it exists |
//!
//! The sourced messages keep their subjects (`orders.eu.created`) in the
//! route's stream, where its consumer (no filter) reads them with the rest.
//! A named consumer's deliveries are the route's as any other: retries are
//! redelivered by that consumer, dead letters and hand-backs go to the
//! route's own subjects.

use super::Shared;
use super::topology::{MAX_ACK_PENDING, creation_error, declare_error, storage_type};
use crate::error::{BrokerError, BrokerErrorKind};
use crate::transport::QueueSpec;
use crate::transport::subscription::{Subscription, covers};
use crate::transport::topology::{StreamStorage, Topology};
use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::{self, RetentionPolicy, Source};
use std::time::Duration;

/// JetStream's de-duplication window for `Nats-Msg-Id` on event streams
/// wharf declares.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// The description of a consumer wharf made for a subscription: only such
/// a consumer is ever changed by wharf (its ack wait, to the lease).
const MADE_BY_WHARF: &str = "made by wharf for a subscription";

/// Declares or checks each subscription's event stream, and its named
/// consumer if it has one; then adds the sources `work` lacks for the
/// others (existing sources are kept: never removed).
pub(crate) async fn subscribe(
    shared: &Shared,
    work: &stream::Stream,
    spec: &QueueSpec,
) -> Result<(), BrokerError> {
    let mut sourced = Vec::with_capacity(spec.subscriptions.len());
    for subscription in &spec.subscriptions {
        let stream = event_stream(shared, subscription, &spec.topology).await?;
        match subscription.consumer_name() {
            Some(name) => {
                named_consumer(&stream, subscription, name, spec.lease).await?;
                shared
                    .named_consumers
                    .record(&spec.name, subscription.stream(), name);
            }
            None => sourced.push((
                subscription,
                stream.cached_info().state.last_sequence.saturating_add(1),
            )),
        }
    }
    let mut config = work.cached_info().config.clone();
    let mut sources = config.sources.clone().unwrap_or_default();
    let mut added = false;
    for (subscription, next) in sourced {
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

/// The consumers the routes declared in this process read through, by
/// queue: (stream, consumer).
#[derive(Default)]
pub(crate) struct NamedConsumers(std::sync::Mutex<std::collections::HashMap<String, Vec<(String, String)>>>);

impl NamedConsumers {
    fn record(&self, queue: &str, stream: &str, consumer: &str) {
        let mut named = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let consumers = named.entry(queue.to_owned()).or_default();
        let entry = (stream.to_owned(), consumer.to_owned());
        if !consumers.contains(&entry) {
            consumers.push(entry);
        }
    }

    fn of(&self, queue: &str) -> Vec<(String, String)> {
        let named = self.0.lock().unwrap_or_else(|e| e.into_inner());
        named.get(queue).cloned().unwrap_or_default()
    }
}

/// The events waiting for `queue` in the consumers it reads through (not
/// yet delivered), as far as this process declared them.
pub(crate) async fn waiting_in_named(shared: &Shared, queue: &str) -> u64 {
    let mut waiting = 0;
    for (stream, consumer) in shared.named_consumers.of(queue) {
        if let Ok(stream) = shared.jetstream.get_stream_no_info(&stream).await
            && let Ok(info) = stream.consumer_info(&consumer).await
        {
            waiting += info.num_pending;
        }
    }
    waiting
}

/// The consumers `spec`'s subscriptions name, declared already
/// ([`subscribe`]), to read beside the route's own.
pub(crate) async fn named_consumers(
    shared: &Shared,
    spec: &QueueSpec,
) -> Result<Vec<PullConsumer>, BrokerError> {
    let mut consumers = Vec::new();
    for subscription in &spec.subscriptions {
        let Some(name) = subscription.consumer_name() else {
            continue;
        };
        let what = || format!("consumer {name:?} of stream {:?}", subscription.stream());
        let stream = shared
            .jetstream
            .get_stream(subscription.stream())
            .await
            .map_err(|e| declare_error(&what(), e))?;
        let consumer = stream
            .get_consumer(name)
            .await
            .map_err(|e| declare_error(&what(), e))?;
        consumers.push(consumer);
    }
    Ok(consumers)
}

/// Checks the consumer `name` of `stream`, creating it when it is missing
/// and the subscription does not take it as it is.
async fn named_consumer(
    stream: &stream::Stream,
    subscription: &Subscription,
    name: &str,
    lease: Duration,
) -> Result<(), BrokerError> {
    let what = format!("consumer {name:?} of stream {:?}", subscription.stream());
    let wanted = pull::Config {
        durable_name: Some(name.to_owned()),
        description: Some(MADE_BY_WHARF.to_owned()),
        filter_subject: subscription.subject().to_owned(),
        ack_policy: AckPolicy::Explicit,
        ack_wait: lease,
        max_deliver: -1,
        max_ack_pending: MAX_ACK_PENDING,
        // Events from now on, as for a source; a work queue's consumer
        // must take all there is (the server insists), which on a work
        // queue is what nobody has taken yet.
        deliver_policy: match stream.cached_info().config.retention {
            RetentionPolicy::WorkQueue => DeliverPolicy::All,
            _ => DeliverPolicy::New,
        },
        ..Default::default()
    };
    let mut info = match stream.consumer_info(name).await {
        Ok(info) => info,
        Err(e) if e.to_string().contains("not found") => {
            if subscription.takes_existing() {
                return Err(config_error(format!(
                    "{subscription}: consumer {name:?} does not exist, and the subscription takes it as it \
                     is (Subscription::existing): create it first (`nats consumer add {} {name} --pull \
                     --ack explicit --filter '{}' --max-deliver=-1 --wait {}s`), or drop .existing() and \
                     wharf creates it",
                    subscription.stream(),
                    subscription.subject(),
                    lease.as_secs().max(1),
                )));
            }
            // Another worker may create it meanwhile: get_or_create.
            let consumer: PullConsumer = stream
                .get_or_create_consumer(name, wanted.clone())
                .await
                .map_err(|e| declare_error(&what, e))?;
            consumer.cached_info().clone()
        }
        Err(e) => return Err(declare_error(&what, e)),
    };
    if info.config.description.as_deref() == Some(MADE_BY_WHARF) && info.config.ack_wait != lease {
        // One wharf made, for another lease: the server updates a durable
        // consumer's ack wait in place. Anyone else's is only checked.
        let updated = stream
            .create_consumer(wanted)
            .await
            .map_err(|e| declare_error(&format!("{what} (bringing its ack wait to the lease)"), e))?;
        info = updated.cached_info().clone();
    }
    let captured = &stream.cached_info().config.subjects;
    let differences = consumer_differences(&info.config, subscription.subject(), captured, lease);
    if differences.is_empty() {
        return Ok(());
    }
    Err(config_error(format!(
        "{subscription}: consumer {name:?} does not work as wharf needs: {}. Change it (`nats consumer \
         edit {} {name}`, or delete it and wharf creates it), or name another consumer",
        differences.join("; "),
        subscription.stream(),
    )))
}

/// How an existing consumer's `config` differs from what wharf needs to
/// read `pattern` through it on a route with `lease`, one entry per
/// difference (empty when it does not). `captured` are its stream's
/// subjects: what a consumer without a filter delivers.
pub(crate) fn consumer_differences(
    config: &consumer::Config,
    pattern: &str,
    captured: &[String],
    lease: Duration,
) -> Vec<String> {
    let mut differences = Vec::new();
    if let Some(subject) = &config.deliver_subject {
        differences.push(format!(
            "it is a push consumer (delivering to {subject:?}), and wharf pulls"
        ));
    }
    if config.ack_policy != AckPolicy::Explicit {
        let policy = match config.ack_policy {
            AckPolicy::None => "none",
            AckPolicy::All => "all",
            AckPolicy::Explicit => "explicit",
        };
        differences.push(format!(
            "its ack policy is {policy}, and wharf acknowledges each message by itself (explicit): \
             otherwise a message being handled is lost when its worker dies"
        ));
    }
    if config.max_deliver > 0 {
        differences.push(format!(
            "it delivers a message at most {} times, and wharf needs unlimited deliveries (-1): the \
             route's max_attempts decides when a message is dead-lettered; past the limit JetStream \
             would drop it silently",
            config.max_deliver
        ));
    }
    if config.headers_only {
        differences.push(
            "it delivers headers only (headers_only), and handlers need the bodies: each event \
             would be handled empty and acknowledged"
                .into(),
        );
    }
    if !config.backoff.is_empty() {
        differences.push(format!(
            "it redelivers by its backoff list {:?}, not by its ack wait, and wharf keeps a message \
             being handled by the ack wait (and retries by its own backoff)",
            config.backoff
        ));
    }
    if config.max_batch > 0 || config.max_bytes > 0 || !config.max_expires.is_zero() {
        differences.push(format!(
            "it limits pull requests (max_batch {}, max_bytes {}, max_expires {:?}), and wharf \
             pulls up to its prefetch, waiting up to 30 s: the server would refuse its requests",
            config.max_batch, config.max_bytes, config.max_expires
        ));
    }
    if !config.inactive_threshold.is_zero() {
        differences.push(format!(
            "the server deletes it after {:?} without readers (inactive_threshold), and the events \
             published while no worker runs would be lost with it",
            config.inactive_threshold
        ));
    }
    if config.ack_wait < lease {
        differences.push(format!(
            "its ack wait is {:?}, shorter than the route's lease {lease:?} (RouteOptions::lease): a \
             message still being handled would be delivered again",
            config.ack_wait
        ));
    }
    let delivers: Vec<&str> = match config.filter_subject.as_str() {
        "" => captured.iter().map(String::as_str).collect(),
        filter => vec![filter],
    };
    let beyond: Vec<&str> = delivers
        .into_iter()
        .filter(|subject| !covers(pattern, subject))
        .collect();
    if !beyond.is_empty() {
        differences.push(format!(
            "it delivers {beyond:?}, beyond the subscription's pattern {pattern:?}"
        ));
    }
    differences
}

/// The stream capturing `subscription`'s subject: checked, or declared
/// when missing and not [`existing`](Subscription::existing).
async fn event_stream(
    shared: &Shared,
    subscription: &Subscription,
    topology: &Topology,
) -> Result<stream::Stream, BrokerError> {
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
    if config.retention == RetentionPolicy::WorkQueue && subscription.consumer_name().is_none() {
        return Err(config_error(format!(
            "{subscription}: stream {name:?} is a work queue (each message goes to one reader), so \
             several services cannot each get every event: give it limits or interest retention, \
             or read it through one consumer (Subscription::consumer)"
        )));
    }
    Ok(stream)
}

fn config_error(message: String) -> BrokerError {
    BrokerError::new(BrokerErrorKind::Config, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wharf_like(filter: &str) -> consumer::Config {
        consumer::Config {
            durable_name: Some("billing".into()),
            filter_subject: filter.into(),
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_deliver: -1,
            ..Default::default()
        }
    }

    #[test]
    fn a_consumer_that_works_as_wharf_needs_has_no_differences() {
        let captured = ["orders.>".to_owned()];
        let lease = Duration::from_secs(30);
        let differences =
            |config: &consumer::Config| consumer_differences(config, "orders.>", &captured, lease);
        assert!(differences(&wharf_like("orders.>")).is_empty());
        assert!(
            differences(&wharf_like("orders.eu.created")).is_empty(),
            "a narrower filter"
        );
        assert!(
            differences(&wharf_like("")).is_empty(),
            "no filter: the stream's subjects"
        );
        let longer = consumer::Config {
            ack_wait: Duration::from_secs(60),
            max_deliver: 0,
            ..wharf_like("orders.>")
        };
        assert!(
            differences(&longer).is_empty(),
            "a longer ack wait; 0 is unlimited"
        );
    }

    #[test]
    fn each_difference_from_what_wharf_needs_is_listed() {
        let captured = ["orders.>".to_owned(), "payments.>".to_owned()];
        let lease = Duration::from_secs(30);
        let everything_wrong = consumer::Config {
            deliver_subject: Some("deliver.billing".into()),
            ack_policy: AckPolicy::None,
            max_deliver: 5,
            ack_wait: Duration::from_secs(5),
            ..wharf_like("")
        };
        let differences = consumer_differences(&everything_wrong, "orders.>", &captured, lease);
        assert_eq!(differences.len(), 5, "{differences:#?}");
        assert!(differences[0].contains("push consumer"), "{}", differences[0]);
        assert!(
            differences[1].contains("ack policy is none"),
            "{}",
            differences[1]
        );
        assert!(differences[2].contains("at most 5 times"), "{}", differences[2]);
        assert!(
            differences[3].contains("ack wait is 5s, shorter than the route's lease 30s"),
            "{}",
            differences[3]
        );
        assert!(
            differences[4].contains("[\"payments.>\"], beyond"),
            "{}",
            differences[4]
        );
        let all = consumer::Config {
            ack_policy: AckPolicy::All,
            ..wharf_like("orders.eu.created")
        };
        let differences = consumer_differences(&all, "orders.*.paid", &captured, lease);
        assert_eq!(differences.len(), 2, "{differences:#?}");
        assert!(differences[0].contains("ack policy is all"));
        assert!(differences[1].contains("orders.eu.created"));
    }
}
