//! Bad input never crashes a worker: each kind ends dead-lettered with an
//! explained reason, counted as rejected, and the next good message is
//! handled as usual.

use super::{Order, order};
use crate::harness::{Harness, Log, until};
use std::time::{Duration, Instant};
use wharf::{DeadLetter, DeadLetterReason, Message, RequestError, RouteOptions};

async fn rejects(
    h: &Harness,
    name: &str,
    options: RouteOptions,
    bad: Message,
    reason: DeadLetterReason,
) -> DeadLetter {
    let queue = h.queue(name);
    let handled = Log::new();
    let log = handled.clone();
    let handler = move |o: Order| {
        let log = log.clone();
        async move { log.push(o.id) }
    };
    let running = h
        .app()
        .route_with(&queue, handler, options)
        .start()
        .await
        .unwrap();
    h.client().send(&queue, bad.clone()).await.unwrap();
    h.client().publish(&queue, &order(1)).await.unwrap();
    let stats = until(&running, &queue, |s| s.acked == 1 && s.rejected == 1).await;
    assert_eq!(
        (stats.retried, stats.dead_lettered),
        (0, 0),
        "bad input is not retried"
    );
    assert_eq!(
        handled.all(),
        vec![1],
        "the worker keeps running and the handler never saw the bad message"
    );
    let letter = h.dead_letters(&queue, 1).await.remove(0);
    assert_eq!(letter.reason(), Some(reason));
    assert_eq!(letter.message.body, bad.body, "kept byte for byte");
    assert!(letter.error_message().is_some_and(|m| !m.is_empty()), "explained");
    running.shutdown().await;
    letter
}

pub async fn garbage_bytes_are_dead_lettered_byte_for_byte(h: Harness) {
    let garbage = Message::new(vec![0xff, 0x00, 0xfe, b'{', 0x80]);
    let letter = rejects(
        &h,
        "garbage",
        RouteOptions::new(),
        garbage,
        DeadLetterReason::Decode,
    )
    .await;
    assert_eq!(letter.error_kind(), Some("decode"));
    // Valid JSON of the wrong shape is poison too.
    let wrong_shape = Message::json(&serde_json::json!({"id": "not a number"})).unwrap();
    rejects(
        &h,
        "wrong-shape",
        RouteOptions::new(),
        wrong_shape,
        DeadLetterReason::Decode,
    )
    .await;
    // And so is MessagePack that does not decode.
    let bad_msgpack = Message::new(vec![0xc1]).with_content_type("application/msgpack");
    rejects(
        &h,
        "bad-msgpack",
        RouteOptions::new(),
        bad_msgpack,
        DeadLetterReason::Decode,
    )
    .await;
}

pub async fn unknown_content_type_is_dead_lettered(h: Harness) {
    let csv = Message::new("id,item\n1,tea").with_content_type("text/csv");
    let letter = rejects(
        &h,
        "content-type",
        RouteOptions::new(),
        csv,
        DeadLetterReason::ContentType,
    )
    .await;
    assert!(letter.error_message().unwrap().contains("text/csv"));
}

pub async fn oversized_body_is_dead_lettered(h: Harness) {
    let big = Message::json(&Order {
        id: 1,
        item: "x".repeat(2000),
    })
    .unwrap();
    let options = RouteOptions::new().max_body_bytes(1024);
    let letter = rejects(&h, "too-large", options, big, DeadLetterReason::TooLarge).await;
    assert!(letter.error_message().unwrap().contains("1024"));
}

pub async fn non_numeric_sequence_is_dead_lettered(h: Harness) {
    let bad = Message::json(&order(5))
        .unwrap()
        .with_header("session-id", "s")
        .with_header("sequence", "three");
    let letter = rejects(
        &h,
        "sequence",
        RouteOptions::new(),
        bad,
        DeadLetterReason::InvalidHeader,
    )
    .await;
    assert!(letter.error_message().unwrap().contains("three"));
}

pub async fn session_without_sequence_is_dead_lettered(h: Harness) {
    let bad = Message::json(&order(5)).unwrap().with_header("session-id", "s");
    rejects(
        &h,
        "no-sequence",
        RouteOptions::new(),
        bad,
        DeadLetterReason::InvalidHeader,
    )
    .await;
}

