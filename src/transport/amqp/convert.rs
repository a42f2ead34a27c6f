//! wharf messages to and from AMQP properties and headers (the mapping is
//! documented in `docs/wire-format.md`).

use crate::wire::attempt_header;
use crate::wire::headers::{self, Headers, names};
use crate::wire::message::Message;
use bytes::Bytes;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

/// Persistent delivery mode: messages survive a broker restart.
const PERSISTENT: u8 = 2;

/// A quorum queue's count of its redeliveries of a message. It belongs to
/// the message in that queue: wharf never publishes it (see [`copy_with`]).
const DELIVERY_COUNT: &str = "x-delivery-count";

/// A received message, with its properties kept for faithful copies.
pub(crate) fn to_message(properties: &BasicProperties, data: Vec<u8>) -> Message {
    let text = |v: &Option<ShortString>| v.as_ref().map(|s| s.as_str().to_owned());
    Message {
        body: Bytes::from(data),
        content_type: text(properties.content_type()),
        message_id: text(properties.message_id()),
        correlation_id: text(properties.correlation_id()),
        reply_to: text(properties.reply_to()),
        priority: *properties.priority(),
        headers: properties.headers().as_ref().map(to_headers).unwrap_or_default(),
    }
}

/// Headers as text. Nothing a publisher sent is dropped: long strings and
/// byte arrays (what pika sends for Python `bytes`) are read as text by
/// [`headers::from_bytes`] (UTF-8 as it is; other bytes escaped, so that
/// different bytes stay different keys), other structured values are written
/// out, so that a malformed wharf header is rejected by the pipeline instead
/// of silently ignored. Only the broker's own structured
/// `x-` headers (such as `x-death`) are left out; they stay in the original
/// properties, which copies keep.
fn to_headers(table: &FieldTable) -> Headers {
    table
        .inner()
        .iter()
        .filter_map(|(name, value)| {
            let text = match scalar_text(value) {
                Some(text) => text,
                None if name.as_str().starts_with("x-") => return None,
                None => structured_text(value),
            };
            Some((name.as_str().to_owned(), text))
        })
        .collect()
}

/// A non-scalar header value as text.
fn structured_text(value: &AMQPValue) -> String {
    match value {
        AMQPValue::ByteArray(bytes) => headers::from_bytes(bytes.as_slice()).into_owned(),
        other => format!("{other:?}"),
    }
}

/// The text of a scalar header value; integers in decimal.
pub(crate) fn scalar_text(value: &AMQPValue) -> Option<String> {
    Some(match value {
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Timestamp(n) => n.to_string(),
        AMQPValue::Float(n) => n.to_string(),
        AMQPValue::Double(n) => n.to_string(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::LongString(s) => headers::from_bytes(s.as_bytes()).into_owned(),
        AMQPValue::ByteArray(_)
        | AMQPValue::FieldArray(_)
        | AMQPValue::FieldTable(_)
        | AMQPValue::DecimalValue(_)
        | AMQPValue::Void => return None,
    })
}

/// An integer header, whichever integer type or decimal string a publisher used.
fn integer(table: Option<&FieldTable>, name: &str) -> Option<u64> {
    let value = table?.inner().get(name)?;
    scalar_text(value)?.trim().parse().ok()
}

/// The delivery count of `message` as received with `properties`: the
/// attempts made so far (`wharf-attempt`, on retry copies or from the
/// publisher, read as the pipeline reads it: [`attempt_header`]) plus this
/// delivery, plus the broker's redeliveries of this copy when it is a
/// redelivery (quorum queues' `x-delivery-count`, or one for a classic
/// queue's `redelivered` flag).
/// Saturates, never wraps. When `wharf-attempt` is not a number of
/// attempts, also why: the count is then this copy's deliveries alone.
pub(crate) fn delivery_count(
    message: &Message,
    properties: &BasicProperties,
    redelivered: bool,
) -> (u32, Option<String>) {
    let (attempts, malformed) = match attempt_header::carried(message.header(names::ATTEMPT)) {
        Ok(attempts) => (attempts, None),
        Err(why) => (0, Some(why)),
    };
    // Only a redelivery has redeliveries: an `x-delivery-count` on a
    // message delivered for the first time is a publisher's header, not
    // the broker's count (a quorum queue sets it on redeliveries only), and
    // must not make up a failure.
    let redeliveries = match (
        redelivered,
        integer(properties.headers().as_ref(), DELIVERY_COUNT),
    ) {
        (false, _) => 0,
        (true, Some(count)) => u32::try_from(count).unwrap_or(u32::MAX).max(1),
        (true, None) => 1,
    };
    let count = attempts.saturating_add(1).saturating_add(redeliveries);
    (count, malformed)
}

fn short(value: &str) -> ShortString {
    ShortString::from(value)
}

/// A header value as the bytes its text stands for.
fn long(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(headers::to_bytes(value).into_owned()))
}

