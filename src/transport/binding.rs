//! Exchanges a route's queue is bound to (RabbitMQ): events that a team
//! already publishes to an exchange reach the route's queue as well as
//! what is published to the queue itself.
//!
//! Each route keeps its own queue; binding it to an exchange adds a
//! source. Two routes (of two services) bound to one exchange each get
//! every matching event; several workers of one route compete on its
//! queue as before. Retries, dead letters and replays go to the route's
//! queue by its name, never through the exchange again, so no other
//! service sees them.

use crate::error::{BrokerError, BrokerErrorKind};
use std::fmt;

/// The type of a RabbitMQ exchange: how it picks the queues a message
/// goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExchangeKind {
    /// To the queues bound with a routing key equal to the message's.
    Direct,
    /// To the queues bound with a pattern matching the message's routing
    /// key: dot-separated words, `*` for exactly one word, `#` for zero or
    /// more (`orders.*.created`, `orders.#`).
    Topic,
    /// To every bound queue, whatever the routing key.
    Fanout,
    /// To the queues whose binding's headers match the message's headers
    /// ([`HeadersMatch`]); the routing key is ignored.
    Headers,
}

impl ExchangeKind {
    /// `direct`, `topic`, `fanout` or `headers`, as RabbitMQ names it.
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Headers => "headers",
        }
    }
}

impl fmt::Display for ExchangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a binding to a headers exchange matches a message's headers
/// (RabbitMQ's `x-match`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HeadersMatch {
    /// Every header of the binding, with its value (`x-match: all`).
    All,
    /// At least one of them (`x-match: any`).
    Any,
}

impl HeadersMatch {
    /// `all` or `any`.
    pub fn as_str(self) -> &'static str {
        match self {
            HeadersMatch::All => "all",
            HeadersMatch::Any => "any",
        }
    }
}

/// One binding of a route's queue to a RabbitMQ exchange, added with
/// [`RouteOptions::bind`](crate::RouteOptions::bind).
///
/// The exchange is declared durable, of its kind, unless it is
/// [`existing`](Binding::existing) (then it must exist already, and the
/// start fails with a [`Config`](BrokerErrorKind::Config) error if it does
/// not). Exchanges named `amq.…` are RabbitMQ's own and always taken as
/// they are.
///
/// ```
/// use wharf::{Binding, HeadersMatch};
/// let created = Binding::topic("orders", "orders.*.created");
/// let audit = Binding::fanout("audit").existing();
/// let eu = Binding::headers("orders-by-region", HeadersMatch::All, [("region", "eu")]);
/// # let _ = (created, audit, eu);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Binding {
    exchange: String,
    kind: ExchangeKind,
    routing_key: String,
    headers: Vec<(String, String)>,
    matching: HeadersMatch,
    existing: bool,
}

impl Binding {
    fn new(exchange: impl Into<String>, kind: ExchangeKind, routing_key: impl Into<String>) -> Self {
        Binding {
            exchange: exchange.into(),
            kind,
            routing_key: routing_key.into(),
            headers: Vec::new(),
            matching: HeadersMatch::All,
            existing: false,
        }
    }

    /// To a direct exchange: messages published with exactly
    /// `routing_key`.
    pub fn direct(exchange: impl Into<String>, routing_key: impl Into<String>) -> Self {
        Binding::new(exchange, ExchangeKind::Direct, routing_key)
    }

    /// To a topic exchange: messages whose routing key matches `pattern`
    /// (`*` one word, `#` zero or more: `orders.*.created`, `orders.#`).
    pub fn topic(exchange: impl Into<String>, pattern: impl Into<String>) -> Self {
        Binding::new(exchange, ExchangeKind::Topic, pattern)
    }

    /// To a fanout exchange: every message published to it.
    pub fn fanout(exchange: impl Into<String>) -> Self {
        Binding::new(exchange, ExchangeKind::Fanout, "")
    }

