//! What every [`Store`] must do, as tests any implementation runs against
//! itself: the in-memory store here, the Redis and NATS KV stores against
//! the real servers. `ns` makes the keys unique per run (the servers keep
//! data between runs).

mod many_at_once;

use super::{Claim, SessionPosition, SessionTurn, Store, StoredReply};
use bytes::Bytes;
use std::time::Duration;

const LEASE: Duration = Duration::from_secs(30);
const SHORT: Duration = Duration::from_millis(300);
const WINDOW: Duration = Duration::from_secs(60);

fn reply(body: &'static [u8]) -> StoredReply {
    StoredReply {
        body: Bytes::from_static(body),
        content_type: "application/msgpack".into(),
    }
}

/// Runs every case.
pub(crate) async fn all(store: &dyn Store, ns: &str) {
    claims_are_exclusive_until_released_or_completed(store, &format!("{ns}/c1")).await;
    leases_and_windows_expire(store, &format!("{ns}/c2")).await;
    one_of_many_concurrent_claims_wins(store, &format!("{ns}/c3")).await;
    sessions_run_in_order_one_at_a_time(store, &format!("{ns}/s1")).await;
    gaps_are_remembered(store, &format!("{ns}/s2")).await;
    one_of_many_concurrent_turns_wins(store, &format!("{ns}/s3")).await;
    session_leases_expire(store, &format!("{ns}/s4")).await;
    checkpoints_are_kept_per_session(store, &format!("{ns}/s5")).await;
    odd_keys_are_kept_apart(store, ns).await;
    a_number_coming_back_holds_off_gap_policies(store, &format!("{ns}/s6")).await;
    renewed_claims_outlive_their_first_lease(store, &format!("{ns}/c4")).await;
    renewed_turns_outlive_their_first_lease(store, &format!("{ns}/s7")).await;
    many_at_once::each_of_many_calls_gets_its_own_answer(store, ns).await;
    finishing_and_beginning_is_one_step_of_both(store, &format!("{ns}/s8")).await;
}

async fn renewed_claims_outlive_their_first_lease(store: &dyn Store, key: &str) {
    let Claim::Acquired(token) = store.claim(key, SHORT).await.unwrap() else {
        panic!("a new key is acquired")
    };
    for _ in 0..4 {
        tokio::time::sleep(SHORT / 2).await;
        assert!(
            store.renew_claim(key, token, SHORT).await.unwrap(),
            "the holder renews"
        );
    }
    assert_eq!(
        store.claim(key, LEASE).await.unwrap(),
        Claim::InProgress,
        "held twice its first lease: still the holder's"
    );
    assert!(
        !store
            .renew_claim(key, super::ClaimToken(token.0 ^ 1), LEASE)
            .await
            .unwrap(),
        "another token renews nothing"
    );
    tokio::time::sleep(SHORT * 2).await;
    assert!(
        !store.renew_claim(key, token, LEASE).await.unwrap(),
        "a claim whose lease ran out is not renewed"
    );
    let Claim::Acquired(next) = store.claim(key, LEASE).await.unwrap() else {
        panic!("no longer renewed, it expires like any lease")
    };
    store.complete(key, next, None, WINDOW).await.unwrap();
    assert!(
        !store.renew_claim(key, next, LEASE).await.unwrap(),
        "a completed claim is not renewed"
    );
    assert_eq!(store.claim(key, LEASE).await.unwrap(), Claim::Done(None));
}

async fn renewed_turns_outlive_their_first_lease(store: &dyn Store, s: &str) {
    assert_eq!(store.session_begin(s, 1, SHORT).await.unwrap(), SessionTurn::Run);
    for _ in 0..4 {
        tokio::time::sleep(SHORT / 2).await;
        assert!(
            store.session_renew(s, 1, SHORT).await.unwrap(),
            "the holder renews"
        );
    }
    assert_eq!(
        store.session_begin(s, 1, LEASE).await.unwrap(),
        SessionTurn::Busy,
        "held twice its first lease: still the holder's"
    );
    assert!(
        !store.session_renew(s, 2, LEASE).await.unwrap(),
        "another number renews nothing"
    );
    store.session_finish(s, 1).await.unwrap();
    assert!(
        !store.session_renew(s, 1, LEASE).await.unwrap(),
        "a finished turn is not renewed"
    );
    tokio::time::sleep(SHORT * 2).await;
    assert_eq!(store.session_begin(s, 2, LEASE).await.unwrap(), SessionTurn::Run);
}

