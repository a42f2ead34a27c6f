//! How a tracked message ended: [`Settled`] and its [`End`], or
//! [`Unsettled`] when it did not end in time.

use crate::client::{RemoteError, remote_error};
use crate::ops::dead_letters::DeadLetter;
use crate::wire::codec::Codec;
use crate::wire::dead_letter_reason::DeadLetterReason;
use crate::wire::headers::names;
use crate::wire::message::Message;
use serde::de::DeserializeOwned;
use std::fmt;

/// How a tracked message ended, after how many attempts, and the reply
/// it got; from [`Tracked::outcome`](super::Tracked::outcome).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), wharf::BrokerError> {
/// use wharf::testing::{End, TestBroker};
/// use wharf::{App, DeadLetterReason, Error};
///
/// async fn refuse(_: u64) -> Result<(), Error> {
///     Err(Error::permanent("no such order").with_kind("unknown-order"))
/// }
///
/// let kit = TestBroker::new();
/// let app = kit.start(App::new(kit.broker()).route("orders", refuse)).await?;
/// let settled = app.publish("orders", &7u64).outcome().await;
/// assert!(matches!(settled.end(), End::DeadLettered(_)));
/// assert_eq!(settled.reason(), Some(DeadLetterReason::Permanent));
/// assert_eq!(settled.dead_letter().unwrap().error_kind(), Some("unknown-order"));
/// assert_eq!((settled.attempts(), settled.retries()), (1, 0));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Settled {
    pub(super) end: End,
    pub(super) attempts: u32,
    pub(super) retries: u32,
    pub(super) reply: Option<Message>,
}

/// The last settlement of a tracked message. Retries, deferrals and
/// shutdown returns are not ends: the message comes again.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum End {
    /// The handler succeeded and the message was acknowledged (with its
    /// reply sent first, when it has a reply address).
    Acked,
    /// Acknowledged without running the handler: its idempotency key ran
    /// already (a request gets the original reply again), or its session
    /// had moved past its sequence number.
    Duplicate,
    /// Dead-lettered after a handler run or because it had no attempts
    /// left: a permanent error, every attempt failed, or a session gap. The
    /// dead letter as stored says which
    /// ([`DeadLetter::reason`](crate::DeadLetter::reason)).
    DeadLettered(DeadLetter),
    /// Bad input, dead-lettered without a handler run: a body that does
    /// not decode into the handler's payload, an unknown content type, an
    /// oversized body, a malformed header, an unusable reply address.
    Rejected(DeadLetter),
}

impl Settled {
    /// How it ended.
    pub fn end(&self) -> &End {
        &self.end
    }

    /// The attempt it ended on: 1 when its first delivery settled it, 3
    /// after two failed attempts ([`Context::attempt`](crate::Context::attempt)
    /// of its last run).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// How many failed attempts were retried before the end.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// The handler succeeded ([`End::Acked`]).
    pub fn is_acked(&self) -> bool {
        self.end == End::Acked
    }

    /// Acked as a duplicate without a run ([`End::Duplicate`]).
    pub fn is_duplicate(&self) -> bool {
        self.end == End::Duplicate
    }

    /// Dead-lettered after a run, with no attempts left, or refused by a
    /// middleware ([`End::DeadLettered`]).
    pub fn is_dead_lettered(&self) -> bool {
        matches!(self.end, End::DeadLettered(_))
    }

    /// Bad input, dead-lettered without a run ([`End::Rejected`]).
    pub fn is_rejected(&self) -> bool {
        matches!(self.end, End::Rejected(_))
    }

    /// The dead letter, when it was dead-lettered or rejected.
    pub fn dead_letter(&self) -> Option<&DeadLetter> {
        match &self.end {
            End::DeadLettered(letter) | End::Rejected(letter) => Some(letter),
            _ => None,
        }
    }

    /// Why it was dead-lettered or rejected.
    pub fn reason(&self) -> Option<DeadLetterReason> {
        self.dead_letter()?.reason()
    }

    /// The reply sent to its reply address (an error reply too), when it
    /// has one: see [`TestApp::send_request`](super::TestApp::send_request).
    pub fn reply_message(&self) -> Option<&Message> {
        self.reply.as_ref()
    }

    /// The reply decoded into `T`, or the error reply as a [`RemoteError`]
    /// (what [`Client::request`](crate::Client::request) would return).
    ///
    /// # Panics
    ///
    /// When no reply was sent (the message had no reply address, or was
    /// dead-lettered for an unusable one), or it does not decode into `T`:
    /// a test that expects a reply fails there, saying why.
    pub fn reply<T: DeserializeOwned>(&self) -> Result<T, RemoteError> {
        let Some(reply) = &self.reply else {
            panic!("no reply was sent; the message ended {:?}", self.end);
        };
        let codec = Codec::from_content_type(reply.content_type.as_deref())
            .unwrap_or_else(|error| panic!("the reply has an unreadable content type: {error}"));
        if reply.header(names::STATUS) == Some("error") {
            return Err(remote_error(reply));
        }
        Ok(codec.decode(&reply.body).unwrap_or_else(|error| {
            panic!(
                "the reply does not decode into {}: {error}",
                std::any::type_name::<T>()
            )
        }))
    }
}

/// A tracked message that did not end within the time limit; from
/// [`Tracked::try_outcome`](super::Tracked::try_outcome). Its `Display`
/// says which message and what happened to it so far.
#[derive(Clone, Debug)]
pub struct Unsettled {
    pub(super) text: String,
}

impl fmt::Display for Unsettled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for Unsettled {}
