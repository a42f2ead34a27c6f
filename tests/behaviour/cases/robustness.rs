//! Faults below the handler (a buggy store) do not stop a worker.

use super::{Order, order};
use crate::faults::{Fault, FaultyStore};
use crate::harness::{Harness, until};
use wharf::Message;

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
    assert_eq!(letter.error_kind(), Some("redelivered"));
    running.shutdown().await;
}
