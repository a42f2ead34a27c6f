//! Prometheus metrics through the `metrics` facade.
//!
//! Handles are registered once per route at start, so the per-message cost
//! is an atomic increment (or nothing when no recorder is installed). Labels
//! come only from configuration (queue, handler, outcome, reason), never from
//! message content, so their number is bounded.

pub(crate) mod exporter;

use crate::wire::dead_letter_reason::DeadLetterReason;
use metrics::{
    Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};

/// `wharf_messages_received_total{queue,handler}`
pub const MESSAGES_RECEIVED: &str = "wharf_messages_received_total";
/// `wharf_messages_handled_total{queue,handler,outcome}`
pub const MESSAGES_HANDLED: &str = "wharf_messages_handled_total";
/// `wharf_handler_duration_seconds{queue,handler}`: one sample per handler
/// invocation, extracting the arguments included (so a payload that does not
/// decode is a sample, while a message refused by the envelope checks before
/// any invocation is not; docs/metrics.md has the full list).
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

/// `wharf_client_request_duration_seconds{queue,outcome}`: a request made
/// with [`Client`](crate::Client), from sending to its reply or failure.
pub const CLIENT_REQUEST_DURATION: &str = "wharf_client_request_duration_seconds";
/// `wharf_broker_connected{broker}`: 1 while the broker connection is up.
pub const BROKER_CONNECTED: &str = "wharf_broker_connected";
/// `wharf_broker_reconnects_total{broker}`: connections re-established
/// after one was lost.
pub const BROKER_RECONNECTS: &str = "wharf_broker_reconnects_total";
/// `wharf_queue_depth{queue}`: messages waiting in a route's queue
/// (RabbitMQ: the queue's ready messages; NATS: the consumer's pending
/// messages, its lag), sampled every [`QUEUE_DEPTH_EVERY`].
pub const QUEUE_DEPTH: &str = "wharf_queue_depth";
/// `wharf_ready`: 1 while the app is ready (connected, consuming, not
/// draining), as `/readyz` answers.
pub const READY: &str = "wharf_ready";

/// `wharf_store_records{kind}`: idempotency records (`kind="idempotency"`)
/// and sessions (`kind="session"`) the in-memory store holds.
pub const STORE_RECORDS: &str = "wharf_store_records";
/// `wharf_store_evictions_total{kind}`: idempotency records and sessions
/// the in-memory store evicted to stay within its caps.
pub const STORE_EVICTIONS: &str = "wharf_store_evictions_total";

/// How often a running app samples [`QUEUE_DEPTH`].
pub const QUEUE_DEPTH_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Outcome label values of [`CLIENT_REQUEST_DURATION`].
pub const REQUEST_OUTCOMES: [&str; 4] = ["ok", "remote_error", "timeout", "broker_error"];

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
    pub(crate) dead_letters: [Counter; DeadLetterReason::ALL.len()],
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

/// The client's handles for one queue, indexed like [`REQUEST_OUTCOMES`].
pub(crate) struct RequestMetrics(pub(crate) [Histogram; 4]);

impl RequestMetrics {
    pub(crate) fn register(queue: &str) -> Self {
        RequestMetrics(REQUEST_OUTCOMES.map(
            |outcome| histogram!(CLIENT_REQUEST_DURATION, "queue" => queue.to_owned(), "outcome" => outcome),
        ))
    }
}

/// Help texts and units of every metric wharf records, for the exporter.
pub(crate) fn describe() {
    describe_counter!(MESSAGES_RECEIVED, Unit::Count, "Deliveries taken from the queue.");
    describe_counter!(
        MESSAGES_HANDLED,
        Unit::Count,
        "Deliveries settled, by outcome: acked, retried, dead_lettered, rejected (bad input), \
         duplicate, deferred (session or key busy), returned (shutdown)."
    );
    describe_histogram!(
        HANDLER_DURATION,
        Unit::Seconds,
        "Time from invoking the handler (extracting its arguments included) to its result, one sample per invocation (per attempt); messages refused before an invocation (envelope checks, duplicates, deferrals) have none."
    );
    describe_gauge!(IN_FLIGHT, Unit::Count, "Handlers running now.");
    describe_counter!(
        RETRIES,
        Unit::Count,
        "Failed attempts sent back for a later retry."
    );
    describe_counter!(DEAD_LETTERS, Unit::Count, "Messages dead-lettered, by reason.");
    describe_counter!(
        REPLIES_SENT,
        Unit::Count,
        "Replies published, by status (ok or error)."
    );
    describe_gauge!(
        SESSION_BUFFERED,
        Unit::Count,
        "Session messages waiting in memory for their turn."
    );
    describe_counter!(
        SESSION_GAP_TIMEOUTS,
        Unit::Count,
        "Session gaps that did not fill within the gap timeout."
    );
    describe_histogram!(
        CLIENT_REQUEST_DURATION,
        Unit::Seconds,
        "Requests made with wharf's client, from sending to reply, by outcome."
    );
    describe_gauge!(BROKER_CONNECTED, "1 while the broker connection is up, else 0.");
    describe_counter!(
        BROKER_RECONNECTS,
        Unit::Count,
        "Broker connections re-established after a loss."
    );
    describe_gauge!(
        QUEUE_DEPTH,
        Unit::Count,
        "Messages waiting in the queue (NATS: the consumer's lag)."
    );
    describe_gauge!(
        STORE_RECORDS,
        Unit::Count,
        "Idempotency records and sessions the in-memory store holds, by kind."
    );
    describe_counter!(
        STORE_EVICTIONS,
        Unit::Count,
        "Idempotency records and sessions the in-memory store evicted to stay within its caps, by kind."
    );
    describe_gauge!(
        READY,
        "1 while the app is ready (connected, consuming, not draining), else 0."
    );
}

pub use exporter::{ExporterError, MetricsExporter, install as install_prometheus};