/// Properties for a message wharf publishes (persistent). A received
/// message published again (a replay, a handler forwarding it) does not
/// take its `x-delivery-count` along: a quorum queue would count it as the
/// new message's redeliveries.
pub(crate) fn properties(message: &Message) -> BasicProperties {
    let mut properties = BasicProperties::default().with_delivery_mode(PERSISTENT);
    if let Some(v) = &message.content_type {
        properties = properties.with_content_type(short(v));
    }
    if let Some(v) = &message.message_id {
        properties = properties.with_message_id(short(v));
    }
    if let Some(v) = &message.correlation_id {
        properties = properties.with_correlation_id(short(v));
    }
    if let Some(v) = &message.reply_to {
        properties = properties.with_reply_to(short(v));
    }
    if let Some(v) = message.priority {
        properties = properties.with_priority(v);
    }
    if !message.headers.is_empty() {
        let mut table = FieldTable::default();
        for (name, value) in message.headers.iter().filter(|(name, _)| *name != DELIVERY_COUNT) {
            table.insert(short(name), header_value(name, value));
        }
        properties = properties.with_headers(table);
    }
    properties
}

/// `sequence` and `wharf-attempt` go out as integers (what other clients
/// expect to read); everything else as a string.
fn header_value(name: &str, value: &str) -> AMQPValue {
    let numeric = name.eq_ignore_ascii_case(names::SEQUENCE) || name.eq_ignore_ascii_case(names::ATTEMPT);
    match value.parse::<i64>() {
        Ok(n) if numeric => AMQPValue::LongLongInt(n),
        _ => long(value),
    }
}

