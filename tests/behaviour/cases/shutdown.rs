use super::{Order, order};
use crate::harness::{Harness, Log, PATIENCE, next_worker_sees, until};
use std::time::{Duration, Instant};
use wharf::{App, Message, Phase, RouteOptions};

pub async fn shutdown_lets_in_flight_handlers_finish(h: Harness) {
    let queue = h.queue("drain");
    let finished = Log::new();
    let log = finished.clone();
    let slow = move |o: Order| {
        let log = log.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            log.push(o.id);
        }
    };
    let options = RouteOptions::new().concurrency(3);
    let running = h.app().route_with(&queue, slow, options).start().await.unwrap();
    for id in 1..=3 {
        h.client().publish(&queue, &order(id)).await.unwrap();
    }
    until(&running, &queue, |s| s.in_flight == 3).await;
    let health = running.health();
    let stats_before = running.stats(&queue);
    assert_eq!(stats_before.acked, 0);
    let report = running.shutdown().await;
    assert!(report.drained);
    assert_eq!(finished.len(), 3, "in-flight handlers ran to the end");
    assert_eq!(health.phase(), Phase::Stopped);
    assert_eq!(
        h.broker.queue_depth(&queue).await.unwrap(),
        0,
        "all three were acked"
    );
}

pub async fn shutdown_returns_unfinished_messages_after_the_grace_period(h: Harness) {
    let queue = h.queue("grace");
    let stuck = |_: Order| async { tokio::time::sleep(Duration::from_secs(3600)).await };
    let running = h
        .app()
        .shutdown_grace(Duration::from_millis(200))
        .route(&queue, stuck)
        .start()
        .await
        .unwrap();
    h.client().publish(&queue, &order(1)).await.unwrap();
    until(&running, &queue, |s| s.in_flight == 1).await;
    let started = Instant::now();
    let report = running.shutdown().await;
    assert!(!report.drained);
    // The grace period ends the wait, not the handler's own timeout.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert_eq!(report.stats(&queue).returned, 1);
    assert_eq!(report.stats(&queue).acked, 0);
    // Not acked and not counted as an attempt: the next worker gets it fresh.
    assert_eq!(next_worker_sees(&h, &queue, 1).await, vec![(1, 1)]);
}

pub async fn unsettled_delivery_goes_back_when_its_task_dies(h: Harness) {
    // A worker that dies (here: its runtime is torn down without shutdown)
    // loses nothing: its unsettled deliveries go back to the queue.
    let queue = h.queue("dropped");
    let (broker, q) = (h.broker.clone(), queue.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let stuck = |_: Order| async { tokio::time::sleep(Duration::from_secs(3600)).await };
            let running = App::new(broker.clone()).route(&q, stuck).start().await.unwrap();
            broker.client().publish(&q, &order(1)).await.unwrap();
            until(&running, &q, |s| s.in_flight == 1).await;
            std::mem::forget(running);
        });
        drop(rt);
    })
    .join()
    .unwrap();
    // The delivery the dead worker held counts: it was being handled.
    assert_eq!(next_worker_sees(&h, &queue, 1).await, vec![(1, 2)]);
}

pub async fn shutdown_returns_waiting_session_messages(h: Harness) {
    let queue = h.queue("drain-session");
    let handled = Log::new();
    let log = handled.clone();
    let handler = move |o: Order| {
        let log = log.clone();
        async move { log.push(o.id) }
    };
    let first = h.app().route(&queue, handler.clone()).start().await.unwrap();
    let early = Message::json(&order(2)).unwrap().with_session("s", 2);
    h.client().send(&queue, early).await.unwrap();
    until(&first, &queue, |s| s.session_buffered == 1).await;
    first.shutdown().await;
    assert!(handled.all().is_empty());
    let next = h.app().route(&queue, handler).start().await.unwrap();
    let missing = Message::json(&order(1)).unwrap().with_session("s", 1);
    h.client().send(&queue, missing).await.unwrap();
    until(&next, &queue, |s| s.acked == 2).await;
    assert_eq!(handled.all(), vec![1, 2], "the returned message ran in its turn");
    next.shutdown().await;
}

pub async fn readiness_follows_the_lifecycle(h: Harness) {
    let queue = h.queue("ready");
    let slow = |_: Order| async { tokio::time::sleep(Duration::from_millis(300)).await };
    let running = h.app().route(&queue, slow).start().await.unwrap();
    let health = running.health();
    assert!(health.is_ready());
    assert_eq!(health.phase(), Phase::Running);
    h.client().publish(&queue, &order(1)).await.unwrap();
    until(&running, &queue, |s| s.in_flight == 1).await;
    let watcher = health.clone();
    let draining = tokio::spawn(tokio::time::timeout(PATIENCE, async move {
        loop {
            if watcher.phase() == Phase::Draining {
                return watcher.is_ready();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }));
    running.shutdown().await;
    let ready = draining
        .await
        .unwrap()
        .expect("the Draining phase was never seen");
    assert!(!ready, "not ready while draining");
    assert!(!health.is_ready());
    assert_eq!(health.phase(), Phase::Stopped);
}

pub async fn a_stopping_workers_unstarted_messages_go_to_another_at_once(h: Harness) {
    // A rolling update: the old worker had prefetched jobs it never started;
    // the new one, already running, gets them as soon as the old one stops
    // taking messages, not after a broker timeout (JetStream's ack wait).
    let queue = h.queue("handback");
    let (tx, started) = tokio::sync::watch::channel(0u32);
    let old_handler = move |_: Order| {
        let tx = tx.clone();
        async move {
            tx.send_modify(|n| *n += 1);
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
    };
    let old = h
        .app()
        .route_with(&queue, old_handler, RouteOptions::new().concurrency(2))
        .start()
        .await
        .unwrap();
    for id in 1..=20 {
        h.client().publish(&queue, &order(id)).await.unwrap();
    }
    until(&old, &queue, |s| s.in_flight == 2).await;
    // Give the old worker time to prefetch the rest (it may take all 20).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let taken = Log::new();
    let log = taken.clone();
    let new_handler = move |o: Order| {
        let log = log.clone();
        async move { log.push(o.id) }
    };
    let new = h
        .app()
        .route_with(&queue, new_handler, RouteOptions::new().concurrency(20))
        .start()
        .await
        .unwrap();
    let stopping = Instant::now();
    let old_done = tokio::spawn(old.shutdown());
    let mut waited = Duration::ZERO;
    while taken.len() < 18 && waited < PATIENCE {
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited = stopping.elapsed();
    }
    assert_eq!(
        taken.len(),
        18,
        "the new worker took the 18 the old one had not started"
    );
    assert!(
        waited < Duration::from_secs(1),
        "the old worker's unstarted messages reached the new one {waited:?} after it began to stop"
    );
    let report = old_done.await.unwrap();
    assert!(report.drained);
    assert_eq!(
        report.stats(&queue).acked,
        2,
        "the old worker finished what it had started"
    );
    assert_eq!(*started.borrow(), 2);
    let mut ids = taken.all();
    ids.sort_unstable();
    let mut expected: Vec<u64> = (1..=20).collect();
    expected.retain(|id| !ids.contains(id));
    assert_eq!(expected.len(), 2, "each message went to one worker only: {ids:?}");
    new.shutdown().await;
}
