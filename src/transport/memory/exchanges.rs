//! RabbitMQ's exchanges, in process: the queues bound to each exchange and
//! which of them a message published there reaches, as RabbitMQ routes it
//! (direct, topic, fanout, headers). So a route bound to an exchange runs
//! the same on the in-memory broker (the quick start, `wharf::testing`).

use crate::error::{BrokerError, BrokerErrorKind};
use crate::transport::binding::{Binding, ExchangeKind, HeadersMatch};
use crate::wire::message::Message;
use std::collections::HashMap;

/// RabbitMQ's own exchanges, there before anything is declared.
const PREDECLARED: [(&str, ExchangeKind); 5] = [
    ("amq.direct", ExchangeKind::Direct),
    ("amq.fanout", ExchangeKind::Fanout),
    ("amq.topic", ExchangeKind::Topic),
    ("amq.headers", ExchangeKind::Headers),
    ("amq.match", ExchangeKind::Headers),
];

/// Every exchange: its kind and the (queue, binding) pairs bound to it.
#[derive(Default)]
pub(super) struct Exchanges {
    exchanges: HashMap<String, Exchange>,
}

struct Exchange {
    kind: ExchangeKind,
    bound: Vec<(String, Binding)>,
}

impl Exchanges {
    /// Declares (or checks) `binding`'s exchange and binds `queue` to it,
    /// refusing what RabbitMQ refuses.
    pub(super) fn bind(&mut self, queue: &str, binding: &Binding) -> Result<(), BrokerError> {
        let name = binding.exchange();
        let predeclared = PREDECLARED
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, kind)| *kind);
        if !self.exchanges.contains_key(name) {
            let kind = match predeclared {
                Some(kind) => kind,
                None if binding.takes_existing() => {
                    return Err(BrokerError::new(
                        BrokerErrorKind::Config,
                        format!(
                            "exchange {name:?} does not exist, and the binding takes it as it is (Binding::existing)"
                        ),
                    ));
                }
                None => binding.kind(),
            };
            self.exchanges.insert(
                name.to_owned(),
                Exchange {
                    kind,
                    bound: Vec::new(),
                },
            );
        }
        let exchange = self.exchanges.get_mut(name).expect("inserted above");
        if exchange.kind != binding.kind() && !binding.takes_existing() {
            return Err(BrokerError::new(
                BrokerErrorKind::Config,
                format!(
                    "exchange {name:?} exists as a {} exchange, and the route binds to it as {} ({binding})",
                    exchange.kind,
                    binding.kind()
                ),
            ));
        }
        let pair = (queue.to_owned(), binding.clone());
        if !exchange.bound.contains(&pair) {
            exchange.bound.push(pair);
        }
        Ok(())
    }

    /// Removes every binding of `queue` (deleted).
    pub(super) fn unbind_queue(&mut self, queue: &str) {
        for exchange in self.exchanges.values_mut() {
            exchange.bound.retain(|(bound, _)| bound != queue);
        }
    }

    /// The queues a message published to `exchange` with `routing_key`
    /// reaches, each once; an error for an exchange that does not exist
    /// (RabbitMQ closes the channel with `NOT_FOUND`).
    pub(super) fn route(
        &self,
        exchange: &str,
        routing_key: &str,
        message: &Message,
    ) -> Result<Vec<String>, BrokerError> {
        let Some(found) = self.exchanges.get(exchange) else {
            if PREDECLARED.iter().any(|(n, _)| *n == exchange) {
                return Ok(Vec::new());
            }
            return Err(BrokerError::new(
                BrokerErrorKind::Config,
                format!("no exchange {exchange:?}: nothing declared it"),
            ));
        };
        let mut queues: Vec<String> = Vec::new();
        for (queue, binding) in &found.bound {
            if matches(found.kind, binding, routing_key, message) && !queues.contains(queue) {
                queues.push(queue.clone());
            }
        }
        Ok(queues)
    }
}

/// Whether `binding` on an exchange of `kind` takes a message published
/// with `routing_key`.
fn matches(kind: ExchangeKind, binding: &Binding, routing_key: &str, message: &Message) -> bool {
    match kind {
        ExchangeKind::Direct => binding.routing_key() == routing_key,
        ExchangeKind::Topic => topic_matches(binding.routing_key(), routing_key),
        ExchangeKind::Fanout => true,
        ExchangeKind::Headers => {
            let (matching, headers) = binding.headers_matched();
            let holds = |(name, value): &(String, String)| message.header(name) == Some(value.as_str());
            match matching {
                HeadersMatch::All => headers.iter().all(holds),
                HeadersMatch::Any => headers.iter().any(holds),
            }
        }
    }
}

