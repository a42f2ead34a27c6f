//! The wire format (docs/wire-format.md): the transport-neutral message,
//! its headers and what wharf's own headers mean, payload codecs, error
//! reply bodies, dead-letter reasons, trace context and timestamps. What a
//! publisher in any language sees; nothing here knows a broker.

pub(crate) mod attempt_header;
pub mod codec;
pub(crate) mod dead_letter_reason;
pub(crate) mod error_body;
pub(crate) mod header_bytes;
pub mod headers;
pub(crate) mod message;
pub(crate) mod timestamp;
pub(crate) mod trace_context;
