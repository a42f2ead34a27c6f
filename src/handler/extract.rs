//! Extractors: what a handler can take as arguments.
//!
//! Every argument of a handler implements [`FromMessage`]. Any type that
//! implements `serde::Deserialize` is decoded from the body by the message's
//! content type; [`Context`](crate::Context), [`Meta`], [`State`] and [`Raw`]
//! give the rest. A body that does not decode is a [`Rejection`]: the message
//! is poison and goes to the dead-letter queue at once.

use crate::handler::route_shared::RouteShared;
use crate::wire::codec::{Codec, CodecError};
use crate::wire::dead_letter_reason::DeadLetterReason;
use crate::wire::headers::Headers;
use crate::wire::message::Message;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// The message being handled, as extractors see it. It borrows from the
/// pipeline: an extractor clones what it keeps.
pub struct Incoming<'a> {
    pub(crate) message: &'a Arc<Message>,
    pub(crate) codec: Codec,
    pub(crate) attempt: u32,
    pub(crate) sequence: Option<u64>,
    /// Codec to encode the handler's reply with, when a reply is needed.
    pub(crate) reply: Option<Codec>,
    pub(crate) route: &'a Arc<RouteShared>,
    /// This handling's place in the message's trace, if it carries one.
    pub(crate) trace: Option<&'a Arc<crate::wire::trace_context::TraceContext>>,
}

impl Incoming<'_> {
    /// The message.
    pub fn message(&self) -> &Message {
        self.message
    }

    /// The codec chosen from the content type.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// 1 on the first attempt.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The queue the message came from.
    pub fn queue(&self) -> &str {
        &self.route.queue
    }
}

/// Why an extractor refused the message. The message is poison: it is
/// dead-lettered at once with this reason, and a request gets an error reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub(crate) reason: DeadLetterReason,
    /// The error kind, when it is not the reason's name.
    pub(crate) kind: Option<Cow<'static, str>>,
    pub(crate) message: String,
}

impl Rejection {
    /// A rejection because the payload is unusable.
    pub fn decode(message: impl Into<String>) -> Self {
        Rejection {
            reason: DeadLetterReason::Decode,
            kind: None,
            message: message.into(),
        }
    }

    /// A refusal by a [`Middleware`](crate::middleware::Middleware): reason
    /// `refused`, with the middleware's own error `kind`.
    pub fn refused(kind: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Rejection {
            reason: DeadLetterReason::Refused,
            kind: Some(kind.into()),
            message: message.into(),
        }
    }

    /// The error kind: the one given to [`refused`](Rejection::refused), or
    /// the reason's name.
    pub fn kind(&self) -> &str {
        self.kind.as_deref().unwrap_or(self.reason.as_str())
    }

