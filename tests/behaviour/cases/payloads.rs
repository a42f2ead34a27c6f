use super::{Order, order};
use crate::harness::{Gauge, Harness, Log, until};
use std::time::Duration;
use wharf::{App, Context, Message, Meta, RouteOptions, State};

pub async fn json_payload_is_decoded_and_acked(h: Harness) {
    let queue = h.queue("json");
    let seen = Log::new();
    let log = seen.clone();
    let running = h
        .app()
        .route(&queue, move |o: Order| {
            let log = log.clone();
            async move { log.push(o) }
        })
        .start()
        .await
        .unwrap();
    h.client().publish(&queue, &order(1)).await.unwrap();
    let stats = until(&running, &queue, |s| s.acked == 1).await;
    assert_eq!(seen.all(), vec![order(1)]);
    assert_eq!((stats.received, stats.retried, stats.dead_lettered), (1, 0, 0));
    running.shutdown().await;
    assert_eq!(h.broker.queue_depth(&queue).await.unwrap(), 0);
}

pub async fn msgpack_payload_is_decoded_by_content_type(h: Harness) {
    let queue = h.queue("msgpack");
    let seen = Log::new();
    let log = seen.clone();
    let running = h
        .app()
        .route(&queue, move |o: Order| {
            let log = log.clone();
            async move { log.push(o) }
        })
        .start()
        .await
        .unwrap();
    let message = Message::msgpack(&order(7)).unwrap();
    assert_eq!(message.content_type.as_deref(), Some("application/msgpack"));
    h.client().send(&queue, message).await.unwrap();
    // A publisher in another language may say application/x-msgpack.
    let other = Message::msgpack(&order(8))
        .unwrap()
        .with_content_type("application/x-msgpack");
    h.client().send(&queue, other).await.unwrap();
    until(&running, &queue, |s| s.acked == 2).await;
    let mut ids: Vec<u64> = seen.all().iter().map(|o| o.id).collect();
    ids.sort();
    assert_eq!(ids, vec![7, 8]);
    running.shutdown().await;
}

#[derive(Clone)]
struct Shop {
    name: &'static str,
}

pub async fn extractors_see_metadata_state_and_attempt(h: Harness) {
    let queue = h.queue("extractors");
    let seen = Log::new();
    let log = seen.clone();
    let handler = move |ctx: Context, meta: Meta, State(shop): State<Shop>, o: Order| {
        let log = log.clone();
        async move {
            log.push((
                shop.name,
                o.id,
                ctx.attempt(),
                ctx.queue().to_owned(),
                meta.message_id().map(str::to_owned),
                meta.header("tenant").map(str::to_owned),
                meta.session_id().map(str::to_owned),
                meta.sequence(),
            ));
        }
    };
    let running = App::with_state(h.broker.clone(), Shop { name: "corner shop" })
        .route(&queue, handler)
        .start()
        .await
        .unwrap();
    let message = Message::json(&order(3))
        .unwrap()
        .with_message_id("m-3")
        .with_header("tenant", "acme")
        .with_session("s-1", 1);
    h.client().send(&queue, message).await.unwrap();
    until(&running, &queue, |s| s.acked == 1).await;
    assert_eq!(
        seen.all(),
        vec![(
            "corner shop",
            3,
            1,
            queue.clone(),
            Some("m-3".to_owned()),
            Some("acme".to_owned()),
            Some("s-1".to_owned()),
            Some(1)
        )]
    );
    running.shutdown().await;
}

pub async fn concurrency_limit_is_respected(h: Harness) {
    let queue = h.queue("concurrency");
    let gauge = Gauge::default();
    let g = gauge.clone();
    let running = h
        .app()
        .route_with(
            &queue,
            move |_: Order| {
                let g = g.clone();
                async move {
                    let _inside = g.enter();
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
            },
            RouteOptions::new().concurrency(3),
        )
        .start()
        .await
        .unwrap();
    for id in 0..24 {
        h.client().publish(&queue, &order(id)).await.unwrap();
    }
    until(&running, &queue, |s| s.acked == 24).await;
    assert_eq!(
        gauge.max(),
        3,
        "exactly the configured concurrency, no more, and it was used"
    );
    running.shutdown().await;
}

pub async fn handlers_that_block_still_run_in_parallel(h: Harness) {
    // A handler that works for a while without awaiting (CPU work, a
    // blocking call) must not make the route handle one message at a time.
    let queue = h.queue("blocking");
    let gauge = Gauge::default();
    let g = gauge.clone();
    let blocking = move |_: Order| {
        let g = g.clone();
        async move {
            let _inside = g.enter();
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let options = RouteOptions::new().concurrency(4);
    let running = h
        .app()
        .route_with(&queue, blocking, options)
        .start()
        .await
        .unwrap();
    for id in 0..12 {
        h.client().publish(&queue, &order(id)).await.unwrap();
    }
    until(&running, &queue, |s| s.acked == 12).await;
    assert!(gauge.max() >= 2, "blocking handlers ran one at a time");
    running.shutdown().await;
}
