use super::*;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

const URL: &str = "redis://127.0.0.1:6379";

/// Session TTL in tests: what a failed run leaves behind expires soon.
const TEST_SESSION_TTL: Duration = Duration::from_secs(600);

/// `<pid>-<nanos>`: no other run, here or in another process, has it.
fn unique() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("{}-{nanos:x}", std::process::id())
}

/// A store under a prefix of its own, or `None` (a loud skip) when Redis
/// cannot be reached and `CI` is not `true`.
async fn store_or_skip(test: &str, prefix: &str) -> Option<RedisStore> {
    if let Err(why) = crate::test_support::broker_reachable(URL) {
        crate::test_support::skip(test, &format!("Redis is unreachable: {why}"));
        return None;
    }
    match RedisStore::connect(URL).await {
        Ok(store) => Some(store.with_prefix(prefix).with_session_ttl(TEST_SESSION_TTL)),
        Err(error) => {
            crate::test_support::skip(test, &format!("Redis is unreachable at {URL} ({error})"));
            None
        }
    }
}

/// `text` with the glob characters of `SCAN MATCH` escaped.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Deletes every key under `prefix`; returns how many there were.
async fn delete_prefix(store: &RedisStore, prefix: &str) -> usize {
    let mut con = store.con();
    let pattern = format!("{}*", glob_escape(prefix));
    let mut cursor = 0u64;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = ::redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut con)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: i64 = ::redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut con)
                .await
                .unwrap();
            deleted += keys.len();
        }
        if next == 0 {
            return deleted;
        }
        cursor = next;
    }
}

/// Runs `test` against a store with a prefix no other run uses (the
/// prefix is passed on, for a second connection), then deletes the keys
/// under it whether it passed or not. Skips (loudly) without Redis.
async fn with_store<F>(name: &str, test: impl FnOnce(Arc<RedisStore>, String) -> F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let prefix = format!("wharf-test:{}:", unique());
    let Some(store) = store_or_skip(name, &prefix).await else {
        return;
    };
    let store = Arc::new(store);
    let outcome = tokio::spawn(test(store.clone(), prefix.clone())).await;
    delete_prefix(&store, &prefix).await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
    assert_eq!(delete_prefix(&store, &prefix).await, 0, "nothing left behind");
}

/// A second store on its own connection, over the same keys.
async fn another_connection(prefix: &str) -> RedisStore {
    RedisStore::connect(URL)
        .await
        .unwrap()
        .with_prefix(prefix)
        .with_session_ttl(TEST_SESSION_TTL)
}

#[tokio::test]
async fn conforms() {
    with_store("store::redis::conforms", |store, prefix| async move {
        crate::store::conformance::all(&*store, &prefix).await;
    })
    .await;
}

#[tokio::test]
async fn session_changes_reach_other_connections() {
    with_store(
        "store::redis::session_changes_reach_other_connections",
        |writer, prefix| async move {
            let listener = another_connection(&prefix).await;
            crate::store::conformance::announces_session_changes(&*writer, &listener, "q").await;
        },
    )
    .await;
}

#[tokio::test]
async fn state_is_shared_between_connections() {
    with_store(
        "store::redis::state_is_shared_between_connections",
        |first, prefix| async move {
            let second = another_connection(&prefix).await;
            let lease = Duration::from_secs(30);
            let Claim::Acquired(token) = first.claim("q/job", lease).await.unwrap() else {
                panic!("a new key is acquired")
            };
            assert_eq!(second.claim("q/job", lease).await.unwrap(), Claim::InProgress);
            second.release("q/job", ClaimToken(token.0 ^ 1)).await.unwrap();
            assert_eq!(
                second.claim("q/job", lease).await.unwrap(),
                Claim::InProgress,
                "another token releases nothing"
            );
            let reply = StoredReply {
                body: Bytes::from_static(b"\x00\xffok"),
                content_type: "application/octet-stream".into(),
            };
            first
                .complete("q/job", token, Some(reply.clone()), Duration::from_secs(60))
                .await
                .unwrap();
            assert_eq!(
                second.claim("q/job", lease).await.unwrap(),
                Claim::Done(Some(reply))
            );

            assert_eq!(
                first.session_begin("q/s", 1, lease).await.unwrap(),
                SessionTurn::Run
            );
            assert_eq!(
                second.session_begin("q/s", 1, lease).await.unwrap(),
                SessionTurn::Busy
            );
            first.session_finish("q/s", 1).await.unwrap();
            assert_eq!(
                second.session_position("q/s").await.unwrap(),
                SessionPosition {
                    next: 2,
                    early: None,
                    latest: None
                }
            );
        },
    )
    .await;
}