async fn claims_are_exclusive_until_released_or_completed(store: &dyn Store, key: &str) {
    let Claim::Acquired(first) = store.claim(key, LEASE).await.unwrap() else {
        panic!("a new key is acquired")
    };
    assert_eq!(store.claim(key, LEASE).await.unwrap(), Claim::InProgress);
    store.release(key, first).await.unwrap();
    let Claim::Acquired(second) = store.claim(key, LEASE).await.unwrap() else {
        panic!("a released key can be claimed again")
    };
    assert_ne!(first, second, "tokens are never reused");
    store.release(key, first).await.unwrap();
    assert_eq!(
        store.claim(key, LEASE).await.unwrap(),
        Claim::InProgress,
        "an old token releases nothing"
    );
    store
        .complete(key, second, Some(reply(b"\x01")), WINDOW)
        .await
        .unwrap();
    assert_eq!(
        store.claim(key, LEASE).await.unwrap(),
        Claim::Done(Some(reply(b"\x01")))
    );
    store.release(key, second).await.unwrap();
    assert!(
        matches!(store.claim(key, LEASE).await.unwrap(), Claim::Done(_)),
        "a done key is not released"
    );
    store
        .complete(key, second, Some(reply(b"\x02")), WINDOW)
        .await
        .unwrap();
    assert_eq!(
        store.claim(key, LEASE).await.unwrap(),
        Claim::Done(Some(reply(b"\x01"))),
        "a done key keeps its first reply"
    );
    let unit = format!("{key}/unit");
    let Claim::Acquired(token) = store.claim(&unit, LEASE).await.unwrap() else {
        panic!("a new key is acquired")
    };
    store.complete(&unit, token, None, WINDOW).await.unwrap();
    assert_eq!(store.claim(&unit, LEASE).await.unwrap(), Claim::Done(None));
}

async fn leases_and_windows_expire(store: &dyn Store, key: &str) {
    let Claim::Acquired(crashed) = store.claim(key, SHORT).await.unwrap() else {
        panic!("a new key is acquired")
    };
    tokio::time::sleep(SHORT * 2).await;
    let Claim::Acquired(token) = store.claim(key, LEASE).await.unwrap() else {
        panic!("a crashed claimant's lease expires")
    };
    store.release(key, crashed).await.unwrap();
    assert_eq!(
        store.claim(key, LEASE).await.unwrap(),
        Claim::InProgress,
        "the crashed claimant's late release does not free the new claim"
    );
    store.complete(key, token, None, SHORT).await.unwrap();
    assert_eq!(store.claim(key, LEASE).await.unwrap(), Claim::Done(None));
    tokio::time::sleep(SHORT * 2).await;
    assert!(
        matches!(store.claim(key, LEASE).await.unwrap(), Claim::Acquired(_)),
        "a record past its window is forgotten"
    );
}

async fn one_of_many_concurrent_claims_wins(store: &dyn Store, key: &str) {
    let claims = futures_util::future::join_all((0..16).map(|_| store.claim(key, LEASE))).await;
    let won = claims
        .iter()
        .filter(|c| matches!(c, Ok(Claim::Acquired(_))))
        .count();
    let waiting = claims
        .iter()
        .filter(|c| matches!(c, Ok(Claim::InProgress)))
        .count();
    assert_eq!((won, waiting), (1, 15), "{claims:?}");
}

