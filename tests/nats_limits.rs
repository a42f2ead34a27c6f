//! nats-server's `max_payload` against wharf's body limit
//! (`RouteOptions::max_body_bytes`), as docs/nats.md ("Message size")
//! describes it: both are 1 MiB by default, the server's is met first, at
//! publish time, so a message over it is refused with an error for the
//! publisher and nothing is stored, and with the defaults no worker ever
//! sees a body it would dead-letter as `too-large`.
//!
//! Needs NATS with JetStream at `WHARF_TEST_NATS_URL` (default
//! `nats://127.0.0.1:4222`, started with the default `max_payload`); skips
//! loudly without it, fails with `CI=true`.

#![cfg(feature = "nats")]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{eventually, skip, unique_queue};
use wharf::{App, Broker, BrokerErrorKind, Message, Raw, RouteOptions};

const DEFAULT_URL: &str = "nats://127.0.0.1:4222";
const PATIENCE: Duration = Duration::from_secs(15);

fn url() -> String {
    std::env::var("WHARF_TEST_NATS_URL").unwrap_or_else(|_| DEFAULT_URL.into())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_over_max_payload_is_refused_at_publish_so_too_large_never_happens() {
    let test = "a_message_over_max_payload_is_refused_at_publish_so_too_large_never_happens";
    if let Err(why) = support::broker_reachable(&url()) {
        return skip(test, &format!("no NATS: {why}"));
    }
    let broker = match Broker::connect(&url()).await {
        Ok(broker) => broker,
        Err(error) => return skip(test, &format!("no NATS at {}: {error}", url())),
    };
    let raw = async_nats::connect(url()).await.expect("raw client connects");
    let max_payload = raw.server_info().max_payload;
    let max_body_bytes = 1024 * 1024;
    assert_eq!(
        max_payload, max_body_bytes,
        "this test, and docs/nats.md, assume nats-server's default max_payload (1 MiB), \
         which equals wharf's default max_body_bytes"
    );

    let queue = unique_queue("max-payload");
    let bodies = Arc::new(Mutex::new(Vec::<usize>::new()));
    let handler = {
        let bodies = bodies.clone();
        move |raw: Raw| {
            let bodies = bodies.clone();
            async move { bodies.lock().unwrap().push(raw.body.len()) }
        }
    };
    // Default options: max_body_bytes is 1 MiB.
    let running = App::new(broker.clone())
        .route_with(&queue, handler, RouteOptions::new())
        .start()
        .await
        .expect("the app starts");
    let client = broker.client();

    // One byte over: refused before it is sent (async-nats knows the
    // server's limit), with an error for the publisher.
    let over = client
        .send(&queue, Message::new(vec![b'x'; max_payload + 1]))
        .await;
    // Exactly the limit, without headers (none are written for a message
    // without content type or id): stored, and handled, not `too-large`.
    let at_limit = client.send(&queue, Message::new(vec![b'y'; max_payload])).await;
    let handled = eventually(PATIENCE, || running.stats(&queue).acked >= 1).await;
    // Anything stored would have arrived by now, behind the message above.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = running.stats(&queue);
    let seen = bodies.lock().unwrap().clone();
    running.shutdown().await;
    if let Err(error) = broker.delete_queue(&queue).await {
        eprintln!("could not delete test queue {queue}: {error}");
    }
    broker.close().await;

    let error = over.expect_err("a message over max_payload is refused at publish");
    assert_eq!(error.kind(), BrokerErrorKind::Publish, "{error}");
    assert!(
        support::chain(&error).contains("max payload size exceeded"),
        "the error says why: {error}"
    );
    at_limit.expect("a message of exactly max_payload bytes is stored");
    assert!(handled, "the message at the limit was handled: {stats:?}");
    assert_eq!(seen, vec![max_payload], "only the message at the limit arrived");
    assert_eq!(stats.received, 1, "nothing else was stored: {stats:?}");
    assert_eq!(stats.rejected, 0, "no too-large dead letter: {stats:?}");
}
