//! On NATS a message's priority is its lane, the `p<P>` of its subject
//! `wharf.p<P>.<queue>` (docs/wire-format.md); a `priority` header is an
//! ordinary header like any other (issue 17, defect 8). A Python publisher's
//! `priority: high` used to be dead-lettered as "priority 255 is out of
//! range", and `priority: 7` on lane 0 ran as priority 7.
//!
//! Published here with async-nats directly, as any NATS client would.
//! Needs NATS with JetStream at `WHARF_TEST_NATS_URL` (default
//! `nats://127.0.0.1:4222`); skips loudly without it, fails with `CI=true`.

#![cfg(feature = "nats")]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{skip, unique_queue, wait_for};
use wharf::{App, Broker, Meta, RouteOptions};

fn url() -> String {
    std::env::var("WHARF_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_priority_header_is_an_ordinary_header_and_the_lane_is_the_priority() {
    let test = "a_priority_header_is_an_ordinary_header_and_the_lane_is_the_priority";
    if let Err(why) = support::broker_reachable(&url()) {
        return skip(test, &format!("no NATS: {why}"));
    }
    let broker = match Broker::connect(&url()).await {
        Ok(broker) => broker,
        Err(error) => return skip(test, &format!("no NATS at {}: {error}", url())),
    };
    let raw = async_nats::connect(url()).await.expect("raw client connects");
    let jetstream = async_nats::jetstream::new(raw);
    let queue = unique_queue("priority-header");
    type Seen = (Option<u8>, Option<String>, Vec<u8>);
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    let handler = move |meta: Meta, raw: wharf::Raw| {
        let log = log.clone();
        async move {
            let header = meta.header("priority").map(str::to_owned);
            log.lock()
                .unwrap()
                .push((meta.priority(), header, raw.body.to_vec()));
        }
    };
    let running = App::new(broker.clone())
        .route_with(&queue, handler, RouteOptions::new().priority(true))
        .start()
        .await
        .expect("the app starts");
    let sent = [("high", 0u8), ("7", 0), ("0", 3)];
    for (value, lane) in sent {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("priority", value);
        headers.insert("content-type", "application/json");
        let body = format!("{{\"value\":\"{value}\"}}");
        jetstream
            .publish_with_headers(format!("wharf.p{lane}.{queue}"), headers, body.into())
            .await
            .expect("published")
            .await
            .expect("stored");
    }
    wait_for("all three handled", Duration::from_secs(15), || {
        seen.lock().unwrap().len() == 3
    })
    .await;
    let stats = running.stats(&queue);
    assert_eq!(
        (stats.acked, stats.rejected, stats.dead_lettered),
        (3, 0, 0),
        "{stats:?}"
    );
    let mut got = seen.lock().unwrap().clone();
    got.sort_by(|a, b| a.2.cmp(&b.2));
    let expected = |value: &str, lane: u8| {
        (
            Some(lane),
            Some(value.to_owned()),
            format!("{{\"value\":\"{value}\"}}").into_bytes(),
        )
    };
    let mut want = vec![expected("high", 0), expected("7", 0), expected("0", 3)];
    want.sort_by(|a, b| a.2.cmp(&b.2));
    assert_eq!(
        got, want,
        "each ran on its lane, with its priority header passed on as it was"
    );
    running.shutdown().await;
    broker.delete_queue(&queue).await.unwrap();
}

/// wharf's own client cannot put a priority above 9 on a lane: it says so
/// when asked to publish one (a job or a request), and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wharfs_client_refuses_a_priority_no_lane_can_carry() {
    let test = "wharfs_client_refuses_a_priority_no_lane_can_carry";
    if let Err(why) = support::broker_reachable(&url()) {
        return skip(test, &format!("no NATS: {why}"));
    }
    let broker = match Broker::connect(&url()).await {
        Ok(broker) => broker,
        Err(error) => return skip(test, &format!("no NATS at {}: {error}", url())),
    };
    let queue = unique_queue("priority-refused");
    let spec = wharf::transport::QueueSpec {
        priority: true,
        ..wharf::transport::QueueSpec::new(queue.as_str())
    };
    broker.declare(&spec).await.expect("declared");
    let message = wharf::Message::json(&1).unwrap().with_priority(10);
    let error = broker.client().send(&queue, message.clone()).await.unwrap_err();
    assert!(support::chain(&error).contains("priority 10"), "{error:?}");
    let error = broker
        .client()
        .request_message(&queue, message, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(support::chain(&error).contains("priority 10"), "{error:?}");
    let depth = broker.transport().depth(&queue).await.unwrap();
    assert_eq!(depth, 0, "nothing was stored");
    broker.delete_queue(&queue).await.unwrap();
}
