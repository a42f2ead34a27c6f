//! The session step: messages of one session run one at a time, in
//! `sequence` order; different sessions run concurrently.
//!
//! Whose turn it is lives in the store, so other workers and restarts agree.
//! Locally, each session has a *baton*: only the job holding it asks the
//! store for a turn or runs. A message arriving while its session's baton is
//! taken waits here, in sequence order, without a concurrency slot; this keeps
//! the worker's own concurrency from reordering a session's messages. When the
//! baton is passed on, the next number goes if it is waiting. The baton is a
//! guard carried by the job: if the job is dropped on an unexpected path (a
//! panic), the baton is put down and the session carries on.
//!
//! Up to `capacity` (the route's prefetch − 1) messages wait. Beyond that the
//! message furthest from its turn, across all sessions, goes back to the
//! broker for later — back-pressure, not loss — and one prefetch credit always
//! stays free for the message a session waits for.
//!
//! A watcher per session with waiting messages re-checks the store (another
//! worker may have moved the session on) and applies the gap policy when the
//! missing number does not come in time.

use super::{Handled, Job, Pipeline};
use crate::dead_letter::DeadLetterReason;
use crate::error::{BrokerError, Failure};
use crate::route::GapPolicy;
use crate::store::SessionTurn;
use crate::transport::Settlement;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Waiting messages and batons of every session of one route.
pub(super) struct SessionGate {
    inner: Mutex<Gate>,
    capacity: usize,
    /// Reports the number of waiting messages; called under the lock so that
    /// reports are never out of order.
    report: Box<dyn Fn(usize) + Send + Sync>,
}

#[derive(Default)]
struct Gate {
    sessions: HashMap<String, Slot>,
    /// Waiting jobs over all sessions.
    total: usize,
    closed: bool,
}

#[derive(Default)]
struct Slot {
    waiting: BTreeMap<u64, Job>,
    /// A local job (or the watcher) holds the session's baton.
    baton: bool,
    /// The session's next number, as last learnt from the store (0: unknown).
    next: u64,
    /// Its next message failed and waits for a retry: not a gap.
    retrying: bool,
    /// A watcher task is running for it.
    watched: bool,
}

impl Slot {
    fn idle(&self) -> bool {
        !self.baton && !self.retrying && !self.watched && self.waiting.is_empty()
    }
}

/// A session's baton, held by a job or the watcher. Passing it on consumes
/// it; dropping it otherwise (a panic, a job given back at shutdown) puts it
/// down, so that no path can leave a session without one.
pub(super) struct Baton {
    gate: Arc<SessionGate>,
    key: String,
    held: bool,
}

impl Baton {
    fn new(gate: &Arc<SessionGate>, key: &str) -> Self {
        Baton {
            gate: gate.clone(),
            key: key.to_owned(),
            held: true,
        }
    }
}

impl Drop for Baton {
    fn drop(&mut self) {
        if self.held {
            self.gate.put_down(&self.key);
        }
    }
}

/// How a job's session turn ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TurnEnd {
    /// Handled, a duplicate, or dead-lettered: the session moves on.
    Finished,
    /// Failed; the number waits for its retry (not a gap).
    Retrying,
    /// Given back or deferred: the number waits.
    Abandoned,
}

/// What became of an arriving job.
enum Arrival {
    /// The job holds the baton: ask the store now.
    Turn(Job),
    /// It waits. `evicted` must go back to the broker; `watch` asks for a watcher.
    Waits { evicted: Option<Job>, watch: bool },
    /// Shutting down: give it back.
    Closed(Job),
}

/// What passing the baton on produced.
struct Passed {
    /// Waiting jobs whose number has passed: acked as stale.
    stale: Vec<Job>,
    /// The job whose turn it is; it holds the baton now.
    next: Option<Job>,
}

