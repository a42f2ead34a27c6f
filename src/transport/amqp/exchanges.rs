//! Binding a route's queue to exchanges ([`Binding`]), and what a refusal
//! means.
//!
//! | binding | exchange declared | queue bound with |
//! |---|---|---|
//! | [`Binding::direct`], [`Binding::topic`] | durable, of its kind, unless [`existing`](Binding::existing) or `amq.…` (then only checked to exist) | the routing key or pattern |
//! | [`Binding::fanout`] | as above | an empty routing key |
//! | [`Binding::headers`] | as above | `x-match: all`/`any` and the headers, as strings |

use crate::error::{BrokerError, BrokerErrorKind};
use crate::transport::binding::{Binding, ExchangeKind};
use lapin::Channel;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString};

/// Declares (or checks) each binding's exchange and binds `queue` to it;
/// idempotent, as RabbitMQ keeps one binding per queue, exchange, key and
/// arguments.
pub(crate) async fn bind_queue(
    channel: &Channel,
    queue: &str,
    bindings: &[Binding],
) -> Result<(), BrokerError> {
    for binding in bindings {
        let options = ExchangeDeclareOptions {
            passive: binding.takes_existing(),
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                binding.exchange().into(),
                lapin_kind(binding.kind()),
                options,
                FieldTable::default(),
            )
            .await
            .map_err(|e| exchange_error(binding, e))?;
        channel
            .queue_bind(
                queue.into(),
                binding.exchange().into(),
                binding.routing_key().into(),
                QueueBindOptions::default(),
                binding_arguments(binding),
            )
            .await
            .map_err(|e| {
                BrokerError::new(
                    BrokerErrorKind::Declare,
                    format!("cannot bind queue {queue:?} to {binding}"),
                )
                .with_source(e)
            })?;
    }
    Ok(())
}

fn lapin_kind(kind: ExchangeKind) -> lapin::ExchangeKind {
    match kind {
        ExchangeKind::Direct => lapin::ExchangeKind::Direct,
        ExchangeKind::Topic => lapin::ExchangeKind::Topic,
        ExchangeKind::Fanout => lapin::ExchangeKind::Fanout,
        ExchangeKind::Headers => lapin::ExchangeKind::Headers,
    }
}

/// `x-match` and the headers of a headers binding; nothing for the others.
fn binding_arguments(binding: &Binding) -> FieldTable {
    let mut arguments = FieldTable::default();
    if binding.kind() == ExchangeKind::Headers {
        let (matching, headers) = binding.headers_matched();
        arguments.insert(
            "x-match".into(),
            AMQPValue::LongString(LongString::from(matching.as_str())),
        );
        for (name, value) in headers {
            arguments.insert(
                name.as_str().into(),
                AMQPValue::LongString(LongString::from(value.as_str())),
            );
        }
    }
    arguments
}

/// A refused exchange declaration: a [`Config`](BrokerErrorKind::Config)
/// error saying what exists and the way out where RabbitMQ says why, else
/// a [`Declare`](BrokerErrorKind::Declare) error.
fn exchange_error(binding: &Binding, error: lapin::Error) -> BrokerError {
    let refusal = match error.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => match amqp.kind() {
            AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND) => Some(missing(binding)),
            AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED) => {
                inequivalent(binding, amqp.get_message().as_str())
            }
            _ => None,
        },
        _ => None,
    };
    match refusal {
        Some(message) => BrokerError::new(BrokerErrorKind::Config, message),
        None => BrokerError::new(
            BrokerErrorKind::Declare,
            format!("cannot declare exchange {:?}", binding.exchange()),
        ),
    }
    .with_source(error)
}

fn missing(binding: &Binding) -> String {
    format!(
        "exchange {:?} does not exist, and the binding takes it as it is (Binding::existing, or an \
         amq.… exchange): declare it first (its owner's service, rabbitmqadmin declare exchange \
         name={} type={}), or drop .existing() and wharf declares it",
        binding.exchange(),
        binding.exchange(),
        binding.kind()
    )
}

/// What RabbitMQ's `PRECONDITION_FAILED - inequivalent arg 'type' for
/// exchange 'orders' in vhost '/': received 'topic' but current is
/// 'fanout'` means for `binding`.
fn inequivalent(binding: &Binding, refusal: &str) -> Option<String> {
    let rest = refusal.split_once("inequivalent arg '")?.1;
    let (argument, rest) = rest.split_once('\'')?;
    let (_, rest) = rest.split_once(": received ")?;
    let (asked, exists) = rest.rsplit_once(" but current is ")?;
    let (asked, exists) = (asked.trim_matches('\''), exists.trim().trim_matches('\''));
    let exchange = binding.exchange();
    Some(match argument {
        "type" => format!(
            "exchange {exchange:?} exists as a {exists} exchange, and the route binds to it as {asked} \
             ({binding}): bind with the kind it has (Binding::{exists}), or take it as it is \
             (Binding::existing)"
        ),
        "durable" => format!(
            "exchange {exchange:?} exists and is not durable, and wharf declares exchanges durable: \
             take it as it is (Binding::existing), or delete it and let wharf declare it"
        ),
        _ => format!(
            "exchange {exchange:?} exists with {argument} {exists}, and wharf declares it with {argument} \
             {asked}: take it as it is (Binding::existing)"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_what_exists_and_the_way_out() {
        let binding = Binding::topic("orders", "orders.#");
        let message = inequivalent(
            &binding,
            "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'orders' in vhost '/': \
             received 'topic' but current is 'fanout'",
        )
        .unwrap();
        assert!(
            message.contains("exists as a fanout exchange") && message.contains("as topic"),
            "{message}"
        );
        let message = inequivalent(
            &binding,
            "PRECONDITION_FAILED - inequivalent arg 'durable' for exchange 'orders' in vhost '/': \
             received 'true' but current is 'false'",
        )
        .unwrap();
        assert!(message.contains("not durable"), "{message}");
        assert!(inequivalent(&binding, "ACCESS_REFUSED").is_none());
        assert!(missing(&binding.existing()).contains("does not exist"));
    }
}
