use super::{Order, order};
use crate::harness::{Harness, Log, next_worker_sees, until};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use wharf::{App, Backoff, Context, DeadLetterReason, Error, Message, Meta, RouteOptions};

fn quick_retries(max_attempts: u32) -> RouteOptions {
    RouteOptions::new()
        .max_attempts(max_attempts)
        .backoff(Backoff::fixed(Duration::from_millis(20)))
}

pub async fn retryable_error_is_retried_then_succeeds(h: Harness) {
    let queue = h.queue("retry");
    let attempts = Log::new();
    let log = attempts.clone();
    let flaky = move |ctx: Context, _: Order| {
        let log = log.clone();
        async move {
            log.push(ctx.attempt());
            if ctx.attempt() < 3 {
                return Err(Error::new("warehouse busy"));
            }
            Ok(())
        }
    };
    let running = h
        .app()
        .route_with(&queue, flaky, quick_retries(5))
        .start()
        .await
        .unwrap();
    h.client().publish(&queue, &order(1)).await.unwrap();
    let stats = until(&running, &queue, |s| s.acked == 1).await;
    assert_eq!(
        attempts.all(),
        vec![1, 2, 3],
        "delivery count grows by one per attempt"
    );
    assert_eq!((stats.retried, stats.dead_lettered), (2, 0));
    running.shutdown().await;
}

pub async fn retry_waits_without_holding_a_slot(h: Harness) {
    let queue = h.queue("retry-slot");
    let handled = Log::new();
    let log = handled.clone();
    let first_fails = move |ctx: Context, o: Order| {
        let log = log.clone();
        async move {
            if o.id == 1 && ctx.attempt() == 1 {
                return Err(Error::new("try later"));
            }
            log.push((o.id, ctx.attempt()));
            Ok(())
        }
    };
    let options = RouteOptions::new()
        .concurrency(1)
        .backoff(Backoff::fixed(Duration::from_millis(500)));
    let running = h
        .app()
        .route_with(&queue, first_fails, options)
        .start()
        .await
        .unwrap();
    h.client().publish(&queue, &order(1)).await.unwrap();
    until(&running, &queue, |s| s.retried == 1).await;
    h.client().publish(&queue, &order(2)).await.unwrap();
    until(&running, &queue, |s| s.acked == 2).await;
    // With one slot, message 2 ran while message 1 waited for its retry.
    assert_eq!(handled.all(), vec![(2, 1), (1, 2)]);
    running.shutdown().await;
}

pub async fn backoff_delay_is_respected(h: Harness) {
    let queue = h.queue("backoff");
    let times = Log::new();
    let log = times.clone();
    let failing_twice = move |ctx: Context, _: Order| {
        let log = log.clone();
        async move {
            log.push(Instant::now());
            if ctx.attempt() < 3 {
                return Err(Error::new("not yet"));
            }
            Ok(())
        }
    };
    let backoff = Backoff::exponential(Duration::from_millis(150), Duration::from_secs(5)).without_jitter();
    let options = RouteOptions::new().backoff(backoff);
    let running = h
        .app()
        .route_with(&queue, failing_twice, options)
        .start()
        .await
        .unwrap();
    h.client().publish(&queue, &order(1)).await.unwrap();
    until(&running, &queue, |s| s.acked == 1).await;
    let t = times.all();
    assert!(
        t[1] - t[0] >= Duration::from_millis(150),
        "first retry after {:?}",
        t[1] - t[0]
    );
    assert!(
        t[2] - t[1] >= Duration::from_millis(300),
        "second retry after {:?}",
        t[2] - t[1]
    );
    running.shutdown().await;
}

