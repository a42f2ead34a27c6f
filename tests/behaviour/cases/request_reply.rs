use super::{Order, order};
use crate::faults::counting_reply_inboxes;
use crate::harness::{Gauge, Harness, Log, until};
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use wharf::transport::QueueSpec;
use wharf::{Codec, Error, Message, Meta, Reply, RequestError, RouteOptions};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    order_id: u64,
    total: u64,
}

async fn price(o: Order) -> Result<Receipt, Error> {
    Ok(Receipt {
        order_id: o.id,
        total: o.id * 100,
    })
}

pub async fn request_gets_typed_reply(h: Harness) {
    let queue = h.queue("rpc");
    let running = h.app().route(&queue, price).start().await.unwrap();
    let receipt: Receipt = h.client().request(&queue, &order(4)).await.unwrap();
    assert_eq!(
        receipt,
        Receipt {
            order_id: 4,
            total: 400
        }
    );
    let stats = until(&running, &queue, |s| s.acked == 1).await;
    assert_eq!(stats.replies, 1);
    running.shutdown().await;
}

pub async fn reply_uses_the_request_content_type(h: Harness) {
    let queue = h.queue("rpc-msgpack");
    let running = h.app().route(&queue, price).start().await.unwrap();
    let request = Message::msgpack(&order(5)).unwrap();
    let reply = h
        .client()
        .request_message(&queue, request, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(reply.content_type.as_deref(), Some("application/msgpack"));
    assert_eq!(reply.header("wharf-status"), Some("ok"));
    let receipt: Receipt = Codec::MsgPack.decode(&reply.body).unwrap();
    assert_eq!(
        receipt,
        Receipt {
            order_id: 5,
            total: 500
        }
    );
    running.shutdown().await;
}

pub async fn reply_goes_to_a_named_queue_with_the_correlation_id(h: Harness) {
    let queue = h.queue("rpc-named");
    let replies = h.queue("rpc-named-replies");
    let seen = Log::new();
    let log = seen.clone();
    let collect = move |meta: Meta, receipt: Receipt| {
        let log = log.clone();
        async move {
            log.push((
                meta.correlation_id().map(str::to_owned),
                meta.header("wharf-status").map(str::to_owned),
                receipt.order_id,
            ))
        }
    };
    let running = h
        .app()
        .route(&queue, price)
        .route(&replies, collect)
        .start()
        .await
        .unwrap();
    let with_correlation = Message::json(&order(1))
        .unwrap()
        .with_reply_to(&replies)
        .with_correlation_id("corr-1");
    // Without a correlation id the reply carries the request's message id.
    let with_message_id = Message::json(&order(2))
        .unwrap()
        .with_reply_to(&replies)
        .with_message_id("msg-2");
    h.client().send(&queue, with_correlation).await.unwrap();
    h.client().send(&queue, with_message_id).await.unwrap();
    until(&running, &replies, |s| s.acked == 2).await;
    let mut got = seen.all();
    got.sort_by_key(|(_, _, id)| *id);
    assert_eq!(
        got,
        vec![
            (Some("corr-1".into()), Some("ok".into()), 1),
            (Some("msg-2".into()), Some("ok".into()), 2)
        ]
    );
    running.shutdown().await;
}

pub async fn many_requests_in_flight_on_one_client(h: Harness) {
    let queue = h.queue("rpc-many");
    let gauge = Gauge::default();
    let g = gauge.clone();
    let slow_double = move |n: u64| {
        let g = g.clone();
        async move {
            let _inside = g.enter();
            tokio::time::sleep(Duration::from_millis(20)).await;
            Reply(n * 2)
        }
    };
    let running = h
        .app()
        .route_with(&queue, slow_double, RouteOptions::new().concurrency(64))
        .start()
        .await
        .unwrap();
    let client = h.client();
    let requests = (0..200u64).map(|n| {
        let client = client.clone();
        let queue = queue.clone();
        async move { (n, client.request::<_, u64>(&queue, &n).await) }
    });
    for (n, reply) in futures_util::future::join_all(requests).await {
        assert_eq!(reply.unwrap(), n * 2, "each reply reaches its own request");
    }
    assert!(gauge.max() > 1, "requests were in flight at the same time");
    running.shutdown().await;
}

/// `broker.client().request(…)` per request, as the README shows, and
/// clients with their own timeout: all share the broker's one reply
/// consumer, opened on the first request.
pub async fn every_client_of_a_broker_shares_one_reply_consumer(h: Harness) {
    let queue = h.queue("rpc-shared");
    let (broker, inboxes_opened) = counting_reply_inboxes(&h.broker);
    let double = |n: u64| async move { Reply(n * 2) };
    let running = wharf::App::new(broker.clone())
        .route(&queue, double)
        .start()
        .await
        .unwrap();
    assert_eq!(
        inboxes_opened.load(Ordering::SeqCst),
        0,
        "opened on the first request"
    );
    for n in 0..20u64 {
        let reply: u64 = broker.client().request(&queue, &n).await.unwrap();
        assert_eq!(reply, n * 2);
    }
    let patient = broker.client().with_timeout(Duration::from_secs(60));
    assert!(patient.shares_replies_with(&broker.client()));
    let requests = (0..50u64).map(|n| {
        let (client, queue) = (broker.client(), queue.clone());
        async move { (n, client.request::<_, u64>(&queue, &n).await) }
    });
    for (n, reply) in futures_util::future::join_all(requests).await {
        assert_eq!(reply.unwrap(), n * 2);
    }
    assert_eq!(patient.request::<_, u64>(&queue, &7).await.unwrap(), 14);
    assert_eq!(
        inboxes_opened.load(Ordering::SeqCst),
        1,
        "one reply consumer for every client of the broker"
    );
    running.shutdown().await;
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Shortfall {
    missing: u32,
}

pub async fn error_reply_surfaces_as_typed_error_not_timeout(h: Harness) {
    let queue = h.queue("rpc-error");
    let out_of_stock = |o: Order| async move {
        if o.id == 1 {
            Err::<Receipt, _>(
                Error::permanent("not enough teapots")
                    .with_kind("out-of-stock")
                    .with_details(&Shortfall { missing: 2 }),
            )
        } else {
            Err(Error::new("flaky warehouse"))
        }
    };
    let running = h
        .app()
        .route_with(&queue, out_of_stock, RouteOptions::new().max_attempts(1))
        .start()
        .await
        .unwrap();
    let started = Instant::now();
    let error = h
        .client()
        .request_timeout::<_, Receipt>(&queue, &order(1), Duration::from_secs(20))
        .await
        .unwrap_err();
    let remote = error
        .remote()
        .unwrap_or_else(|| panic!("expected an error reply, got {error}"));
    assert_eq!(remote.kind, "out-of-stock");
    assert_eq!(remote.message, "not enough teapots");
    assert_eq!(remote.details_as::<Shortfall>(), Some(Shortfall { missing: 2 }));
    // A retryable error that ran out of attempts also answers the caller.
    let error = h
        .client()
        .request_timeout::<_, Receipt>(&queue, &order(2), Duration::from_secs(20))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RequestError::Remote(r) if r.kind == "handler"),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered, not timed out"
    );
    let stats = until(&running, &queue, |s| s.dead_lettered == 2).await;
    assert_eq!(stats.error_replies, 2);
    assert_eq!(h.dead_letters(&queue, 2).await.len(), 2);
    running.shutdown().await;
}