/// A copy of a received message, properties and headers as received, with
/// `set` headers added or replaced: for retry, deferral, return and
/// dead-letter copies.
///
/// All but the quorum queue's `x-delivery-count`: it counts the broker's
/// redeliveries of the original, which the caller has folded into the
/// `wharf-attempt` it sets (the delivery count included them). Kept, it
/// would count them again on every copy's delivery: a message deferred while
/// another worker's claim ran out (a killed worker's message, redelivered
/// once) gained an attempt per deferral and was dead-lettered as
/// `redelivered`. The copy is a new message; its own redeliveries count
/// afresh.
pub(crate) fn copy_with(original: &BasicProperties, set: &[(&str, String)]) -> BasicProperties {
    let mut table: FieldTable = original
        .headers()
        .as_ref()
        .map(|table| {
            let kept = table
                .inner()
                .iter()
                .filter(|(name, _)| name.as_str() != DELIVERY_COUNT);
            kept.map(|(name, value)| (name.clone(), value.clone()))
                .collect::<std::collections::BTreeMap<_, _>>()
        })
        .unwrap_or_default()
        .into();
    for (name, value) in set {
        table.insert(short(name), header_value(name, value));
    }
    original
        .clone()
        .with_headers(table)
        .with_delivery_mode(PERSISTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_survives_the_round_trip() {
        let message = Message::new(&b"{\"id\":1}"[..])
            .with_content_type("application/json")
            .with_message_id("m1")
            .with_correlation_id("c1")
            .with_reply_to("replies")
            .with_priority(7)
            .with_idempotency_key("k")
            .with_session("s", 3);
        let properties = properties(&message);
        assert_eq!(*properties.delivery_mode(), Some(PERSISTENT));
        let sequence = properties
            .headers()
            .as_ref()
            .unwrap()
            .inner()
            .get("sequence")
            .cloned();
        assert_eq!(
            sequence,
            Some(AMQPValue::LongLongInt(3)),
            "sequence goes out as an integer"
        );
        let back = to_message(&properties, message.body.to_vec());
        // AMQP field tables are sorted by name; compare headers as sets.
        let sorted = |m: &Message| {
            let mut h: Vec<(String, String)> = m.headers.iter().map(|(k, v)| (k.into(), v.into())).collect();
            h.sort();
            h
        };
        assert_eq!(sorted(&back), sorted(&message));
        assert_eq!(
            Message {
                headers: Headers::new(),
                ..back
            },
            Message {
                headers: Headers::new(),
                ..message
            }
        );
    }

    #[test]
    fn integer_headers_of_any_type_read_as_decimal_text() {
        let mut table = FieldTable::default();
        table.insert("sequence".into(), AMQPValue::ShortShortUInt(4));
        table.insert("x-death".into(), AMQPValue::FieldArray(Default::default()));
        let properties = BasicProperties::default().with_headers(table);
        let message = to_message(&properties, Vec::new());
        assert_eq!(message.sequence(), Some("4"));
        assert_eq!(
            message.headers.get("x-death"),
            None,
            "structured values stay in the properties"
        );
    }

    #[test]
    fn byte_array_headers_are_read_as_text() {
        let mut table = FieldTable::default();
        table.insert(
            "idempotency-key".into(),
            AMQPValue::ByteArray(b"k-bytes".to_vec().into()),
        );
        table.insert("session-id".into(), AMQPValue::FieldArray(Default::default()));
        let message = to_message(&BasicProperties::default().with_headers(table), Vec::new());
        assert_eq!(message.idempotency_key(), Some("k-bytes"));
        assert!(
            message.session_id().is_some(),
            "a malformed session id is kept for the pipeline to reject"
        );
    }

    /// [`delivery_count`] of a message received with `properties`.
    fn count(properties: &BasicProperties, redelivered: bool) -> u32 {
        let message = to_message(properties, Vec::new());
        let (count, malformed) = delivery_count(&message, properties, redelivered);
        assert_eq!(malformed, None);
        count
    }

    #[test]
    fn delivery_count_adds_attempts_and_redeliveries() {
        let plain = BasicProperties::default();
        assert_eq!(count(&plain, false), 1);
        assert_eq!(count(&plain, true), 2);
        let retried = copy_with(&plain, &[(names::ATTEMPT, "2".to_owned())]);
        assert_eq!(count(&retried, false), 3);
        let quorum = with_header(&retried, DELIVERY_COUNT, AMQPValue::LongLongInt(4));
        assert_eq!(count(&quorum, true), 7);
        assert_eq!(
            count(&quorum, false),
            3,
            "a first delivery's x-delivery-count is a publisher's, not the broker's count"
        );
    }

    #[test]
    fn delivery_count_saturates_and_refuses_what_is_not_a_count() {
        let most = with_header(
            &BasicProperties::default(),
            names::ATTEMPT,
            AMQPValue::LongUInt(u32::MAX),
        );
        let most = with_header(&most, DELIVERY_COUNT, AMQPValue::LongLongInt(i64::MAX));
        assert_eq!(count(&most, true), u32::MAX, "saturates, never wraps");
        for bad in [
            AMQPValue::LongLongInt(i64::MAX),
            AMQPValue::LongLongInt(-1),
            AMQPValue::LongString("abc".into()),
            AMQPValue::FieldTable(FieldTable::default()),
        ] {
            let properties = with_header(&BasicProperties::default(), names::ATTEMPT, bad.clone());
            let message = to_message(&properties, Vec::new());
            let (count, malformed) = delivery_count(&message, &properties, true);
            assert_eq!(count, 2, "{bad:?}: this copy's deliveries only");
            assert!(
                malformed.is_some_and(|why| why.contains("wharf-attempt")),
                "{bad:?}"
            );
        }
    }

    fn with_header(properties: &BasicProperties, name: &str, value: AMQPValue) -> BasicProperties {
        let mut table = properties.headers().clone().unwrap_or_default();
        table.insert(name.into(), value);
        properties.clone().with_headers(table)
    }

    fn key_of(value: AMQPValue) -> String {
        let mut table = FieldTable::default();
        table.insert("idempotency-key".into(), value);
        let message = to_message(&BasicProperties::default().with_headers(table), Vec::new());
        message.idempotency_key().unwrap().to_owned()
    }

    #[test]
    fn keys_that_are_not_utf8_stay_apart() {
        let bytes = |b: &[u8]| AMQPValue::ByteArray(b.to_vec().into());
        let keys = [
            key_of(bytes(b"\xffA")),
            key_of(bytes(b"\xfeA")),
            key_of(bytes(b"\xc3A")),
            key_of(long("\u{FFFD}A")),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(keys[0], "\u{FFFD}b:ff41");
        assert_eq!(keys[3], "\u{FFFD}A", "valid UTF-8 is read as it is");
    }

    #[test]
    fn equal_bytes_are_one_key_whatever_the_field_type() {
        for sent in [&b"\xffA"[..], b"order-7", "\u{FFFD}b:ff41".as_bytes()] {
            assert_eq!(
                key_of(AMQPValue::ByteArray(sent.to_vec().into())),
                key_of(AMQPValue::LongString(sent.to_vec().into())),
                "{sent:?}"
            );
        }
    }

    #[test]
    fn header_bytes_go_out_as_they_came_in() {
        // A received value published again (replay, a forwarded key) is
        // the same bytes, not its escaped text.
        for sent in [&b"\xffA"[..], b"plain", "\u{FFFD}b:ff41".as_bytes()] {
            let text = key_of(AMQPValue::LongString(sent.to_vec().into()));
            let out = properties(&Message::new("").with_idempotency_key(text));
            let value = out
                .headers()
                .as_ref()
                .unwrap()
                .inner()
                .get("idempotency-key")
                .cloned();
            assert_eq!(value, Some(AMQPValue::LongString(sent.to_vec().into())));
        }
    }

    #[test]
    fn copies_keep_header_values_byte_for_byte() {
        let original = with_header(
            &BasicProperties::default(),
            "idempotency-key",
            AMQPValue::ByteArray(b"\xffA".to_vec().into()),
        );
        let copy = copy_with(&original, &[(names::ATTEMPT, "1".to_owned())]);
        assert_eq!(
            copy.headers().as_ref().unwrap().inner().get("idempotency-key"),
            Some(&AMQPValue::ByteArray(b"\xffA".to_vec().into()))
        );
    }

    #[test]
    fn copies_do_not_carry_the_quorum_delivery_count() {
        // A delivery a quorum queue redelivered once (its worker died),
        // deferred again and again: each copy's delivery is the same attempt.
        let redelivered = with_header(
            &BasicProperties::default(),
            DELIVERY_COUNT,
            AMQPValue::LongLongInt(1),
        );
        let mut properties = redelivered;
        let count = super::tests::count(&properties, true);
        assert_eq!(count, 2);
        for _ in 0..10 {
            properties = copy_with(&properties, &[(names::ATTEMPT, (count - 1).to_string())]);
            assert!(
                properties
                    .headers()
                    .as_ref()
                    .unwrap()
                    .inner()
                    .get(DELIVERY_COUNT)
                    .is_none()
            );
            assert_eq!(
                super::tests::count(&properties, false),
                count,
                "a deferral is not an attempt"
            );
        }
        // A retry copy counts the failed attempt, and the redelivery once.
        let retried = copy_with(&properties, &[(names::ATTEMPT, count.to_string())]);
        assert_eq!(super::tests::count(&retried, false), count + 1);
    }

    #[test]
    fn a_received_delivery_count_is_not_published_again() {
        let received = with_header(
            &BasicProperties::default(),
            DELIVERY_COUNT,
            AMQPValue::LongLongInt(3),
        );
        let message = to_message(&received, Vec::new());
        assert_eq!(
            message.headers.get(DELIVERY_COUNT),
            Some("3"),
            "the handler sees it"
        );
        let out = properties(&message);
        assert!(
            out.headers()
                .as_ref()
                .is_none_or(|h| !h.contains_key(DELIVERY_COUNT))
        );
    }
}
