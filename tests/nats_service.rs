//! Requests on NATS in their two forms, seen on the wire: a request to a
//! core NATS service (`RouteOptions::persistent(false)`) is *lean* — no
//! headers unless it needs them, and a bare reply when it succeeded in
//! JSON — while a request to a queue that a stream holds carries its reply
//! address and ids in headers, because the stream keeps the message but not
//! its reply subject. A spy subscription (outside the service's queue
//! group) sees a copy of every request.
//!
//! Needs NATS with JetStream at `WHARF_TEST_NATS_URL` (default
//! `nats://127.0.0.1:4222`); skips loudly without it, fails with `CI=true`.

#![cfg(feature = "nats")]

mod support;

use futures_util::StreamExt;
use std::time::Duration;
use support::{skip, unique_queue};
use wharf::{App, Backoff, Broker, Context, Error, Message, Reply, RequestError, RouteOptions, Running};

const DEFAULT_URL: &str = "nats://127.0.0.1:4222";
const PATIENCE: Duration = Duration::from_secs(10);

fn url() -> String {
    std::env::var("WHARF_TEST_NATS_URL").unwrap_or_else(|_| DEFAULT_URL.into())
}

/// The broker and a raw client on the same server, or `None` (skipped).
async fn connect(test: &str) -> Option<(Broker, async_nats::Client)> {
    if let Err(why) = support::broker_reachable(&url()) {
        skip(test, &format!("no NATS: {why}"));
        return None;
    }
    match Broker::connect(&url()).await {
        Ok(broker) => {
            let raw = async_nats::connect(url()).await.expect("raw client connects");
            Some((broker, raw))
        }
        Err(error) => {
            skip(test, &format!("no NATS at {}: {error}", url()));
            None
        }
    }
}

async fn double(n: u64) -> Reply<u64> {
    Reply(n * 2)
}

async fn refuse(_n: u64) -> Result<u64, Error> {
    Err(Error::permanent("not today").with_kind("refused"))
}

fn service() -> RouteOptions {
    RouteOptions::new().persistent(false)
}

/// A worker answering `double` on `queue`.
async fn doubling(broker: &Broker, queue: &str, options: RouteOptions) -> Running {
    App::new(broker.clone())
        .route_with(queue, double, options)
        .start()
        .await
        .unwrap()
}

/// A copy of every request to `queue`, whichever worker answers it.
async fn spy(raw: &async_nats::Client, queue: &str) -> async_nats::Subscriber {
    let spy = raw.subscribe(format!("wharf.*.{queue}")).await.unwrap();
    raw.flush().await.unwrap();
    spy
}

async fn next(spy: &mut async_nats::Subscriber) -> async_nats::Message {
    tokio::time::timeout(PATIENCE, spy.next())
        .await
        .expect("the spy sees the request")
        .expect("spy subscription open")
}

fn header_names(message: &async_nats::Message) -> Vec<String> {
    let mut names: Vec<String> = message
        .headers
        .iter()
        .flat_map(|h| h.iter().map(|(name, _)| name.to_string().to_ascii_lowercase()))
        .collect();
    names.sort();
    names
}

async fn stop(running: Running, broker: &Broker, queue: &str) {
    running.shutdown().await;
    broker.delete_queue(queue).await.ok();
}

#[tokio::test]
async fn requests_to_a_service_carry_no_headers_and_get_bare_replies() {
    let Some((broker, raw)) = connect("requests_to_a_service_carry_no_headers_and_get_bare_replies").await
    else {
        return;
    };
    let queue = unique_queue("service-lean");
    let running = doubling(&broker, &queue, service()).await;
    let mut spy = spy(&raw, &queue).await;
    let client = broker.client().with_timeout(PATIENCE);

    let four: u64 = client.request(&queue, &2u64).await.unwrap();
    assert_eq!(four, 4);
    let request = next(&mut spy).await;
    assert_eq!(request.subject.as_str(), format!("wharf.p0.{queue}"));
    assert!(request.reply.is_some(), "the reply subject is the reply address");
    assert_eq!(
        header_names(&request),
        Vec::<String>::new(),
        "a JSON request to a service needs no headers"
    );

    // Anything that is not the default still travels: here the content type.
    let packed = Message::msgpack(&5u64).unwrap();
    let reply = client.request_message(&queue, packed, PATIENCE).await.unwrap();
    assert_eq!(reply.content_type.as_deref(), Some("application/msgpack"));
    assert_eq!(rmp_serde::from_slice::<u64>(&reply.body).unwrap(), 10);
    assert_eq!(header_names(&next(&mut spy).await), vec!["content-type"]);

    // Any NATS client's plain request gets a bare JSON reply.
    let reply = raw
        .request(format!("wharf.p0.{queue}"), "21".into())
        .await
        .unwrap();
    assert_eq!(&reply.payload[..], b"42");
    assert!(
        reply.headers.is_none(),
        "a successful JSON reply to a bare request is bare"
    );

    stop(running, &broker, &queue).await;
}

