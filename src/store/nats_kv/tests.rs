// Against nats-server on 127.0.0.1 (`WHARF_TEST_NATS_URL` overrides).

use super::*;
use crate::store::{Claim, SessionPosition, SessionTurn, StoredReply};
use async_nats::jetstream::kv;
use bytes::Bytes;
use std::sync::atomic::Ordering;

fn nats_url() -> String {
    std::env::var("WHARF_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Bucket prefixes of test runs: `wharftest_<pid>_<nanos>_<n>`.
const TEST_PREFIX: &str = "wharftest_";

fn unique(what: &str) -> String {
    use std::sync::atomic::AtomicUsize;
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{TEST_PREFIX}{}_{}_{n}_{what}", std::process::id(), nanos())
}

/// A connection, or `None` (said loudly; a failure with `CI=true`)
/// when NATS cannot be reached.
async fn connect_or_skip(test: &str) -> Option<NatsKvStore> {
    if let Err(why) = crate::test_support::broker_reachable(&nats_url()) {
        crate::test_support::skip(test, &format!("NATS is not reachable: {why}"));
        return None;
    }
    match NatsKvStore::connect(&nats_url()).await {
        Ok(store) => Some(store),
        Err(error) => {
            crate::test_support::skip(test, &format!("NATS is not reachable ({error})"));
            None
        }
    }
}

/// Deletes buckets test runs left behind (a failed run) over an hour ago.
async fn sweep_leftovers(store: &NatsKvStore) {
    use futures_util::TryStreamExt;
    let Ok(names) = store.jetstream.stream_names().try_collect::<Vec<String>>().await else {
        return;
    };
    let hour_ago = nanos().saturating_sub(3600 * 1_000_000_000);
    for name in names {
        let Some(rest) = name.strip_prefix("KV_").and_then(|n| n.strip_prefix(TEST_PREFIX)) else {
            continue;
        };
        let started = rest.split('_').nth(1).and_then(|n| n.parse::<u128>().ok());
        if started.is_some_and(|started| started < hour_ago) {
            let _ = store.jetstream.delete_stream(&name).await;
        }
    }
}

/// Deletes the buckets of a test's store when the test ends, passed or
/// failed (on a thread of its own: the test's runtime may be unwinding).
struct Cleanup(Vec<String>);

impl Cleanup {
    fn of(store: &NatsKvStore) -> Cleanup {
        Cleanup(store.bucket_names().to_vec())
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let buckets = std::mem::take(&mut self.0);
        let deleting = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let Ok(client) = async_nats::connect(nats_url()).await else {
                    return;
                };
                let jetstream = jetstream::new(client);
                for bucket in buckets {
                    let _ = jetstream.delete_key_value(&bucket).await;
                }
            });
        });
        let _ = deleting.join();
    }
}

/// A store on buckets of its own (deleted when the guard drops), or
/// `None` without NATS.
async fn fresh_store(test: &str) -> Option<(NatsKvStore, Cleanup)> {
    let store = connect_or_skip(test).await?.with_bucket_prefix(unique(test));
    sweep_leftovers(&store).await;
    let cleanup = Cleanup::of(&store);
    store.ensure_buckets().await.unwrap();
    Some((store, cleanup))
}

/// A second connection onto `store`'s buckets.
async fn second_instance(store: &NatsKvStore) -> NatsKvStore {
    let other = NatsKvStore::connect(&nats_url())
        .await
        .unwrap()
        .with_bucket_prefix(store.prefix.clone())
        .with_session_ttl(store.session_ttl)
        .with_max_idempotency_window(store.max_window);
    other.ensure_buckets().await.unwrap();
    other
}

#[tokio::test]
async fn conforms() {
    let Some((store, _cleanup)) = fresh_store("conforms").await else {
        return;
    };
    let ns = format!("natskv-{}-{}", std::process::id(), nanos());
    crate::store::conformance::all(&store, &ns).await;
    // Opening the buckets again (another worker starting) is harmless.
    second_instance(&store).await;
}

