//! The gate's rules on their own, without a store or a broker: in-order
//! admission, early arrivals held, batons passed on and put down,
//! back-pressure at capacity, retries and shutdown.

use super::*;
use crate::error::BrokerError;
use crate::pipeline::Keys;
use crate::transport::{Acker, BoxFuture, Delivery, Settlement};
use crate::wire::codec::Codec;
use crate::wire::message::Message;
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