/// A topic pattern against a routing key: dot-separated words, `*` one
/// word, `#` zero or more.
fn topic_matches(pattern: &str, key: &str) -> bool {
    let words = |text: &str| -> Vec<String> {
        // An empty key is no words, as RabbitMQ reads it.
        if text.is_empty() {
            Vec::new()
        } else {
            text.split('.').map(str::to_owned).collect()
        }
    };
    let (pattern, key) = (words(pattern), words(key));
    let pattern: Vec<&str> = pattern.iter().map(String::as_str).collect();
    let key: Vec<&str> = key.iter().map(String::as_str).collect();
    words_match(&pattern, &key)
}

fn words_match(pattern: &[&str], key: &[&str]) -> bool {
    match pattern.split_first() {
        None => key.is_empty(),
        Some((&"#", rest)) => (0..=key.len()).any(|skip| words_match(rest, &key[skip..])),
        Some((&word, rest)) => match key.split_first() {
            Some((&first, tail)) => (word == "*" || word == first) && words_match(rest, tail),
            None => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_patterns_match_as_rabbitmq_matches_them() {
        assert!(topic_matches("orders.*.created", "orders.eu.created"));
        assert!(!topic_matches("orders.*.created", "orders.created"));
        assert!(!topic_matches("orders.*.created", "orders.eu.west.created"));
        assert!(topic_matches("orders.#", "orders"));
        assert!(topic_matches("orders.#", "orders.eu.created"));
        assert!(topic_matches("#.created", "orders.eu.created"));
        assert!(topic_matches("#", ""));
        assert!(!topic_matches("*", ""));
        assert!(!topic_matches("orders.#", "payments.created"));
        assert!(topic_matches("a.#.z", "a.z"));
        assert!(topic_matches("a.#.z", "a.b.c.z"));
    }

    #[test]
    fn each_bound_queue_gets_one_copy_and_kinds_must_agree() {
        let mut exchanges = Exchanges::default();
        exchanges
            .bind("billing", &Binding::topic("orders", "orders.*.created"))
            .unwrap();
        exchanges
            .bind("shipping", &Binding::topic("orders", "orders.#"))
            .unwrap();
        exchanges
            .bind("shipping", &Binding::topic("orders", "#.created"))
            .unwrap();
        let message = Message::new(Vec::new());
        assert_eq!(
            exchanges.route("orders", "orders.eu.created", &message).unwrap(),
            vec!["billing", "shipping"]
        );
        assert_eq!(
            exchanges.route("orders", "orders.eu.paid", &message).unwrap(),
            vec!["shipping"]
        );
        assert!(exchanges.route("nowhere", "k", &message).is_err());
        let refused = exchanges.bind("audit", &Binding::fanout("orders")).unwrap_err();
        assert!(
            refused.to_string().contains("exists as a topic exchange"),
            "{refused}"
        );
        assert!(
            exchanges
                .bind("audit", &Binding::fanout("audit").existing())
                .is_err()
        );
        exchanges.bind("any", &Binding::topic("amq.topic", "#")).unwrap();
    }

    #[test]
    fn headers_bindings_match_all_or_any() {
        let mut exchanges = Exchanges::default();
        let eu_gold = [("region", "eu"), ("tier", "gold")];
        exchanges
            .bind("all", &Binding::headers("h", HeadersMatch::All, eu_gold))
            .unwrap();
        exchanges
            .bind("any", &Binding::headers("h", HeadersMatch::Any, eu_gold))
            .unwrap();
        let tagged = |region: &str, tier: &str| {
            Message::new(Vec::new())
                .with_header("region", region)
                .with_header("tier", tier)
        };
        assert_eq!(
            exchanges.route("h", "", &tagged("eu", "gold")).unwrap(),
            vec!["all", "any"]
        );
        assert_eq!(
            exchanges.route("h", "", &tagged("eu", "silver")).unwrap(),
            vec!["any"]
        );
        assert!(
            exchanges
                .route("h", "", &tagged("us", "silver"))
                .unwrap()
                .is_empty()
        );
    }
}
