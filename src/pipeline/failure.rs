//! A failed attempt: retried after its backoff or dead-lettered, with
//! [`retry`](super::retry) deciding; and the dead-letter copy, the original
//! message, byte for byte, plus wharf's headers saying why, where, when and
//! after how many attempts.

use super::retry::Decision;
use super::{Handled, Job, Pipeline, TurnEnd, reply};
use crate::error::{BrokerError, Failure};
use crate::transport::{Delivery, Settlement};
use crate::util::log_text::Shortened;
use crate::wire::codec::Codec;
use crate::wire::dead_letter_reason::DeadLetterReason;
use crate::wire::error_body::ErrorBody;
use crate::wire::headers::names;
use crate::wire::message::Message;
use crate::wire::trace_context::TraceContext;
use std::sync::Arc;
use std::time::SystemTime;

impl<S: Send + Sync + 'static> Pipeline<S> {
    /// A failed attempt: retried after its backoff, or dead-lettered when
    /// the retry policy says so.
    pub(super) async fn fail(self: &Arc<Self>, mut job: Job, attempt: u32, failure: Failure) {
        self.observe.failure_kind(&failure.kind);
        match self.policy.decide(attempt, &failure) {
            Decision::Retry(delay) => {
                tracing::info!(kind = %failure.kind, error = %Shortened::error(&failure.message), ?delay, "attempt {attempt} failed; retrying");
                self.release_claim(&job).await;
                self.session_end(&mut job, TurnEnd::Retrying).await;
                self.settle(job.delivery, Settlement::Retry { delay }, Handled::Retried)
                    .await;
            }
            Decision::DeadLetter(reason) => {
                self.dead_letter(job, reason, &failure, true).await;
            }
        }
    }

    /// Sends a message to the dead-letter queue, with an error reply to a
    /// request. `advance_session` moves its session past it once stored (not
    /// for session-gap dead letters, whose session the gap policy moves).
    /// Returns whether the dead letter was stored.
    pub(super) async fn dead_letter(
        self: &Arc<Self>,
        mut job: Job,
        reason: DeadLetterReason,
        failure: &Failure,
        advance_session: bool,
    ) -> bool {
        tracing::warn!(%reason, kind = %failure.kind, error = %Shortened::error(&failure.message), "message dead-lettered");
        let message = &job.delivery.message;
        // No error reply to an address that cannot take one.
        let reply_to = message
            .reply_to
            .as_deref()
            .filter(|_| reason != DeadLetterReason::Reply);
        if let Some(address) = reply_to {
            let body = ErrorBody {
                kind: failure.kind.to_string(),
                message: failure.message.clone(),
                details: failure.details.clone(),
            };
            let mut response = reply::error(message, job.codec, &body);
            job.stamp(&mut response);
            match self.shared.transport.reply(address, response).await {
                Ok(()) => self.observe.replied(false),
                Err(error) => {
                    tracing::warn!(error = %crate::error::Chain(&error), "error reply could not be published")
                }
            }
        }
        self.release_claim(&job).await;
        let dead = dead_letter_message(
            message,
            &Failed {
                reason,
                error_kind: &failure.kind,
                error_message: &failure.message,
                queue: &self.shared.queue,
                handler: &self.shared.handler_name,
                attempts: job.delivery.delivery_count,
            },
        );
        let outcome = if reason.is_bad_input() {
            Handled::Rejected
        } else {
            Handled::DeadLettered
        };
        self.observe.dead_letter(reason);
        let baton = job.take_baton();
        let turn = job.turn();
        let settled = self
            .settle_ok(
                job.delivery,
                Settlement::DeadLetter {
                    message: Box::new(dead),
                },
                outcome,
            )
            .await;
        // Only once the dead letter is stored may the session move past it;
        // otherwise a redelivery would be acked as stale and lost.
        let end = if advance_session && settled {
            TurnEnd::Finished
        } else {
            TurnEnd::Abandoned
        };
        let session = job.keys.as_ref().and_then(|k| k.session.as_ref());
        self.end_turn(session, turn, baton, end).await;
        settled
    }

    /// The handler succeeded but its reply could not be published: a
    /// failed attempt, unless the broker refused the address itself, which
    /// no retry can change (dead-lettered at once, reason `reply`).
    pub(super) async fn reply_failed(self: &Arc<Self>, job: Job, error: BrokerError) {
        if error.kind() == crate::error::BrokerErrorKind::Address {
            let address = job.delivery.message.reply_to.as_deref().unwrap_or_default();
            let failure = Failure::new(
                true,
                "reply",
                format!(
                    "the broker refused reply address {address:?}: {}",
                    crate::error::Chain(&error)
                ),
            );
            self.dead_letter(job, DeadLetterReason::Reply, &failure, true)
                .await;
            return;
        }
        tracing::warn!(error = %crate::error::Chain(&error), "reply could not be published; the message will be retried");
        let failure = Failure::new(false, "reply", crate::error::Chain(&error).to_string());
        let attempt = job.delivery.delivery_count.max(1);
        self.fail(job, attempt, failure).await
    }

    /// A message with no attempts left: dead-lettered before any step can
    /// fail on it again. Either it arrived with them used up (its
    /// `wharf-attempt`, whoever wrote it, is at or above `max_attempts`),
    /// or this worker and its broker counted more deliveries than attempts:
    /// a delivery was dropped unsettled (its worker died or the pipeline
    /// panicked). Only the second is reported as `redelivered`: a header
    /// says how many attempts were made, not that a worker died.
    pub(super) async fn out_of_attempts(
        self: &Arc<Self>,
        mut delivery: Delivery,
        trace: Option<Arc<TraceContext>>,
    ) {
        let max = self.policy.max_attempts;
        // Read again here, off the common path: a malformed value was
        // not counted (the transport flagged the delivery instead).
        let carried = crate::wire::attempt_header::carried(
            delivery.message.header(crate::wire::headers::names::ATTEMPT),
        )
        .unwrap_or(0);
        let failure = if carried >= max {
            // The dead letter says how many attempts were made: the ones
            // it came with, as this delivery was not one.
            delivery.delivery_count = carried;
            Failure::new(
                true,
                "attempts-used-up",
                format!(
                    "arrived with wharf-attempt {carried}: {carried} attempts (failed runs, or deliveries \
                     never settled) were made before this delivery (max_attempts is {max}); not run"
                ),
            )
        } else {
            Failure::new(
                true,
                "redelivered",
                format!(
                    "delivered {} times, more than max_attempts ({max}): failed attempts and deliveries \
                     that were never settled (a worker died or the pipeline panicked); not run",
                    delivery.delivery_count
                ),
            )
        };
        let job = Job::new(delivery, Codec::Json, None, trace);
        self.dead_letter(job, DeadLetterReason::MaxAttempts, &failure, false)
            .await;
    }
}

