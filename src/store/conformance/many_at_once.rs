//! Many calls at once, as a busy worker makes them: each must get its own
//! answer (a store that sends calls in batches must not mix them up), and
//! each must still be one atomic step.

use super::{LEASE, WINDOW};
use crate::store::{Claim, SessionTurn, Store, StoredReply};
use bytes::Bytes;
use futures_util::future::join_all;

const KEYS: usize = 60;
const SESSIONS: usize = 40;

/// Claims, completions and session turns of many keys and sessions at once.
pub(crate) async fn each_of_many_calls_gets_its_own_answer(store: &dyn Store, ns: &str) {
    let keys: Vec<String> = (0..KEYS).map(|i| format!("{ns}/many/k{i}")).collect();
    // Every key claimed twice at once: one wins, the other waits.
    let claims = join_all(keys.iter().chain(&keys).map(|k| store.claim(k, LEASE))).await;
    let mut tokens = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let (a, b) = (&claims[i], &claims[i + KEYS]);
        match (a, b) {
            (Ok(Claim::Acquired(token)), Ok(Claim::InProgress))
            | (Ok(Claim::InProgress), Ok(Claim::Acquired(token))) => tokens.push(*token),
            other => panic!("{key}: one claim wins, one waits: {other:?}"),
        }
    }
    let reply_of = |i: usize| {
        i.is_multiple_of(2).then(|| StoredReply {
            body: Bytes::from(format!("reply {i}")),
            content_type: "application/json".into(),
        })
    };
    let completions = join_all(
        keys.iter()
            .zip(&tokens)
            .enumerate()
            .map(|(i, (key, token))| store.complete(key, *token, reply_of(i), WINDOW)),
    )
    .await;
    assert!(completions.iter().all(Result::is_ok), "{completions:?}");
    let again = join_all(keys.iter().map(|k| store.claim(k, LEASE))).await;
    for (i, claim) in again.into_iter().enumerate() {
        assert_eq!(
            claim.unwrap(),
            Claim::Done(reply_of(i)),
            "{}: its own reply",
            keys[i]
        );
    }

    let sessions: Vec<String> = (0..SESSIONS).map(|i| format!("{ns}/many/s{i}")).collect();
    let turns = join_all(
        sessions
            .iter()
            .flat_map(|s| [store.session_begin(s, 1, LEASE), store.session_begin(s, 3, LEASE)]),
    )
    .await;
    for (i, pair) in turns.chunks(2).enumerate() {
        assert_eq!(
            pair[0].as_ref().unwrap(),
            &SessionTurn::Run,
            "{}: 1 runs",
            sessions[i]
        );
        assert_eq!(
            pair[1].as_ref().unwrap(),
            &SessionTurn::Early { next: 1 },
            "{}: 3 is early",
            sessions[i]
        );
    }
    // Even sessions finish 1, odd ones give it up (it will come back).
    let ends = join_all(sessions.iter().enumerate().map(|(i, s)| {
        if i.is_multiple_of(2) {
            store.session_finish(s, 1)
        } else {
            store.session_abort(s, 1, std::time::Duration::ZERO)
        }
    }))
    .await;
    assert!(ends.iter().all(Result::is_ok), "{ends:?}");
    let turns = join_all(
        sessions
            .iter()
            .flat_map(|s| [store.session_begin(s, 1, LEASE), store.session_begin(s, 2, LEASE)]),
    )
    .await;
    for (i, pair) in turns.chunks(2).enumerate() {
        let (one, two) = (pair[0].as_ref().unwrap(), pair[1].as_ref().unwrap());
        if i.is_multiple_of(2) {
            assert_eq!(
                (one, two),
                (&SessionTurn::Stale { next: 2 }, &SessionTurn::Run),
                "{}: finished 1",
                sessions[i]
            );
        } else {
            assert_eq!(
                (one, two),
                (&SessionTurn::Run, &SessionTurn::Early { next: 1 }),
                "{}: gave 1 up",
                sessions[i]
            );
        }
    }
    // Each moves on and takes its next number at once: odd ones 1 -> 2,
    // even ones 2 -> 3.
    let passes = join_all(sessions.iter().enumerate().map(|(i, s)| {
        let finished = if i.is_multiple_of(2) { 2 } else { 1 };
        store.session_finish_and_begin(s, finished, LEASE)
    }))
    .await;
    for (i, pass) in passes.into_iter().enumerate() {
        assert_eq!(pass.unwrap(), Some(SessionTurn::Run), "{}", sessions[i]);
        let next = if i.is_multiple_of(2) { 3 } else { 2 };
        let position = store.session_position(&sessions[i]).await.unwrap();
        assert_eq!(position.next, next, "{}: moved on by its own call", sessions[i]);
        assert_eq!(
            store.session_begin(&sessions[i], next, LEASE).await.unwrap(),
            SessionTurn::Busy,
            "{}: its next number is leased",
            sessions[i]
        );
    }
}
