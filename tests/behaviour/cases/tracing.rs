use super::{Order, order};
use crate::harness::{Harness, Log, until};
use std::time::Duration;
use wharf::{Context, Error, Message, Meta};

/// A `traceparent` as an upstream service would send it.
const UPSTREAM: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// `(trace id, parent id)` of a `traceparent`.
fn parts(traceparent: &str) -> (String, String) {
    let fields: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(fields.len(), 4, "{traceparent}");
    (fields[1].to_owned(), fields[2].to_owned())
}

pub async fn trace_context_follows_a_request_through_workers(h: Harness) {
    let front = h.queue("trace-front");
    let back = h.queue("trace-back");
    let seen = Log::new();
    let log = seen.clone();
    let next = back.clone();
    let forward = move |ctx: Context, o: Order| {
        let next = next.clone();
        async move {
            ctx.publish(&next, &o).await?;
            Ok::<u64, Error>(o.id)
        }
    };
    let record = move |meta: Meta, o: Order| {
        let log = log.clone();
        async move { log.push((o.id, meta.header("traceparent").map(str::to_owned))) }
    };
    let running = h
        .app()
        .route(&front, forward)
        .route(&back, record)
        .start()
        .await
        .unwrap();

    let traced = Message::json(&order(1))
        .unwrap()
        .with_header("traceparent", UPSTREAM);
    let reply = h
        .client()
        .request_message(&front, traced, Duration::from_secs(10))
        .await
        .unwrap();
    // An untraced request starts no trace.
    let untraced = Message::json(&order(2)).unwrap();
    let plain = h
        .client()
        .request_message(&front, untraced, Duration::from_secs(10))
        .await
        .unwrap();
    until(&running, &back, |s| s.acked == 2).await;

    let (reply_trace, reply_parent) =
        parts(reply.header("traceparent").expect("the reply carries the trace"));
    assert_eq!(reply_trace, TRACE_ID, "same trace");
    assert_ne!(
        reply_parent, "00f067aa0ba902b7",
        "the handling is the reply's parent, not the caller"
    );
    let mut published = seen.all();
    published.sort();
    let (_, first) = &published[0];
    let (published_trace, published_parent) =
        parts(first.as_deref().expect("the published message carries the trace"));
    assert_eq!(published_trace, TRACE_ID);
    assert_eq!(published_parent, reply_parent, "both come from the same handling");
    assert_eq!(
        published[1],
        (2, None),
        "nothing invented for an untraced message"
    );
    assert_eq!(plain.header("traceparent"), None);
    running.shutdown().await;
}