/// Longest error message kept in a header; brokers limit header sizes.
const MAX_ERROR_MESSAGE: usize = 1024;

/// Why, where and after how many attempts a message failed: the headers
/// of its dead-letter copy.
struct Failed<'a> {
    reason: DeadLetterReason,
    error_kind: &'a str,
    error_message: &'a str,
    queue: &'a str,
    handler: &'a str,
    attempts: u32,
}

/// The dead-letter copy of `original`.
fn dead_letter_message(original: &Message, failed: &Failed<'_>) -> Message {
    let mut message = original.clone();
    let headers = &mut message.headers;
    headers.insert(names::DEAD_LETTER_REASON, failed.reason.as_str());
    headers.insert(names::ERROR_KIND, failed.error_kind);
    headers.insert(
        names::ERROR_MESSAGE,
        truncate(failed.error_message, MAX_ERROR_MESSAGE),
    );
    headers.insert(names::ORIGIN_QUEUE, failed.queue);
    headers.insert(names::HANDLER, failed.handler);
    headers.insert(
        names::FAILED_AT,
        crate::wire::timestamp::rfc3339(SystemTime::now()),
    );
    headers.insert(names::ATTEMPT, failed.attempts.to_string());
    message
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_keeps_the_original_and_adds_reasons() {
        let original = Message::new(vec![0xff, 0x00, 0x13])
            .with_content_type("application/json")
            .with_message_id("m1")
            .with_header("tenant", "acme");
        let failed = Failed {
            reason: DeadLetterReason::Decode,
            error_kind: "decode",
            error_message: &"é".repeat(1000),
            queue: "orders",
            handler: "place_order",
            attempts: 1,
        };
        let dl = dead_letter_message(&original, &failed);
        assert_eq!(dl.body, original.body);
        assert_eq!(dl.message_id.as_deref(), Some("m1"));
        assert_eq!(dl.header("tenant"), Some("acme"));
        assert_eq!(dl.header(names::DEAD_LETTER_REASON), Some("decode"));
        assert_eq!(dl.header(names::ORIGIN_QUEUE), Some("orders"));
        assert_eq!(dl.header(names::ATTEMPT), Some("1"));
        assert!(dl.header(names::ERROR_MESSAGE).unwrap().len() <= MAX_ERROR_MESSAGE);
        assert!(dl.header(names::FAILED_AT).unwrap().ends_with('Z'));
    }
}
