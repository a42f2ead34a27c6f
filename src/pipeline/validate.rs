//! The decode step: checks the envelope before anything else runs.
//!
//! Bad input never reaches a handler and never crashes the worker: each
//! problem becomes an [`Invalid`] with a reason and an explanation, and the
//! message is dead-lettered byte-for-byte.

use crate::wire::codec::Codec;
use crate::wire::dead_letter_reason::DeadLetterReason;
use crate::wire::headers::names;
use crate::wire::message::Message;

/// Longest accepted idempotency key or session id, in bytes.
const MAX_KEY_BYTES: usize = 256;

/// Highest accepted `sequence`.
pub(crate) const MAX_SEQUENCE: u64 = i64::MAX as u64;

/// What the route checks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_body_bytes: usize,
    pub(crate) idempotency: bool,
    pub(crate) sessions: bool,
}

/// A valid message's routing facts.
#[derive(Debug, PartialEq)]
pub(crate) struct Envelope<'a> {
    pub(crate) codec: Codec,
    pub(crate) idempotency_key: Option<&'a str>,
    pub(crate) session: Option<(&'a str, u64)>,
    /// Whether session order applies (not for replayed dead letters).
    pub(crate) ordered: bool,
}

/// Why a message is refused before it reaches the handler.
#[derive(Debug, PartialEq)]
pub(crate) struct Invalid {
    pub(crate) reason: DeadLetterReason,
    pub(crate) message: String,
}

fn invalid(reason: DeadLetterReason, message: String) -> Invalid {
    Invalid { reason, message }
}

pub(crate) fn check<'a>(message: &'a Message, limits: &Limits) -> Result<Envelope<'a>, Invalid> {
    if message.body.len() > limits.max_body_bytes {
        return Err(invalid(
            DeadLetterReason::TooLarge,
            format!(
                "body is {} bytes, the limit is {} bytes",
                message.body.len(),
                limits.max_body_bytes
            ),
        ));
    }
    let codec = Codec::from_content_type(message.content_type.as_deref())
        .map_err(|e| invalid(DeadLetterReason::ContentType, e.to_string()))?;
    if let Some(priority) = message.priority.filter(|p| *p > 9) {
        return Err(invalid(
            DeadLetterReason::InvalidHeader,
            format!("priority {priority} is out of range 0-9"),
        ));
    }
    let idempotency_key = match message.idempotency_key().filter(|_| limits.idempotency) {
        Some(key) => Some(check_key("idempotency-key", key)?),
        None => None,
    };
    let session = match message.session_id().filter(|_| limits.sessions) {
        Some(session) => Some((check_key("session-id", session)?, sequence(message)?)),
        None => None,
    };
    Ok(Envelope {
        codec,
        idempotency_key,
        session,
        // An operator replayed it from the dead-letter queue: its turn has
        // passed, so ordering it would only ack it as stale.
        ordered: session.is_some() && message.headers.get(names::REPLAYED_AT).is_none(),
    })
}

/// Counts the bytes the publisher sent: a value that is not UTF-8 is held
/// as longer text (`crate::wire::header_bytes`), but is as long as it was sent.
fn check_key<'a>(name: &str, value: &'a str) -> Result<&'a str, Invalid> {
    let bytes = crate::wire::header_bytes::byte_len(value);
    if bytes == 0 || bytes > MAX_KEY_BYTES {
        return Err(invalid(
            DeadLetterReason::InvalidHeader,
            format!("{name} must be 1 to {MAX_KEY_BYTES} bytes, got {bytes} bytes"),
        ));
    }
    Ok(value)
}

fn sequence(message: &Message) -> Result<u64, Invalid> {
    let Some(raw) = message.sequence() else {
        return Err(invalid(
            DeadLetterReason::InvalidHeader,
            "a message with a session-id needs a sequence header".to_owned(),
        ));
    };
    // Capped at the largest signed 64-bit integer: what AMQP integer headers
    // and Redis counters hold, and far from any arithmetic overflow.
    match raw.trim().parse::<u64>() {
        Ok(n) if (1..=MAX_SEQUENCE).contains(&n) => Ok(n),
        _ => Err(invalid(
            DeadLetterReason::InvalidHeader,
            format!("sequence {raw:?} is not a whole number from 1 to {MAX_SEQUENCE}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_body_bytes: 16,
        idempotency: true,
        sessions: true,
    };

    fn reason(message: &Message) -> DeadLetterReason {
        check(message, &LIMITS).unwrap_err().reason
    }

    #[test]
    fn valid_message_yields_its_routing_facts() {
        let msg = Message::new("{}")
            .with_content_type("application/msgpack")
            .with_idempotency_key("k")
            .with_session("s", 3);
        let envelope = check(&msg, &LIMITS).unwrap();
        assert_eq!(envelope.codec, Codec::MsgPack);
        assert_eq!(envelope.idempotency_key, Some("k"));
        assert_eq!(envelope.session, Some(("s", 3)));
    }

    #[test]
    fn each_kind_of_bad_input_has_its_reason() {
        assert_eq!(reason(&Message::new(vec![b'x'; 17])), DeadLetterReason::TooLarge);
        assert_eq!(
            reason(&Message::new("x").with_content_type("text/csv")),
            DeadLetterReason::ContentType
        );
        assert_eq!(
            reason(&Message::new("1").with_priority(10)),
            DeadLetterReason::InvalidHeader
        );
        let no_sequence = Message::new("1").with_header("session-id", "s");
        assert_eq!(reason(&no_sequence), DeadLetterReason::InvalidHeader);
        let too_big = (MAX_SEQUENCE + 1).to_string();
        for bad in [
            "abc",
            "0",
            "-1",
            "1.5",
            "",
            too_big.as_str(),
            "18446744073709551615",
        ] {
            let msg = Message::new("1")
                .with_header("session-id", "s")
                .with_header("sequence", bad);
            assert_eq!(reason(&msg), DeadLetterReason::InvalidHeader, "sequence {bad:?}");
        }
        assert_eq!(
            reason(&Message::new("1").with_idempotency_key("")),
            DeadLetterReason::InvalidHeader
        );
    }

    #[test]
    fn keys_are_measured_in_the_bytes_sent() {
        let longest = crate::wire::headers::from_bytes(&[0xff; MAX_KEY_BYTES]).into_owned();
        assert!(longest.len() > MAX_KEY_BYTES, "held as longer text");
        let msg = Message::new("1").with_idempotency_key(longest.as_str());
        assert_eq!(
            check(&msg, &LIMITS).unwrap().idempotency_key,
            Some(longest.as_str())
        );
        let over = crate::wire::headers::from_bytes(&[0xff; MAX_KEY_BYTES + 1]).into_owned();
        assert_eq!(
            reason(&Message::new("1").with_idempotency_key(over)),
            DeadLetterReason::InvalidHeader
        );
    }

    #[test]
    fn disabled_steps_ignore_their_headers() {
        let limits = Limits {
            idempotency: false,
            sessions: false,
            ..LIMITS
        };
        let msg = Message::new("1")
            .with_idempotency_key("")
            .with_header("session-id", "s");
        assert_eq!(check(&msg, &limits).unwrap().session, None);
    }
}