#[tokio::test]
async fn a_failed_lean_request_gets_an_error_reply_with_its_headers() {
    let Some((broker, raw)) = connect("a_failed_lean_request_gets_an_error_reply_with_its_headers").await
    else {
        return;
    };
    let queue = unique_queue("service-error");
    let running = App::new(broker.clone())
        .route_with(&queue, refuse, service())
        .start()
        .await
        .unwrap();
    let client = broker.client().with_timeout(PATIENCE);

    let error = client.request::<_, u64>(&queue, &1u64).await.unwrap_err();
    let remote = error
        .remote()
        .unwrap_or_else(|| panic!("an error reply, not {error}"));
    assert_eq!(remote.kind, "refused");

    let reply = raw
        .request(format!("wharf.p0.{queue}"), "1".into())
        .await
        .unwrap();
    let headers = reply.headers.expect("an error reply says so in headers");
    assert_eq!(headers.get("wharf-status").map(|v| v.as_str()), Some("error"));
    assert_eq!(
        headers.get("wharf-error-kind").map(|v| v.as_str()),
        Some("refused")
    );

    stop(running, &broker, &queue).await;
}

#[tokio::test]
async fn requests_to_a_stream_carry_their_reply_address_and_ids() {
    let Some((broker, raw)) = connect("requests_to_a_stream_carry_their_reply_address_and_ids").await else {
        return;
    };
    let queue = unique_queue("stream-durable");
    let running = doubling(&broker, &queue, RouteOptions::default()).await;
    let mut spy = spy(&raw, &queue).await;

    let six: u64 = broker
        .client()
        .with_timeout(PATIENCE)
        .request(&queue, &3u64)
        .await
        .unwrap();
    assert_eq!(six, 6);
    let request = next(&mut spy).await;
    assert_eq!(
        header_names(&request),
        vec!["content-type", "correlation-id", "nats-msg-id", "reply-to"],
        "the stream keeps these, and not the reply subject"
    );
    let headers = request.headers.as_ref().unwrap();
    assert_eq!(
        headers.get("reply-to").map(|v| v.as_str()),
        request.reply.as_ref().map(|r| r.as_str())
    );
    let id = headers.get("correlation-id").unwrap().as_str().to_owned();
    assert_eq!(headers.get("Nats-Msg-Id").map(|v| v.as_str()), Some(id.as_str()));

    // A forwarded message's own correlation id is replaced by the request's.
    let forwarded = Message::json(&4u64).unwrap().with_correlation_id("from-upstream");
    let reply = broker
        .client()
        .request_message(&queue, forwarded, PATIENCE)
        .await
        .unwrap();
    assert_eq!(&reply.body[..], b"8");
    let request = next(&mut spy).await;
    let correlation = request.headers.as_ref().unwrap().get("correlation-id").unwrap();
    assert_ne!(correlation.as_str(), "from-upstream");
    assert_eq!(reply.correlation_id.as_deref(), Some(correlation.as_str()));

    stop(running, &broker, &queue).await;
}

#[tokio::test]
async fn a_service_replaced_by_a_stream_fails_one_request_clearly_then_answers() {
    let Some((broker, _raw)) =
        connect("a_service_replaced_by_a_stream_fails_one_request_clearly_then_answers").await
    else {
        return;
    };
    let queue = unique_queue("service-to-stream");
    let client = broker.client().with_timeout(PATIENCE);

    let service_worker = doubling(&broker, &queue, service()).await;
    let two: u64 = client.request(&queue, &1u64).await.unwrap();
    assert_eq!(two, 2, "learnt: a service, so requests are lean");
    service_worker.shutdown().await;

    // The same queue, now held by a stream: the client does not know yet.
    let stream_worker = doubling(&broker, &queue, RouteOptions::default()).await;
    let started = std::time::Instant::now();
    let error = client.request::<_, u64>(&queue, &2u64).await.unwrap_err();
    assert!(
        matches!(&error, RequestError::Broker(e) if e.to_string().contains("cannot be answered")),
        "a clear error, not a reply or a timeout: {error}"
    );
    assert!(started.elapsed() < PATIENCE / 2, "at once, not at the timeout");

    // The stream stored that request without a reply address; it is
    // handled all the same, and the next request carries its address.
    let six: u64 = client.request(&queue, &3u64).await.unwrap();
    assert_eq!(six, 6);
    support::wait_for("the stored lean request is handled too", PATIENCE, || {
        stream_worker.stats(&queue).acked >= 2
    })
    .await;

    stop(stream_worker, &broker, &queue).await;
}

