//! A route's stream taken as it is ([`QueueSpec::existing`](crate::transport::QueueSpec)):
//! it must exist, and offer what wharf needs of it. wharf changes nothing
//! on it; a start fails with a [`Config`](BrokerErrorKind::Config) error
//! listing each way it falls short.
//!
//! | wharf needs | because |
//! |---|---|
//! | its subjects capture `wharf.p0.<Q>` … `wharf.p9.<Q>` | publishes, retries, replays and hand-backs go there, on the lane of their priority |
//! | publishes acknowledged (not `no_ack`) | every publish waits for the stream's ack |
//! | not sealed, not a mirror | a sealed stream or a mirror takes no publishes |
//! | deletes allowed (not `deny_delete`) | an unreadable message is removed once dead-lettered (`quarantine`) |
//!
//! Settings wharf does not depend on (retention, limits, storage,
//! replicas) are left as the owner chose them; the consumers wharf adds
//! must meet what any consumer it reads through must
//! ([`consumer_differences`](super::events::consumer_differences)).

use super::Shared;
use super::events::consumer_differences;
use super::naming::{self, CONSUMER};
use super::topology::declare_error;
use crate::error::{BrokerError, BrokerErrorKind};
use crate::transport::lanes::MAX_PRIORITY;
use crate::transport::subscription::covers;
use async_nats::jetstream::stream;
use std::time::Duration;

/// The stream holding `queue`, taken as it is: it must exist and offer
/// what wharf needs.
pub(crate) async fn work_stream(shared: &Shared, queue: &str) -> Result<stream::Stream, BrokerError> {
    let name = naming::stream(queue);
    let stream = match shared.jetstream.get_stream(&name).await {
        Ok(stream) => stream,
        Err(e) if e.to_string().contains("not found") => {
            return Err(BrokerError::new(
                BrokerErrorKind::Config,
                format!(
                    "stream {name} (queue {queue:?}) does not exist, and the route takes it as it is \
                     (RouteOptions::existing_queue): create it with the subjects wharf.p0.{queue} … \
                     wharf.p9.{queue} (docs/wire-format.md), or drop existing_queue() and wharf declares it"
                ),
            ));
        }
        Err(e) => return Err(declare_error(&format!("stream {name} (queue {queue:?})"), e)),
    };
    let differences = stream_differences(&stream.cached_info().config, queue);
    if differences.is_empty() {
        return Ok(stream);
    }
    Err(BrokerError::new(
        BrokerErrorKind::Config,
        format!(
            "stream {name} (queue {queue:?}), taken as it is (RouteOptions::existing_queue), does not \
             offer what wharf needs: {}. Change it (`nats stream edit {name}`), or drop existing_queue() \
             and let wharf declare the queue under another name",
            differences.join("; ")
        ),
    ))
}

/// Checks the consumers wharf reads `queue` through (`wharf` and
/// `wharf-p<P>`), where they are on the adopted `stream` already (made by
/// anyone): each must work as wharf needs, with the filter wharf gives it
/// (none, or its lane's subject). Their ack wait is not checked: wharf
/// brings it to the route's lease.
pub(crate) async fn check_consumers(queue: &str, stream: &stream::Stream) -> Result<(), BrokerError> {
    let mut expected = vec![(CONSUMER.to_owned(), String::new())];
    expected.extend(
        (0..=MAX_PRIORITY as u8).map(|lane| (naming::lane_consumer(lane), naming::subject(queue, lane))),
    );
    for (name, filter) in expected {
        let info = match stream.consumer_info(&name).await {
            Ok(info) => info,
            Err(e) if e.to_string().contains("not found") => continue,
            Err(e) => return Err(declare_error(&format!("consumer {name} (queue {queue:?})"), e)),
        };
        let mut differences = consumer_differences(&info.config, ">", &[], Duration::ZERO);
        if info.config.filter_subject != filter {
            differences.push(format!(
                "it delivers {:?}, and wharf reads {} through it",
                info.config.filter_subject,
                if filter.is_empty() {
                    "the whole stream".to_owned()
                } else {
                    format!("{filter:?}")
                }
            ));
        }
        if !differences.is_empty() {
            let stream = &info.stream_name;
            return Err(BrokerError::new(
                BrokerErrorKind::Config,
                format!(
                    "queue {queue:?}: consumer {name:?} of stream {stream} does not work as wharf needs: {}. \
                     Delete it (`nats consumer rm {stream} {name}`) and wharf makes it as it needs",
                    differences.join("; "),
                ),
            ));
        }
    }
    Ok(())
}

/// How `config`, the stream of `queue`, falls short of what wharf needs:
/// one entry per shortfall, empty when it does not.
pub(crate) fn stream_differences(config: &stream::Config, queue: &str) -> Vec<String> {
    let mut differences = Vec::new();
    let missing: Vec<String> = naming::subjects(queue)
        .into_iter()
        .filter(|lane| !config.subjects.iter().any(|captured| covers(captured, lane)))
        .collect();
    if !missing.is_empty() {
        differences.push(format!(
            "it captures {:?}, not {missing:?}, where wharf publishes the queue's messages by priority",
            config.subjects
        ));
    }
    if config.no_ack {
        differences.push("it does not acknowledge publishes (no_ack), and wharf waits for each ack".into());
    }
    if config.sealed {
        differences.push("it is sealed, so it takes no publishes".into());
    }
    if let Some(mirror) = &config.mirror {
        differences.push(format!(
            "it mirrors stream {:?}, so it takes no publishes",
            mirror.name
        ));
    }
    if config.deny_delete {
        differences.push(
            "it denies deletes (deny_delete), and wharf removes an unreadable message once it is \
             dead-lettered"
                .into(),
        );
    }
    differences
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wharf_like(queue: &str) -> stream::Config {
        stream::Config {
            name: naming::stream(queue),
            subjects: naming::subjects(queue),
            ..Default::default()
        }
    }

    #[test]
    fn a_stream_as_wharf_declares_it_or_wider_has_no_differences() {
        assert!(stream_differences(&wharf_like("orders"), "orders").is_empty());
        let wider = stream::Config {
            subjects: vec!["wharf.*.orders".into()],
            retention: stream::RetentionPolicy::Limits,
            max_age: Duration::from_secs(3600),
            ..wharf_like("orders")
        };
        assert!(
            stream_differences(&wider, "orders").is_empty(),
            "retention and limits are the owner's"
        );
    }

    #[test]
    fn each_shortfall_is_listed() {
        let short = stream::Config {
            subjects: vec!["wharf.p0.orders".into()],
            no_ack: true,
            sealed: true,
            deny_delete: true,
            mirror: Some(stream::Source {
                name: "UPSTREAM".into(),
                ..Default::default()
            }),
            ..wharf_like("orders")
        };
        let differences = stream_differences(&short, "orders");
        assert_eq!(differences.len(), 5, "{differences:#?}");
        assert!(
            differences[0].contains("\"wharf.p1.orders\""),
            "{}",
            differences[0]
        );
        assert!(
            !differences[0].contains("\"wharf.p0.orders\", \"wharf.p1"),
            "{}",
            differences[0]
        );
        assert!(differences[1].contains("no_ack"));
        assert!(differences[2].contains("sealed"));
        assert!(differences[3].contains("mirrors stream \"UPSTREAM\""));
        assert!(differences[4].contains("deny_delete"));
    }
}
