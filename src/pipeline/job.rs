//! A delivery on its way through the pipeline, with the idempotency and
//! session state its steps take and give back.

use super::lease::LeaseHold;
use super::session::Baton;
use crate::store::ClaimToken;
use crate::transport::Delivery;
use crate::wire::codec::Codec;
use crate::wire::message::Message;
use crate::wire::trace_context::TraceContext;
use std::sync::Arc;

/// A delivery on its way through the pipeline.
pub(crate) struct Job {
    pub(super) delivery: Delivery,
    pub(super) codec: Codec,
    /// Idempotency and session state, boxed: most messages have neither, and
    /// the job is moved through every step.
    pub(super) keys: Option<Box<Keys>>,
    /// This handling's place in the message's trace, when it carries one:
    /// the parent of its reply and of what its handler publishes.
    pub(super) trace: Option<Arc<TraceContext>>,
}

/// A job's idempotency and session state.
#[derive(Default)]
pub(super) struct Keys {
    /// Scoped idempotency key, and the claim once taken.
    pub(super) idempotency_key: Option<String>,
    pub(super) claim: Option<ClaimToken>,
    /// Scoped session key and sequence number, when session order applies.
    pub(super) session: Option<(String, u64)>,
    /// The validated `sequence` header, for `Meta`.
    pub(super) sequence: Option<u64>,
    /// The session's turn (lease) is held by this job.
    pub(super) turn: bool,
    /// The session's local baton, while this job holds it.
    pub(super) baton: Option<Baton>,
    /// Renews the idempotency claim while the job holds it.
    pub(super) claim_hold: Option<LeaseHold>,
    /// Renews the session's turn while the job holds it.
    pub(super) turn_hold: Option<LeaseHold>,
}

impl Job {
    pub(super) fn new(
        delivery: Delivery,
        codec: Codec,
        keys: Option<Box<Keys>>,
        trace: Option<Arc<TraceContext>>,
    ) -> Self {
        Job {
            delivery,
            codec,
            keys,
            trace,
        }
    }

    /// Carries the job's trace (if any) on to a message it sends.
    pub(super) fn stamp(&self, message: &mut Message) {
        if let Some(trace) = &self.trace {
            trace.stamp(message);
        }
    }

    pub(super) fn keys_mut(&mut self) -> &mut Keys {
        self.keys.get_or_insert_with(Box::default)
    }

    pub(super) fn idempotency_key(&self) -> Option<&str> {
        self.keys.as_ref()?.idempotency_key.as_deref()
    }

    pub(super) fn claim(&self) -> Option<ClaimToken> {
        self.keys.as_ref()?.claim
    }

    pub(super) fn session(&self) -> Option<&(String, u64)> {
        self.keys.as_ref()?.session.as_ref()
    }

    pub(super) fn sequence(&self) -> Option<u64> {
        self.keys.as_ref()?.sequence
    }

    pub(super) fn turn(&self) -> bool {
        self.keys.as_ref().is_some_and(|k| k.turn)
    }

    pub(super) fn take_baton(&mut self) -> Option<Baton> {
        self.keys.as_mut()?.baton.take()
    }
}
