//! The session gate: which local job holds each session's baton, and the
//! jobs waiting for their turn, in sequence order and within capacity. A
//! plain data structure under one lock; the step and the watcher decide
//! what to do with what it hands out.

use crate::pipeline::Job;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// Waiting messages and batons of every session of one route.
pub(in crate::pipeline) struct SessionGate {
    inner: Mutex<Gate>,
    /// How many jobs may wait, over all sessions.
    pub(super) capacity: usize,
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
pub(in crate::pipeline) struct Baton {
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

/// What became of an arriving job.
pub(super) enum Arrival {
    /// The job holds the baton: ask the store now.
    Turn(Job),
    /// It waits. `evicted` must go back to the broker; `watch` asks for a watcher.
    Waits { evicted: Option<Evicted>, watch: bool },
    /// Shutting down: give it back.
    Closed(Job),
}

/// A waiting job sent back to the broker to make room, and how far it was
/// from its turn.
pub(super) type Evicted = (Job, u64);

/// What passing the baton on produced.
pub(super) struct Passed {
    /// Waiting jobs whose number has passed: acked as stale.
    pub(super) stale: Vec<Job>,
    /// The job whose turn it is; it holds the baton now.
    pub(super) next: Option<Job>,
}

impl SessionGate {
    pub(in crate::pipeline) fn new(capacity: usize, report: impl Fn(usize) + Send + Sync + 'static) -> Self {
        SessionGate {
            inner: Mutex::new(Gate::default()),
            capacity,
            report: Box::new(report),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Gate> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn arrive(self: &Arc<Self>, key: &str, sequence: u64, mut job: Job) -> Arrival {
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
    pub(super) fn wait(
        &self,
        key: &str,
        sequence: u64,
        job: Job,
        next: Option<u64>,
    ) -> (Option<Evicted>, bool) {
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
    pub(super) fn pass(
        self: &Arc<Self>,
        mut baton: Baton,
        next: Option<u64>,
        retrying: Option<bool>,
    ) -> Passed {
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
    pub(super) fn take_baton(self: &Arc<Self>, key: &str) -> Option<Baton> {
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
    pub(super) fn unwatch_if_empty(&self, key: &str) -> bool {
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
    pub(super) fn bounds(&self, key: &str) -> Option<(u64, u64)> {
        let gate = self.lock();
        let waiting = &gate.sessions.get(key)?.waiting;
        Some((*waiting.keys().next()?, *waiting.keys().next_back()?))
    }

    /// Takes the waiting jobs numbered up to and including `up_to`.
    pub(super) fn take_through(&self, key: &str, up_to: u64) -> Vec<Job> {
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
    pub(super) fn nudger(&self, key: &str) -> Arc<Notify> {
        self.lock()
            .sessions
            .entry(key.to_owned())
            .or_default()
            .nudge
            .clone()
    }

    /// Wakes the watcher of `key`, if it has one; `None` wakes them all.
    pub(super) fn nudge(&self, key: Option<&str>) {
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

    pub(super) fn is_retrying(&self, key: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;
    use crate::error::BrokerError;
    use crate::message::Message;
    use crate::pipeline::Keys;
    use crate::transport::{Acker, BoxFuture, Delivery, Settlement};
    use futures_util::FutureExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct NoAcker;

    impl Acker for NoAcker {
        fn settle(self: Box<Self>, _: Settlement) -> BoxFuture<'static, Result<(), BrokerError>> {
            Box::pin(async { Ok(()) })
        }
    }

    /// A job for number `sequence` of session `key`.
    fn job(key: &str, sequence: u64) -> Job {
        let delivery = Delivery::new(Arc::new(Message::new(Vec::new())), 1, Box::new(NoAcker));
        let keys = Keys {
            session: Some((key.to_owned(), sequence)),
            sequence: Some(sequence),
            ..Keys::default()
        };
        Job::new(delivery, Codec::Json, Some(Box::new(keys)), None)
    }

    fn number(job: &Job) -> u64 {
        job.session().expect("a session job").1
    }

    fn numbers(jobs: &[Job]) -> Vec<u64> {
        let mut numbers: Vec<u64> = jobs.iter().map(number).collect();
        numbers.sort_unstable();
        numbers
    }

    fn holds_baton(job: &Job) -> bool {
        job.keys.as_ref().is_some_and(|k| k.baton.is_some())
    }

    /// A gate for `capacity` waiting jobs, and the count it last reported.
    fn gate(capacity: usize) -> (Arc<SessionGate>, Arc<AtomicUsize>) {
        let reported = Arc::new(AtomicUsize::new(usize::MAX));
        let report = reported.clone();
        let gate = SessionGate::new(capacity, move |n| report.store(n, Ordering::SeqCst));
        (Arc::new(gate), reported)
    }

    /// Arrives and must take the baton.
    fn takes_turn(gate: &Arc<SessionGate>, key: &str, sequence: u64) -> Job {
        match gate.arrive(key, sequence, job(key, sequence)) {
            Arrival::Turn(job) => {
                assert!(
                    holds_baton(&job),
                    "{key} #{sequence} took the turn without the baton"
                );
                job
            }
            Arrival::Waits { .. } => panic!("{key} #{sequence} waits; it should take the baton"),
            Arrival::Closed(_) => panic!("{key} #{sequence} refused; the gate is open"),
        }
    }

    /// Arrives and must wait: what went back, and whether a watcher is wanted.
    fn waits(gate: &Arc<SessionGate>, key: &str, sequence: u64) -> (Option<Evicted>, bool) {
        match gate.arrive(key, sequence, job(key, sequence)) {
            Arrival::Waits { evicted, watch } => (evicted, watch),
            Arrival::Turn(_) => panic!("{key} #{sequence} took the baton; it should wait"),
            Arrival::Closed(_) => panic!("{key} #{sequence} refused; the gate is open"),
        }
    }

    fn baton_of(mut job: Job) -> Baton {
        job.take_baton().expect("the job holds the baton")
    }

    #[test]
    fn the_first_arrival_takes_the_baton_and_later_ones_wait_in_order() {
        let (gate, reported) = gate(8);
        let _first = takes_turn(&gate, "a", 1);
        let (evicted, watch) = waits(&gate, "a", 3);
        assert!(evicted.is_none());
        assert!(watch, "the first job to wait asks for a watcher");
        assert_eq!(reported.load(Ordering::SeqCst), 1);
        let (evicted, watch) = waits(&gate, "a", 2);
        assert!(evicted.is_none());
        assert!(!watch, "the session has its watcher already");
        assert_eq!(reported.load(Ordering::SeqCst), 2);
        assert_eq!(gate.bounds("a"), Some((2, 3)));
    }

    #[test]
    fn sessions_do_not_wait_for_each_other() {
        let (gate, _) = gate(8);
        let _a = takes_turn(&gate, "a", 1);
        let _b = takes_turn(&gate, "b", 7);
        assert!(gate.bounds("a").is_none() && gate.bounds("b").is_none());
    }

    #[test]
    fn passing_the_baton_starts_the_number_whose_turn_it_is() {
        let (gate, reported) = gate(8);
        let first = takes_turn(&gate, "a", 1);
        waits(&gate, "a", 3);
        waits(&gate, "a", 2);

        let passed = gate.pass(baton_of(first), Some(2), Some(false));
        assert!(passed.stale.is_empty());
        let second = passed.next.expect("number 2 waits for its turn");
        assert_eq!(number(&second), 2);
        assert!(holds_baton(&second));
        assert_eq!(reported.load(Ordering::SeqCst), 1);
        assert!(gate.take_baton("a").is_none(), "number 2 holds the baton");

        let third = gate
            .pass(baton_of(second), Some(3), Some(false))
            .next
            .expect("3 waits");
        assert_eq!(number(&third), 3);
        assert_eq!(reported.load(Ordering::SeqCst), 0);
        let passed = gate.pass(baton_of(third), Some(4), Some(false));
        assert!(passed.next.is_none() && passed.stale.is_empty());

        // Nothing waits and nobody holds the baton: once its watcher ends,
        // the session is forgotten.
        assert!(gate.unwatch_if_empty("a"));
        assert!(gate.lock().sessions.is_empty());
    }

    #[test]
    fn waiting_numbers_the_session_has_passed_come_out_stale() {
        let (gate, reported) = gate(8);
        let first = takes_turn(&gate, "a", 1);
        for n in [2, 3, 5] {
            waits(&gate, "a", n);
        }
        let passed = gate.pass(baton_of(first), Some(4), None);
        assert_eq!(numbers(&passed.stale), [2, 3]);
        assert!(passed.next.is_none(), "4 is not here");
        assert_eq!(gate.bounds("a"), Some((5, 5)));
        assert_eq!(reported.load(Ordering::SeqCst), 1);
        assert!(gate.take_baton("a").is_some(), "the baton was put down");
    }

    #[test]
    fn an_early_number_waits_until_the_session_reaches_it() {
        let (gate, _) = gate(8);
        // Number 3 comes first and asks the store, which says 1 is next.
        let mut early = takes_turn(&gate, "a", 3);
        let baton = early.take_baton().expect("it took the baton");
        let (evicted, watch) = gate.wait("a", 3, early, Some(1));
        assert!(evicted.is_none() && watch);
        let passed = gate.pass(baton, Some(1), None);
        assert!(passed.next.is_none() && passed.stale.is_empty());
        assert_eq!(gate.bounds("a"), Some((3, 3)));

        let first = takes_turn(&gate, "a", 1);
        assert!(gate.pass(baton_of(first), Some(2), Some(false)).next.is_none());
        let second = takes_turn(&gate, "a", 2);
        let third = gate.pass(baton_of(second), Some(3), Some(false)).next;
        assert_eq!(third.as_ref().map(number), Some(3));
    }

    #[test]
    fn without_the_next_number_the_baton_is_put_down_and_nothing_starts() {
        let (gate, _) = gate(8);
        let first = takes_turn(&gate, "a", 1);
        waits(&gate, "a", 2);
        let passed = gate.pass(baton_of(first), None, None);
        assert!(passed.next.is_none() && passed.stale.is_empty());
        assert_eq!(gate.bounds("a"), Some((2, 2)));
        assert!(gate.take_baton("a").is_some());
    }

    #[test]
    fn a_dropped_job_puts_its_baton_down() {
        let (gate, _) = gate(8);
        let first = takes_turn(&gate, "a", 1);
        waits(&gate, "a", 2);
        assert!(gate.take_baton("a").is_none(), "number 1 holds it");
        drop(first);
        let watcher = gate.take_baton("a").expect("put down when its job was dropped");
        // A baton passed on is not put down again when dropped.
        let second = gate.pass(watcher, Some(2), None).next.expect("2 waits");
        assert!(gate.take_baton("a").is_none(), "number 2 holds it");
        drop(second);
        assert!(gate.take_baton("a").is_some());
    }

    #[test]
    fn a_copy_of_a_waiting_number_goes_back_at_once() {
        let (gate, reported) = gate(8);
        let _first = takes_turn(&gate, "a", 1);
        assert!(waits(&gate, "a", 2).0.is_none());
        let (evicted, _) = waits(&gate, "a", 2);
        let (copy, distance) = evicted.expect("the copy goes back");
        assert_eq!((number(&copy), distance), (2, 0));
        assert_eq!(reported.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn past_capacity_the_job_furthest_from_its_turn_goes_back() {
        let (gate, reported) = gate(2);
        let _first = takes_turn(&gate, "a", 1);
        assert!(waits(&gate, "a", 2).0.is_none());
        assert!(waits(&gate, "a", 10).0.is_none());

        // 5 is nearer its turn than 10: 10 makes room.
        let (evicted, _) = waits(&gate, "a", 5);
        let (victim, distance) = evicted.expect("at capacity");
        assert_eq!((number(&victim), distance), (10, 9));
        assert_eq!(gate.bounds("a"), Some((2, 5)));
        assert_eq!(reported.load(Ordering::SeqCst), 2);

        // 20 is the furthest itself: it goes back.
        let (evicted, _) = waits(&gate, "a", 20);
        let (victim, distance) = evicted.expect("at capacity");
        assert_eq!((number(&victim), distance), (20, 19));
        assert_eq!(gate.bounds("a"), Some((2, 5)));
        assert_eq!(reported.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn the_distance_counts_from_the_sessions_next_number() {
        let (gate, _) = gate(2);
        let mut asking = takes_turn(&gate, "a", 100);
        let baton = asking.take_baton().expect("it took the baton");
        // The store says 90 is next: 100 is 10 away.
        assert!(gate.wait("a", 100, asking, Some(90)).0.is_none());
        gate.pass(baton, Some(90), None);
        let _a = takes_turn(&gate, "a", 90);
        let _b = takes_turn(&gate, "b", 1);
        assert!(waits(&gate, "b", 50).0.is_none());
        // 95 is 5 from a's turn, nearer than b's 50 (49 away) and a's 100.
        let (evicted, _) = waits(&gate, "a", 95);
        let (victim, distance) = evicted.expect("at capacity");
        assert_eq!((number(&victim), distance), (50, 49));
        assert_eq!(gate.bounds("a"), Some((95, 100)));
        // b's next is unknown, so 60 counts from 1 and stays out.
        let (evicted, _) = waits(&gate, "b", 60);
        let (victim, distance) = evicted.expect("at capacity");
        assert_eq!((number(&victim), distance), (60, 59));
    }

    #[test]
    fn eviction_looks_across_sessions() {
        let (gate, _) = gate(2);
        let _a = takes_turn(&gate, "a", 1);
        let _b = takes_turn(&gate, "b", 1);
        assert!(waits(&gate, "a", 3).0.is_none());
        assert!(waits(&gate, "b", 50).0.is_none());
        let (evicted, _) = waits(&gate, "a", 4);
        let (victim, distance) = evicted.expect("at capacity");
        assert_eq!((number(&victim), distance), (50, 49));
        assert_eq!(victim.session().map(|(k, _)| k.as_str()), Some("b"));
        assert_eq!(gate.bounds("a"), Some((3, 4)));
        assert!(gate.bounds("b").is_none());
    }

    #[test]
    fn a_failed_number_is_retrying_until_the_session_is_past_it() {
        let (gate, _) = gate(8);
        let failed = takes_turn(&gate, "a", 5);
        waits(&gate, "a", 6);
        assert!(!gate.is_retrying("a"));
        // Number 5 failed: the session stays at 5, waiting for its retry.
        let passed = gate.pass(baton_of(failed), Some(5), Some(true));
        assert!(passed.next.is_none());
        assert!(gate.is_retrying("a"), "not a gap: 5 comes back");
        // The watcher finds the session moved past 5 (the retry ran in
        // another worker): no longer retrying, and 6 starts.
        let watcher = gate.take_baton("a").expect("nobody holds it");
        let sixth = gate.pass(watcher, Some(6), None).next;
        assert_eq!(sixth.as_ref().map(number), Some(6));
        assert!(!gate.is_retrying("a"));
    }

    #[test]
    fn a_finished_turn_clears_the_retry() {
        let (gate, _) = gate(8);
        let failed = takes_turn(&gate, "a", 5);
        waits(&gate, "a", 7);
        gate.pass(baton_of(failed), Some(5), Some(true));
        assert!(gate.is_retrying("a"));
        let retried = takes_turn(&gate, "a", 5);
        gate.pass(baton_of(retried), Some(6), Some(false));
        assert!(!gate.is_retrying("a"));
    }

    #[test]
    fn take_through_takes_the_waiting_numbers_up_to_and_including() {
        let (gate, reported) = gate(8);
        let _first = takes_turn(&gate, "a", 1);
        for n in [3, 4, 7] {
            waits(&gate, "a", n);
        }
        assert_eq!(numbers(&gate.take_through("a", 4)), [3, 4]);
        assert_eq!(reported.load(Ordering::SeqCst), 1);
        assert_eq!(gate.bounds("a"), Some((7, 7)));
        assert_eq!(numbers(&gate.take_through("a", u64::MAX)), [7]);
        assert_eq!(reported.load(Ordering::SeqCst), 0);
        assert!(gate.bounds("a").is_none());
        assert!(gate.take_through("unknown", 9).is_empty());
    }

    #[test]
    fn the_watcher_ends_only_once_nothing_waits() {
        let (gate, _) = gate(8);
        let _first = takes_turn(&gate, "a", 1);
        assert!(waits(&gate, "a", 2).1);
        assert!(!gate.unwatch_if_empty("a"));
        assert!(!waits(&gate, "a", 3).1, "still watched");
        gate.take_through("a", u64::MAX);
        assert!(gate.unwatch_if_empty("a"));
        assert!(waits(&gate, "a", 4).1, "a new watcher is wanted");
    }

    #[test]
    fn a_nudge_wakes_only_watched_sessions() {
        let (gate, _) = gate(8);
        let _a = takes_turn(&gate, "a", 1);
        waits(&gate, "a", 2);
        let _b = takes_turn(&gate, "b", 1);
        let (a, b) = (gate.nudger("a"), gate.nudger("b"));
        gate.nudge(Some("b"));
        assert!(b.notified().now_or_never().is_none(), "b has no watcher");
        gate.nudge(Some("a"));
        assert!(a.notified().now_or_never().is_some());
        gate.nudge(None);
        assert!(a.notified().now_or_never().is_some());
        assert!(b.notified().now_or_never().is_none());
    }

    #[test]
    fn closing_hands_back_everything_waiting_and_refuses_more() {
        let (gate, reported) = gate(8);
        let first = takes_turn(&gate, "a", 1);
        waits(&gate, "a", 2);
        waits(&gate, "a", 3);
        let _b = takes_turn(&gate, "b", 1);
        waits(&gate, "b", 4);

        assert_eq!(numbers(&gate.close()), [2, 3, 4]);
        assert_eq!(reported.load(Ordering::SeqCst), 0);
        assert!(matches!(gate.arrive("a", 5, job("a", 5)), Arrival::Closed(_)));
        assert!(matches!(gate.arrive("c", 1, job("c", 1)), Arrival::Closed(_)));
        let (back, watch) = gate.wait("b", 5, job("b", 5), Some(5));
        assert_eq!(back.map(|(job, _)| number(&job)), Some(5));
        assert!(!watch);
        // A baton passed after closing starts nothing.
        assert!(gate.pass(baton_of(first), Some(2), None).next.is_none());
        assert!(gate.take_baton("a").is_none());
    }
}
