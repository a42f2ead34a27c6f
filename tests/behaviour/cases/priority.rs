//! Priority: messages that wait are handled highest first, and a low one is
//! not starved. Everything is published before the worker starts, so that
//! all of it waits (in the broker, and within the worker's prefetch window).

use super::Order;
use crate::harness::{Harness, Log, until};
use wharf::transport::QueueSpec;
use wharf::{Message, RouteOptions};

fn with_priority(id: u64, priority: u8) -> Message {
    let o = Order {
        id,
        item: priority.to_string(),
    };
    Message::json(&o).unwrap().with_priority(priority)
}

/// Publishes `messages` to a new priority queue, then handles them one at a
/// time; returns the priorities in the order they were handled.
async fn handled_order(h: &Harness, name: &str, messages: Vec<Message>) -> Vec<u8> {
    let queue = h.queue(name);
    let spec = QueueSpec {
        priority: true,
        ..QueueSpec::new(queue.clone())
    };
    h.broker.declare(&spec).await.unwrap();
    let count = messages.len() as u64;
    for message in messages {
        h.client().send(&queue, message).await.unwrap();
    }
    let log = Log::new();
    let l = log.clone();
    // A handler that takes a moment, so that a backlog builds up in the
    // worker: on RabbitMQ, priority and bounded starvation apply to what waits
    // within the prefetch window; beyond it the broker's strict order rules.
    let handler = move |o: Order| {
        let l = l.clone();
        async move {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            l.push(o.item.parse::<u8>().unwrap())
        }
    };
    let options = RouteOptions::new().priority(true).concurrency(1);
    let running = h
        .app()
        .route_with(&queue, handler, options)
        .start()
        .await
        .unwrap();
    until(&running, &queue, |s| s.acked == count).await;
    running.shutdown().await;
    log.all()
}

pub async fn higher_priority_is_handled_first(h: Harness) {
    let lows = (1..=10).map(|id| with_priority(id, 1));
    let highs = (11..=20).map(|id| with_priority(id, 9));
    let order = handled_order(&h, "priority", lows.chain(highs).collect()).await;
    assert!(
        order[..8].iter().all(|&p| p == 9),
        "high priority first: {order:?}"
    );
    let mean = |p: u8| {
        let at: Vec<usize> = (0..order.len()).filter(|&i| order[i] == p).collect();
        at.iter().sum::<usize>() as f64 / at.len() as f64
    };
    assert!(mean(9) < mean(1), "{order:?}");
}

/// A worker that starts on a long low-priority backlog still takes the one
/// high-priority message first (on NATS the lanes' first batches arrive in
/// no set order).
pub async fn a_starting_worker_takes_high_priority_first(h: Harness) {
    let lows = (1..=300).map(|id| with_priority(id, 0));
    let high = std::iter::once(with_priority(301, 9));
    let messages: Vec<Message> = lows.chain(high).collect();
    let order = handled_order(&h, "priority-start", messages).await;
    assert_eq!(order.first(), Some(&9), "first 5 handled: {:?}", &order[..5]);
}

pub async fn low_priority_is_not_starved(h: Harness) {
    let low = std::iter::once(with_priority(1, 0));
    let highs = (2..=101).map(|id| with_priority(id, 9));
    let order = handled_order(&h, "priority-starve", low.chain(highs).collect()).await;
    let low_at = order.iter().position(|&p| p == 0).unwrap();
    assert!(
        low_at < 20,
        "the low-priority message waited behind {low_at} others"
    );
}