/// The reads a replicated bucket takes from its stream's leader (not a
/// direct get any replica answers) give what a direct get gives.
#[tokio::test]
async fn conforms_reading_from_the_stream_leader() {
    let Some((mut store, _cleanup)) = fresh_store("leader").await else {
        return;
    };
    store.leader_reads_always = true;
    let ns = format!("natskv-leader-{}-{}", std::process::id(), nanos());
    crate::store::conformance::all(&store, &ns).await;
}

#[tokio::test]
async fn session_changes_reach_other_connections() {
    let Some((writer, _cleanup)) = fresh_store("changes").await else {
        return;
    };
    writer.ensure_buckets().await.unwrap();
    let listener = second_instance(&writer).await;
    crate::store::conformance::announces_session_changes(&writer, &listener, "q/odd.key").await;
}

#[tokio::test]
async fn instances_share_claims_sessions_and_checkpoints() {
    let Some((a, _cleanup)) = fresh_store("shared").await else {
        return;
    };
    let b = second_instance(&a).await;
    let lease = Duration::from_secs(30);
    let Claim::Acquired(token) = a.claim("q/k1", lease).await.unwrap() else {
        panic!("a new key is acquired")
    };
    assert_eq!(b.claim("q/k1", lease).await.unwrap(), Claim::InProgress);
    a.release("q/k1", token).await.unwrap();
    let tombstone = a
        .buckets()
        .await
        .unwrap()
        .keys
        .entry("k.q/k1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        tombstone.operation,
        kv::Operation::Delete,
        "a release leaves a tombstone"
    );
    let Claim::Acquired(token) = b.claim("q/k1", lease).await.unwrap() else {
        panic!("a tombstone counts as absent")
    };
    assert_eq!(a.claim("q/k1", lease).await.unwrap(), Claim::InProgress);
    let reply = StoredReply {
        body: Bytes::from_static(b"\x00\xffok"),
        content_type: "application/octet-stream".into(),
    };
    b.complete("q/k1", token, Some(reply.clone()), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(a.claim("q/k1", lease).await.unwrap(), Claim::Done(Some(reply)));

    assert_eq!(a.session_begin("q/s", 1, lease).await.unwrap(), SessionTurn::Run);
    assert_eq!(b.session_begin("q/s", 1, lease).await.unwrap(), SessionTurn::Busy);
    assert_eq!(
        b.session_begin("q/s", 3, lease).await.unwrap(),
        SessionTurn::Early { next: 1 }
    );
    a.session_finish("q/s", 1).await.unwrap();
    assert_eq!(
        b.session_position("q/s").await.unwrap(),
        SessionPosition {
            next: 2,
            early: Some(3),
            latest: Some(3)
        }
    );
    assert!(b.session_skip("q/s", 2, 3).await.unwrap());
    assert_eq!(
        a.session_begin("q/s", 2, lease).await.unwrap(),
        SessionTurn::Skipped { next: 3 }
    );
    a.set_session_state("q/s", Bytes::from_static(b"cp"))
        .await
        .unwrap();
    assert_eq!(
        b.session_state("q/s").await.unwrap(),
        Some(Bytes::from_static(b"cp"))
    );
    b.set_session_state("q/s", Bytes::new()).await.unwrap();
    assert_eq!(
        a.session_state("q/s").await.unwrap(),
        Some(Bytes::new()),
        "an empty checkpoint is still a checkpoint"
    );
}

#[tokio::test]
async fn one_of_sixteen_claims_from_two_instances_wins() {
    let Some((a, _cleanup)) = fresh_store("race").await else {
        return;
    };
    let b = second_instance(&a).await;
    let lease = Duration::from_secs(30);
    for round in 0..5 {
        let key = format!("q/race-{round}");
        let claims = futures_util::future::join_all((0..16).map(|i| {
            if i % 2 == 0 {
                a.claim(&key, lease)
            } else {
                b.claim(&key, lease)
            }
        }))
        .await;
        let won = claims
            .iter()
            .filter(|c| matches!(c, Ok(Claim::Acquired(_))))
            .count();
        let waiting = claims
            .iter()
            .filter(|c| matches!(c, Ok(Claim::InProgress)))
            .count();
        assert_eq!((won, waiting), (1, 15), "{claims:?}");
        let session = format!("q/race-s{round}");
        let turns = futures_util::future::join_all((0..16).map(|i| {
            if i % 2 == 0 {
                a.session_begin(&session, 1, lease)
            } else {
                b.session_begin(&session, 1, lease)
            }
        }))
        .await;
        let run = turns.iter().filter(|t| matches!(t, Ok(SessionTurn::Run))).count();
        let busy = turns
            .iter()
            .filter(|t| matches!(t, Ok(SessionTurn::Busy)))
            .count();
        assert_eq!((run, busy), (1, 15), "{turns:?}");
        // Early numbers from both: the lowest is kept.
        futures_util::future::join_all((2..18u64).map(|n| {
            if n % 2 == 0 {
                a.session_begin(&session, n, lease)
            } else {
                b.session_begin(&session, n, lease)
            }
        }))
        .await;
        assert_eq!(a.session_position(&session).await.unwrap().early, Some(2));
    }
}

#[tokio::test]
async fn another_session_ttl_updates_the_bucket_and_keeps_its_records() {
    let Some((a, _cleanup)) = fresh_store("reconf").await else {
        return;
    };
    a.set_session_state("q/s", Bytes::from_static(b"cp"))
        .await
        .unwrap();
    let hour = Duration::from_secs(3600);
    let b = NatsKvStore::connect(&nats_url())
        .await
        .unwrap()
        .with_bucket_prefix(a.prefix.clone())
        .with_session_ttl(hour);
    b.ensure_buckets().await.unwrap();
    let sessions = &b.buckets().await.unwrap().sessions;
    assert_eq!(sessions.stream.cached_info().config.max_age, hour);
    assert_eq!(sessions.stream.cached_info().config.max_messages_per_subject, 1);
    assert_eq!(
        b.session_state("q/s").await.unwrap(),
        Some(Bytes::from_static(b"cp"))
    );
    // The first settings again: back to 7 days.
    let c = second_instance(&a).await;
    assert_eq!(
        c.buckets()
            .await
            .unwrap()
            .sessions
            .stream
            .cached_info()
            .config
            .max_age,
        WEEK
    );
}

#[tokio::test]
async fn an_unreachable_server_fails_fast_without_printing_credentials() {
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        NatsKvStore::connect("nats://wharf:s3cr3t@127.0.0.1:1"),
    )
    .await
    .expect("connect gives up by itself");
    let error = result.unwrap_err();
    assert_eq!(error.kind(), BrokerErrorKind::Connection);
    let text = crate::error::Chain(&error).to_string();
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(
        !text.contains("s3cr3t") && !format!("{error:?}").contains("s3cr3t"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_bad_prefix_is_a_configuration_error() {
    let Some(store) = connect_or_skip("a_bad_prefix_is_a_configuration_error").await else {
        return;
    };
    let store = store.with_bucket_prefix("no.dots");
    let error = store.claim("k", Duration::from_secs(1)).await.unwrap_err();
    assert_eq!(error.kind(), BrokerErrorKind::Config, "{error}");
}

#[tokio::test]
async fn the_longest_keys_fit_and_longer_ones_are_refused() {
    let Some((store, _cleanup)) = fresh_store("long").await else {
        return;
    };
    let longest = "x".repeat(MAX_KV_KEY_LEN - "st.".len());
    store
        .set_session_state(&longest, Bytes::from_static(b"cp"))
        .await
        .unwrap();
    assert_eq!(
        store.session_state(&longest).await.unwrap(),
        Some(Bytes::from_static(b"cp"))
    );
    let longest = "x".repeat(MAX_KV_KEY_LEN - "k.".len());
    assert!(matches!(
        store.claim(&longest, Duration::from_secs(30)).await.unwrap(),
        Claim::Acquired(_)
    ));
    let error = store
        .claim(&format!("{longest}x"), Duration::from_secs(30))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), BrokerErrorKind::Store, "{error}");
}

#[tokio::test]
async fn windows_longer_than_the_bucket_keeps_are_cut() {
    let Some(store) = connect_or_skip("windows_longer_than_the_bucket_keeps_are_cut").await else {
        return;
    };
    let store = store
        .with_bucket_prefix(unique("window"))
        .with_max_idempotency_window(Duration::from_secs(1));
    let _cleanup = Cleanup::of(&store);
    let Claim::Acquired(token) = store.claim("q/w", Duration::from_secs(30)).await.unwrap() else {
        panic!("a new key is acquired")
    };
    store
        .complete("q/w", token, None, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(
        store.claim("q/w", Duration::from_secs(30)).await.unwrap(),
        Claim::Done(None)
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(matches!(
        store.claim("q/w", Duration::from_secs(30)).await.unwrap(),
        Claim::Acquired(_)
    ));
}

#[tokio::test]
async fn sessions_in_use_are_renewed_and_idle_ones_forgotten() {
    let Some(store) = connect_or_skip("sessions_in_use_are_renewed_and_idle_ones_forgotten").await else {
        return;
    };
    let ttl = Duration::from_secs(2);
    let store = store.with_bucket_prefix(unique("ttl")).with_session_ttl(ttl);
    let _cleanup = Cleanup::of(&store);
    let lease = Duration::from_secs(30);
    assert_eq!(
        store.session_begin("q/t", 1, lease).await.unwrap(),
        SessionTurn::Run
    );
    store.session_finish("q/t", 1).await.unwrap();
    store
        .set_session_state("q/t", Bytes::from_static(b"cp"))
        .await
        .unwrap();
    // Only reads for twice the TTL: a redelivered copy and the checkpoint.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            store.session_begin("q/t", 1, lease).await.unwrap(),
            SessionTurn::Stale { next: 2 }
        );
        assert_eq!(
            store.session_state("q/t").await.unwrap(),
            Some(Bytes::from_static(b"cp"))
        );
    }
    let deadline = std::time::Instant::now() + ttl * 4;
    while store.session_position("q/t").await.unwrap().next != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "an idle session is forgotten"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Prints the time per operation (run with `--nocapture` to see it).
#[tokio::test]
async fn round_trip_times() {
    let Some((store, _cleanup)) = fresh_store("timing").await else {
        return;
    };
    let lease = Duration::from_secs(30);
    let n = 200u32;
    let started = std::time::Instant::now();
    for i in 0..n {
        assert!(matches!(
            store.claim(&format!("q/t{i}"), lease).await.unwrap(),
            Claim::Acquired(_)
        ));
    }
    let claim = started.elapsed() / n;
    let started = std::time::Instant::now();
    for i in 0..n {
        assert_eq!(
            store.claim(&format!("q/t{i}"), lease).await.unwrap(),
            Claim::InProgress
        );
    }
    let claim_held = started.elapsed() / n;
    let started = std::time::Instant::now();
    for i in 1..=u64::from(n) {
        assert_eq!(
            store.session_begin("q/s", i, lease).await.unwrap(),
            SessionTurn::Run
        );
        store.session_finish("q/s", i).await.unwrap();
    }
    let turn = started.elapsed() / n;
    let started = std::time::Instant::now();
    for _ in 0..n {
        assert!(matches!(
            store.session_begin("q/s", 1, lease).await.unwrap(),
            SessionTurn::Stale { .. }
        ));
    }
    let stale = started.elapsed() / n;
    eprintln!(
        "NATS KV store round trips: claim (acquired: read + write) {claim:?}, claim (in progress: read) \
         {claim_held:?}, session_begin Run + session_finish {turn:?}, session_begin Stale (read) {stale:?}"
    );
}
