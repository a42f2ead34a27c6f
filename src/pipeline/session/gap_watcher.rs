//! The gap watcher: one task per session with waiting jobs re-checks the
//! store (another worker may have moved the session on) and applies the gap
//! policy when the missing number does not come in time.

use super::gate::Baton;
use crate::error::Failure;
use crate::pipeline::Pipeline;
use crate::pipeline::route_options::GapPolicy;
use crate::store::{SessionPosition, SessionTurn};
use crate::wire::dead_letter_reason::DeadLetterReason;
use std::sync::Arc;
use std::time::Duration;
// Tokio's clock: a paused test clock moves leases and timeouts on too.
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

impl<S: Send + Sync + 'static> Pipeline<S> {
    /// Follows the store's session changes (when it reports them), waking
    /// the watcher of a session that moved in another worker.
    pub(crate) fn follow_session_changes(self: &Arc<Self>) {
        let Some(mut changes) = self.shared.store.session_changes() else {
            return;
        };
        let this = Arc::downgrade(self);
        let stop = self.lifecycle.stop.clone();
        self.lifecycle.tasks.spawn(async move {
            loop {
                let change = tokio::select! {
                    () = stop.cancelled() => return,
                    change = changes.recv() => change,
                };
                let Some(this) = this.upgrade() else { return };
                match change {
                    // An empty name: the store may have missed changes.
                    Ok(key) if key.is_empty() => this.sessions.nudge(None),
                    Ok(key) => this.sessions.nudge(Some(&key)),
                    Err(RecvError::Lagged(_)) => this.sessions.nudge(None),
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }

    /// Watches one session while it has waiting jobs: re-checks the store
    /// (another worker may have moved it on) and applies the gap policy when
    /// the missing number does not arrive.
    pub(super) async fn watch(self: Arc<Self>, key: String) {
        let tick = (self.gap_timeout / 8).clamp(Duration::from_millis(5), Duration::from_millis(250));
        let mut last_next = None;
        let mut since = Instant::now();
        let nudge = self.sessions.nudger(&key);
        loop {
            tokio::select! {
                () = self.lifecycle.stop.cancelled() => return,
                () = tokio::time::sleep(tick) => {}
                () = nudge.notified() => {}
            }
            if self.sessions.unwatch_if_empty(&key) {
                return;
            }
            let Some(baton) = self.sessions.take_baton(&key) else {
                // A local job is working on the session: that is progress.
                since = Instant::now();
                continue;
            };
            let position = match self.shared.store.session_position(&key).await {
                Ok(position) => position,
                Err(error) => {
                    tracing::warn!(error = %crate::error::Chain(&error), "session store unavailable");
                    continue;
                }
            };
            let next = position.next;
            // Another worker's gap policy must know what waits here: the
            // store learns the lowest and highest numbers waiting.
            if let Some((lowest, highest)) = self.sessions.bounds(&key) {
                if lowest > next && position.early.is_none_or(|early| lowest < early) {
                    self.report_early(&key, lowest).await;
                }
                if highest > next && position.latest.is_none_or(|latest| highest > latest) {
                    self.report_early(&key, highest).await;
                }
            }
            // What is due or stale now goes first; only then is it a gap.
            let passed = self.sessions.pass(baton, Some(next), None);
            let progressed = passed.next.is_some() || !passed.stale.is_empty();
            self.run_passed(passed).await;
            if progressed || last_next != Some(next) || self.sessions.is_retrying(&key) {
                last_next = Some(next);
                since = Instant::now();
            } else if since.elapsed() >= self.gap_timeout {
                since = Instant::now();
                if let Some(baton) = self.sessions.take_baton(&key)
                    && let Some(moved) = self.gap_expired(baton, &key, position).await
                {
                    last_next = Some(moved);
                }
            }
        }
    }

    /// Tells the store that `sequence` waits here, by asking for its turn.
    async fn report_early(self: &Arc<Self>, key: &str, sequence: u64) {
        match self.shared.store.session_begin(key, sequence, self.lease).await {
            // The session reached it meanwhile: the lease taken by asking
            // is given back; the waiting job is started on the next round.
            Ok(SessionTurn::Run) => {
                if let Err(error) = self.shared.store.session_abort(key, sequence, self.lease).await {
                    tracing::warn!(error = %crate::error::Chain(&error), "session lease not released; it expires");
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(error = %crate::error::Chain(&error), "session store unavailable"),
        }
    }

    /// Applies the gap policy to a session at `position`; the caller holds
    /// its baton. Returns the session's new next number if it moved.
    ///
    /// The store moves first and remembers the gap; only then are the
    /// numbers waiting here inside it dead-lettered. A dead letter that
    /// fails, or a number of the gap waiting in another worker, comes back
    /// and is dead-lettered then (the store says it was skipped), so nothing
    /// in the gap is lost whichever worker applied the policy.
    async fn gap_expired(
        self: &Arc<Self>,
        baton: Baton,
        key: &str,
        position: SessionPosition,
    ) -> Option<u64> {
        let next = position.next;
        let (lowest, highest) = self.sessions.bounds(key)?;
        if lowest <= next {
            // The missing number (or a stale copy) arrived meanwhile.
            self.pass_baton(baton, Some(next), None).await;
            return None;
        }
        let to = match self.gap_policy {
            // Never past a number waiting in another worker.
            GapPolicy::SkipAhead => position.early.map_or(lowest, |early| early.min(lowest)),
            // Past every number waiting, here or in another worker.
            GapPolicy::DeadLetter => position
                .latest
                .map_or(highest, |latest| latest.max(highest))
                .checked_add(1)?,
        };
        match self.shared.store.session_skip(key, next, to).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!("session moved on meanwhile (another worker); gap policy not applied");
                return None;
            }
            Err(error) => {
                tracing::warn!(error = %crate::error::Chain(&error), "session store unavailable; gap policy postponed");
                return None;
            }
        }
        self.observe.gap_timeout();
        tracing::warn!(missing = next, moved_to = to, waiting_from = lowest, policy = ?self.gap_policy, "session gap timeout");
        if to > lowest {
            let failure = Failure::new(
                true,
                "session-gap",
                format!(
                    "sequence {next} did not arrive within {:?}; waiting messages {lowest}..{to} dead-lettered",
                    self.gap_timeout
                ),
            );
            for job in self.sessions.take_through(key, to - 1) {
                self.dead_letter(job, DeadLetterReason::SessionGap, &failure, false)
                    .await;
            }
        }
        self.pass_baton(baton, Some(to), None).await;
        Some(to)
    }
}