#[tokio::test]
async fn numbers_beyond_lua_precision_stay_exact() {
    with_store(
        "store::redis::numbers_beyond_lua_precision_stay_exact",
        |store, _| async move {
            let lease = Duration::from_secs(30);
            // 2^53 + 1 is the first integer a Lua number cannot hold.
            let big = (1u64 << 53) + 1;
            assert_eq!(
                store.session_begin("q/s", 1, lease).await.unwrap(),
                SessionTurn::Run
            );
            store.session_abort("q/s", 1, Duration::ZERO).await.unwrap();
            assert!(store.session_skip("q/s", 1, big).await.unwrap());
            assert_eq!(
                store.session_begin("q/s", big - 1, lease).await.unwrap(),
                SessionTurn::Skipped { next: big }
            );
            assert_eq!(
                store.session_begin("q/s", big + 1, lease).await.unwrap(),
                SessionTurn::Early { next: big }
            );
            assert_eq!(
                store.session_begin("q/s", big, lease).await.unwrap(),
                SessionTurn::Run
            );
            store.session_finish("q/s", big).await.unwrap();
            assert_eq!(
                store.session_position("q/s").await.unwrap(),
                SessionPosition {
                    next: big + 1,
                    early: None,
                    latest: None
                }
            );
            assert!(store.session_skip("q/s", big + 1, u64::MAX).await.unwrap());
            assert_eq!(
                store.session_begin("q/s", u64::MAX - 1, lease).await.unwrap(),
                SessionTurn::Skipped { next: u64::MAX }
            );
            assert_eq!(
                store.session_begin("q/s", u64::MAX, lease).await.unwrap(),
                SessionTurn::Run
            );
            store.session_finish("q/s", u64::MAX).await.unwrap();
            assert_eq!(store.session_position("q/s").await.unwrap().next, u64::MAX);
        },
    )
    .await;
}

#[tokio::test]
async fn only_the_last_gaps_are_remembered() {
    with_store(
        "store::redis::only_the_last_gaps_are_remembered",
        |store, _| async move {
            let lease = Duration::from_secs(30);
            assert_eq!(
                store.session_begin("q/s", 1, lease).await.unwrap(),
                SessionTurn::Run
            );
            store.session_finish("q/s", 1).await.unwrap();
            // Gaps 2..3, 4..5, …: one more than remembered.
            for i in 0..=REMEMBERED_GAPS as u64 {
                let from = 2 + 2 * i;
                assert!(store.session_skip("q/s", from, from + 1).await.unwrap());
                assert_eq!(
                    store.session_begin("q/s", from + 1, lease).await.unwrap(),
                    SessionTurn::Run
                );
                store.session_finish("q/s", from + 1).await.unwrap();
            }
            let next = store.session_position("q/s").await.unwrap().next;
            assert_eq!(
                store.session_begin("q/s", 2, lease).await.unwrap(),
                SessionTurn::Stale { next },
                "the oldest gap is forgotten"
            );
            assert_eq!(
                store.session_begin("q/s", 4, lease).await.unwrap(),
                SessionTurn::Skipped { next }
            );
        },
    )
    .await;
}

#[tokio::test]
async fn a_lost_connection_is_reestablished() {
    with_store(
        "store::redis::a_lost_connection_is_reestablished",
        |store, _| async move {
            let id: i64 = ::redis::cmd("CLIENT")
                .arg("ID")
                .query_async(&mut store.con())
                .await
                .unwrap();
            let killer = RedisStore::connect(URL).await.unwrap();
            let killed: i64 = ::redis::cmd("CLIENT")
                .arg("KILL")
                .arg("ID")
                .arg(id)
                .query_async(&mut killer.con())
                .await
                .unwrap();
            assert_eq!(killed, 1);
            let started = Instant::now();
            // The first command may see the dead connection; a later one
            // runs on the new connection.
            let claim = loop {
                match store.claim("q/after-kill", Duration::from_secs(30)).await {
                    Ok(claim) => break claim,
                    Err(error) => {
                        assert!(error.is_connection(), "{error}");
                        assert!(
                            started.elapsed() < Duration::from_secs(10),
                            "still failing: {error}"
                        );
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            };
            assert!(matches!(claim, Claim::Acquired(_)), "{claim:?}");
        },
    )
    .await;
}

#[tokio::test]
async fn an_unreachable_server_fails_quickly_without_the_password() {
    let started = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        RedisStore::connect("redis://user:hunter2@127.0.0.1:1"),
    )
    .await
    .expect("connecting to a closed port does not hang");
    let elapsed = started.elapsed();
    let error = result.expect_err("nothing listens on port 1");
    assert_eq!(error.kind(), BrokerErrorKind::Connection);
    assert!(error.is_connection());
    let shown = format!("{} {error:?}", crate::error::Chain(&error));
    assert!(shown.contains("127.0.0.1:1"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");

    let error = RedisStore::connect("http://:hunter2@127.0.0.1:6379")
        .await
        .unwrap_err();
    assert_eq!(error.kind(), BrokerErrorKind::Config);
    let shown = format!("{} {error:?}", crate::error::Chain(&error));
    assert!(!shown.contains("hunter2"), "{shown}");
}
