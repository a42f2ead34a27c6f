//! What a handler's return value means: ack, reply, retry or dead-letter.

use crate::error::{Failure, IntoFailure};
use crate::handler::extract::Rejection;
use crate::wire::codec::Codec;
use bytes::Bytes;
use serde::Serialize;
use std::any::Any;

/// The result of one handler run, as the pipeline settles it, and what a
/// [`Middleware`](crate::middleware::Middleware) returns.
#[derive(Debug)]
#[non_exhaustive]
pub enum Outcome {
    /// Handled. `reply` holds the encoded return value when a reply was asked for.
    Done {
        /// Encoded reply, if the message wants one.
        reply: Option<Bytes>,
    },
    /// The handler failed; retried unless permanent or out of attempts.
    Failed(Failure),
    /// The message is poison (an extractor refused it) or a middleware
    /// refused it: dead-lettered at once.
    Rejected(Rejection),
}

/// Return types a handler may have.
///
/// - `()` acknowledges (a request gets a `null` reply);
/// - `Result<T, E>` replies with `T` (when the message has a reply address)
///   or fails with `E` (retryable unless `E` says permanent);
/// - [`Reply<T>`] replies with a plain value.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a valid wharf handler return type",
    note = "return `()`, `Result<T, E>` with `T: serde::Serialize` and `E: wharf::IntoFailure` (e.g. `wharf::Error`), or `wharf::Reply<T>`"
)]
pub trait IntoOutcome {
    /// Converts the return value; `reply` is the codec to encode a reply
    /// with, or `None` when nobody wants one.
    fn into_outcome(self, reply: Option<Codec>) -> Outcome;
}

/// A handler return value sent as the reply.
///
/// ```
/// use wharf::Reply;
/// async fn quote(item: String) -> Reply<u32> {
///     Reply(item.len() as u32 * 100)
/// }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Reply<T>(pub T);

pub(crate) fn done<T: Serialize + ?Sized>(value: &T, reply: Option<Codec>) -> Outcome {
    let Some(codec) = reply else {
        return Outcome::Done { reply: None };
    };
    match codec.encode(value) {
        Ok(body) => Outcome::Done {
            reply: Some(Bytes::from(body)),
        },
        // Running the handler again would produce the same value.
        Err(e) => Outcome::Failed(Failure::new(true, "encode", e.to_string())),
    }
}

impl IntoOutcome for () {
    fn into_outcome(self, reply: Option<Codec>) -> Outcome {
        Outcome::Done {
            reply: reply.map(unit_reply),
        }
    }
}

/// The encoding of `()`: JSON `null`, MessagePack nil.
pub(crate) fn unit_reply(codec: Codec) -> Bytes {
    match codec {
        Codec::Json => Bytes::from_static(b"null"),
        Codec::MsgPack => Bytes::from_static(&[0xc0]),
    }
}

impl<T: Serialize> IntoOutcome for Reply<T> {
    fn into_outcome(self, reply: Option<Codec>) -> Outcome {
        done(&self.0, reply)
    }
}

impl<T: Serialize, E: IntoFailure> IntoOutcome for Result<T, E> {
    fn into_outcome(self, reply: Option<Codec>) -> Outcome {
        match self {
            Ok(value) => done(&value, reply),
            Err(error) => Outcome::Failed(error.into_failure()),
        }
    }
}

/// A caught panic as a failed attempt (kind `panic`), retried like an error.
pub(crate) fn panicked(panic: Box<dyn Any + Send>) -> Failure {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    Failure::new(false, "panic", format!("handler panicked: {text}"))
}
