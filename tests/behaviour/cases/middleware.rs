//! Middleware (docs/middleware.md) on every broker: a refusal is a dead
//! letter with reason `refused` and the middleware's own kind, which an
//! operator can replay to its queue; a reply given in the handler's place
//! reaches the requester; a message let through runs its handler.

use super::{Order, order};
use crate::harness::{Harness, Log, until};
use std::time::Duration;
use wharf::middleware::{self, Next, Request};
use wharf::{DeadLetterReason, Message, RouteOptions};

pub async fn middleware_refuses_replies_and_lets_through(h: Harness) {
    let queue = h.queue("middleware");
    let ran = Log::new();
    let log = ran.clone();
    let handler = move |o: Order| {
        let log = log.clone();
        async move {
            log.push(o.id);
            wharf::Reply(o.id)
        }
    };
    let gate = middleware::from_fn(|request: Request, next: Next| async move {
        match request.header("x-pass") {
            Some("ok") => next.run(request).await,
            Some("cached") => request.reply(&4242u64),
            _ => request.refuse("unauthorised", "x-pass missing"),
        }
    });
    let options = RouteOptions::new().middleware(gate);
    let running = h
        .app()
        .route_with(&queue, handler, options)
        .start()
        .await
        .unwrap();
    let client = h.client();
    let with_pass = |id: u64, pass: &str| Message::json(&order(id)).unwrap().with_header("x-pass", pass);
    client.send(&queue, with_pass(1, "ok")).await.unwrap();
    client.publish(&queue, &order(2)).await.unwrap();
    let cached = client
        .request_message(&queue, with_pass(3, "cached"), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(serde_json::from_slice::<u64>(&cached.body).unwrap(), 4242);
    let refused = client.request::<_, u64>(&queue, &order(4)).await.unwrap_err();
    let remote = refused.remote().expect("an error reply");
    assert_eq!(
        (remote.kind.as_str(), remote.message.as_str()),
        ("unauthorised", "x-pass missing")
    );
    let stats = until(&running, &queue, |s| s.acked == 2 && s.dead_lettered == 2).await;
    assert_eq!((stats.retried, stats.rejected), (0, 0), "{stats:?}");
    assert_eq!(ran.all(), vec![1], "only the message let through ran");
    let mut letters = h.dead_letters(&queue, 2).await;
    letters.sort_by_key(|l| l.original().body.clone());
    for letter in &letters {
        assert_eq!(letter.reason(), Some(DeadLetterReason::Refused));
        assert_eq!(letter.error_kind(), Some("unauthorised"));
        assert_eq!(letter.origin_queue(), Some(queue.as_str()));
    }
    running.shutdown().await;
}
