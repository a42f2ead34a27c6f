//! The observe step around everything: counters, gauges and the handler
//! duration histogram, updated together for in-process stats and Prometheus.

use crate::ops::metrics::RouteMetrics;
use crate::ops::stats::StatsCells;
use crate::wire::dead_letter_reason::DeadLetterReason;
use std::sync::Arc;
use std::time::Duration;

/// How a delivery ended; indexes [`crate::ops::metrics::OUTCOMES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Handled {
    Acked = 0,
    Retried = 1,
    DeadLettered = 2,
    Rejected = 3,
    Duplicate = 4,
    Deferred = 5,
    Returned = 6,
}

pub(crate) struct Observer {
    pub(crate) stats: Arc<StatsCells>,
    metrics: RouteMetrics,
}

impl Observer {
    pub(crate) fn new(queue: &str, handler: &str) -> Self {
        Observer {
            stats: Arc::new(StatsCells::default()),
            metrics: RouteMetrics::register(queue, handler),
        }
    }

    pub(crate) fn received(&self) {
        StatsCells::add(&self.stats.received, 1);
        self.metrics.received.increment(1);
    }

    pub(crate) fn started(&self) {
        StatsCells::add(&self.stats.in_flight, 1);
        self.metrics.in_flight.increment(1.0);
    }

    pub(crate) fn finished(&self, took: Duration) {
        StatsCells::sub(&self.stats.in_flight, 1);
        self.metrics.in_flight.decrement(1.0);
        self.metrics.duration.record(took.as_secs_f64());
    }

    pub(crate) fn handled(&self, outcome: Handled) {
        let cell = match outcome {
            Handled::Acked => &self.stats.acked,
            Handled::Retried => {
                self.metrics.retries.increment(1);
                &self.stats.retried
            }
            Handled::DeadLettered => &self.stats.dead_lettered,
            Handled::Rejected => &self.stats.rejected,
            Handled::Duplicate => &self.stats.duplicates,
            Handled::Deferred => &self.stats.deferred,
            Handled::Returned => &self.stats.returned,
        };
        StatsCells::add(cell, 1);
        self.metrics.handled[outcome as usize].increment(1);
    }

    pub(crate) fn dead_letter(&self, reason: DeadLetterReason) {
        let index = DeadLetterReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.metrics.dead_letters[index].increment(1);
    }

    pub(crate) fn replied(&self, ok: bool) {
        if ok {
            StatsCells::add(&self.stats.replies, 1);
            self.metrics.replies_ok.increment(1);
        } else {
            StatsCells::add(&self.stats.error_replies, 1);
            self.metrics.replies_error.increment(1);
        }
    }

    pub(crate) fn failure_kind(&self, kind: &str) {
        match kind {
            "panic" => StatsCells::add(&self.stats.panics, 1),
            "timeout" => StatsCells::add(&self.stats.timeouts, 1),
            _ => {}
        }
    }

    pub(crate) fn stale(&self) {
        StatsCells::add(&self.stats.stale, 1);
    }

    pub(crate) fn gap_timeout(&self) {
        StatsCells::add(&self.stats.gap_timeouts, 1);
        self.metrics.gap_timeouts.increment(1);
    }

    /// Reports how many session messages wait in memory, for the session
    /// gate to call as the number changes.
    pub(crate) fn buffer_reporter(&self) -> impl Fn(usize) + Send + Sync + 'static {
        let stats = self.stats.clone();
        let gauge = self.metrics.session_buffered.clone();
        move |waiting| {
            StatsCells::set(&stats.session_buffered, waiting as u64);
            gauge.set(waiting as f64);
        }
    }
}