async fn sessions_run_in_order_one_at_a_time(store: &dyn Store, s: &str) {
    assert_eq!(
        store.session_position(s).await.unwrap(),
        SessionPosition {
            next: 1,
            early: None,
            latest: None
        }
    );
    assert_eq!(
        store.session_begin(s, 3, LEASE).await.unwrap(),
        SessionTurn::Early { next: 1 }
    );
    assert_eq!(
        store.session_begin(s, 2, LEASE).await.unwrap(),
        SessionTurn::Early { next: 1 }
    );
    assert_eq!(
        store.session_begin(s, 4, LEASE).await.unwrap(),
        SessionTurn::Early { next: 1 }
    );
    assert_eq!(
        store.session_position(s).await.unwrap(),
        SessionPosition {
            next: 1,
            early: Some(2),
            latest: Some(4)
        },
        "the lowest and highest early numbers are remembered"
    );
    assert_eq!(store.session_begin(s, 1, LEASE).await.unwrap(), SessionTurn::Run);
    assert_eq!(store.session_begin(s, 1, LEASE).await.unwrap(), SessionTurn::Busy);
    store.session_abort(s, 1, Duration::ZERO).await.unwrap();
    assert_eq!(store.session_begin(s, 1, LEASE).await.unwrap(), SessionTurn::Run);
    store.session_finish(s, 1).await.unwrap();
    assert_eq!(
        store.session_begin(s, 1, LEASE).await.unwrap(),
        SessionTurn::Stale { next: 2 }
    );
    assert_eq!(store.session_begin(s, 2, LEASE).await.unwrap(), SessionTurn::Run);
    assert!(
        !store.session_skip(s, 2, 4).await.unwrap(),
        "no skip while the session is leased"
    );
    store.session_finish(s, 2).await.unwrap();
    assert_eq!(
        store.session_position(s).await.unwrap(),
        SessionPosition {
            next: 3,
            early: None,
            latest: Some(4)
        },
        "an early number the session reached is forgotten"
    );
    assert_eq!(
        store.session_begin(s, 4, LEASE).await.unwrap(),
        SessionTurn::Early { next: 3 }
    );
    assert_eq!(
        store.session_position(s).await.unwrap(),
        SessionPosition {
            next: 3,
            early: Some(4),
            latest: Some(4)
        }
    );
    // Finishing a number that is not the session's turn changes nothing.
    store.session_finish(s, 7).await.unwrap();
    assert_eq!(store.session_position(s).await.unwrap().next, 3);
}

async fn gaps_are_remembered(store: &dyn Store, s: &str) {
    assert_eq!(store.session_begin(s, 1, LEASE).await.unwrap(), SessionTurn::Run);
    store.session_finish(s, 1).await.unwrap();
    assert!(
        !store.session_skip(s, 1, 5).await.unwrap(),
        "a skip from a number the session no longer waits for does nothing"
    );
    assert!(store.session_skip(s, 2, 5).await.unwrap());
    assert_eq!(store.session_position(s).await.unwrap().next, 5);
    assert_eq!(
        store.session_begin(s, 3, LEASE).await.unwrap(),
        SessionTurn::Skipped { next: 5 }
    );
    assert_eq!(
        store.session_begin(s, 1, LEASE).await.unwrap(),
        SessionTurn::Stale { next: 5 }
    );
    assert_eq!(store.session_begin(s, 5, LEASE).await.unwrap(), SessionTurn::Run);
    store.session_finish(s, 5).await.unwrap();
    assert!(store.session_skip(s, 6, 8).await.unwrap());
    for n in [2, 4, 6, 7] {
        assert_eq!(
            store.session_begin(s, n, LEASE).await.unwrap(),
            SessionTurn::Skipped { next: 8 },
            "{n} was skipped"
        );
    }
    assert_eq!(
        store.session_begin(s, 5, LEASE).await.unwrap(),
        SessionTurn::Stale { next: 8 }
    );
}

async fn one_of_many_concurrent_turns_wins(store: &dyn Store, s: &str) {
    let turns = futures_util::future::join_all((0..16).map(|_| store.session_begin(s, 1, LEASE))).await;
    let run = turns.iter().filter(|t| matches!(t, Ok(SessionTurn::Run))).count();
    let busy = turns
        .iter()
        .filter(|t| matches!(t, Ok(SessionTurn::Busy)))
        .count();
    assert_eq!((run, busy), (1, 15), "{turns:?}");
}

async fn session_leases_expire(store: &dyn Store, s: &str) {
    assert_eq!(store.session_begin(s, 1, SHORT).await.unwrap(), SessionTurn::Run);
    assert_eq!(store.session_begin(s, 1, LEASE).await.unwrap(), SessionTurn::Busy);
    tokio::time::sleep(SHORT * 2).await;
    assert_eq!(
        store.session_begin(s, 1, LEASE).await.unwrap(),
        SessionTurn::Run,
        "a crashed worker's turn expires"
    );
    store.session_finish(s, 1).await.unwrap();
    assert_eq!(store.session_position(s).await.unwrap().next, 2);
}