impl SessionGate {
    pub(super) fn new(capacity: usize, report: impl Fn(usize) + Send + Sync + 'static) -> Self {
        SessionGate {
            inner: Mutex::new(Gate::default()),
            capacity,
            report: Box::new(report),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Gate> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn arrive(self: &Arc<Self>, key: &str, sequence: u64, mut job: Job) -> Arrival {
        let mut gate = self.lock();
        if gate.closed {
            return Arrival::Closed(job);
        }
        let slot = match gate.sessions.get_mut(key) {
            Some(slot) => slot,
            None => gate.sessions.entry(key.to_owned()).or_default(),
        };
        if !slot.baton {
            slot.baton = true;
            job.keys_mut().baton = Some(Baton::new(self, key));
            return Arrival::Turn(job);
        }
        let watch = !slot.watched;
        slot.watched = true;
        let evicted = gate.insert(key, sequence, job, self.capacity);
        (self.report)(gate.total);
        Arrival::Waits { evicted, watch }
    }

    /// A job that asked and must wait joins the waiting ones (its baton was
    /// taken out; the caller passes it on next). Returns what must go back to
    /// the broker, and whether a watcher is needed.
    fn wait(&self, key: &str, sequence: u64, job: Job, next: Option<u64>) -> (Option<Job>, bool) {
        debug_assert!(job.keys.as_ref().is_none_or(|k| k.baton.is_none()));
        let mut gate = self.lock();
        if gate.closed {
            return (Some(job), false);
        }
        let slot = gate.sessions.entry(key.to_owned()).or_default();
        if let Some(next) = next {
            slot.next = next;
        }
        let watch = !slot.watched;
        slot.watched = true;
        let evicted = gate.insert(key, sequence, job, self.capacity);
        (self.report)(gate.total);
        (evicted, watch)
    }

    /// Passes `baton` on. With the session's `next` number known, waiting
    /// jobs below it are stale and the one equal to it takes the baton;
    /// otherwise the baton is put down. `retrying` updates the retry flag.
    fn pass(self: &Arc<Self>, mut baton: Baton, next: Option<u64>, retrying: Option<bool>) -> Passed {
        baton.held = false;
        let key = std::mem::take(&mut baton.key);
        let mut passed = Passed {
            stale: Vec::new(),
            next: None,
        };
        let mut gate = self.lock();
        let Gate {
            sessions,
            total,
            closed,
        } = &mut *gate;
        let Some(slot) = sessions.get_mut(&key) else {
            return passed;
        };
        if let Some(retrying) = retrying {
            slot.retrying = retrying;
        }
        if let (Some(next), false) = (next, *closed) {
            slot.next = next;
            while let Some(entry) = slot.waiting.first_entry() {
                match (*entry.key()).cmp(&next) {
                    std::cmp::Ordering::Less => passed.stale.push(entry.remove()),
                    std::cmp::Ordering::Equal => {
                        let mut job = entry.remove();
                        job.keys_mut().baton = Some(Baton::new(self, &key));
                        passed.next = Some(job);
                        break;
                    }
                    std::cmp::Ordering::Greater => break,
                }
            }
        }
        *total -= passed.stale.len() + usize::from(passed.next.is_some());
        slot.baton = passed.next.is_some();
        if slot.idle() {
            sessions.remove(&key);
        }
        (self.report)(*total);
        passed
    }

    /// Puts a baton down without passing it (its holder was dropped).
    fn put_down(&self, key: &str) {
        let mut gate = self.lock();
        if let Some(slot) = gate.sessions.get_mut(key) {
            slot.baton = false;
            if slot.idle() {
                gate.sessions.remove(key);
            }
        }
    }

    /// Takes the baton of a session nobody is working on, for its watcher.
    fn take_baton(self: &Arc<Self>, key: &str) -> Option<Baton> {
        let mut gate = self.lock();
        let closed = gate.closed;
        match gate.sessions.get_mut(key) {
            Some(slot) if !slot.baton && !closed => {
                slot.baton = true;
                Some(Baton::new(self, key))
            }
            _ => None,
        }
    }

    /// Ends the watcher of `key` if nothing waits there. Returns whether it ended.
    fn unwatch_if_empty(&self, key: &str) -> bool {
        let mut gate = self.lock();
        let closed = gate.closed;
        let Some(slot) = gate.sessions.get_mut(key) else {
            return true;
        };
        if !slot.waiting.is_empty() && !closed {
            return false;
        }
        slot.watched = false;
        if slot.idle() {
            gate.sessions.remove(key);
        }
        true
    }

    /// (lowest, highest) waiting numbers of a session.
    fn bounds(&self, key: &str) -> Option<(u64, u64)> {
        let gate = self.lock();
        let waiting = &gate.sessions.get(key)?.waiting;
        Some((*waiting.keys().next()?, *waiting.keys().next_back()?))
    }

    /// Takes the waiting jobs numbered up to and including `up_to`.
    fn take_through(&self, key: &str, up_to: u64) -> Vec<Job> {
        let mut gate = self.lock();
        let Some(slot) = gate.sessions.get_mut(key) else {
            return Vec::new();
        };
        let taken: Vec<Job> = match up_to.checked_add(1) {
            Some(after) => {
                let later = slot.waiting.split_off(&after);
                std::mem::replace(&mut slot.waiting, later)
                    .into_values()
                    .collect()
            }
            None => std::mem::take(&mut slot.waiting).into_values().collect(),
        };
        gate.total -= taken.len();
        (self.report)(gate.total);
        taken
    }

    fn is_retrying(&self, key: &str) -> bool {
        self.lock().sessions.get(key).is_some_and(|s| s.retrying)
    }

    /// Shutdown: refuse new arrivals and hand back everything waiting.
    pub(super) fn close(&self) -> Vec<Job> {
        let mut gate = self.lock();
        gate.closed = true;
        gate.total = 0;
        (self.report)(0);
        gate.sessions
            .values_mut()
            .flat_map(|slot| std::mem::take(&mut slot.waiting).into_values())
            .collect()
    }
}

impl Gate {
    /// Adds a waiting job. At capacity, the job furthest from its turn — this
    /// one or another — is returned to go back to the broker.
    fn insert(&mut self, key: &str, sequence: u64, job: Job, capacity: usize) -> Option<Job> {
        let slot = self.sessions.get(key).expect("caller created the slot");
        if slot.waiting.contains_key(&sequence) {
            // The same number is waiting already: a redelivered copy.
            return Some(job);
        }
        let distance = sequence.saturating_sub(slot.next.max(1));
        let mut evicted = None;
        if self.total >= capacity {
            let furthest = self
                .sessions
                .iter()
                .filter_map(|(k, s)| {
                    let (&last, _) = s.waiting.last_key_value()?;
                    Some((last.saturating_sub(s.next.max(1)), k))
                })
                .max_by_key(|(d, _)| *d)
                .filter(|(d, _)| *d > distance)
                .map(|(_, k)| k.clone());
            let Some(victim) = furthest else {
                return Some(job);
            };
            let victim = self.sessions.get_mut(&victim).expect("found above");
            evicted = victim.waiting.pop_last().map(|(_, job)| job);
            self.total -= 1;
        }
        let slot = self.sessions.get_mut(key).expect("caller created the slot");
        slot.waiting.insert(sequence, job);
        self.total += 1;
        evicted
    }
}

impl<S: Send + Sync + 'static> Pipeline<S> {
    /// Session order for a validated job. Returns the job if it runs now
    /// (holding its session's turn); otherwise it waits or went back.
    pub(super) async fn session_admit(self: &Arc<Self>, job: Job) -> Option<Job> {
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
    async fn ask_turn(self: &Arc<Self>, mut job: Job) -> Option<Job> {
        let (key, sequence) = job.session().cloned().expect("only session jobs ask");
        let turn = self.shared.store.session_begin(&key, sequence, self.lease).await;
        if let Ok(SessionTurn::Run) = turn {
            job.keys_mut().turn = true;
            return Some(job);
        }
        Box::pin(self.not_turn(job, key, sequence, turn)).await;
        None
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
                tracing::warn!(%error, "session store unavailable");
                self.pass_baton(baton, None, None).await;
                self.defer(job, "session store unavailable").await;
            }
        }
    }

