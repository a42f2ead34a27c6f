//! NATS subjects a route takes events from ([`Subscription`]): what a team
//! already publishes on `orders.eu.created` reaches a wharf handler.
//!
//! A JetStream stream of the team's (or one wharf declares) captures the
//! subjects; each subscribed route's own stream *sources* the matching
//! messages from it, or the route reads the stream through a durable
//! consumer the team names ([`Subscription::consumer`]). So each route
//! (each service) gets every matching event, the workers of one route
//! compete as before, and retries, dead letters and replays stay on the
//! route's own subjects, never going back through the event stream.

use crate::error::{BrokerError, BrokerErrorKind};
use std::fmt;
use std::time::Duration;

/// How long a stream that wharf declares for events keeps them, unless
/// [`Subscription::max_age`] says otherwise: 7 days.
pub const DEFAULT_EVENT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// One NATS subject pattern a route subscribes to, added with
/// [`RouteOptions::subscribe`](crate::RouteOptions::subscribe), and the
/// JetStream stream that captures it.
///
/// The stream is declared when missing (subjects: the pattern; limits
/// retention for [`max_age`](Subscription::max_age)), unless the
/// subscription is [`existing`](Subscription::existing). A stream that
/// exists must capture the pattern and keep its messages for every
/// reader (not a work queue); otherwise the start fails with a
/// [`Config`](BrokerErrorKind::Config) error saying what it captures.
///
/// Instead of sourcing the events into its own stream, a route can read
/// the event stream through a durable pull consumer named for the service
/// ([`consumer`](Subscription::consumer)): the team's own, or one wharf
/// creates.
///
/// ```
/// use wharf::Subscription;
/// let created = Subscription::new("ORDERS", "orders.*.created");
/// let everything = Subscription::new("ORDERS", "orders.>").existing();
/// let theirs = Subscription::new("ORDERS", "orders.>").consumer("billing").existing();
/// # let _ = (created, everything, theirs);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Subscription {
    /// Empty for a core subscription.
    stream: String,
    subject: String,
    existing: bool,
    max_age: Duration,
    core: bool,
    /// The durable consumer the route reads the stream through, if any.
    consumer: Option<String>,
}

impl Subscription {
    /// Events on `subject` (a pattern: `*` one token, `>` the rest, last),
    /// captured by the JetStream stream `stream`.
    pub fn new(stream: impl Into<String>, subject: impl Into<String>) -> Self {
        Subscription {
            stream: stream.into(),
            subject: subject.into(),
            existing: false,
            max_age: DEFAULT_EVENT_MAX_AGE,
            core: false,
            consumer: None,
        }
    }

    /// Events on `subject` taken live from core NATS, with no stream, by a
    /// core NATS service ([`persistent(false)`](crate::RouteOptions::persistent)):
    /// each subscribed service gets every event published while one of its
    /// workers runs, and its workers share them; nothing is stored, so
    /// what is published while none runs is lost, as for any core NATS
    /// subscriber.
    pub fn core(subject: impl Into<String>) -> Self {
        Subscription {
            core: true,
            ..Subscription::new(String::new(), subject)
        }
    }

    /// Whether the events are taken live from core NATS
    /// ([`core`](Subscription::core)), not through a stream.
    pub fn is_core(&self) -> bool {
        self.core
    }

    /// Reads the stream through the durable pull consumer `name` (one per
    /// consuming service: `billing`, `shipping`) instead of sourcing the
    /// events into the route's own stream. The workers of the route share
    /// the consumer; each service naming its own gets every event.
    ///
    /// wharf creates the consumer when it is missing (filtered by the
    /// pattern, explicit acks, the route's lease as ack wait, unlimited
    /// deliveries, events from then on); with
    /// [`existing`](Subscription::existing) the stream and the consumer
    /// must both exist. Either way a consumer that exists must meet what
    /// wharf needs (a pull consumer, explicit acks, unlimited deliveries,
    /// an ack wait no shorter than the lease, delivering only what the
    /// pattern matches); otherwise the start fails with a
    /// [`Config`](BrokerErrorKind::Config) error listing each difference.
    /// The stream may be a work queue here: its one consumer takes each
    /// event once.
    pub fn consumer(mut self, name: impl Into<String>) -> Self {
        self.consumer = Some(name.into());
        self
    }

    /// The durable consumer the route reads through
    /// ([`consumer`](Subscription::consumer)), if any.
    pub fn consumer_name(&self) -> Option<&str> {
        self.consumer.as_deref()
    }

    /// Requires the stream (and the [`consumer`](Subscription::consumer),
    /// if named) to exist instead of declaring it: for a stream another
    /// team owns.
    pub fn existing(mut self) -> Self {
        self.existing = true;
        self
    }

