//! The reply step: the handler's return value (or its error) goes to the
//! request's reply address with the request's correlation id.

use crate::wire::codec::Codec;
use crate::wire::error_body::ErrorBody;
use crate::wire::headers::{Headers, names};
use crate::wire::message::Message;
use bytes::Bytes;

/// The correlation id a reply carries: the request's, or its message id.
fn correlation(request: &Message) -> Option<String> {
    request
        .correlation_id
        .clone()
        .or_else(|| request.message_id.clone())
}

/// A successful reply carrying `body` encoded with `content_type`.
pub(crate) fn ok(request: &Message, body: Bytes, content_type: &str) -> Message {
    let mut headers = Headers::new();
    headers.insert_static(names::STATUS, "ok");
    Message {
        body,
        content_type: Some(content_type.to_owned()),
        correlation_id: correlation(request),
        headers,
        ..Message::default()
    }
}

/// An error reply. If the error cannot be encoded in the request's codec
/// (details that do not fit), it is sent as JSON without details.
pub(crate) fn error(request: &Message, codec: Codec, body: &ErrorBody) -> Message {
    let (encoded, codec) = match codec.encode(body) {
        Ok(bytes) => (bytes, codec),
        Err(_) => {
            let plain = ErrorBody {
                details: None,
                ..body.clone()
            };
            (serde_json::to_vec(&plain).unwrap_or_default(), Codec::Json)
        }
    };
    Message {
        body: encoded.into(),
        content_type: Some(codec.content_type().to_owned()),
        correlation_id: correlation(request),
        headers: [(names::STATUS, "error"), (names::ERROR_KIND, body.kind.as_str())]
            .into_iter()
            .collect(),
        ..Message::default()
    }
}