    /// To a headers exchange: messages whose headers hold `headers` (every
    /// one of them, or any one, as `matching` says). The values are
    /// compared as strings, as wharf writes headers, except `sequence` and
    /// `wharf-attempt`, which wharf writes as integers: a binding on them
    /// never matches a message wharf published.
    pub fn headers<K, V>(
        exchange: impl Into<String>,
        matching: HeadersMatch,
        headers: impl IntoIterator<Item = (K, V)>,
    ) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        let mut binding = Binding::new(exchange, ExchangeKind::Headers, "");
        binding.matching = matching;
        binding.headers = headers.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        binding
    }

    /// Requires the exchange to exist instead of declaring it: for an
    /// exchange another team owns. A missing exchange fails the start with
    /// a [`Config`](BrokerErrorKind::Config) error; its kind is not checked
    /// (RabbitMQ's passive declare only says whether it exists), so bind
    /// with the kind it has.
    pub fn existing(mut self) -> Self {
        self.existing = true;
        self
    }

    /// The exchange's name.
    pub fn exchange(&self) -> &str {
        &self.exchange
    }

    /// The exchange's kind.
    pub fn kind(&self) -> ExchangeKind {
        self.kind
    }

    /// The routing key or pattern bound (empty for fanout and headers).
    pub fn routing_key(&self) -> &str {
        &self.routing_key
    }

    /// The headers a headers binding matches, and how.
    pub fn headers_matched(&self) -> (HeadersMatch, &[(String, String)]) {
        (self.matching, &self.headers)
    }

    /// Whether the exchange is taken as it is (never declared): asked for
    /// with [`existing`](Binding::existing), or one of RabbitMQ's own
    /// `amq.…` exchanges.
    pub fn takes_existing(&self) -> bool {
        self.existing || self.exchange.starts_with("amq.")
    }

    /// Checks what RabbitMQ would refuse, before anything is declared.
    pub(crate) fn check(&self) -> Result<(), BrokerError> {
        let refuse = |why: String| {
            Err(BrokerError::new(
                BrokerErrorKind::Config,
                format!("binding to exchange {:?}: {why}", self.exchange),
            ))
        };
        if self.exchange.is_empty() {
            return refuse(
                "the default exchange (\"\") routes by queue name and takes no bindings: \
                 publish to the queue itself"
                    .into(),
            );
        }
        if self.exchange.len() > 255 {
            return refuse(format!(
                "the name is {} bytes long; RabbitMQ allows 255",
                self.exchange.len()
            ));
        }
        if self.routing_key.len() > 255 {
            return refuse(format!(
                "the routing key is {} bytes long; RabbitMQ allows 255",
                self.routing_key.len()
            ));
        }
        if self.kind == ExchangeKind::Headers && self.headers.is_empty() {
            return refuse("a headers binding needs at least one header to match".into());
        }
        if let Some((name, _)) = self.headers.iter().find(|(name, _)| name.starts_with("x-")) {
            return refuse(format!(
                "header {name:?}: RabbitMQ ignores headers starting with \"x-\" when matching"
            ));
        }
        Ok(())
    }
}

impl fmt::Display for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} exchange {:?}", self.kind, self.exchange)?;
        match self.kind {
            ExchangeKind::Direct | ExchangeKind::Topic => write!(f, " key {:?}", self.routing_key),
            ExchangeKind::Fanout => Ok(()),
            ExchangeKind::Headers => write!(f, " headers {} of {:?}", self.matching.as_str(), self.headers),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_rabbitmq_would_refuse_is_refused_first() {
        assert!(Binding::topic("orders", "orders.*.created").check().is_ok());
        assert!(Binding::fanout("audit").check().is_ok());
        let refused = |b: Binding| b.check().unwrap_err().to_string();
        assert!(refused(Binding::direct("", "q")).contains("default exchange"));
        assert!(refused(Binding::fanout("x".repeat(256))).contains("255"));
        assert!(refused(Binding::topic("t", "k".repeat(256))).contains("routing key"));
        let none: [(&str, &str); 0] = [];
        assert!(refused(Binding::headers("h", HeadersMatch::Any, none)).contains("at least one header"));
        assert!(refused(Binding::headers("h", HeadersMatch::All, [("x-region", "eu")])).contains("x-"));
    }

    #[test]
    fn amq_exchanges_are_taken_as_they_are() {
        assert!(Binding::topic("amq.topic", "a.b").takes_existing());
        assert!(Binding::topic("orders", "a.b").existing().takes_existing());
        assert!(!Binding::topic("orders", "a.b").takes_existing());
    }
}