pub async fn request_without_responder_times_out(h: Harness) {
    // The queue exists; nobody consumes it.
    let queue = h.queue("rpc-nobody");
    h.broker.declare(&QueueSpec::new(&queue)).await.unwrap();
    let started = Instant::now();
    let error = h
        .client()
        .request_timeout::<_, u64>(&queue, &1u64, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(error, RequestError::Timeout { .. }), "{error}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    // A client's own default timeout applies to its requests.
    let started = Instant::now();
    let error = h
        .client()
        .with_timeout(Duration::from_millis(200))
        .request::<_, u64>(&queue, &1u64)
        .await
        .unwrap_err();
    assert!(matches!(error, RequestError::Timeout { .. }), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited {:?}",
        started.elapsed()
    );
}

pub async fn error_reply_uses_the_request_content_type(h: Harness) {
    let (queue, replies) = (h.queue("rpc-error-msgpack"), h.queue("rpc-error-msgpack-replies"));
    let seen = Log::new();
    let log = seen.clone();
    let collect = move |meta: Meta, body: wharf::Raw| {
        let log = log.clone();
        async move {
            let error: serde_json::Value = Codec::MsgPack.decode(&body.body).unwrap();
            log.push((
                body.content_type,
                meta.header("wharf-status").map(str::to_owned),
                error["kind"].as_str().map(str::to_owned),
            ))
        }
    };
    let failing = |_: Order| async { Err::<(), _>(Error::permanent("no").with_kind("nope")) };
    let running = h
        .app()
        .route(&queue, failing)
        .route(&replies, collect)
        .start()
        .await
        .unwrap();
    let request = Message::msgpack(&order(1)).unwrap().with_reply_to(&replies);
    h.client().send(&queue, request).await.unwrap();
    until(&running, &replies, |s| s.acked == 1).await;
    assert_eq!(
        seen.all(),
        vec![(
            Some("application/msgpack".to_owned()),
            Some("error".to_owned()),
            Some("nope".to_owned())
        )]
    );
    running.shutdown().await;
}

pub async fn unit_handler_replies_null(h: Harness) {
    let queue = h.queue("rpc-unit");
    let running = h.app().route(&queue, |_: Order| async {}).start().await.unwrap();
    let reply: () = h.client().request(&queue, &order(1)).await.unwrap();
    assert_eq!(reply, ());
    running.shutdown().await;
}
