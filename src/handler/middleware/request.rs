//! What a middleware sees of the message being handled, and the outcomes it
//! can answer with instead of running the handler.

use crate::error::{Failure, IntoFailure};
use crate::handler::extract::{Incoming, Rejection};
use crate::handler::outcome::{Outcome, done};
use crate::handler::route_shared::RouteShared;
use crate::wire::codec::Codec;
use crate::wire::message::Message;
use crate::wire::trace_context::TraceContext;
use serde::Serialize;
use std::borrow::Cow;
use std::sync::Arc;

/// The message on its way to the handler, as a [`Middleware`](super::Middleware)
/// sees it: the message with its headers, the attempt, the route. Owned, so a
/// middleware's future can keep it across `.await`s; pass it on with
/// [`Next::run`](super::Next::run).
pub struct Request {
    pub(super) message: Arc<Message>,
    pub(super) codec: Codec,
    pub(super) attempt: u32,
    pub(super) sequence: Option<u64>,
    pub(super) reply: Option<Codec>,
    pub(super) route: Arc<RouteShared>,
    pub(super) trace: Option<Arc<TraceContext>>,
}

impl Request {
    pub(super) fn new(incoming: &Incoming<'_>) -> Self {
        Request {
            message: incoming.message.clone(),
            codec: incoming.codec,
            attempt: incoming.attempt,
            sequence: incoming.sequence,
            reply: incoming.reply,
            route: incoming.route.clone(),
            trace: incoming.trace.cloned(),
        }
    }

    /// The handler's view of this request, borrowing from it.
    pub(super) fn incoming(&self) -> Incoming<'_> {
        Incoming {
            message: &self.message,
            codec: self.codec,
            attempt: self.attempt,
            sequence: self.sequence,
            reply: self.reply,
            route: &self.route,
            trace: self.trace.as_ref(),
        }
    }

    /// The message: body, content type, ids and headers
    /// ([`Message::header`] reads one).
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// A header's value, if the message has it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.message.header(name)
    }

    /// The codec chosen from the content type.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// 1 on the first attempt, 2 on the first retry, …
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The route's `max_attempts`.
    pub fn max_attempts(&self) -> u32 {
        self.route.max_attempts
    }

    /// The queue the message came from.
    pub fn queue(&self) -> &str {
        &self.route.queue
    }

    /// The route's handler name (`RouteOptions::name`, or the function's
    /// type name).
    pub fn handler_name(&self) -> &str {
        &self.route.handler_name
    }

    /// True when a reply value is wanted: the message has a reply address,
    /// or an idempotency key (the reply is stored for its duplicates).
    pub fn wants_reply(&self) -> bool {
        self.reply.is_some()
    }

    /// Answers without running the handler: acknowledged, and `value` sent
    /// as the reply when the message asks for one (encoded like a handler's
    /// return value).
    pub fn reply<T: Serialize + ?Sized>(&self, value: &T) -> Outcome {
        done(value, self.reply)
    }

    /// Refuses the message without running the handler: it is dead-lettered
    /// at once with reason `refused` and `kind` as its error kind
    /// (`wharf-error-kind`), `message` as its error message; a request gets
    /// an error reply of that kind. Not retried.
    pub fn refuse(&self, kind: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Outcome {
        Outcome::Rejected(Rejection::refused(kind, message))
    }

    /// Fails this attempt without running the handler, as if the handler
    /// had returned `error`: retried unless it is permanent.
    pub fn fail(&self, error: impl IntoFailure) -> Outcome {
        Outcome::Failed(error.into_failure())
    }
}

impl Outcome {
    /// The failure, when the handler (or a middleware) failed.
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Outcome::Failed(failure) => Some(failure),
            _ => None,
        }
    }

    /// True when the message was handled (acknowledged, replied to).
    pub fn is_done(&self) -> bool {
        matches!(self, Outcome::Done { .. })
    }

    /// A short label of the outcome for logs and metric labels: `done`,
    /// `failed`, `permanent` (a failure that will not be retried) or
    /// `rejected`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Done { .. } => "done",
            Outcome::Failed(failure) if failure.permanent => "permanent",
            Outcome::Failed(_) => "failed",
            Outcome::Rejected(_) => "rejected",
        }
    }
}
