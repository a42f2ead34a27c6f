//! How wharf's queues map onto NATS subjects, streams and consumers.
//!
//! | what | name |
//! |---|---|
//! | subject of a message for queue `Q` with priority `P` (0–9) | `wharf.p<P>.<Q>` |
//! | stream holding `Q` (subjects `wharf.p0.<Q>` … `wharf.p9.<Q>`) | `WHARF_<enc(Q)>` |
//! | delay stream of `Q` (subject `wharf-delay.<Q>`) | `WHARFDELAY_<enc(Q)>` |
//! | consumer of a route without priority | `wharf` |
//! | consumer of lane `P` of a route with priority | `wharf-p<P>` |
//! | consumer of the delay stream | `wharf-delay` |
//!
//! `enc` keeps ASCII letters, digits and `-` and writes every other byte as
//! `_XX` (upper-case hex), so different queues never share a stream name:
//! `orders.dlq` → `WHARF_orders_2Edlq`.

use crate::error::{BrokerError, BrokerErrorKind};
use crate::transport::lanes::MAX_PRIORITY;

/// The consumer of a queue without priority lanes.
pub(crate) const CONSUMER: &str = "wharf";
/// The consumer of a delay stream.
pub(crate) const DELAY_CONSUMER: &str = "wharf-delay";

/// The bytes of a subject token wharf accepts: ASCII letters, digits, `_`
/// and `-` (a table: checked for every byte of every request's queue name).
const TOKEN_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        table[b] = byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-';
        b += 1;
    }
    table
};

/// Whether `byte` may be part of a subject token: an ASCII letter, digit,
/// `_` or `-`.
pub(crate) fn is_token_byte(byte: u8) -> bool {
    TOKEN_BYTES[usize::from(byte)]
}

/// Checks that `queue` can be a subject's tail: dot-separated, non-empty
/// tokens of ASCII letters, digits, `_` and `-`.
pub(crate) fn check_queue(queue: &str) -> Result<(), BrokerError> {
    // One pass, no splitting: checked on every request.
    let mut token_len = 0usize;
    let mut valid = true;
    for byte in queue.bytes() {
        if byte == b'.' {
            valid &= token_len > 0;
            token_len = 0;
        } else {
            valid &= is_token_byte(byte);
            token_len += 1;
        }
    }
    if valid && token_len > 0 {
        Ok(())
    } else {
        Err(BrokerError::new(
            BrokerErrorKind::Config,
            format!(
                "{queue:?} cannot be a NATS queue name: use dot-separated tokens of letters, digits, '_' and '-'"
            ),
        ))
    }
}

/// The lane of a message with `priority` (none: lane 0), or an error for
/// a priority no lane carries: on NATS the priority is the subject's lane
/// `p0` … `p9`, so wharf refuses to publish a higher one rather than store
/// a message that would be rejected.
pub(crate) fn lane(priority: Option<u8>) -> Result<u8, BrokerError> {
    match priority {
        None => Ok(0),
        Some(p) if usize::from(p) <= MAX_PRIORITY => Ok(p),
        Some(p) => Err(BrokerError::new(
            BrokerErrorKind::Config,
            format!(
                "priority {p} is out of range 0-{MAX_PRIORITY}: on NATS the priority is the lane of the \
                 subject (wharf.p0 … wharf.p{MAX_PRIORITY}); nothing was published"
            ),
        )),
    }
}

/// Whether a reply can ever be published to `address`; if not, why. It
/// must be a subject a message can be published to: not empty, no
/// whitespace or control characters (they end a subject in the protocol),
/// no empty token, and no wildcard token (`*`, `>`), which only a
/// subscription can have.
pub(crate) fn check_reply_subject(address: &str) -> Result<(), String> {
    if address.is_empty() {
        return Err("it is empty".to_owned());
    }
    // One pass, no splitting: checked for every request a worker handles.
    let mut token_start = 0;
    let bytes = address.as_bytes();
    for (at, &byte) in bytes.iter().enumerate() {
        if byte <= b' ' || byte == 0x7f {
            return Err("a NATS subject cannot contain whitespace or control characters".to_owned());
        }
        if byte == b'.' {
            check_reply_token(&bytes[token_start..at])?;
            token_start = at + 1;
        }
    }
    check_reply_token(&bytes[token_start..])
}

fn check_reply_token(token: &[u8]) -> Result<(), String> {
    match token {
        [] => Err("a NATS subject cannot have an empty token".to_owned()),
        [b'*'] | [b'>'] => Err("a NATS subject to publish to cannot have a wildcard token".to_owned()),
        _ => Ok(()),
    }
}