    /// How long the stream keeps events when wharf declares it (default
    /// [`DEFAULT_EVENT_MAX_AGE`]); an existing stream is left as it is.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// The stream's name (empty for a [`core`](Subscription::core) one).
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The subject pattern.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Whether the stream is taken as it is (never declared).
    pub fn takes_existing(&self) -> bool {
        self.existing
    }

    /// How long a stream wharf declares keeps events.
    pub fn event_max_age(&self) -> Duration {
        self.max_age
    }

    /// Checks what NATS would refuse, and subjects that are wharf's own,
    /// before anything is declared.
    pub(crate) fn check(&self) -> Result<(), BrokerError> {
        let refuse = |why: String| {
            Err(BrokerError::new(
                BrokerErrorKind::Config,
                format!(
                    "subscription to {:?} in stream {:?}: {why}",
                    self.subject, self.stream
                ),
            ))
        };
        let stream_ok = self.core
            || !self.stream.is_empty()
                && self
                    .stream
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !stream_ok {
            return refuse("a stream name is ASCII letters, digits, '_' and '-'".into());
        }
        if let Some(consumer) = &self.consumer {
            if self.core {
                return refuse("a core subscription has no stream, so no consumer to read through".into());
            }
            let name_ok = !consumer.is_empty()
                && consumer
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !name_ok {
                return refuse(format!(
                    "consumer {consumer:?}: a consumer name is ASCII letters, digits, '_' and '-'"
                ));
            }
        }
        match subject_problem(&self.subject, true) {
            Some(why) => refuse(why),
            None => Ok(()),
        }
    }
}

/// Checks a route's subscriptions together: each one, and that they can
/// work on the route (not with priority lanes or as a core NATS service;
/// one per stream, as a stream sources another once per filter and
/// nats-server before 2.10 keeps only one of them).
pub(crate) fn check_route(
    queue: &str,
    subscriptions: &[Subscription],
    priority: bool,
    persistent: bool,
) -> Result<(), BrokerError> {
    let refused = |why: String| BrokerError::new(BrokerErrorKind::Config, format!("queue {queue:?}: {why}"));
    for (i, subscription) in subscriptions.iter().enumerate() {
        subscription.check().map_err(|e| refused(e.to_string()))?;
        if subscription.core {
            if persistent {
                return Err(refused(format!(
                    "{subscription}: a core subscription takes events live, for a core NATS service \
                     (persistent(false)); a JetStream route subscribes through a stream \
                     (Subscription::new(stream, subject))"
                )));
            }
            continue;
        }
        if priority || !persistent {
            return Err(refused(format!(
                "{subscription}: a route subscribed through a stream takes events through its own \
                 stream, so it cannot have priority lanes or be a core NATS service \
                 (persistent(false): subscribe it with Subscription::core)"
            )));
        }
        if subscription.consumer.is_some() {
            if let Some(other) = subscriptions[..i]
                .iter()
                .find(|o| o.stream == subscription.stream && o.consumer == subscription.consumer)
            {
                return Err(refused(format!(
                    "{other} and {subscription}: one consumer delivers to one subscription"
                )));
            }
            continue;
        }
        if let Some(other) = subscriptions[..i]
            .iter()
            .find(|o| !o.core && o.consumer.is_none() && o.stream == subscription.stream)
        {
            return Err(refused(format!(
                "{other} and {subscription}: a route subscribes once per stream (nats-server before \
                 2.10 keeps one filter per sourced stream): subscribe to one pattern covering both"
            )));
        }
    }
    Ok(())
}

impl fmt::Display for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.core {
            true => write!(f, "core NATS subject {:?}", self.subject)?,
            false => write!(f, "subject {:?} in stream {:?}", self.subject, self.stream)?,
        }
        match &self.consumer {
            Some(consumer) => write!(f, " through consumer {consumer:?}"),
            None => Ok(()),
        }
    }
}

/// What is wrong with `subject` as an event subject (a pattern when
/// `wildcards`), or `None`: NATS's token rules, and subjects that are
/// wharf's or the server's own.
pub(crate) fn subject_problem(subject: &str, wildcards: bool) -> Option<String> {
    let tokens: Vec<&str> = subject.split('.').collect();
    let last = tokens.len() - 1;
    let token_ok = |(i, token): (usize, &&str)| {
        !token.is_empty()
            && ((wildcards && (*token == "*" || (*token == ">" && i == last)))
                || token
                    .bytes()
                    .all(|b| b > b' ' && b != b'*' && b != b'>' && b != 0x7f))
    };
    if !tokens.iter().enumerate().all(token_ok) {
        return Some(if wildcards {
            "a subject is dot-separated tokens without spaces; '*' is a whole token, '>' the last one".into()
        } else {
            "a subject is dot-separated tokens without spaces or wildcards".into()
        });
    }
    if matches!(tokens[0], "*" | ">") {
        return Some(
            "a pattern starting with a wildcard would take wharf's and the server's own subjects too: \
             start it with a token of your own (orders.>)"
                .into(),
        );
    }
    let reserved = ["wharf", "wharf-delay", "_INBOX", "$JS", "$KV", "$SYS"];
    reserved.contains(&tokens[0]).then(|| {
        format!(
            "subjects starting with {:?} are wharf's or the server's own",
            tokens[0]
        )
    })
}

