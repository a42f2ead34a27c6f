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
    sessions: HashMap<String, LocalSession>,
    /// Waiting jobs over all sessions.
    total: usize,
    closed: bool,
}

/// One session as this worker sees it: the numbers waiting here and
/// whether its baton is held.
#[derive(Default)]
struct LocalSession {
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

impl LocalSession {
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

    /// Whether `sequence` of session `key` waits in this worker.
    pub(super) fn waits_here(&self, key: &str, sequence: u64) -> bool {
        let gate = self.lock();
        !gate.closed
            && gate
                .sessions
                .get(key)
                .is_some_and(|slot| slot.waiting.contains_key(&sequence))
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
mod tests;
