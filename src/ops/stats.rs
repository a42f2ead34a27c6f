//! Per-route counters, readable in process (tests, the quick start's
//! summary, embedding applications). Prometheus gets the same numbers
//! through [`crate::ops::metrics`].

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! stats {
    ($($(#[doc = $doc:literal])* $field:ident),* $(,)?) => {
        /// Counters of one route since the app started.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct RouteStats {
            $($(#[doc = $doc])* pub $field: u64,)*
        }

        #[derive(Default)]
        pub(crate) struct StatsCells {
            $(pub(crate) $field: AtomicU64,)*
        }

        impl StatsCells {
            pub(crate) fn snapshot(&self) -> RouteStats {
                RouteStats {
                    $($field: self.$field.load(Ordering::Relaxed),)*
                }
            }
        }
    };
}

stats! {
    /// Deliveries received.
    received,
    /// Handled and acknowledged.
    acked,
    /// Failed attempts sent back for a later retry.
    retried,
    /// Dead-lettered after the handler ran: permanent error, attempts
    /// exhausted, or a session gap; and messages a middleware refused.
    dead_lettered,
    /// Bad input dead-lettered without a handler run: undecodable body,
    /// unknown content type, oversized body, malformed headers.
    rejected,
    /// Acked without running the handler: repeated idempotency keys and
    /// stale or repeated session sequence numbers.
    duplicates,
    /// Of the duplicates, stale or repeated session sequence numbers.
    stale,
    /// Sent back to the broker to come again later without using an attempt
    /// (a duplicate still running, a full session buffer, store unavailable).
    deferred,
    /// Returned to the broker unhandled at shutdown.
    returned,
    /// Successful replies sent (including repeated replies to duplicates).
    replies,
    /// Error replies sent.
    error_replies,
    /// Handler runs that panicked.
    panics,
    /// Handler runs that exceeded the route's timeout.
    timeouts,
    /// Session gap timeouts that applied the gap policy.
    gap_timeouts,
    /// Handlers running now.
    in_flight,
    /// Early session arrivals waiting in memory now.
    session_buffered,
}

impl StatsCells {
    pub(crate) fn add(cell: &AtomicU64, n: u64) {
        cell.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn set(cell: &AtomicU64, n: u64) {
        cell.store(n, Ordering::Relaxed);
    }

    pub(crate) fn sub(cell: &AtomicU64, n: u64) {
        cell.fetch_sub(n, Ordering::Relaxed);
    }
}