/// Whether a stream capturing `captured` captures every subject `pattern`
/// matches (NATS wildcards: `*` one token, `>` one or more, last).
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub(crate) fn covers(captured: &str, pattern: &str) -> bool {
    let captured: Vec<&str> = captured.split('.').collect();
    let pattern: Vec<&str> = pattern.split('.').collect();
    for (i, token) in captured.iter().enumerate() {
        let Some(wanted) = pattern.get(i) else {
            return false;
        };
        match *token {
            ">" => return true,
            "*" if *wanted != ">" => {}
            literal if literal == *wanted => {}
            _ => return false,
        }
    }
    captured.len() == pattern.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_covers_the_subjects_its_own_subjects_match() {
        assert!(covers("orders.>", "orders.*.created"));
        assert!(covers("orders.>", "orders.>"));
        assert!(covers("orders.*.created", "orders.eu.created"));
        assert!(covers("orders.*.created", "orders.*.created"));
        assert!(covers(">", "anything.at.all"));
        assert!(!covers("orders.*.created", "orders.>"));
        assert!(!covers("orders.eu.created", "orders.*.created"));
        assert!(!covers("orders.*", "orders.eu.created"));
        assert!(!covers("orders.*.created", "orders.eu"));
        assert!(!covers("payments.>", "orders.created"));
        assert!(!covers("orders.>", "orders"));
    }

    #[test]
    fn what_nats_would_refuse_is_refused_first() {
        assert!(Subscription::new("ORDERS", "orders.*.created").check().is_ok());
        assert!(Subscription::new("ORDERS", "orders.>").check().is_ok());
        let refused = |s: Subscription| s.check().unwrap_err().to_string();
        assert!(refused(Subscription::new("OR.DERS", "orders.>")).contains("stream name"));
        assert!(refused(Subscription::new("ORDERS", "orders.>.created")).contains("'>' the last"));
        assert!(refused(Subscription::new("ORDERS", "orders..created")).contains("tokens"));
        assert!(refused(Subscription::new("ORDERS", "orders.eu created")).contains("tokens"));
        assert!(refused(Subscription::new("ORDERS", "orders.e*")).contains("tokens"));
        assert!(refused(Subscription::new("ORDERS", "wharf.p0.q")).contains("wharf's"));
        assert!(refused(Subscription::new("ORDERS", ">")).contains("wildcard"));
        assert!(refused(Subscription::new("ORDERS", "*.p0.*")).contains("wildcard"));
        assert!(
            refused(Subscription::new("ORDERS", "orders.>").consumer("bill.ing")).contains("consumer name")
        );
        assert!(refused(Subscription::core("orders.>").consumer("billing")).contains("no stream"));
        assert!(
            Subscription::new("ORDERS", "orders.>")
                .consumer("billing")
                .check()
                .is_ok()
        );
    }

    #[test]
    fn a_route_reads_a_stream_through_several_consumers_but_sources_it_once() {
        let check = |subscriptions: &[Subscription]| check_route("q", subscriptions, false, true);
        let sourced = |pattern: &str| Subscription::new("ORDERS", pattern);
        let through = |pattern: &str, consumer: &str| sourced(pattern).consumer(consumer);
        assert!(check(&[sourced("orders.>"), through("orders.eu.>", "eu")]).is_ok());
        assert!(check(&[through("orders.eu.>", "eu"), through("orders.us.>", "us")]).is_ok());
        let twice = check(&[sourced("orders.eu.>"), sourced("orders.us.>")]).unwrap_err();
        assert!(twice.to_string().contains("once per stream"), "{twice}");
        let shared = check(&[through("orders.eu.>", "eu"), through("orders.us.>", "eu")]).unwrap_err();
        assert!(shared.to_string().contains("one consumer delivers"), "{shared}");
        assert_eq!(
            through("orders.>", "billing").to_string(),
            "subject \"orders.>\" in stream \"ORDERS\" through consumer \"billing\""
        );
    }
}
