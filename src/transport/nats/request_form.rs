//! Which form a request from wharf's client takes on NATS, learned per
//! subject.
//!
//! A request to a subject that a stream holds must carry its reply address
//! and id in headers (`reply-to`, `Nats-Msg-Id`, `correlation-id`): the
//! stream keeps the message but not its NATS reply subject. A request to a
//! core NATS service needs none of them — the reply subject is the reply
//! address and, with one subject per request, the correlation too — and on
//! NATS headers are costly at every hop (each is parsed into a map by the
//! server, by the receiving client and again for the reply: with headers
//! both ways a request/reply took about a third more CPU in all). So the
//! client asks JetStream once per subject whether a stream holds it and
//! sends the *lean* form, without wharf's headers, when none does.
//!
//! A stream created later for a subject learnt as a service is noticed
//! when its publish ack comes back for a lean request (see
//! [`super::reply`]): that request fails with a clear error and what was
//! learnt is forgotten, so the next request asks again.

use super::Shared;
use crate::util::id_map::IdMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a subject whose lookup failed is sent the durable form before
/// JetStream is asked again.
const ASK_AGAIN_AFTER: Duration = Duration::from_secs(5);
/// How long the lookup may take; requests meanwhile use the durable form.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// The form of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Form {
    /// With `reply-to`, `Nats-Msg-Id` and `correlation-id`: works whether a
    /// stream or a core service takes the request.
    Durable,
    /// Without them: for a subject no stream holds.
    Lean,
}

/// What is known of one subject.
#[derive(Clone, Copy, Debug)]
enum Known {
    /// A stream holds it.
    Stream,
    /// No stream holds it: a core service (or nobody) answers.
    Service,
    /// A lookup is under way, started then (a lookup whose request was
    /// dropped never finishes; after [`LOOKUP_TIMEOUT`] another may start).
    Looking(Instant),
    /// The last lookup failed; ask again after this.
    Unsure(Instant),
}

/// The forms learnt by one client's reply address.
#[derive(Default)]
pub(crate) struct Forms {
    known: Mutex<IdMap<Known>>,
}

impl Forms {
    /// The form of a request to `subject` if it is known, without waiting;
    /// `None` when JetStream must be asked ([`Forms::learn_form`]).
    pub(crate) fn known_form(&self, subject: &str) -> Option<Form> {
        let mut known = self.known();
        match known.get(subject) {
            Some(Known::Stream) => return Some(Form::Durable),
            Some(Known::Service) => return Some(Form::Lean),
            Some(Known::Looking(since)) if since.elapsed() < LOOKUP_TIMEOUT => return Some(Form::Durable),
            Some(Known::Unsure(until)) if Instant::now() < *until => return Some(Form::Durable),
            _ => {}
        }
        known.insert(subject.to_owned(), Known::Looking(Instant::now()));
        None
    }

    /// Asks JetStream whether a stream holds `subject` (after
    /// [`Forms::known_form`] said it is not known) and remembers the answer.
    pub(crate) async fn learn_form(&self, shared: &Shared, subject: &str) -> Form {
        let learnt = match tokio::time::timeout(LOOKUP_TIMEOUT, shared.jetstream.stream_by_subject(subject))
            .await
        {
            Ok(Ok(_stream)) => Known::Stream,
            Ok(Err(e)) if e.kind() == async_nats::jetstream::context::GetStreamByNameErrorKind::NotFound => {
                Known::Service
            }
            Ok(Err(e)) => {
                tracing::debug!(
                    subject = crate::util::log_text::Logged::id(subject).value(),
                    error = %crate::error::Chain(&e),
                    "cannot tell whether a stream holds the subject"
                );
                Known::Unsure(Instant::now() + ASK_AGAIN_AFTER)
            }
            Err(_) => Known::Unsure(Instant::now() + ASK_AGAIN_AFTER),
        };
        self.known().insert(subject.to_owned(), learnt);
        match learnt {
            Known::Service => Form::Lean,
            _ => Form::Durable,
        }
    }

    /// A stream took a lean request: what was learnt no longer holds.
    pub(crate) fn forget(&self) {
        self.known().clear();
    }

    /// Records what a lookup would have found (tests).
    #[cfg(test)]
    pub(crate) fn learn(&self, subject: &str, service: bool) {
        let known = if service { Known::Service } else { Known::Stream };
        self.known().insert(subject.to_owned(), known);
    }

    /// Whether anything is known of `subject` (tests).
    #[cfg(test)]
    pub(crate) fn is_known(&self, subject: &str) -> bool {
        self.known().contains_key(subject)
    }

    fn known(&self) -> std::sync::MutexGuard<'_, IdMap<Known>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }
}