/// The subject of lane `priority` of `queue`.
pub(crate) fn subject(queue: &str, priority: u8) -> String {
    // Built on every publish and request; `format!` cost several times this.
    let lane = usize::from(priority).min(MAX_PRIORITY) as u8;
    let mut subject = String::with_capacity(LANE_PREFIX.len() + 2 + queue.len());
    subject.push_str(LANE_PREFIX);
    subject.push(char::from(b'0' + lane));
    subject.push('.');
    subject.push_str(queue);
    subject
}

/// What every lane's subject starts with.
const LANE_PREFIX: &str = "wharf.p";

/// Every lane's subject of `queue`, lowest priority first.
pub(crate) fn subjects(queue: &str) -> Vec<String> {
    (0..=MAX_PRIORITY as u8).map(|p| subject(queue, p)).collect()
}

/// A wildcard subject matching every lane of `queue` (core NATS services).
pub(crate) fn any_lane(queue: &str) -> String {
    format!("wharf.*.{queue}")
}

/// The priority lane of a subject `wharf.p<P>.<queue>`.
pub(crate) fn lane_of(subject: &str) -> Option<u8> {
    // Read on every delivery: the digit and the dot after it, no search.
    match subject.strip_prefix(LANE_PREFIX)?.as_bytes() {
        [digit @ b'0'..=b'9', b'.', ..] if usize::from(digit - b'0') <= MAX_PRIORITY => Some(digit - b'0'),
        _ => None,
    }
}

/// The stream holding `queue`.
pub(crate) fn stream(queue: &str) -> String {
    format!("WHARF_{}", encode(queue))
}

/// The delay stream of `queue`.
pub(crate) fn delay_stream(queue: &str) -> String {
    format!("WHARFDELAY_{}", encode(queue))
}

/// The subject of `queue`'s delay stream.
pub(crate) fn delay_subject(queue: &str) -> String {
    format!("wharf-delay.{queue}")
}

/// The consumer of lane `priority`.
pub(crate) fn lane_consumer(priority: u8) -> String {
    format!("wharf-p{priority}")
}

fn encode(queue: &str) -> String {
    let mut out = String::with_capacity(queue.len() + 8);
    for b in queue.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_scheme() {
        assert_eq!(subject("orders", 7), "wharf.p7.orders");
        assert_eq!(subject("orders", 42), "wharf.p9.orders");
        assert_eq!(stream("orders.dlq"), "WHARF_orders_2Edlq");
        assert_eq!(stream("a_b"), "WHARF_a_5Fb");
        assert_ne!(stream("a.b"), stream("a_b"));
        assert_eq!(delay_stream("orders"), "WHARFDELAY_orders");
        assert_eq!(lane_of("wharf.p3.orders.eu"), Some(3));
        assert_eq!(lane_of("wharf.x.orders"), None);
        assert_eq!(lane_of("wharf.p0.q"), Some(0));
        assert_eq!(lane_of("wharf.p9.q"), Some(9));
        for not_a_lane in [
            "wharf.p10.q",
            "wharf.p7",
            "wharf.p.q",
            "wharf.pa.q",
            "wharf-delay.q",
        ] {
            assert_eq!(lane_of(not_a_lane), None, "{not_a_lane}");
        }
        assert_eq!(subjects("q").len(), 10);
    }

    #[test]
    fn a_priority_above_nine_has_no_lane() {
        assert_eq!(lane(None).unwrap(), 0);
        assert_eq!(lane(Some(9)).unwrap(), 9);
        let error = lane(Some(42)).unwrap_err();
        assert!(error.to_string().contains("priority 42"), "{error}");
    }

    #[test]
    fn reply_subjects_must_be_publishable() {
        for good in ["_INBOX.abc.1", "orders", "a.b-c_d.é", "x*y.a>b"] {
            assert_eq!(check_reply_subject(good), Ok(()), "{good:?}");
        }
        for bad in [
            "",
            "has space",
            "tab\there",
            "a..b",
            ".a",
            "a.",
            "a.*.b",
            "a.>",
            "*",
            "nl\n",
            "del\u{7f}",
        ] {
            assert!(check_reply_subject(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn queue_names_must_be_subject_tokens() {
        assert!(check_queue("wharf-test.orders_v2").is_ok());
        for bad in ["", "a..b", "a b", "a.*", "a.>", ".a", "ä"] {
            assert!(check_queue(bad).is_err(), "{bad:?} accepted");
        }
    }
}