async fn checkpoints_are_kept_per_session(store: &dyn Store, s: &str) {
    let other = format!("{s}-other");
    assert_eq!(store.session_state(s).await.unwrap(), None);
    store
        .set_session_state(s, Bytes::from_static(b"step-1"))
        .await
        .unwrap();
    store
        .set_session_state(s, Bytes::from_static(b"step-2"))
        .await
        .unwrap();
    assert_eq!(
        store.session_state(s).await.unwrap(),
        Some(Bytes::from_static(b"step-2"))
    );
    assert_eq!(store.session_state(&other).await.unwrap(), None);
    // The checkpoint does not disturb the turn bookkeeping.
    assert_eq!(store.session_begin(s, 1, LEASE).await.unwrap(), SessionTurn::Run);
    store.session_finish(s, 1).await.unwrap();
    assert_eq!(
        store.session_state(s).await.unwrap(),
        Some(Bytes::from_static(b"step-2"))
    );
}

/// Keys are queue-scoped strings from publishers: any bytes a header may
/// hold. Two that differ only in characters a store escapes stay apart.
async fn odd_keys_are_kept_apart(store: &dyn Store, ns: &str) {
    let keys = [
        format!("{ns}/odd/a.b"),
        format!("{ns}/odd/a_b"),
        format!("{ns}/odd/a b"),
        format!("{ns}/odd/a*b>c"),
        format!("{ns}/odd/ä=b"),
        format!("{ns}/odd/.lead"),
    ];
    for key in &keys {
        assert!(
            matches!(store.claim(key, LEASE).await.unwrap(), Claim::Acquired(_)),
            "{key} is its own key"
        );
        assert_eq!(
            store.session_begin(key, 1, LEASE).await.unwrap(),
            SessionTurn::Run,
            "{key} is its own session"
        );
    }
}

/// [`Store::session_finish_and_begin`] does what a finish and then a
/// begin of the next number would.
async fn finishing_and_beginning_is_one_step_of_both(store: &dyn Store, s: &str) {
    assert_eq!(store.session_begin(s, 1, LEASE).await.unwrap(), SessionTurn::Run);
    assert_eq!(
        store.session_begin(s, 2, LEASE).await.unwrap(),
        SessionTurn::Early { next: 1 }
    );
    assert_eq!(
        store.session_finish_and_begin(s, 1, LEASE).await.unwrap(),
        Some(SessionTurn::Run),
        "1 finished, 2 runs"
    );
    assert_eq!(
        store.session_begin(s, 1, LEASE).await.unwrap(),
        SessionTurn::Stale { next: 2 }
    );
    assert_eq!(
        store.session_begin(s, 2, LEASE).await.unwrap(),
        SessionTurn::Busy,
        "2 is leased"
    );
    // Finishing a number the session is not at moves nothing; the next
    // number is early then.
    assert_eq!(
        store.session_finish_and_begin(s, 5, LEASE).await.unwrap(),
        Some(SessionTurn::Early { next: 2 })
    );
    store.session_finish(s, 2).await.unwrap();
    assert_eq!(
        store.session_finish_and_begin(s, 3, LEASE).await.unwrap(),
        Some(SessionTurn::Run),
        "a finished number moves the session on, as session_finish does"
    );
    assert_eq!(store.session_position(s).await.unwrap().next, 4);
}

