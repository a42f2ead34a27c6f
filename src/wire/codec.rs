//! Payload codecs, chosen by content type.

use crate::error::HandlerError;
use serde::{Serialize, de::DeserializeOwned};
use std::borrow::Cow;
use std::fmt;

/// Content type of JSON payloads (the default when none is given).
pub const JSON: &str = "application/json";
/// Content type of MessagePack payloads.
pub const MSGPACK: &str = "application/msgpack";

/// How a payload is encoded on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// `application/json` (also the default when a message has no content type).
    Json,
    /// `application/msgpack` (also accepted: `application/x-msgpack`,
    /// `application/vnd.msgpack`). Structs are written as maps with field
    /// names, which is what publishers in other languages produce and expect.
    MsgPack,
}

impl Codec {
    /// Picks the codec for a content type. `None` or an empty string means JSON;
    /// parameters such as `; charset=utf-8` are ignored.
    pub fn from_content_type(content_type: Option<&str>) -> Result<Codec, CodecError> {
        let raw = match content_type {
            None | Some(JSON) => return Ok(Codec::Json),
            Some(MSGPACK) => return Ok(Codec::MsgPack),
            Some(raw) => raw,
        };
        let essence = raw.split(';').next().unwrap_or("").trim();
        if essence.is_empty() || essence.eq_ignore_ascii_case(JSON) {
            Ok(Codec::Json)
        } else if [
            "application/msgpack",
            "application/x-msgpack",
            "application/vnd.msgpack",
        ]
        .iter()
        .any(|m| essence.eq_ignore_ascii_case(m))
        {
            Ok(Codec::MsgPack)
        } else {
            Err(CodecError::UnsupportedContentType(raw.to_owned()))
        }
    }

    /// The content type wharf writes for this codec.
    pub fn content_type(self) -> &'static str {
        match self {
            Codec::Json => JSON,
            Codec::MsgPack => MSGPACK,
        }
    }

    /// Encodes a value.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>, CodecError> {
        match self {
            Codec::Json => serde_json::to_vec(value).map_err(|e| CodecError::Encode(e.to_string())),
            Codec::MsgPack => rmp_serde::to_vec_named(value).map_err(|e| CodecError::Encode(e.to_string())),
        }
    }

    /// Decodes a value.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, CodecError> {
        match self {
            Codec::Json => serde_json::from_slice(bytes).map_err(|e| CodecError::Decode(e.to_string())),
            Codec::MsgPack => rmp_serde::from_slice(bytes).map_err(|e| CodecError::Decode(e.to_string())),
        }
    }
}

/// Why a payload could not be encoded or decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodecError {
    /// The content type is neither JSON nor MessagePack.
    UnsupportedContentType(String),
    /// The body does not decode into the expected type.
    Decode(String),
    /// The value could not be serialised.
    Encode(String),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::UnsupportedContentType(ct) => write!(
                f,
                "unsupported content type {ct:?} (expected application/json or application/msgpack)"
            ),
            CodecError::Decode(e) => write!(f, "cannot decode payload: {e}"),
            CodecError::Encode(e) => write!(f, "cannot encode payload: {e}"),
        }
    }
}

impl std::error::Error for CodecError {}

/// Permanent (the same value or payload fails the same way every time),
/// with the kind wharf gives the same failure of its own: `content-type`,
/// `decode` or `encode`.
impl HandlerError for CodecError {
    fn is_permanent(&self) -> bool {
        true
    }

    fn kind(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            CodecError::UnsupportedContentType(_) => "content-type",
            CodecError::Decode(_) => "decode",
            CodecError::Encode(_) => "encode",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Order {
        id: u32,
        item: String,
    }

    #[test]
    fn content_type_selects_codec() {
        assert_eq!(Codec::from_content_type(None), Ok(Codec::Json));
        assert_eq!(
            Codec::from_content_type(Some("application/json; charset=utf-8")),
            Ok(Codec::Json)
        );
        assert_eq!(
            Codec::from_content_type(Some("Application/X-MsgPack")),
            Ok(Codec::MsgPack)
        );
        assert!(matches!(
            Codec::from_content_type(Some("text/plain")),
            Err(CodecError::UnsupportedContentType(_))
        ));
    }

    #[test]
    fn codec_errors_returned_by_a_handler_are_permanent() {
        use crate::error::IntoFailure;
        let error = Codec::Json.decode::<Order>(b"{").unwrap_err();
        let failure = error.clone().into_failure();
        assert!(failure.permanent);
        assert_eq!(failure.kind, "decode");
        assert_eq!(failure.message, error.to_string());
        let error = Codec::from_content_type(Some("text/plain")).unwrap_err();
        assert_eq!(error.into_failure().kind, "content-type");
    }

    #[test]
    fn msgpack_writes_structs_as_maps() {
        let order = Order {
            id: 7,
            item: "tea".into(),
        };
        let bytes = Codec::MsgPack.encode(&order).unwrap();
        // fixmap with 2 entries: what Python's msgpack.packb({"id":..,"item":..}) writes.
        assert_eq!(bytes[0], 0x82);
        assert_eq!(Codec::MsgPack.decode::<Order>(&bytes).unwrap(), order);
    }
}