/// RabbitMQ (and the in-memory broker) carry a priority as a field of the
/// message, so any publisher can send 42: it is dead-lettered. On NATS the
/// priority is the lane in the subject, `wharf.p0` to `wharf.p9`: no
/// publisher can express 42, and wharf's own client refuses it when it is
/// asked to publish it, instead of storing a message to be rejected.
pub async fn priority_out_of_range_is_dead_lettered_or_refused(h: Harness) {
    let bad = Message::json(&order(5)).unwrap().with_priority(42);
    let options = RouteOptions::new().priority(true);
    if h.broker.kind() != "nats" {
        let letter = rejects(&h, "priority", options, bad, DeadLetterReason::InvalidHeader).await;
        assert!(letter.error_message().unwrap().contains("42"));
        return;
    }
    let queue = h.queue("priority");
    let running = h
        .app()
        .route_with(&queue, |_: Order| async {}, options)
        .start()
        .await
        .unwrap();
    let error = h.client().send(&queue, bad.clone()).await.unwrap_err();
    assert!(
        error.to_string().contains("42") && error.to_string().contains("0-9"),
        "{error}"
    );
    let error = h
        .client()
        .request_message(&queue, bad, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RequestError::Broker(e) if e.to_string().contains("42")),
        "{error}"
    );
    // What a lane can carry still goes.
    let nine = Message::json(&order(6)).unwrap().with_priority(9);
    h.client().send(&queue, nine).await.unwrap();
    let stats = until(&running, &queue, |s| s.acked == 1).await;
    assert_eq!(
        (stats.received, stats.rejected),
        (1, 0),
        "nothing was stored for 42"
    );
    running.shutdown().await;
}

pub async fn bad_request_gets_an_error_reply(h: Harness) {
    let queue = h.queue("bad-request");
    let running = h.app().route(&queue, |_: Order| async {}).start().await.unwrap();
    let started = Instant::now();
    let garbage = Message::new(&b"not json"[..]);
    let error = h
        .client()
        .request_message(&queue, garbage, Duration::from_secs(20))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RequestError::Remote(r) if r.kind == "decode"),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered, not timed out"
    );
    until(&running, &queue, |s| s.rejected == 1 && s.error_replies == 1).await;
    running.shutdown().await;
}

pub async fn body_exactly_at_the_limit_is_accepted(h: Harness) {
    let queue = h.queue("at-limit");
    let message = Message::json(&order(1)).unwrap();
    let limit = message.body.len();
    let options = RouteOptions::new().max_body_bytes(limit);
    let running = h
        .app()
        .route_with(&queue, |_: Order| async {}, options)
        .start()
        .await
        .unwrap();
    h.client().send(&queue, message).await.unwrap();
    // Valid JSON one byte over the limit (trailing whitespace).
    let mut body = Message::json(&order(1)).unwrap().body.to_vec();
    body.push(b' ');
    let bigger = Message::new(body).with_content_type("application/json");
    h.client().send(&queue, bigger).await.unwrap();
    let stats = until(&running, &queue, |s| s.acked + s.rejected == 2).await;
    assert_eq!((stats.acked, stats.rejected), (1, 1));
    running.shutdown().await;
}

pub async fn overlong_idempotency_key_is_dead_lettered(h: Harness) {
    let bad = Message::json(&order(2))
        .unwrap()
        .with_idempotency_key("k".repeat(257));
    let letter = rejects(
        &h,
        "long-key",
        RouteOptions::new(),
        bad,
        DeadLetterReason::InvalidHeader,
    )
    .await;
    assert!(letter.error_message().unwrap().contains("257"));
    // 256 bytes is still fine.
    let queue = h.queue("long-key-ok");
    let running = h.app().route(&queue, |_: Order| async {}).start().await.unwrap();
    let fine = Message::json(&order(3))
        .unwrap()
        .with_idempotency_key("k".repeat(256));
    h.client().send(&queue, fine).await.unwrap();
    until(&running, &queue, |s| s.acked == 1).await;
    running.shutdown().await;
}

pub async fn sequence_zero_is_dead_lettered(h: Harness) {
    // Sessions count from 1; a 0 would otherwise be acked as stale, unseen.
    let bad = Message::json(&order(5)).unwrap().with_session("s", 0);
    rejects(
        &h,
        "sequence-zero",
        RouteOptions::new(),
        bad,
        DeadLetterReason::InvalidHeader,
    )
    .await;
}

pub async fn sequence_beyond_the_limit_is_dead_lettered(h: Harness) {
    // Sequence numbers go up to 2^63 - 1 (a signed 64-bit integer, what AMQP
    // headers and Redis counters hold); beyond is bad input, not an overflow.
    for too_big in [(i64::MAX as u64) + 1, u64::MAX] {
        let bad = Message::json(&order(5)).unwrap().with_session("s", too_big);
        let letter = rejects(
            &h,
            "sequence-max",
            RouteOptions::new(),
            bad,
            DeadLetterReason::InvalidHeader,
        )
        .await;
        assert!(letter.error_message().unwrap().contains(&too_big.to_string()));
    }
}