/// A store shared by processes announces session changes: `listener` (a
/// second connection, as in another worker) hears of turns that ended and
/// sessions that moved in `writer` while it waits for them (an early or a
/// busy number), of every skip, and of nothing else.
#[cfg_attr(not(any(feature = "redis", feature = "nats")), allow(dead_code))]
pub(crate) async fn announces_session_changes(writer: &dyn Store, listener: &dyn Store, ns: &str) {
    let mut changes = listener
        .session_changes()
        .expect("a shared store announces session changes");
    // Subscribing takes a moment; a change made meanwhile would be missed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The first name heard must be `session`: the ones announced before it
    // (from the same connection, so in order) would show up first.
    let mut heard = async |what: &str, session: &str| {
        let name = tokio::time::timeout(Duration::from_secs(5), changes.recv())
            .await
            .unwrap_or_else(|_| panic!("{what}: no change of {session} announced within 5 s"))
            .unwrap();
        assert_eq!(&*name, session, "{what}: another session was announced first");
    };
    let (quiet, finished, skipped, aborted) = (
        format!("{ns}/quiet"),
        format!("{ns}/fin"),
        format!("{ns}/skip"),
        format!("{ns}/abort"),
    );
    // Nobody waits for `quiet`: its turns announce nothing, handed over
    // or not.
    assert_eq!(
        writer.session_begin(&quiet, 1, LEASE).await.unwrap(),
        SessionTurn::Run
    );
    for sequence in 1..=2 {
        assert_eq!(
            writer
                .session_finish_and_begin(&quiet, sequence, LEASE)
                .await
                .unwrap(),
            Some(SessionTurn::Run)
        );
    }
    writer.session_finish(&quiet, 3).await.unwrap();
    // The listener holds number 2, early: finishing 1 is announced.
    assert_eq!(
        writer.session_begin(&finished, 1, LEASE).await.unwrap(),
        SessionTurn::Run
    );
    assert_eq!(
        listener.session_begin(&finished, 2, LEASE).await.unwrap(),
        SessionTurn::Early { next: 1 }
    );
    writer.session_finish(&finished, 1).await.unwrap();
    heard("finish with a waiter", &finished).await;
    // A skip is always announced.
    assert_eq!(
        writer.session_begin(&skipped, 1, LEASE).await.unwrap(),
        SessionTurn::Run
    );
    writer.session_finish(&skipped, 1).await.unwrap();
    assert!(writer.session_skip(&skipped, 2, 5).await.unwrap());
    heard("skip", &skipped).await;
    // The listener found number 1 busy: the abort is announced.
    assert_eq!(
        writer.session_begin(&aborted, 1, LEASE).await.unwrap(),
        SessionTurn::Run
    );
    assert_eq!(
        listener.session_begin(&aborted, 1, LEASE).await.unwrap(),
        SessionTurn::Busy
    );
    writer.session_abort(&aborted, 1, Duration::ZERO).await.unwrap();
    heard("abort with a busy waiter", &aborted).await;
    // The listener holds number 3, early: handing 2 over with 1's end is
    // announced.
    let handed = format!("{ns}/hand");
    assert_eq!(
        writer.session_begin(&handed, 1, LEASE).await.unwrap(),
        SessionTurn::Run
    );
    assert_eq!(
        listener.session_begin(&handed, 3, LEASE).await.unwrap(),
        SessionTurn::Early { next: 1 }
    );
    assert_eq!(
        writer.session_finish_and_begin(&handed, 1, LEASE).await.unwrap(),
        Some(SessionTurn::Run)
    );
    heard("hand-over with a waiter", &handed).await;
}

/// A number that failed (its retry comes back from the broker) or that a
/// worker found busy (its runner may have crashed) exists: while the
/// session is held for it, no gap policy may move past it.
async fn a_number_coming_back_holds_off_gap_policies(store: &dyn Store, s: &str) {
    assert_eq!(store.session_begin(s, 1, LEASE).await.unwrap(), SessionTurn::Run);
    store.session_abort(s, 1, SHORT).await.unwrap();
    assert!(!store.session_skip(s, 1, 5).await.unwrap(), "held for its retry");
    tokio::time::sleep(SHORT * 2).await;
    assert!(
        store.session_skip(s, 1, 2).await.unwrap(),
        "a hold runs out (the retry never came)"
    );
    // A runner that crashed leaves its lease; another worker has the number.
    assert_eq!(store.session_begin(s, 2, SHORT).await.unwrap(), SessionTurn::Run);
    assert_eq!(store.session_begin(s, 2, LEASE).await.unwrap(), SessionTurn::Busy);
    tokio::time::sleep(SHORT * 2).await;
    assert!(
        !store.session_skip(s, 2, 5).await.unwrap(),
        "held for the worker that found it busy, after the crashed lease ran out"
    );
    assert_eq!(store.session_begin(s, 2, LEASE).await.unwrap(), SessionTurn::Run);
    store.session_finish(s, 2).await.unwrap();
    assert!(
        store.session_skip(s, 3, 5).await.unwrap(),
        "running and finishing the number ends the hold"
    );
    // A give-back without a hold leaves the session free to move.
    assert_eq!(store.session_begin(s, 5, LEASE).await.unwrap(), SessionTurn::Run);
    store.session_abort(s, 5, Duration::ZERO).await.unwrap();
    assert!(store.session_skip(s, 5, 6).await.unwrap());
}