    /// Why the message was dead-lettered.
    pub fn reason(&self) -> DeadLetterReason {
        self.reason
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

impl From<CodecError> for Rejection {
    fn from(error: CodecError) -> Self {
        Rejection::decode(error.to_string())
    }
}

/// A handler argument, built from the incoming message and the app state.
///
/// `S` is the app's state type (`()` for [`App::new`](crate::App::new)).
/// The compiler names this trait in an error when an argument is none of
/// the extractors; most often a [`State<T>`] whose `T` is not the app's
/// state type. (A payload type that is not `serde::Deserialize` is reported
/// as exactly that.)
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a wharf handler argument in an app whose state type is `{S}`",
    label = "not an extractor for this app",
    note = "`State<T>` needs `T` to be exactly the app's state type, here `{S}` (`App::with_state(broker, state)` sets it; `App::new` makes it `()`)",
    note = "handler arguments are the payload (any type implementing `serde::Deserialize`), `wharf::Context`, `wharf::Meta`, `wharf::State<S>` or `wharf::Raw`"
)]
pub trait FromMessage<S>: Sized {
    /// Builds the argument, or rejects the message as poison.
    fn from_message(incoming: &Incoming<'_>, state: &S) -> Result<Self, Rejection>;
}

/// The payload: decoded from the body by the message's content type.
impl<S, T: DeserializeOwned> FromMessage<S> for T {
    fn from_message(incoming: &Incoming<'_>, _: &S) -> Result<Self, Rejection> {
        incoming
            .codec
            .decode(&incoming.message.body)
            .map_err(Rejection::from)
    }
}

/// The application state given to [`App::with_state`](crate::App::with_state).
///
/// ```
/// use wharf::{App, Broker, State};
/// #[derive(Clone)]
/// struct Db { url: String }
///
/// async fn handle(State(db): State<Db>, order: u32) {
///     let _ = (db.url, order);
/// }
/// let app = App::with_state(Broker::memory(), Db { url: "postgres://…".into() })
///     .route("orders", handle);
/// ```
#[derive(Clone, Debug)]
pub struct State<S>(pub S);

// For any `T`, not only `State<S>`: then `State<String>` in an app whose
// state is `u64` matches this impl and is reported as the wrong state type.
// With `State<S>` only the payload impl matched it, and rustc said that
// `State<String>` is not `Deserialize`.
impl<S, T> FromMessage<S> for State<T>
where
    S: app_state::Is<T>,
{
    fn from_message(_: &Incoming<'_>, state: &S) -> Result<Self, Rejection> {
        Ok(State(state.to_state()))
    }
}

/// Type equality as a bound. A public trait in a private module: users
/// neither name nor implement it.
mod app_state {
    /// `Self` is `T`.
    pub trait Is<T> {
        /// A copy of the state, as `T`.
        fn to_state(&self) -> T;
    }

    impl<T: Clone> Is<T> for T {
        fn to_state(&self) -> T {
            self.clone()
        }
    }
}

/// The raw body, undecoded, with its content type.
#[derive(Clone, Debug)]
pub struct Raw {
    /// Body bytes.
    pub body: Bytes,
    /// Content type, if set.
    pub content_type: Option<String>,
}

impl<S> FromMessage<S> for Raw {
    fn from_message(incoming: &Incoming<'_>, _: &S) -> Result<Self, Rejection> {
        Ok(Raw {
            body: incoming.message.body.clone(),
            content_type: incoming.message.content_type.clone(),
        })
    }
}

/// Message metadata: ids, headers, session position and attempt number.
#[derive(Clone, Debug)]
pub struct Meta {
    message: Arc<Message>,
    attempt: u32,
    sequence: Option<u64>,
}

impl Meta {
    /// Message id.
    pub fn message_id(&self) -> Option<&str> {
        self.message.message_id.as_deref()
    }

    /// Correlation id.
    pub fn correlation_id(&self) -> Option<&str> {
        self.message.correlation_id.as_deref()
    }

    /// Reply address.
    pub fn reply_to(&self) -> Option<&str> {
        self.message.reply_to.as_deref()
    }

    /// Priority 0–9.
    pub fn priority(&self) -> Option<u8> {
        self.message.priority
    }

    /// Idempotency key.
    pub fn idempotency_key(&self) -> Option<&str> {
        self.message.idempotency_key()
    }

    /// Session id.
    pub fn session_id(&self) -> Option<&str> {
        self.message.session_id()
    }

    /// Position in the session, validated.
    pub fn sequence(&self) -> Option<u64> {
        self.sequence
    }

    /// A header by name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.message.headers.get(name)
    }

    /// All headers.
    pub fn headers(&self) -> &Headers {
        &self.message.headers
    }

    /// 1 on the first attempt.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The whole message.
    pub fn message(&self) -> &Message {
        &self.message
    }
}

impl<S> FromMessage<S> for Meta {
    fn from_message(incoming: &Incoming<'_>, _: &S) -> Result<Self, Rejection> {
        Ok(Meta {
            message: incoming.message.clone(),
            attempt: incoming.attempt,
            sequence: incoming.sequence,
        })
    }
}
