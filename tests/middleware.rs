//! Middleware around handlers (`wharf::middleware`), on the in-memory
//! broker: the order of app and route middleware, what a middleware sees
//! (the message, the attempt, the outcome), and each way it can answer
//! without the handler: a refusal, a permanent or retryable error, a reply.
//! The three examples of docs/middleware.md run as doc tests of that page.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use wharf::middleware::{self, Next, Request};
use wharf::{App, Backoff, Broker, DeadLetterReason, Error, Message, RouteOptions, RouteStats, Running};

type Log = Arc<Mutex<Vec<String>>>;

fn log() -> Log {
    Arc::new(Mutex::new(Vec::new()))
}

fn entries(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

/// A middleware that writes `<name> in` and `<name> out: <outcome>`.
fn tracer(name: &'static str, log: &Log) -> impl wharf::middleware::Middleware {
    let log = log.clone();
    middleware::from_fn(move |request: Request, next: Next| {
        let log = log.clone();
        async move {
            log.lock()
                .unwrap()
                .push(format!("{name} in: attempt {}", request.attempt()));
            let outcome = next.run(request).await;
            log.lock()
                .unwrap()
                .push(format!("{name} out: {}", outcome.label()));
            outcome
        }
    })
}

async fn wait_for(running: &Running, queue: &str, done: impl Fn(&RouteStats) -> bool) -> RouteStats {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = running.stats(queue);
        if done(&stats) {
            return stats;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{queue}: not there within 10 s: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn quick_retries() -> RouteOptions {
    RouteOptions::new()
        .max_attempts(3)
        .backoff(Backoff::fixed(Duration::from_millis(10)))
}

#[tokio::test]
async fn app_middleware_wraps_route_middleware_in_the_order_added() {
    let log = log();
    let handler_log = log.clone();
    let handler = move |n: u32| {
        let log = handler_log.clone();
        async move {
            log.lock().unwrap().push(format!("handler {n}"));
        }
    };
    let broker = Broker::memory();
    let running = App::new(broker.clone())
        .middleware(tracer("app-1", &log))
        .middleware(tracer("app-2", &log))
        .route_with(
            "mw.order",
            handler,
            RouteOptions::new()
                .middleware(tracer("route-1", &log))
                .middleware(tracer("route-2", &log)),
        )
        .start()
        .await
        .unwrap();
    broker.client().publish("mw.order", &7u32).await.unwrap();
    wait_for(&running, "mw.order", |s| s.acked == 1).await;
    running.shutdown().await;
    assert_eq!(
        entries(&log),
        [
            "app-1 in: attempt 1",
            "app-2 in: attempt 1",
            "route-1 in: attempt 1",
            "route-2 in: attempt 1",
            "handler 7",
            "route-2 out: done",
            "route-1 out: done",
            "app-2 out: done",
            "app-1 out: done",
        ]
    );
}

#[tokio::test]
async fn middleware_sees_headers_attempts_and_each_outcome() {
    let log = log();
    let seen = log.clone();
    let watch = middleware::from_fn(move |request: Request, next: Next| {
        let seen = seen.clone();
        async move {
            let header = request.header("x-kind").unwrap_or("-").to_owned();
            let (queue, attempt, max) = (
                request.queue().to_owned(),
                request.attempt(),
                request.max_attempts(),
            );
            let outcome = next.run(request).await;
            let kind = outcome.failure().map(|f| f.kind.to_string()).unwrap_or_default();
            seen.lock().unwrap().push(format!(
                "{queue} {header} {attempt}/{max} {} {kind}",
                outcome.label()
            ));
            outcome
        }
    });
    // Fails its first attempt, then succeeds.
    let flaky = |ctx: wharf::Context, _: u32| async move {
        if ctx.attempt() == 1 {
            return Err(Error::new("busy").with_kind("busy"));
        }
        Ok(())
    };
    let broker = Broker::memory();
    let running = App::new(broker.clone())
        .middleware(watch)
        .route_with("mw.seen", flaky, quick_retries())
        .start()
        .await
        .unwrap();
    let message = Message::json(&1u32).unwrap().with_header("x-kind", "order");
    broker.client().send("mw.seen", message).await.unwrap();
    // A body that does not decode: the handler's extractor refuses it
    // inside `next.run`, and the middleware sees the rejection.
    let poison = Message::new(&b"not json"[..]).with_content_type("application/json");
    broker.client().send("mw.seen", poison).await.unwrap();
    wait_for(&running, "mw.seen", |s| s.acked == 1 && s.rejected == 1).await;
    running.shutdown().await;
    let mut seen = entries(&log);
    seen.sort();
    assert_eq!(
        seen,
        [
            "mw.seen - 1/3 rejected ",
            "mw.seen order 1/3 failed busy",
            "mw.seen order 2/3 done ",
        ]
    );
}

/// A route whose handler counts its runs, behind `middleware`.
async fn guarded(
    queue: &str,
    middleware: impl wharf::middleware::Middleware,
) -> (Broker, Running, Arc<Mutex<u32>>) {
    let runs = Arc::new(Mutex::new(0u32));
    let counted = runs.clone();
    let handler = move |n: u32| {
        let counted = counted.clone();
        async move {
            *counted.lock().unwrap() += 1;
            Ok::<u32, Error>(n * 2)
        }
    };
    let broker = Broker::memory();
    let running = App::new(broker.clone())
        .route_with(queue, handler, quick_retries().middleware(middleware))
        .start()
        .await
        .unwrap();
    (broker, running, runs)
}

#[tokio::test]
async fn a_refusal_dead_letters_with_its_own_kind_without_running_the_handler() {
    let refuse = middleware::from_fn(|request: Request, next: Next| async move {
        if request.header("x-token") != Some("let-me-in") {
            return request.refuse("unauthorised", "x-token missing or wrong");
        }
        next.run(request).await
    });
    let (broker, running, runs) = guarded("mw.refuse", refuse).await;
    let client = broker.client();
    client
        .send(
            "mw.refuse",
            Message::json(&1u32).unwrap().with_header("x-token", "let-me-in"),
        )
        .await
        .unwrap();
    client.publish("mw.refuse", &2u32).await.unwrap();
    // A request is answered with an error reply of the refusal's kind.
    let refused = client.request::<u32, u32>("mw.refuse", &3).await.unwrap_err();
    let remote = refused.remote().expect("an error reply");
    assert_eq!(
        (remote.kind.as_str(), remote.message.as_str()),
        ("unauthorised", "x-token missing or wrong")
    );
    let stats = wait_for(&running, "mw.refuse", |s| s.acked == 1 && s.dead_lettered == 2).await;
    assert_eq!((stats.retried, stats.rejected), (0, 0), "{stats:?}");
    running.shutdown().await;
    assert_eq!(
        *runs.lock().unwrap(),
        1,
        "the handler ran only for the one let in"
    );
    let dead = broker.dead_letters("mw.refuse").list(10).await.unwrap();
    assert_eq!(dead.len(), 2);
    for letter in &dead {
        assert_eq!(letter.reason(), Some(DeadLetterReason::Refused));
        assert_eq!(letter.error_kind(), Some("unauthorised"));
        assert_eq!(letter.error_message(), Some("x-token missing or wrong"));
        assert_eq!(letter.attempts(), Some(1));
    }
}

#[tokio::test]
async fn a_middleware_error_is_permanent_or_retried_as_a_handlers_would_be() {
    let fail = middleware::from_fn(|request: Request, next: Next| async move {
        match request.header("x-fail") {
            Some("permanent") => request.fail(Error::permanent("quota exceeded").with_kind("quota")),
            Some("retry") => request.fail(Error::new("rate limited").with_kind("rate-limited")),
            _ => next.run(request).await,
        }
    });
    let (broker, running, runs) = guarded("mw.fail", fail).await;
    let client = broker.client();
    for how in ["permanent", "retry"] {
        client
            .send(
                "mw.fail",
                Message::json(&1u32).unwrap().with_header("x-fail", how),
            )
            .await
            .unwrap();
    }
    let stats = wait_for(&running, "mw.fail", |s| s.dead_lettered == 2).await;
    assert_eq!(
        stats.retried, 2,
        "the retryable error used all 3 attempts: {stats:?}"
    );
    running.shutdown().await;
    assert_eq!(*runs.lock().unwrap(), 0);
    let mut dead: Vec<_> = broker
        .dead_letters("mw.fail")
        .list(10)
        .await
        .unwrap()
        .iter()
        .map(|d| (d.reason(), d.error_kind().map(str::to_owned), d.attempts()))
        .collect();
    dead.sort_by_key(|d| d.2);
    assert_eq!(
        dead,
        [
            (
                Some(DeadLetterReason::Permanent),
                Some("quota".to_owned()),
                Some(1)
            ),
            (
                Some(DeadLetterReason::MaxAttempts),
                Some("rate-limited".to_owned()),
                Some(3)
            ),
        ]
    );
}

#[tokio::test]
async fn a_middleware_can_reply_in_the_handlers_place() {
    let cached = middleware::from_fn(|request: Request, next: Next| async move {
        if request.header("x-cached") == Some("yes") {
            return request.reply(&1000u32);
        }
        next.run(request).await
    });
    let (broker, running, runs) = guarded("mw.reply", cached).await;
    let client = broker.client();
    let from_cache: u32 = client
        .request_message(
            "mw.reply",
            Message::json(&5u32).unwrap().with_header("x-cached", "yes"),
            Duration::from_secs(10),
        )
        .await
        .map(|reply| serde_json::from_slice(&reply.body).unwrap())
        .unwrap();
    let from_handler: u32 = client.request("mw.reply", &5u32).await.unwrap();
    assert_eq!((from_cache, from_handler), (1000, 10));
    wait_for(&running, "mw.reply", |s| s.acked == 2 && s.replies == 2).await;
    running.shutdown().await;
    assert_eq!(*runs.lock().unwrap(), 1);
}

#[tokio::test]
async fn a_panicking_middleware_is_a_failed_attempt() {
    let panics = middleware::from_fn(|request: Request, next: Next| async move {
        if request.attempt() == 1 {
            panic!("middleware bug");
        }
        next.run(request).await
    });
    let (broker, running, runs) = guarded("mw.panic", panics).await;
    broker.client().publish("mw.panic", &1u32).await.unwrap();
    let stats = wait_for(&running, "mw.panic", |s| s.acked == 1).await;
    assert_eq!((stats.panics, stats.retried), (1, 1), "{stats:?}");
    running.shutdown().await;
    assert_eq!(*runs.lock().unwrap(), 1);
}

#[tokio::test]
async fn a_handlers_panic_is_an_outcome_the_middleware_sees() {
    let log = log();
    let seen = log.clone();
    let watch = middleware::from_fn(move |request: Request, next: Next| {
        let seen = seen.clone();
        async move {
            let outcome = next.run(request).await;
            let kind = outcome.failure().map(|f| f.kind.to_string()).unwrap_or_default();
            seen.lock().unwrap().push(format!("{} {kind}", outcome.label()));
            outcome
        }
    });
    let panics = |ctx: wharf::Context, _: u32| async move {
        if ctx.attempt() == 1 {
            panic!("handler bug");
        }
    };
    let broker = Broker::memory();
    let running = App::new(broker.clone())
        .middleware(watch)
        .route_with("mw.handler-panic", panics, quick_retries())
        .start()
        .await
        .unwrap();
    broker.client().publish("mw.handler-panic", &1u32).await.unwrap();
    let stats = wait_for(&running, "mw.handler-panic", |s| s.acked == 1).await;
    assert_eq!((stats.panics, stats.retried), (1, 1), "{stats:?}");
    running.shutdown().await;
    assert_eq!(entries(&log), ["failed panic", "done "]);
}

#[tokio::test]
async fn the_route_timeout_covers_the_middleware() {
    let slow = middleware::from_fn(|request: Request, next: Next| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        next.run(request).await
    });
    let runs = Arc::new(Mutex::new(0u32));
    let counted = runs.clone();
    let handler = move |_: u32| {
        let counted = counted.clone();
        async move {
            *counted.lock().unwrap() += 1;
        }
    };
    let broker = Broker::memory();
    let options = RouteOptions::new()
        .max_attempts(1)
        .timeout(Duration::from_millis(50))
        .middleware(slow);
    let running = App::new(broker.clone())
        .route_with("mw.timeout", handler, options)
        .start()
        .await
        .unwrap();
    broker.client().publish("mw.timeout", &1u32).await.unwrap();
    let stats = wait_for(&running, "mw.timeout", |s| s.dead_lettered == 1).await;
    assert_eq!(stats.timeouts, 1, "{stats:?}");
    running.shutdown().await;
    assert_eq!(*runs.lock().unwrap(), 0);
}

/// A middleware holding configuration, implementing the trait itself.
struct Stamp {
    header: &'static str,
    log: Log,
}

impl wharf::middleware::Middleware for Stamp {
    fn call(&self, request: Request, next: Next) -> wharf::HandlerFuture {
        let value = request.header(self.header).unwrap_or("none").to_owned();
        self.log.lock().unwrap().push(value);
        next.run(request)
    }
}

#[tokio::test]
async fn a_middleware_type_implementing_the_trait() {
    let log = log();
    let broker = Broker::memory();
    let running = App::new(broker.clone())
        .middleware(Stamp {
            header: "x-tenant",
            log: log.clone(),
        })
        .route("mw.stamp", |_: u32| async {})
        .start()
        .await
        .unwrap();
    let client = broker.client();
    client
        .send(
            "mw.stamp",
            Message::json(&1u32).unwrap().with_header("x-tenant", "acme"),
        )
        .await
        .unwrap();
    wait_for(&running, "mw.stamp", |s| s.acked == 1).await;
    client.publish("mw.stamp", &2u32).await.unwrap();
    wait_for(&running, "mw.stamp", |s| s.acked == 2).await;
    running.shutdown().await;
    assert_eq!(entries(&log), ["acme", "none"]);
}
