use super::{Order, order};
use crate::harness::{Harness, Log, SharedStore, until};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use wharf::store::{Claim, Store};
use wharf::{App, Backoff, Codec, Context, Error, Message, Reply, RouteOptions};

fn keyed(id: u64, key: &str) -> Message {
    Message::json(&order(id)).unwrap().with_idempotency_key(key)
}

pub async fn duplicate_is_acked_without_running_the_handler(h: Harness) {
    let queue = h.queue("dedup");
    let runs = Log::new();
    let log = runs.clone();
    let handler = move |o: Order| {
        let log = log.clone();
        async move { log.push(o.id) }
    };
    let running = h.app().route(&queue, handler).start().await.unwrap();
    h.client().send(&queue, keyed(1, "order-1")).await.unwrap();
    until(&running, &queue, |s| s.acked == 1).await;
    for _ in 0..2 {
        h.client().send(&queue, keyed(1, "order-1")).await.unwrap();
    }
    h.client().send(&queue, keyed(2, "order-2")).await.unwrap();
    let stats = until(&running, &queue, |s| s.acked == 2 && s.duplicates == 2).await;
    assert_eq!(runs.all(), vec![1, 2], "the handler ran once per key");
    assert_eq!(stats.received, 4);
    running.shutdown().await;
}

pub async fn duplicate_request_gets_the_original_reply(h: Harness) {
    let queue = h.queue("dedup-reply");
    let counter = Arc::new(AtomicU64::new(0));
    let c = counter.clone();
    let handler = move |_: Order| {
        let c = c.clone();
        async move { Reply(c.fetch_add(1, Ordering::SeqCst) + 1) }
    };
    let running = h.app().route(&queue, handler).start().await.unwrap();
    let client = h.client();
    let timeout = Duration::from_secs(10);
    let first = client
        .request_message(&queue, keyed(1, "k1"), timeout)
        .await
        .unwrap();
    let again = client
        .request_message(&queue, keyed(1, "k1"), timeout)
        .await
        .unwrap();
    let other = client
        .request_message(&queue, keyed(2, "k2"), timeout)
        .await
        .unwrap();
    let value = |m: &Message| Codec::Json.decode::<u64>(&m.body).unwrap();
    assert_eq!((value(&first), value(&again), value(&other)), (1, 1, 2));
    assert_ne!(
        first.correlation_id, again.correlation_id,
        "each reply carries its own request's id"
    );
    assert_eq!(counter.load(Ordering::SeqCst), 2);
    // The client can have a reply before the worker has counted it.
    until(&running, &queue, |s| s.duplicates == 1 && s.replies == 3).await;
    running.shutdown().await;
}