    /// After a job joined the waiting ones: start the session's watcher if
    /// it has none, and send back what was evicted.
    async fn waited(self: &Arc<Self>, key: &str, evicted: Option<Job>, watch: bool) {
        if watch {
            let this = self.clone();
            let watched = key.to_owned();
            self.lifecycle
                .tasks
                .spawn(async move { this.watch(watched).await });
        }
        if let Some(job) = evicted {
            self.defer(job, "session buffer full").await;
        }
    }

    /// Passes the baton on: acks waiting jobs that became stale and starts
    /// the one whose turn it is.
    async fn pass_baton(self: &Arc<Self>, baton: Baton, next: Option<u64>, retrying: Option<bool>) {
        let passed = self.sessions.pass(baton, next, retrying);
        for job in passed.stale {
            Box::pin(self.stale(job)).await;
        }
        if let Some(job) = passed.next {
            self.dispatch(job);
        }
    }

    /// A session message that already ran (or was skipped): ack, count.
    async fn stale(self: &Arc<Self>, job: Job) {
        self.observe.stale();
        self.settle(job.delivery, Settlement::Ack, Handled::Duplicate)
            .await;
    }

    /// Ends the job's session turn, if it holds one, and passes the baton on;
    /// a baton held without a turn (a woken job given back) is put down.
    pub(super) async fn session_end(self: &Arc<Self>, job: &mut Job, end: TurnEnd) {
        let baton = job.take_baton();
        let turn = job.turn();
        self.end_turn(job.session(), turn, baton, end).await;
        if let Some(keys) = job.keys.as_mut() {
            keys.turn = false;
        }
    }

    /// [`session_end`](Self::session_end) for a job whose delivery was
    /// already settled.
    pub(super) async fn end_turn(
        self: &Arc<Self>,
        session: Option<&(String, u64)>,
        turn: bool,
        baton: Option<Baton>,
        end: TurnEnd,
    ) {
        let (Some((key, sequence)), true, Some(baton)) = (session, turn, baton) else {
            return;
        };
        let (next, retrying) = match end {
            TurnEnd::Finished => match self.shared.store.session_finish(key, *sequence).await {
                Ok(()) => (sequence.checked_add(1), Some(false)),
                Err(error) => {
                    tracing::warn!(%error, "session not advanced; its next message waits for the gap timeout");
                    (None, None)
                }
            },
            TurnEnd::Retrying | TurnEnd::Abandoned => {
                if let Err(error) = self.shared.store.session_abort(key, *sequence).await {
                    tracing::warn!(%error, "session lease not released; it expires");
                }
                (Some(*sequence), Some(end == TurnEnd::Retrying))
            }
        };
        self.pass_baton(baton, next, retrying).await;
    }

