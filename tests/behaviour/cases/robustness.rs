//! Faults below the handler (a buggy store) do not stop a worker.

use super::{Order, order};
use crate::faults::{Fault, FaultyStore};
use crate::harness::{Harness, Log, until};
use std::time::Duration;
use wharf::{Message, Meta, RouteOptions};

pub async fn a_panicking_store_does_not_stop_the_consumer(h: Harness) {
    let queue = h.queue("store-panics");
    let running = h
        .app()
        .store(FaultyStore::new(Fault::PanicOnBoomKey))
        .route(&queue, |_: Order| async {})
        .start()
        .await
        .unwrap();
    let boom = Message::json(&order(1)).unwrap().with_idempotency_key("boom");
    h.client().send(&queue, boom).await.unwrap();
    for id in 2..=5 {
        h.client().publish(&queue, &order(id)).await.unwrap();
    }
    // The message the store panics on comes back counted; once it has had
    // its attempts it is dead-lettered, and it never blocked the others.
    let stats = until(&running, &queue, |s| s.acked == 4 && s.dead_lettered == 1).await;
    assert!(running.health().is_ready(), "the route is still consuming");
    assert_eq!(
        stats.received,
        4 + 6,
        "the poison message was delivered max_attempts + 1 times"
    );
    let letter = h.dead_letters(&queue, 1).await.remove(0);
    assert_eq!(letter.reason(), Some(wharf::DeadLetterReason::MaxAttempts));
    let explanation = letter.error_message().unwrap();
    if h.broker.kind() == "memory" {
        // The in-memory queue counts the deliveries itself.
        assert_eq!(letter.error_kind(), Some("redelivered"), "{explanation}");
        assert!(explanation.contains("never settled"), "{explanation}");
    } else {
        // A broker's delivery dropped unsettled goes back as a copy whose
        // wharf-attempt counts it; a copy is read like any message with
        // that header (wharf cannot tell its own copies from a
        // publisher's), so the last one arrives with its attempts used up.
        assert_eq!(letter.error_kind(), Some("attempts-used-up"), "{explanation}");
        assert!(
            explanation.contains("wharf-attempt 5") && explanation.contains("never settled"),
            "{explanation}"
        );
    }
    running.shutdown().await;
}

pub async fn a_store_failing_over_after_a_run_neither_stalls_nor_repeats(h: Harness) {
    // The store cannot record the first run (its session's move and its
    // idempotency key) for 2.5 s, as a replicated store does while it
    // elects a new leader: longer than the lease (1 s here), shorter than
    // the gap timeout (30 s). The session must not wait for its gap
    // timeout, and nothing may run twice.
    let queue = h.queue("store-fails-over");
    let store = FaultyStore::new(Fault::FailsOverAfterARun(Duration::from_millis(2500)));
    let refused = store.refused.clone();
    let log = Log::new();
    let handler = {
        let log = log.clone();
        move |meta: Meta, _: Order| {
            let log = log.clone();
            async move { log.push(meta.sequence().unwrap()) }
        }
    };
    let options = RouteOptions::new()
        .lease(Duration::from_secs(1))
        .gap_timeout(Duration::from_secs(30));
    let running = h
        .app()
        .store(store)
        .route_with(&queue, handler, options)
        .start()
        .await
        .unwrap();
    for n in 1..=4 {
        let message = Message::json(&order(n))
            .unwrap()
            .with_session("f", n)
            .with_idempotency_key(format!("f-{n}"));
        h.client().send(&queue, message).await.unwrap();
    }
    let stats = until(&running, &queue, |s| s.acked == 4).await;
    assert!(
        refused.load(std::sync::atomic::Ordering::SeqCst) > 1,
        "the store refused, and was asked again"
    );
    assert_eq!(log.all(), vec![1, 2, 3, 4], "in order, each once");
    assert_eq!(
        (stats.dead_lettered, stats.gap_timeouts, stats.retried),
        (0, 0, 0)
    );
    running.shutdown().await;
}
