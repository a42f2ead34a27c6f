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

use super::lease::Held;
use super::{Handled, Job, Pipeline};
use crate::error::{BrokerError, Failure};
use crate::pipeline::route_options::GapPolicy;
use crate::store::{SessionPosition, SessionTurn};
use crate::transport::Settlement;
use crate::wire::dead_letter_reason::DeadLetterReason;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::sync::broadcast::error::RecvError;

/// Longest delay of a message sent back to make room, in `defer_delay`s.
const MAX_EVICTED_DELAY_FACTOR: u64 = 16;

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
    /// This number of it failed here and waits for a retry: not a gap.
    /// (The retry may run in another worker; the store holds the session
    /// for it, and the flag is dropped once the session is past it.)
    retrying: Option<u64>,
    /// A watcher task is running for it.
    watched: bool,
    /// Wakes its watcher: the session changed in another worker.
    nudge: Arc<Notify>,
}

impl Slot {
    fn idle(&self) -> bool {
        !self.baton && !self.watched && self.waiting.is_empty()
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
    Waits { evicted: Option<Evicted>, watch: bool },
    /// Shutting down: give it back.
    Closed(Job),
}

/// A waiting job sent back to the broker to make room, and how far it was
/// from its turn.
type Evicted = (Job, u64);

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
    fn wait(&self, key: &str, sequence: u64, job: Job, next: Option<u64>) -> (Option<Evicted>, bool) {
        debug_assert!(job.keys.as_ref().is_none_or(|k| k.baton.is_none()));
        let mut gate = self.lock();
        if gate.closed {
            return (Some((job, 0)), false);
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
        match retrying {
            Some(true) => slot.retrying = next.or(slot.retrying),
            Some(false) => slot.retrying = None,
            None => {}
        }
        if let (Some(next), Some(failed)) = (next, slot.retrying)
            && failed < next
        {
            slot.retrying = None;
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

    /// The watcher's wake-up of `key`'s slot.
    fn nudger(&self, key: &str) -> Arc<Notify> {
        self.lock()
            .sessions
            .entry(key.to_owned())
            .or_default()
            .nudge
            .clone()
    }

    /// Wakes the watcher of `key`, if it has one; `None` wakes them all.
    fn nudge(&self, key: Option<&str>) {
        let gate = self.lock();
        match key {
            Some(key) => {
                if let Some(slot) = gate.sessions.get(key).filter(|s| s.watched) {
                    slot.nudge.notify_one();
                }
            }
            None => gate
                .sessions
                .values()
                .filter(|s| s.watched)
                .for_each(|s| s.nudge.notify_one()),
        }
    }

    fn is_retrying(&self, key: &str) -> bool {
        self.lock()
            .sessions
            .get(key)
            .is_some_and(|s| s.retrying.is_some())
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
    fn insert(&mut self, key: &str, sequence: u64, job: Job, capacity: usize) -> Option<Evicted> {
        let slot = self.sessions.get(key).expect("caller created the slot");
        if slot.waiting.contains_key(&sequence) {
            // The same number is waiting already: a redelivered copy.
            return Some((job, 0));
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
                .map(|(d, k)| (d, k.clone()));
            let Some((victim_distance, victim)) = furthest else {
                return Some((job, distance));
            };
            let victim = self.sessions.get_mut(&victim).expect("found above");
            evicted = victim.waiting.pop_last().map(|(_, job)| (job, victim_distance));
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
            let hold = self.leases.hold(Held::Turn {
                session: key,
                sequence,
            });
            let keys = job.keys_mut();
            keys.turn = true;
            keys.turn_hold = Some(hold);
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
                tracing::warn!(%error, "session store unavailable");
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
    async fn pass_baton(self: &Arc<Self>, baton: Baton, next: Option<u64>, retrying: Option<bool>) {
        let passed = self.sessions.pass(baton, next, retrying);
        self.run_passed(passed).await;
    }

    async fn run_passed(self: &Arc<Self>, passed: Passed) {
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
                    tracing::warn!(%error, "session lease not released; it expires");
                }
                self.defer(job, "session store moved back").await;
            }
            Ok(SessionTurn::Early { .. } | SessionTurn::Busy) => {
                self.defer(job, "session store moved back").await;
            }
            Err(error) => {
                tracing::warn!(%error, "session store unavailable");
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
    pub(super) async fn session_end(self: &Arc<Self>, job: &mut Job, end: TurnEnd) {
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
                // The number comes back from the broker (a retry after its
                // backoff, a deferral, a give-back): until then the session
                // is held for it, so no worker's gap policy passes it.
                let back_within = match end {
                    TurnEnd::Retrying => self.policy.backoff.max_delay(),
                    _ => self.defer_delay,
                };
                let hold = self.lease.saturating_add(back_within);
                if let Err(error) = self.shared.store.session_abort(key, *sequence, hold).await {
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
            let (Ok(_permit), false) = (permit, this.lifecycle.stopping()) else {
                return this.give_back(job).await;
            };
            if let Some(job) = this.ask_turn(job).await {
                this.admitted(job).await;
            }
        });
    }

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
    async fn watch(self: Arc<Self>, key: String) {
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
                    tracing::warn!(%error, "session store unavailable");
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
                    tracing::warn!(%error, "session lease not released; it expires");
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "session store unavailable"),
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
                tracing::warn!(%error, "session store unavailable; gap policy postponed");
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

    /// Shutdown: everything waiting goes back to the broker.
    pub(crate) async fn close_sessions(self: &Arc<Self>) {
        for job in self.sessions.close() {
            self.give_back(job).await;
        }
    }
}
