//! The session step: a job takes its session's baton and asks the store for
//! its turn, or waits; ending a turn passes the baton on.

use super::gate::{Arrival, Baton, Evicted, Passed};
use crate::error::{BrokerError, Failure};
use crate::pipeline::lease::Held;
use crate::pipeline::store_retry::{record_within, recording_limit};
use crate::pipeline::{Handled, Job, Pipeline};
use crate::store::SessionTurn;
use crate::transport::Settlement;
use crate::wire::dead_letter_reason::DeadLetterReason;
use std::sync::Arc;

/// Longest delay of a message sent back to make room, in `defer_delay`s.
const MAX_EVICTED_DELAY_FACTOR: u64 = 16;

/// How a job's session turn ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::pipeline) enum TurnEnd {
    /// Handled, a duplicate, or dead-lettered: the session moves on.
    Finished,
    /// Failed; the number waits for its retry (not a gap).
    Retrying,
    /// Given back or deferred: the number waits.
    Abandoned,
}

impl<S: Send + Sync + 'static> Pipeline<S> {
    /// Session order for a validated job. Returns the job if it runs now
    /// (holding its session's turn); otherwise it waits or went back.
    pub(in crate::pipeline) async fn session_admit(self: &Arc<Self>, job: Job) -> Option<Job> {
        let Some((key, sequence)) = job.session().cloned() else {
            return Some(job);
        };
        match self.sessions.arrive(&key, sequence, job) {
            Arrival::Turn(job) => self.ask_turn(job).await,
            Arrival::Waits { evicted, watch } => {
                Box::pin(self.waited(&key, evicted, watch)).await;
                None
            }
            Arrival::Closed(job) => {
                Box::pin(self.give_back(job)).await;
                None
            }
        }
    }

    /// Asks the store whether it is the job's turn; the job holds its
    /// session's baton. Returns the job if it runs now.
    async fn ask_turn(self: &Arc<Self>, job: Job) -> Option<Job> {
        let (key, sequence) = job.session().cloned().expect("only session jobs ask");
        let turn = self.shared.store.session_begin(&key, sequence, self.lease).await;
        self.take_turn(job, turn).await
    }

    /// Acts on the store's answer to the job's asking for its turn. Returns
    /// the job if it runs now.
    async fn take_turn(
        self: &Arc<Self>,
        mut job: Job,
        turn: Result<SessionTurn, BrokerError>,
    ) -> Option<Job> {
        if let Ok(SessionTurn::Run) = turn {
            self.granted(&mut job);
            return Some(job);
        }
        let (key, sequence) = job.session().cloned().expect("only session jobs ask");
        Box::pin(self.not_turn(job, key, sequence, turn)).await;
        None
    }

    /// The job holds its session's turn: its lease is renewed from now on.
    fn granted(&self, job: &mut Job) {
        let (session, sequence) = job.session().cloned().expect("only session jobs hold turns");
        let hold = self.leases.hold(Held::Turn { session, sequence });
        let keys = job.keys_mut();
        keys.turn = true;
        keys.turn_hold = Some(hold);
    }

    /// The store said it is not the job's turn (or could not say).
    async fn not_turn(
        self: &Arc<Self>,
        mut job: Job,
        key: String,
        sequence: u64,
        turn: Result<SessionTurn, BrokerError>,
    ) {
        let baton = job.take_baton().expect("the asking job holds the baton");
        match turn {
            Ok(SessionTurn::Run) => unreachable!("handled by ask_turn"),
            Ok(SessionTurn::Stale { next }) => {
                tracing::debug!(sequence, next, "stale session sequence number; acked");
                self.stale(job).await;
                // Whatever was being retried is behind the session now.
                self.pass_baton(baton, Some(next), Some(false)).await;
            }
            Ok(SessionTurn::Skipped { next }) => {
                self.skipped(job, next).await;
                self.pass_baton(baton, Some(next), Some(false)).await;
            }
            Ok(SessionTurn::Early { next }) => {
                let (evicted, watch) = self.sessions.wait(&key, sequence, job, Some(next));
                self.waited(&key, evicted, watch).await;
                self.pass_baton(baton, Some(next), None).await;
            }
            // Another worker runs this number now; the watcher looks again.
            Ok(SessionTurn::Busy) => {
                let (evicted, watch) = self.sessions.wait(&key, sequence, job, None);
                self.waited(&key, evicted, watch).await;
                self.pass_baton(baton, None, None).await;
            }
            Err(error) => {
                tracing::warn!(error = %crate::error::Chain(&error), "session store unavailable");
                self.pass_baton(baton, None, None).await;
                self.defer(job, "session store unavailable").await;
            }
        }
    }

    /// After a job joined the waiting ones: start the session's watcher if
    /// it has none, and send back what was evicted.
    async fn waited(self: &Arc<Self>, key: &str, evicted: Option<Evicted>, watch: bool) {
        if watch {
            let this = self.clone();
            let watched = key.to_owned();
            self.lifecycle
                .tasks
                .spawn(async move { this.watch(watched).await });
        }
        if let Some((job, distance)) = evicted {
            // The further from its turn, the later it needs to come back: a
            // long run of early arrivals cycles through the broker a few
            // times instead of once per buffer's worth of progress.
            let rounds = (distance / self.sessions.capacity.max(1) as u64).clamp(1, MAX_EVICTED_DELAY_FACTOR);
            let delay = self.defer_delay.saturating_mul(rounds as u32);
            self.defer_for(job, "session buffer full", delay).await;
        }
    }

    /// Passes the baton on: settles waiting jobs the session has passed and
    /// starts the one whose turn it is.
    pub(super) async fn pass_baton(
        self: &Arc<Self>,
        baton: Baton,
        next: Option<u64>,
        retrying: Option<bool>,
    ) {
        let passed = self.sessions.pass(baton, next, retrying);
        self.run_passed(passed).await;
    }

    pub(super) async fn run_passed(self: &Arc<Self>, passed: Passed) {
        for job in passed.stale {
            Box::pin(self.passed_over(job)).await;
        }
        if let Some(job) = passed.next {
            self.dispatch(job);
        }
    }

    /// A waiting job whose number the session has passed: handled already
    /// (a copy: acked) or skipped by a gap policy, here or in another worker
    /// (dead-lettered). Only the store can tell which.
    async fn passed_over(self: &Arc<Self>, job: Job) {
        let (key, sequence) = job.session().cloned().expect("only session jobs wait");
        match self.shared.store.session_begin(&key, sequence, self.lease).await {
            Ok(SessionTurn::Stale { .. }) => self.stale(job).await,
            Ok(SessionTurn::Skipped { next }) => self.skipped(job, next).await,
            Ok(SessionTurn::Run) => {
                // The store moved back (it was wiped): run it when it comes again.
                let hold = self.lease.saturating_add(self.defer_delay);
                if let Err(error) = self.shared.store.session_abort(&key, sequence, hold).await {
                    tracing::warn!(error = %crate::error::Chain(&error), "session lease not released; it expires");
                }
                self.defer(job, "session store moved back").await;
            }
            Ok(SessionTurn::Early { .. } | SessionTurn::Busy) => {
                self.defer(job, "session store moved back").await;
            }
            Err(error) => {
                tracing::warn!(error = %crate::error::Chain(&error), "session store unavailable");
                self.defer(job, "session store unavailable").await;
            }
        }
    }

    /// A session message that already ran: ack, count.
    async fn stale(self: &Arc<Self>, job: Job) {
        self.observe.stale();
        self.settle(job.delivery, Settlement::Ack, Handled::Duplicate)
            .await;
    }

    /// A session message whose number a gap policy passed over before it
    /// arrived: it never ran, so it is dead-lettered, not dropped.
    async fn skipped(self: &Arc<Self>, job: Job, next: u64) {
        let sequence = job.session().map_or(0, |(_, n)| *n);
        let failure = Failure::new(
            true,
            "session-gap",
            format!(
                "sequence {sequence} arrived after its session's gap timeout moved the session on (it waits for {next})"
            ),
        );
        self.dead_letter(job, DeadLetterReason::SessionGap, &failure, false)
            .await;
    }

    /// Ends the job's session turn, if it holds one, and passes the baton on;
    /// a baton held without a turn (a woken job given back) is put down.
    pub(in crate::pipeline) async fn session_end(self: &Arc<Self>, job: &mut Job, end: TurnEnd) {
        let baton = job.take_baton();
        let turn = job.turn();
        self.end_turn(job.session(), turn, baton, end).await;
        if let Some(keys) = job.keys.as_mut() {
            keys.turn = false;
            keys.turn_hold = None;
        }
    }

    /// [`session_end`](Self::session_end) for a job whose delivery was
    /// already settled.
    pub(in crate::pipeline) async fn end_turn(
        self: &Arc<Self>,
        session: Option<&(String, u64)>,
        turn: bool,
        baton: Option<Baton>,
        end: TurnEnd,
    ) {
        let (Some((key, sequence)), true, Some(baton)) = (session, turn, baton) else {
            return;
        };
        // The next number waits here: it is asked for in the same store step.
        let following = match end {
            TurnEnd::Finished => sequence
                .checked_add(1)
                .filter(|&n| self.sessions.waits_here(key, n)),
            _ => None,
        };
        let mut answered = None;
        let (next, retrying) = match end {
            TurnEnd::Finished => {
                // The run happened: recorded even while the store fails over.
                // Only the first try also asks for the next number's turn: a
                // try whose answer was lost may have taken it, and asking
                // again would find it busy; `session_finish` is idempotent,
                // and the next number then asks for its turn as usual.
                let mut first = true;
                let finished = record_within(
                    recording_limit(self.lease, self.gap_timeout),
                    "session finish",
                    || {
                        let also_begin = std::mem::take(&mut first);
                        async move {
                            match following.filter(|_| also_begin) {
                                Some(_) => {
                                    self.shared
                                        .store
                                        .session_finish_and_begin(key, *sequence, self.lease)
                                        .await
                                }
                                None => self
                                    .shared
                                    .store
                                    .session_finish(key, *sequence)
                                    .await
                                    .map(|()| None),
                            }
                        }
                    },
                )
                .await
                .map(|turn| answered = following.zip(turn));
                match finished {
                    Ok(()) => (sequence.checked_add(1), Some(false)),
                    Err(error) => {
                        tracing::warn!(error = %crate::error::Chain(&error), "session not advanced; its next message waits for the gap timeout");
                        (None, None)
                    }
                }
            }
            TurnEnd::Retrying | TurnEnd::Abandoned => {
                // The number comes back from the broker (a retry after its
                // backoff, a deferral, a give-back): until then the session
                // is held for it, so no worker's gap policy passes it.
                let back_within = match end {
                    TurnEnd::Retrying => self.policy.backoff.max_delay(),
                    _ => self.defer_delay,
                };
                let hold = self.lease.saturating_add(back_within);
                if let Err(error) = self.shared.store.session_abort(key, *sequence, hold).await {
                    tracing::warn!(error = %crate::error::Chain(&error), "session lease not released; it expires");
                }
                (Some(*sequence), Some(end == TurnEnd::Retrying))
            }
        };
        match answered {
            None => self.pass_baton(baton, next, retrying).await,
            Some(answered) => self.pass_answered(key, baton, next, answered).await,
        }
    }

    /// Passes the baton on to the next number, whose turn the store already
    /// answered (`answered`: the number and the answer).
    async fn pass_answered(
        self: &Arc<Self>,
        key: &str,
        baton: Baton,
        next: Option<u64>,
        (number, turn): (u64, SessionTurn),
    ) {
        let passed = self.sessions.pass(baton, next, Some(false));
        for job in passed.stale {
            Box::pin(self.passed_over(job)).await;
        }
        match passed.next {
            Some(mut job) if job.session().is_some_and(|&(_, n)| n == number) => {
                if turn == SessionTurn::Run {
                    self.granted(&mut job);
                }
                self.dispatch_answered(job, Some(turn));
            }
            other => {
                // It left meanwhile (sent back to make room): it comes back
                // from the broker, so the session is held for it.
                if turn == SessionTurn::Run {
                    let hold = self.lease.saturating_add(self.defer_delay);
                    if let Err(error) = self.shared.store.session_abort(key, number, hold).await {
                        tracing::warn!(error = %crate::error::Chain(&error), "session lease not released; it expires");
                    }
                }
                if let Some(job) = other {
                    self.dispatch(job);
                }
            }
        }
    }

    /// Runs a job that was handed the baton, in its own task, once a
    /// concurrency slot is free.
    fn dispatch(self: &Arc<Self>, job: Job) {
        self.dispatch_answered(job, None);
    }

    /// [`dispatch`](Self::dispatch) of a job whose turn the store already
    /// answered (`Run`: the job holds its turn).
    fn dispatch_answered(self: &Arc<Self>, job: Job, answered: Option<SessionTurn>) {
        let this = self.clone();
        self.lifecycle.tasks.spawn(async move {
            let stop = this.lifecycle.stop.clone();
            let permit = tokio::select! {
                biased;
                () = stop.cancelled() => return this.give_back(job).await,
                permit = this.slots.clone().acquire_owned() => permit,
            };
            let (Ok(_permit), false) = (permit, this.lifecycle.stopping()) else {
                return this.give_back(job).await;
            };
            let job = match answered {
                Some(SessionTurn::Run) => Some(job),
                Some(turn) => this.take_turn(job, Ok(turn)).await,
                None => this.ask_turn(job).await,
            };
            if let Some(job) = job {
                this.admitted(job).await;
            }
        });
    }

    /// Shutdown: everything waiting goes back to the broker.
    pub(crate) async fn close_sessions(self: &Arc<Self>) {
        for job in self.sessions.close() {
            self.give_back(job).await;
        }
    }
}
