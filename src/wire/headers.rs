//! Message headers and the header names of the wire contract.
//!
//! Header names are compared ASCII case-insensitively on read, because
//! publishers in other languages (and NATS' Go canonicalisation) do not agree
//! on case; wharf always writes them in lower case.
//!
//! Values are text. A transport whose header values are bytes (RabbitMQ)
//! maps them to text with [`from_bytes`], which keeps every valid UTF-8
//! value as it is and never gives two different byte strings the same text,
//! and back with [`to_bytes`].

pub use crate::wire::header_bytes::{from_bytes, to_bytes};

/// Header names that are part of wharf's wire contract (see
/// `docs/wire-format.md`).
pub mod names {
    /// Idempotency key: messages with the same key run the handler at most once.
    pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
    /// Session id: messages of one session run one at a time, in sequence order.
    pub const SESSION_ID: &str = "session-id";
    /// Position of the message in its session: 1, 2, 3, …
    pub const SEQUENCE: &str = "sequence";
    /// Not a header wharf reads or writes: on RabbitMQ the priority is the
    /// AMQP `priority` property, on NATS the lane of the subject
    /// (`docs/wire-format.md`). A `priority` header is an ordinary header.
    #[deprecated(note = "no broker carries the priority in a header; see docs/wire-format.md")]
    pub const PRIORITY: &str = "priority";
    /// Number of attempts already made (written on retry and dead-letter copies).
    pub const ATTEMPT: &str = "wharf-attempt";
    /// Why a message was dead-lettered (a [`DeadLetterReason`](crate::DeadLetterReason) as text).
    pub const DEAD_LETTER_REASON: &str = "wharf-dead-letter-reason";
    /// Kind of the last failure (`decode`, `handler`, `panic`, `timeout`, …).
    pub const ERROR_KIND: &str = "wharf-error-kind";
    /// Human-readable message of the last failure.
    pub const ERROR_MESSAGE: &str = "wharf-error-message";
    /// Queue the message was consumed from before it was dead-lettered.
    pub const ORIGIN_QUEUE: &str = "wharf-origin-queue";
    /// Name of the handler that failed.
    pub const HANDLER: &str = "wharf-handler";
    /// When the message was dead-lettered, RFC 3339 UTC.
    pub const FAILED_AT: &str = "wharf-failed-at";
    /// Set on messages replayed from a dead-letter queue (RFC 3339 UTC). A
    /// replayed message skips session ordering: its turn has passed.
    pub const REPLAYED_AT: &str = "wharf-replayed-at";
    /// Reply status: `ok` or `error`.
    pub const STATUS: &str = "wharf-status";
}

/// Free-form string headers of a [`Message`](crate::Message).
///
/// Kept as a small vector: messages carry a handful of headers, and a vector
/// is cheaper to build, clone and scan than a map at that size. Names and
/// values wharf writes itself (`wharf-status: ok` on every reply) are kept
/// as `&'static str`, not copied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(Vec<(Text, Text)>);

type Text = std::borrow::Cow<'static, str>;

impl Headers {
    /// An empty header set.
    pub const fn new() -> Self {
        Self(Vec::new())
    }

    /// The value of `name`, compared case-insensitively.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }

    /// Sets `name` to `value`, replacing any existing value.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.set(Text::Owned(name.into()), Text::Owned(value.into()));
    }

    /// Sets `name` to `value` without copying either.
    pub(crate) fn insert_static(&mut self, name: &'static str, value: &'static str) {
        self.set(Text::Borrowed(name), Text::Borrowed(value));
    }

    fn set(&mut self, name: Text, value: Text) {
        match self.0.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(&name)) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    /// Removes `name` and returns its value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        let index = self.0.iter().position(|(k, _)| k.eq_ignore_ascii_case(name))?;
        Some(self.0.remove(index).1.into_owned())
    }

    /// Removes `name`, if present, without returning its value.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))] // Used by the NATS transport.
    pub(crate) fn discard(&mut self, name: &str) {
        self.0.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }

    /// Iterates over `(name, value)` pairs in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no headers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut headers = Headers::new();
        for (k, v) in iter {
            headers.insert(k, v);
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_ignores_case_and_insert_replaces() {
        let mut h = Headers::new();
        h.insert("Session-Id", "a");
        h.insert("session-id", "b");
        assert_eq!(h.len(), 1);
        assert_eq!(h.get("SESSION-ID"), Some("b"));
        assert_eq!(h.remove("session-ID").as_deref(), Some("b"));
        assert!(h.is_empty());
    }

    #[test]
    fn static_and_owned_headers_read_and_compare_alike() {
        let mut fixed = Headers::new();
        fixed.insert_static("wharf-status", "ok");
        let mut owned = Headers::new();
        owned.insert(String::from("wharf-status"), String::from("ok"));
        assert_eq!(fixed, owned);
        assert_eq!(fixed.get("WHARF-STATUS"), Some("ok"));
        fixed.insert("Wharf-Status", "error");
        assert_eq!(fixed.iter().collect::<Vec<_>>(), vec![("wharf-status", "error")]);
        fixed.discard("wharf-status");
        assert!(fixed.is_empty());
        assert_eq!(owned.remove("wharf-status").as_deref(), Some("ok"));
    }
}