/// Fails its first attempt, then doubles: an answer on the second attempt.
async fn double_on_second_try(ctx: Context, n: u64) -> Result<u64, Error> {
    if ctx.attempt() < 2 {
        return Err(Error::new("not yet"));
    }
    Ok(n * 2)
}

#[tokio::test]
async fn a_service_retries_a_failed_request_in_memory_and_answers() {
    let Some((broker, _raw)) = connect("a_service_retries_a_failed_request_in_memory_and_answers").await
    else {
        return;
    };
    let queue = unique_queue("service-retry");
    let options = service().backoff(Backoff::fixed(Duration::from_millis(20)));
    let running = App::new(broker.clone())
        .route_with(&queue, double_on_second_try, options)
        .start()
        .await
        .unwrap();
    let client = broker.client().with_timeout(PATIENCE);

    let answer: u64 = client.request(&queue, &21u64).await.unwrap();
    assert_eq!(answer, 42, "answered by the second attempt");
    let stats = running.stats(&queue);
    assert_eq!(
        (stats.retried, stats.acked, stats.dead_lettered),
        (1, 1, 0),
        "{stats:?}"
    );

    stop(running, &broker, &queue).await;
}

/// Requests are published in batches (`nats::outbox`); one that the NATS
/// client refuses there still fails at once, with the reason, and does not
/// hold up the others.
#[tokio::test]
async fn a_request_over_the_payload_limit_fails_at_once_and_the_rest_go_on() {
    let Some((broker, _raw)) =
        connect("a_request_over_the_payload_limit_fails_at_once_and_the_rest_go_on").await
    else {
        return;
    };
    let queue = unique_queue("service-oversized");
    let running = doubling(&broker, &queue, service()).await;
    let client = broker.client().with_timeout(PATIENCE);
    let two: u64 = client.request(&queue, &1u64).await.unwrap();
    assert_eq!(two, 2);

    // Over nats-server's default max_payload (1 MiB): alone (published at
    // once), then beside a request already in flight (through the outbox).
    let huge = || Message::new(vec![b'7'; 2 * 1024 * 1024]);
    let refused = |error: wharf::RequestError| {
        assert!(
            matches!(error, wharf::RequestError::Broker(_)),
            "a broker error, not a timeout: {error}"
        );
        assert!(support::chain(&error).contains("limit"), "says why: {error:?}");
    };
    let started = std::time::Instant::now();
    refused(
        client
            .request_message(&queue, huge(), PATIENCE)
            .await
            .unwrap_err(),
    );
    let (small, oversized) = tokio::join!(
        client.request::<_, u64>(&queue, &21u64),
        client.request_message(&queue, huge(), PATIENCE)
    );
    refused(oversized.expect_err("too large to publish"));
    assert!(started.elapsed() < PATIENCE / 2, "failed at once");
    assert_eq!(small.unwrap(), 42);

    stop(running, &broker, &queue).await;
}

/// Many requests in flight to a core service go out through the outbox in
/// batches; each gets its own reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_in_flight_to_a_service_each_get_their_reply() {
    let Some((broker, _raw)) = connect("many_requests_in_flight_to_a_service_each_get_their_reply").await
    else {
        return;
    };
    let queue = unique_queue("service-many");
    let running = doubling(&broker, &queue, service().concurrency(64)).await;
    let client = broker.client().with_timeout(PATIENCE);
    let first: u64 = client.request(&queue, &0u64).await.unwrap();
    assert_eq!(first, 0, "the service answers (and the client learnt its form)");
    let requests = (1..=500u64).map(|n| {
        let client = client.clone();
        let queue = queue.clone();
        tokio::spawn(async move { (n, client.request::<_, u64>(&queue, &n).await) })
    });
    for request in futures_util::future::join_all(requests).await {
        let (n, reply) = request.unwrap();
        assert_eq!(reply.unwrap(), n * 2, "each reply reaches its own request");
    }
    stop(running, &broker, &queue).await;
}
