//! The records kept in the buckets, as MessagePack.

use super::keys::shorten;
use crate::error::{BrokerError, BrokerErrorKind};
use crate::store::StoredReply;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::time::Duration;

/// An idempotency record.
#[derive(Serialize, Deserialize)]
pub(super) struct KeyRecord {
    /// Unix milliseconds at which the lease or window ends.
    pub(super) until_ms: u64,
    pub(super) state: KeyState,
}

#[derive(Serialize, Deserialize)]
pub(super) enum KeyState {
    /// Claimed with this token.
    Claimed(u64),
    /// Done, with its reply.
    Done(Option<Reply>),
}

#[derive(Clone, Serialize, Deserialize)]
pub(super) struct Reply {
    #[serde(with = "raw_bytes")]
    body: Bytes,
    content_type: String,
}

impl From<StoredReply> for Reply {
    fn from(reply: StoredReply) -> Self {
        Reply {
            body: reply.body,
            content_type: reply.content_type.into_owned(),
        }
    }
}

impl From<Reply> for StoredReply {
    fn from(reply: Reply) -> Self {
        StoredReply {
            body: reply.body,
            content_type: Cow::Owned(reply.content_type),
        }
    }
}

/// A session's turn bookkeeping.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub(super) struct SessionRecord {
    pub(super) next: u64,
    /// The sequence number running and the unix milliseconds its lease ends.
    pub(super) lease: Option<(u64, u64)>,
    /// The number the session is held for (it comes back), and until when.
    #[serde(default)]
    pub(super) hold: Option<(u64, u64)>,
    /// Lowest number reported early (meaningful only while above `next`).
    pub(super) early: u64,
    /// Highest number reported early (likewise).
    #[serde(default)]
    pub(super) latest: u64,
    /// Ranges the gap policy skipped, newest last.
    pub(super) gaps: Vec<(u64, u64)>,
}

impl Default for SessionRecord {
    fn default() -> Self {
        SessionRecord {
            next: 1,
            lease: None,
            hold: None,
            early: 0,
            latest: 0,
            gaps: Vec::new(),
        }
    }
}

impl SessionRecord {
    pub(super) fn early(&self) -> Option<u64> {
        (self.early > self.next).then_some(self.early)
    }

    pub(super) fn latest(&self) -> Option<u64> {
        (self.latest > self.next).then_some(self.latest)
    }

    /// Whether some worker may wait for this session to change: a number
    /// of it was ever reported early (by any worker: so more of its
    /// numbers may wait in several workers, not all of them reported), or
    /// a worker found its number busy and holds it, as of `now_ms`. Only
    /// then is a change announced: a session only one worker ever saw
    /// announces nothing.
    pub(super) fn waited_for(&self, now_ms: u64) -> bool {
        self.early != 0 || self.latest != 0 || self.hold.is_some_and(|(_, until)| until > now_ms)
    }
}

/// Bytes as a MessagePack `bin`, not an array of numbers.
mod raw_bytes {
    use bytes::Bytes;
    use serde::de::{Deserializer, Error, SeqAccess, Visitor};
    use serde::ser::Serializer;

    pub(super) fn serialize<S: Serializer>(bytes: &Bytes, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
        struct Raw;
        impl<'de> Visitor<'de> for Raw {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes::copy_from_slice(v))
            }
            fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes::from(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(Bytes::from(out))
            }
        }
        deserializer.deserialize_byte_buf(Raw)
    }
}

pub(super) fn encode<T: Serialize>(record: &T) -> Result<Bytes, BrokerError> {
    rmp_serde::to_vec(record).map(Bytes::from).map_err(|e| {
        BrokerError::new(BrokerErrorKind::Store, "encoding a NATS KV store record failed").with_source(e)
    })
}

pub(super) fn decode<T: DeserializeOwned>(key: &str, value: &[u8]) -> Result<T, BrokerError> {
    rmp_serde::from_slice(value).map_err(|e| {
        BrokerError::new(
            BrokerErrorKind::Store,
            format!(
                "the NATS KV store record {} is not one this version of wharf wrote",
                shorten(key)
            ),
        )
        .with_source(e)
    })
}

/// `now_ms` plus `duration`, saturating: when a lease or window ends.
pub(super) fn after(now_ms: u64, duration: Duration) -> u64 {
    now_ms.saturating_add(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_compactly() {
        let record = KeyRecord {
            until_ms: 1_700_000_000_000,
            state: KeyState::Done(Some(Reply {
                body: Bytes::from_static(&[1, 2, 200]),
                content_type: "application/msgpack".into(),
            })),
        };
        let bytes = encode(&record).unwrap();
        assert!(bytes.len() < 64, "{} bytes", bytes.len());
        let back: KeyRecord = decode("k", &bytes).unwrap();
        assert_eq!(back.until_ms, record.until_ms);
        let KeyState::Done(Some(reply)) = back.state else {
            panic!("a done record")
        };
        assert_eq!(&reply.body[..], &[1, 2, 200]);
        let session = SessionRecord {
            next: 9,
            lease: Some((9, 1_700_000_000_000)),
            hold: Some((9, 1_700_000_000_500)),
            early: 12,
            latest: 15,
            gaps: vec![(2, 5), (6, 8)],
        };
        assert_eq!(
            decode::<SessionRecord>("s", &encode(&session).unwrap()).unwrap(),
            session
        );
        assert!(decode::<SessionRecord>("s", b"\xc1").is_err());
    }
}
