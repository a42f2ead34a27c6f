//! Watching a wharf route during a run: waiting until it has acked every
//! message, and checking that it did nothing else.

use std::time::{Duration, Instant};
use wharf::{RouteStats, Running};

/// How often the main thread looks at wharf's counters once the handler
/// has seen every message (a plain thread sleep: it does not wake the
/// runtime).
pub const POLL: Duration = Duration::from_micros(50);
/// How often it looks for failures before that.
pub const LOOK_EVERY: Duration = Duration::from_millis(50);
/// A run that has not finished by then is stuck.
pub const RUN_DEADLINE: Duration = Duration::from_secs(120);

/// Waits, from this (non-runtime) thread, until the route has acked
/// `count` messages; panics early on anything but a clean ack. It sleeps
/// until the handler has seen them all (`all_handled`, waiting at most the
/// time given, and looking at the counters now and then), then polls the
/// counters briefly: the acks follow within microseconds.
pub fn wait_until_acked(
    running: &Running,
    queue: &str,
    count: u64,
    scenario: &str,
    all_handled: impl Fn(Duration) -> bool,
) {
    let deadline = Instant::now() + RUN_DEADLINE;
    let check = |stats: &RouteStats| {
        let failed = stats.retried + stats.dead_lettered + stats.rejected + stats.returned + stats.duplicates;
        assert!(
            failed == 0,
            "{scenario}: messages failed during the run: {stats:?}"
        );
        assert!(
            Instant::now() < deadline,
            "{scenario}: only {} of {count} acked after {RUN_DEADLINE:?}: {stats:?}",
            stats.acked
        );
    };
    while !all_handled(LOOK_EVERY) {
        check(&running.stats(queue));
    }
    loop {
        let stats = running.stats(queue);
        if stats.acked >= count {
            return;
        }
        check(&stats);
        std::thread::sleep(POLL);
    }
}

/// Every delivery received and acked exactly once, nothing else.
pub fn check_stats(stats: &RouteStats, count: u64, replies: u64, scenario: &str) {
    let got = [
        stats.received,
        stats.acked,
        stats.replies,
        stats.retried,
        stats.dead_lettered,
        stats.rejected,
        stats.duplicates,
        stats.deferred,
        stats.returned,
        stats.panics,
        stats.timeouts,
        stats.error_replies,
        stats.in_flight,
    ];
    assert_eq!(
        got,
        [count, count, replies, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        "{scenario}: not every message was received and acked exactly once: {stats:?}"
    );
}
