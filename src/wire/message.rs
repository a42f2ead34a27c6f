//! The transport-neutral message: what publishers send and handlers receive.

use crate::wire::codec::{Codec, CodecError};
use crate::wire::headers::{Headers, names};
use bytes::Bytes;
use serde::Serialize;

/// A message as wharf sees it on every broker (see `docs/wire-format.md` for
/// how each field maps to AMQP properties and NATS headers).
///
/// Well-known fields that have a native broker property are fields here;
/// the rest (idempotency key, session id, sequence, wharf's own headers and
/// any free headers) live in [`headers`](Message::headers).
///
/// ```
/// use wharf::Message;
/// # #[derive(serde::Serialize)] struct Order { id: u32 }
/// let msg = Message::json(&Order { id: 7 })?
///     .with_idempotency_key("order-7")
///     .with_session("customer-42", 3)
///     .with_priority(5);
/// assert_eq!(msg.idempotency_key(), Some("order-7"));
/// # Ok::<(), wharf::CodecError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Message {
    /// Payload bytes.
    pub body: Bytes,
    /// `application/json` (default when absent) or `application/msgpack`.
    pub content_type: Option<String>,
    /// Unique id of this message, if the publisher set one.
    pub message_id: Option<String>,
    /// Correlation id; replies carry the request's.
    pub correlation_id: Option<String>,
    /// Where a reply goes (a queue or a broker reply address).
    pub reply_to: Option<String>,
    /// Priority 0–9, higher first. Values above 9 are invalid input.
    pub priority: Option<u8>,
    /// Idempotency key, session id, sequence, `wharf-*` and free headers.
    pub headers: Headers,
}

impl Message {
    /// A message with the given raw body and no other fields.
    pub fn new(body: impl Into<Bytes>) -> Self {
        Message {
            body: body.into(),
            ..Message::default()
        }
    }

    /// A message carrying `value` encoded as JSON.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, CodecError> {
        Self::encode(Codec::Json, value)
    }

    /// A message carrying `value` encoded as MessagePack.
    pub fn msgpack<T: Serialize + ?Sized>(value: &T) -> Result<Self, CodecError> {
        Self::encode(Codec::MsgPack, value)
    }

    /// A message carrying `value` encoded with `codec`.
    pub fn encode<T: Serialize + ?Sized>(codec: Codec, value: &T) -> Result<Self, CodecError> {
        Ok(Message::new(codec.encode(value)?).with_content_type(codec.content_type()))
    }

    /// Sets the content type.
    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// Sets the message id.
    pub fn with_message_id(mut self, id: impl Into<String>) -> Self {
        self.message_id = Some(id.into());
        self
    }

    /// Sets the correlation id.
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets the reply address.
    pub fn with_reply_to(mut self, address: impl Into<String>) -> Self {
        self.reply_to = Some(address.into());
        self
    }

    /// Sets the priority (0–9, higher first).
    pub fn with_priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Sets the idempotency key.
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.headers.insert(names::IDEMPOTENCY_KEY, key);
        self
    }

    /// Puts the message in a session at position `sequence` (1, 2, 3, …).
    pub fn with_session(mut self, session_id: impl Into<String>, sequence: u64) -> Self {
        self.headers.insert(names::SESSION_ID, session_id);
        self.headers.insert(names::SEQUENCE, sequence.to_string());
        self
    }

    /// Sets a free header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// The idempotency key header, if any.
    pub fn idempotency_key(&self) -> Option<&str> {
        self.headers.get(names::IDEMPOTENCY_KEY)
    }

    /// The session id header, if any.
    pub fn session_id(&self) -> Option<&str> {
        self.headers.get(names::SESSION_ID)
    }

    /// The `sequence` header exactly as received (validated by the pipeline).
    pub fn sequence(&self) -> Option<&str> {
        self.headers.get(names::SEQUENCE)
    }

    /// A header by name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// The headers wharf itself wrote (`wharf-*`), as name/value pairs: what
    /// a transport adds to the received message to make a dead letter.
    #[cfg_attr(not(any(feature = "amqp", feature = "nats")), allow(dead_code))] // broker transports only
    pub(crate) fn wharf_headers(&self) -> Vec<(&str, String)> {
        self.headers
            .iter()
            .filter(|(name, _)| name.starts_with("wharf-"))
            .map(|(name, value)| (name, value.to_owned()))
            .collect()
    }
}
