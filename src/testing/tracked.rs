//! A published message being tracked, and waiting for its outcome within
//! the time limits.

use super::settled::{Settled, Unsettled};
use super::tracker::Tracker;
use crate::wire::message::Message;
use std::sync::Arc;
use std::time::Duration;

/// How long [`Tracked::outcome`] waits unless the [`TestBroker`](super::TestBroker)
/// says otherwise: this much wall-clock time...
pub const DEFAULT_WALL_CLOCK_LIMIT: Duration = Duration::from_secs(30);

/// ...or this much tokio time, whichever passes first. Under a paused
/// clock (`start_paused`) tokio time runs ahead whenever the runtime has
/// nothing to do, so a message that can never end fails the test at once
/// instead of after the wall-clock limit, while an hour leaves room for
/// long backoffs and handler timeouts, which take no real time there.
pub const DEFAULT_TOKIO_TIME_LIMIT: Duration = Duration::from_secs(3600);

/// How often a waiting [`Tracked::outcome`] looks at the clocks.
const TICK: Duration = Duration::from_secs(1);

/// How long [`Tracked::outcome`] waits.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    pub(super) wall_clock: Duration,
    pub(super) tokio_time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            wall_clock: DEFAULT_WALL_CLOCK_LIMIT,
            tokio_time: DEFAULT_TOKIO_TIME_LIMIT,
        }
    }
}

/// A message published by a [`TestApp`](super::TestApp), whose outcome can
/// be awaited: acked, replied to, retried, dead-lettered, rejected, or
/// skipped as a duplicate. Stops being tracked when dropped.
#[must_use = "a tracked message is only worth its outcome: await `outcome()`"]
pub struct Tracked {
    pub(super) tracker: Arc<Tracker>,
    pub(super) key: usize,
    /// Holds the allocation the tracker knows the message by.
    pub(super) message: Arc<Message>,
    pub(super) queue: String,
    /// How to name it in an error: its message id, or its number.
    pub(super) label: String,
    pub(super) limits: Limits,
}

impl Tracked {
    /// The message as published.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The queue it was published to.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Its outcome so far, without waiting: `None` until it has ended.
    pub fn outcome_now(&self) -> Option<Settled> {
        self.tracker.outcome(self.key)
    }

    /// Waits until the message has ended (see [`End`](super::End)) and
    /// says how: retries and deferrals are waited through.
    ///
    /// # Panics
    ///
    /// When it has not ended within the limits (30 s of wall-clock time
    /// or an hour of tokio time by default, see
    /// [`TestBroker::outcome_limits`](super::TestBroker::outcome_limits)),
    /// naming the message and what happened to it so far. Use
    /// [`try_outcome`](Self::try_outcome) to get that as an error instead.
    pub async fn outcome(&self) -> Settled {
        match self.try_outcome().await {
            Ok(settled) => settled,
            Err(unsettled) => panic!("{unsettled}"),
        }
    }

    /// [`outcome`](Self::outcome), with [`Unsettled`] when the message has
    /// not ended within the limits.
    pub async fn try_outcome(&self) -> Result<Settled, Unsettled> {
        let wall_clock = std::time::Instant::now();
        let tokio_time = tokio::time::Instant::now();
        loop {
            let changed = self.tracker.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(settled) = self.tracker.outcome(self.key) {
                return Ok(settled);
            }
            if wall_clock.elapsed() >= self.limits.wall_clock
                || tokio_time.elapsed() >= self.limits.tokio_time
            {
                return Err(self.unsettled(wall_clock.elapsed(), tokio_time.elapsed()));
            }
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep(TICK) => {}
            }
        }
    }

    fn unsettled(&self, wall_clock: Duration, tokio_time: Duration) -> Unsettled {
        let mut text = format!(
            "{} published to {:?} has not ended after {wall_clock:.1?} of wall-clock time ({tokio_time:.1?} \
             of tokio time); so far: {}",
            self.label,
            self.queue,
            self.tracker.history(self.key),
        );
        if !self.tracker.seen_any(self.key) {
            text.push_str(&format!(
                " (does a route consume {:?}, and was its app started with TestBroker::start?)",
                self.queue
            ));
        }
        Unsettled { text }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.tracker.forget(self.key);
    }
}

impl std::fmt::Debug for Tracked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracked")
            .field("message", &self.label)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}