pub async fn exhausted_retries_are_dead_lettered_with_reasons(h: Harness) {
    let queue = h.queue("exhausted");
    let always_fails = |_: Order| async { Err::<(), _>(Error::new("database unreachable")) };
    let options = quick_retries(3).name("charge-card");
    let running = h
        .app()
        .route_with(&queue, always_fails, options)
        .start()
        .await
        .unwrap();
    let original = Message::json(&order(9))
        .unwrap()
        .with_message_id("order-9")
        .with_header("tenant", "acme");
    h.client().send(&queue, original.clone()).await.unwrap();
    let stats = until(&running, &queue, |s| s.dead_lettered == 1).await;
    assert_eq!((stats.retried, stats.acked), (2, 0));
    let letter = h.dead_letters(&queue, 1).await.remove(0);
    assert_eq!(letter.reason(), Some(DeadLetterReason::MaxAttempts));
    assert_eq!(letter.attempts(), Some(3));
    assert_eq!(letter.error_kind(), Some("handler"));
    assert_eq!(letter.error_message(), Some("database unreachable"));
    assert_eq!(letter.origin_queue(), Some(queue.as_str()));
    assert_eq!(letter.message.header("wharf-handler"), Some("charge-card"));
    assert!(letter.failed_at().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(letter.message.body, original.body, "body kept byte for byte");
    assert_eq!(letter.message.message_id.as_deref(), Some("order-9"));
    assert_eq!(letter.message.header("tenant"), Some("acme"));
    running.shutdown().await;
}

pub async fn permanent_error_is_dead_lettered_at_once(h: Harness) {
    let queue = h.queue("permanent");
    let attempts = Log::new();
    let log = attempts.clone();
    let declined = move |ctx: Context, _: Order| {
        let log = log.clone();
        async move {
            log.push(ctx.attempt());
            Err::<(), _>(Error::permanent("card declined").with_kind("card-declined"))
        }
    };
    let running = h
        .app()
        .route_with(&queue, declined, quick_retries(5))
        .start()
        .await
        .unwrap();
    h.client().publish(&queue, &order(1)).await.unwrap();
    let stats = until(&running, &queue, |s| s.dead_lettered == 1).await;
    assert_eq!(stats.retried, 0);
    assert_eq!(attempts.all(), vec![1]);
    let letter = h.dead_letters(&queue, 1).await.remove(0);
    assert_eq!(letter.reason(), Some(DeadLetterReason::Permanent));
    assert_eq!(letter.error_kind(), Some("card-declined"));
    running.shutdown().await;
}

pub async fn panic_counts_as_a_failed_attempt(h: Harness) {
    let queue = h.queue("panic");
    let panicky = |ctx: Context, o: Order| async move {
        if o.id == 1 && ctx.attempt() == 1 {
            panic!("bug in handler");
        }
    };
    let running = h
        .app()
        .route_with(&queue, panicky, quick_retries(3))
        .start()
        .await
        .unwrap();
    h.client().publish(&queue, &order(1)).await.unwrap();
    let stats = until(&running, &queue, |s| s.acked == 1).await;
    assert_eq!((stats.panics, stats.retried), (1, 1));
    // The worker keeps running.
    h.client().publish(&queue, &order(2)).await.unwrap();
    until(&running, &queue, |s| s.acked == 2).await;
    running.shutdown().await;
}

pub async fn timeout_counts_as_a_failed_attempt(h: Harness) {
    let queue = h.queue("timeout");
    let slow_first = |ctx: Context, _: Order| async move {
        if ctx.attempt() == 1 {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    };
    let options = quick_retries(3).timeout(Duration::from_millis(100));
    let running = h
        .app()
        .route_with(&queue, slow_first, options)
        .start()
        .await
        .unwrap();
    h.client().publish(&queue, &order(1)).await.unwrap();
    let stats = until(&running, &queue, |s| s.acked == 1).await;
    assert_eq!((stats.timeouts, stats.retried), (1, 1));
    running.shutdown().await;
}

pub async fn dead_letters_can_be_listed_replayed_and_purged(h: Harness) {
    let queue = h.queue("replay");
    let broken = Arc::new(AtomicBool::new(true));
    let handled = Log::new();
    let (flag, log) = (broken.clone(), handled.clone());
    let handler = move |o: Order| {
        let (flag, log) = (flag.clone(), log.clone());
        async move {
            if flag.load(Ordering::SeqCst) {
                return Err(Error::permanent("bug, fixed in the next release"));
            }
            log.push(o.id);
            Ok(())
        }
    };
    let one_at_a_time = RouteOptions::new().concurrency(1);
    let running = h
        .app()
        .route_with(&queue, handler, one_at_a_time)
        .start()
        .await
        .unwrap();
    for id in 1..=3 {
        h.client().publish(&queue, &order(id)).await.unwrap();
    }
    until(&running, &queue, |s| s.dead_lettered == 3).await;
    let dead = h.broker.dead_letters(&queue);
    let listed = dead.list(10).await.unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(
        dead.list(10).await.unwrap(),
        listed,
        "listing leaves them in place, in order"
    );
    let ids: Vec<u64> = listed
        .iter()
        .map(|l| serde_json::from_slice::<Order>(&l.message.body).unwrap().id)
        .collect();
    assert_eq!(ids, vec![1, 2, 3], "listed in order");
    broken.store(false, Ordering::SeqCst);
    assert_eq!(dead.replay(2).await.unwrap(), 2);
    until(&running, &queue, |s| s.acked == 2).await;
    assert_eq!(handled.all(), vec![1, 2], "replayed with fresh attempts");
    assert_eq!(dead.purge().await.unwrap(), 1);
    assert!(dead.list(10).await.unwrap().is_empty());
    running.shutdown().await;
}

pub async fn replayed_message_carries_no_dead_letter_headers(h: Harness) {
    let queue = h.queue("replay-headers");
    let seen = Log::new();
    let log = seen.clone();
    let handler = move |meta: Meta, _: Order| {
        let log = log.clone();
        async move {
            let wharf_headers: Vec<String> = meta
                .headers()
                .iter()
                .filter(|(name, _)| name.starts_with("wharf-") && *name != "wharf-replayed-at")
                .map(|(name, value)| format!("{name}={value}"))
                .collect();
            log.push((wharf_headers, meta.header("tenant").map(str::to_owned)));
            if log.len() == 1 {
                return Err(Error::permanent("first run fails"));
            }
            Ok(())
        }
    };
    let running = h.app().route(&queue, handler).start().await.unwrap();
    let original = Message::json(&order(1)).unwrap().with_header("tenant", "acme");
    h.client().send(&queue, original).await.unwrap();
    until(&running, &queue, |s| s.dead_lettered == 1).await;
    h.broker.dead_letters(&queue).replay(1).await.unwrap();
    until(&running, &queue, |s| s.acked == 1).await;
    let second = seen.all().remove(1);
    assert_eq!(
        second,
        (Vec::new(), Some("acme".to_owned())),
        "replayed as the original"
    );
    running.shutdown().await;
}

pub async fn a_scheduled_retry_outlives_its_worker(h: Harness) {
    // The worker that failed the first attempt goes away (its runtime ends)
    // while the retry waits; the retry still happens, on the next worker.
    let queue = h.queue("retry-outlives");
    let (broker, q) = (h.broker.clone(), queue.clone());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let fails = |_: Order| async { Err::<(), _>(Error::new("down for maintenance")) };
            let options = RouteOptions::new().backoff(Backoff::fixed(Duration::from_millis(300)));
            let running = App::new(broker.clone())
                .route_with(&q, fails, options)
                .start()
                .await
                .unwrap();
            broker.client().publish(&q, &order(1)).await.unwrap();
            until(&running, &q, |s| s.retried == 1).await;
            running.shutdown().await;
        });
    })
    .join()
    .unwrap();
    assert_eq!(
        next_worker_sees(&h, &queue, 1).await,
        vec![(1, 2)],
        "the second attempt"
    );
}
