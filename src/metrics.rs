//! Prometheus metrics through the `metrics` facade.
//!
//! Handles are registered once per route at start, so the per-message cost
//! is an atomic increment (or nothing when no recorder is installed). Labels
//! come only from configuration (queue, handler, outcome, reason), never from
//! message content, so their number is bounded.

use crate::dead_letter::DeadLetterReason;
use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

/// `wharf_messages_received_total{queue,handler}`
pub const MESSAGES_RECEIVED: &str = "wharf_messages_received_total";
/// `wharf_messages_handled_total{queue,handler,outcome}`
pub const MESSAGES_HANDLED: &str = "wharf_messages_handled_total";
/// `wharf_handler_duration_seconds{queue,handler}`
pub const HANDLER_DURATION: &str = "wharf_handler_duration_seconds";
/// `wharf_messages_in_flight{queue,handler}`
pub const IN_FLIGHT: &str = "wharf_messages_in_flight";
/// `wharf_retries_total{queue,handler}`
pub const RETRIES: &str = "wharf_retries_total";
/// `wharf_dead_letters_total{queue,handler,reason}`
pub const DEAD_LETTERS: &str = "wharf_dead_letters_total";
/// `wharf_replies_sent_total{queue,handler,status}`
pub const REPLIES_SENT: &str = "wharf_replies_sent_total";
/// `wharf_session_buffered_messages{queue,handler}`
pub const SESSION_BUFFERED: &str = "wharf_session_buffered_messages";
/// `wharf_session_gap_timeouts_total{queue,handler}`
pub const SESSION_GAP_TIMEOUTS: &str = "wharf_session_gap_timeouts_total";

/// Outcome label values of [`MESSAGES_HANDLED`].
pub const OUTCOMES: [&str; 7] = [
    "acked",
    "retried",
    "dead_lettered",
    "rejected",
    "duplicate",
    "deferred",
    "returned",
];

/// Pre-registered handles of one route.
pub(crate) struct RouteMetrics {
    pub(crate) received: Counter,
    /// Indexed like [`OUTCOMES`].
    pub(crate) handled: [Counter; 7],
    pub(crate) duration: Histogram,
    pub(crate) in_flight: Gauge,
    pub(crate) retries: Counter,
    /// Indexed like [`DeadLetterReason::ALL`].
    pub(crate) dead_letters: [Counter; 7],
    pub(crate) replies_ok: Counter,
    pub(crate) replies_error: Counter,
    pub(crate) session_buffered: Gauge,
    pub(crate) gap_timeouts: Counter,
}

impl RouteMetrics {
    pub(crate) fn register(queue: &str, handler: &str) -> Self {
        let labels = [("queue", queue.to_owned()), ("handler", handler.to_owned())];
        let with = |key: &'static str, value: &str| {
            let mut l = labels.to_vec();
            l.push((key, value.to_owned()));
            l
        };
        RouteMetrics {
            received: counter!(MESSAGES_RECEIVED, &labels),
            handled: OUTCOMES.map(|o| counter!(MESSAGES_HANDLED, &with("outcome", o))),
            duration: histogram!(HANDLER_DURATION, &labels),
            in_flight: gauge!(IN_FLIGHT, &labels),
            retries: counter!(RETRIES, &labels),
            dead_letters: DeadLetterReason::ALL.map(|r| counter!(DEAD_LETTERS, &with("reason", r.as_str()))),
            replies_ok: counter!(REPLIES_SENT, &with("status", "ok")),
            replies_error: counter!(REPLIES_SENT, &with("status", "error")),
            session_buffered: gauge!(SESSION_BUFFERED, &labels),
            gap_timeouts: counter!(SESSION_GAP_TIMEOUTS, &labels),
        }
    }
}