pub async fn concurrent_duplicates_do_not_both_run(h: Harness) {
    let queue = h.queue("dedup-concurrent");
    let runs = Arc::new(AtomicU64::new(0));
    let r = runs.clone();
    let slow = move |_: Order| {
        let r = r.clone();
        async move {
            r.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let options = RouteOptions::new()
        .concurrency(10)
        .defer_delay(Duration::from_millis(50));
    let running = h.app().route_with(&queue, slow, options).start().await.unwrap();
    for _ in 0..10 {
        h.client().send(&queue, keyed(1, "same")).await.unwrap();
    }
    let stats = until(&running, &queue, |s| s.acked == 1 && s.duplicates == 9).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1, "only one copy ran");
    assert!(
        stats.deferred > 0,
        "copies that arrived while it ran waited: {stats:?}"
    );
    running.shutdown().await;
}

pub async fn failed_attempt_releases_the_idempotency_key(h: Harness) {
    let queue = h.queue("dedup-release");
    let attempts = Log::new();
    let log = attempts.clone();
    let flaky = move |ctx: Context, _: Order| {
        let log = log.clone();
        async move {
            log.push(ctx.attempt());
            if ctx.attempt() == 1 {
                return Err(Error::new("try again"));
            }
            Ok(())
        }
    };
    let options = RouteOptions::new().backoff(Backoff::fixed(Duration::from_millis(20)));
    let running = h.app().route_with(&queue, flaky, options).start().await.unwrap();
    h.client().send(&queue, keyed(1, "k")).await.unwrap();
    until(&running, &queue, |s| s.acked == 1).await;
    h.client().send(&queue, keyed(1, "k")).await.unwrap();
    let stats = until(&running, &queue, |s| s.duplicates == 1).await;
    assert_eq!(
        attempts.all(),
        vec![1, 2],
        "the retry ran; the later duplicate did not"
    );
    assert_eq!(stats.retried, 1);
    running.shutdown().await;
}

pub async fn idempotency_keys_are_scoped_per_queue(h: Harness) {
    let (a, b) = (h.queue("scope-a"), h.queue("scope-b"));
    let runs = Log::new();
    let log = runs.clone();
    let handler = move |ctx: Context, _: Order| {
        let log = log.clone();
        async move { log.push(ctx.queue().to_owned()) }
    };
    let running = h
        .app()
        .route(&a, handler.clone())
        .route(&b, handler)
        .start()
        .await
        .unwrap();
    h.client().send(&a, keyed(1, "shared-key")).await.unwrap();
    h.client().send(&b, keyed(1, "shared-key")).await.unwrap();
    until(&running, &a, |s| s.acked == 1).await;
    until(&running, &b, |s| s.acked == 1).await;
    assert_eq!(runs.len(), 2);
    running.shutdown().await;
}

pub async fn replayed_keyed_dead_letter_runs_again(h: Harness) {
    // A dead-lettered message releases its key, so that a replay runs.
    let queue = h.queue("dedup-replay");
    let broken = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let runs = Log::new();
    let (flag, log) = (broken.clone(), runs.clone());
    let handler = move |o: Order| {
        let (flag, log) = (flag.clone(), log.clone());
        async move {
            if flag.load(Ordering::SeqCst) {
                return Err(Error::permanent("bug"));
            }
            log.push(o.id);
            Ok(())
        }
    };
    let running = h.app().route(&queue, handler).start().await.unwrap();
    h.client().send(&queue, keyed(1, "k")).await.unwrap();
    until(&running, &queue, |s| s.dead_lettered == 1).await;
    broken.store(false, Ordering::SeqCst);
    assert_eq!(h.broker.dead_letters(&queue).replay(1).await.unwrap(), 1);
    let stats = until(&running, &queue, |s| s.acked == 1).await;
    assert_eq!(runs.all(), vec![1]);
    assert_eq!(stats.duplicates, 0);
    running.shutdown().await;
}

pub async fn key_runs_again_after_the_idempotency_window(h: Harness) {
    let queue = h.queue("dedup-window");
    let runs = Log::new();
    let log = runs.clone();
    let handler = move |o: Order| {
        let log = log.clone();
        async move { log.push(o.id) }
    };
    let options = RouteOptions::new().idempotency_window(Duration::from_millis(200));
    let running = h
        .app()
        .route_with(&queue, handler, options)
        .start()
        .await
        .unwrap();
    h.client().send(&queue, keyed(1, "k")).await.unwrap();
    until(&running, &queue, |s| s.acked == 1).await;
    h.client().send(&queue, keyed(1, "k")).await.unwrap();
    until(&running, &queue, |s| s.duplicates == 1).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    h.client().send(&queue, keyed(1, "k")).await.unwrap();
    let stats = until(&running, &queue, |s| s.acked + s.duplicates == 3).await;
    assert_eq!(
        (stats.acked, stats.duplicates),
        (2, 1),
        "an expired key runs again"
    );
    running.shutdown().await;
}

pub async fn duplicate_request_of_a_published_message_gets_its_reply(h: Harness) {
    // A keyed message published without a reply address still keeps its
    // reply, for a later duplicate that is a request.
    let queue = h.queue("dedup-publish-then-request");
    let running = h
        .app()
        .route(&queue, |o: Order| async move { Reply(o.id * 10) })
        .start()
        .await
        .unwrap();
    h.client().send(&queue, keyed(4, "k")).await.unwrap();
    until(&running, &queue, |s| s.acked == 1).await;
    let reply = h
        .client()
        .request_message(&queue, keyed(4, "k"), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(Codec::Json.decode::<u64>(&reply.body).unwrap(), 40);
    running.shutdown().await;
}

/// A handler that records the attempt number of each run.
fn attempt_recorder(log: Log<u32>) -> impl wharf::Handler<(Context, Order), ()> {
    move |ctx: Context, _: Order| {
        let log = log.clone();
        async move { log.push(ctx.attempt()) }
    }
}

pub async fn a_message_waiting_for_a_claim_keeps_its_attempts(h: Harness) {
    // Another worker holds the key (claimed here, straight in the store):
    // the message is deferred many more times than it has attempts, and
    // once the key is free it runs once, as its first attempt.
    let queue = h.queue("claim-wait");
    let store = SharedStore::default();
    let key = format!("{queue}/k");
    let Claim::Acquired(token) = store.claim(&key, Duration::from_secs(60)).await.unwrap() else {
        panic!("a fresh key is free");
    };
    let attempts = Log::new();
    let options = RouteOptions::new()
        .max_attempts(2)
        .defer_delay(Duration::from_millis(20));
    let running = h
        .app()
        .store(store.clone())
        .route_with(&queue, attempt_recorder(attempts.clone()), options)
        .start()
        .await
        .unwrap();
    h.client().send(&queue, keyed(1, "k")).await.unwrap();
    until(&running, &queue, |s| s.deferred >= 6).await;
    assert!(attempts.all().is_empty(), "it waited for the claim");
    store.release(&key, token).await.unwrap();
    let stats = until(&running, &queue, |s| s.acked == 1).await;
    assert_eq!(attempts.all(), vec![1], "deferrals are not attempts");
    assert_eq!(stats.dead_lettered, 0, "{stats:?}");
    running.shutdown().await;
}

pub async fn a_redelivered_message_waiting_for_a_claim_keeps_its_count(h: Harness) {
    // A worker dies while it runs a keyed message (its runtime is torn
    // down; nothing is settled or released). Its delivery comes back, counted
    // as an attempt, while its claim still holds the key: the next worker
    // defers it until the claim's lease runs out, more times than it has
    // attempts, and then runs it once, as its second attempt.
    let queue = h.queue("claim-redelivered");
    let store = SharedStore::default();
    // The lease is at least the handler timeout + 1 s.
    let lease = Duration::from_millis(2500);
    let options = RouteOptions::new()
        .max_attempts(3)
        .timeout(Duration::from_secs(1))
        .lease(lease)
        .defer_delay(Duration::from_millis(20));
    let (broker, q, first_store, first_options) =
        (h.broker.clone(), queue.clone(), store.clone(), options.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let stuck = |_: Order| async { tokio::time::sleep(Duration::from_secs(3600)).await };
            let running = App::new(broker.clone())
                .store(first_store)
                .route_with(&q, stuck, first_options)
                .start()
                .await
                .unwrap();
            broker.client().send(&q, keyed(1, "k")).await.unwrap();
            until(&running, &q, |s| s.in_flight == 1).await;
            std::mem::forget(running);
        });
        drop(rt);
    })
    .join()
    .unwrap();
    let claimed = std::time::Instant::now();
    let attempts = Log::new();
    let running = h
        .app()
        .store(store)
        .route_with(&queue, attempt_recorder(attempts.clone()), options)
        .start()
        .await
        .unwrap();
    let stats = until(&running, &queue, |s| s.acked + s.dead_lettered == 1).await;
    assert_eq!(
        (attempts.all(), stats.dead_lettered),
        (vec![2], 0),
        "the dead worker's delivery is the one attempt counted: {stats:?}"
    );
    assert!(
        stats.deferred >= 3 && claimed.elapsed() >= lease / 2,
        "it waited for the dead worker's claim: {stats:?} after {:?}",
        claimed.elapsed()
    );
    running.shutdown().await;
}