    /// Runs a job that was handed the baton, in its own task, once a
    /// concurrency slot is free.
    fn dispatch(self: &Arc<Self>, job: Job) {
        let this = self.clone();
        self.lifecycle.tasks.spawn(async move {
            let stop = this.lifecycle.stop.clone();
            let permit = tokio::select! {
                biased;
                () = stop.cancelled() => return this.give_back(job).await,
                permit = this.slots.clone().acquire_owned() => permit,
            };
            let (Ok(_permit), false) = (permit, stop.is_cancelled()) else {
                return this.give_back(job).await;
            };
            if let Some(job) = this.ask_turn(job).await {
                this.admitted(job).await;
            }
        });
    }

    /// Watches one session while it has waiting jobs: re-checks the store
    /// (another worker may have moved it on) and applies the gap policy when
    /// the missing number does not arrive.
    async fn watch(self: Arc<Self>, key: String) {
        let tick = (self.gap_timeout / 8).clamp(Duration::from_millis(5), Duration::from_millis(250));
        let mut last_next = None;
        let mut since = Instant::now();
        loop {
            tokio::select! {
                () = self.lifecycle.stop.cancelled() => return,
                () = tokio::time::sleep(tick) => {}
            }
            if self.sessions.unwatch_if_empty(&key) {
                return;
            }
            let Some(baton) = self.sessions.take_baton(&key) else {
                // A local job is working on the session: that is progress.
                since = Instant::now();
                continue;
            };
            let next = match self.shared.store.session_next(&key).await {
                Ok(next) => next,
                Err(error) => {
                    tracing::warn!(%error, "session store unavailable");
                    continue;
                }
            };
            // What is due or stale now goes first; only then is it a gap.
            let passed = self.sessions.pass(baton, Some(next), None);
            let progressed = passed.next.is_some() || !passed.stale.is_empty();
            for job in passed.stale {
                self.stale(job).await;
            }
            if let Some(job) = passed.next {
                self.dispatch(job);
            }
            if progressed || last_next != Some(next) || self.sessions.is_retrying(&key) {
                last_next = Some(next);
                since = Instant::now();
            } else if since.elapsed() >= self.gap_timeout {
                since = Instant::now();
                if let Some(baton) = self.sessions.take_baton(&key)
                    && let Some(moved) = self.gap_expired(baton, &key, next).await
                {
                    last_next = Some(moved);
                }
            }
        }
    }

    /// Applies the gap policy to a session waiting for `next`; the caller
    /// holds its baton. Returns the session's new next number if it moved.
    async fn gap_expired(self: &Arc<Self>, baton: Baton, key: &str, next: u64) -> Option<u64> {
        let (lowest, highest) = self.sessions.bounds(key)?;
        if lowest <= next {
            // The missing number (or a stale copy) arrived meanwhile.
            self.pass_baton(baton, Some(next), None).await;
            return None;
        }
        self.observe.gap_timeout();
        tracing::warn!(missing = next, waiting_from = lowest, policy = ?self.gap_policy, "session gap timeout");
        let to = match self.gap_policy {
            GapPolicy::SkipAhead => lowest,
            GapPolicy::DeadLetter => {
                let failure = Failure::new(
                    true,
                    "session-gap",
                    format!(
                        "sequence {next} did not arrive within {:?}; waiting messages {lowest}..={highest} dead-lettered",
                        self.gap_timeout
                    ),
                );
                // Store the dead letters first: the session may move past them
                // only once they are safe, or a redelivery would be acked as
                // stale and lost.
                let mut stored = true;
                for job in self.sessions.take_through(key, highest) {
                    stored &= self
                        .dead_letter(job, DeadLetterReason::SessionGap, &failure, false)
                        .await;
                }
                if !stored {
                    // The ones not stored come back and wait again.
                    return None;
                }
                highest.checked_add(1)?
            }
        };
        match self.shared.store.session_skip(key, next, to).await {
            Ok(true) => {
                self.pass_baton(baton, Some(to), None).await;
                Some(to)
            }
            Ok(false) => {
                tracing::info!("session moved on meanwhile (another worker); gap policy not applied");
                None
            }
            Err(error) => {
                tracing::warn!(%error, "session store unavailable; gap policy postponed");
                None
            }
        }
    }

    /// Shutdown: everything waiting goes back to the broker.
    pub(crate) async fn close_sessions(self: &Arc<Self>) {
        for job in self.sessions.close() {
            self.give_back(job).await;
        }
    }
}
