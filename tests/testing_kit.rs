//! `wharf::testing`: each outcome a tracked message can come to, what the
//! kit shows of what handlers published and replied, and the paused clock
//! that makes backoffs, handler timeouts and session gaps take no time.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use wharf::testing::{End, TestBroker};
use wharf::{App, Backoff, Context, DeadLetterReason, Error, Message, Reply, RouteOptions};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u64,
    quantity: u32,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Receipt {
    order_id: u64,
    total_cents: u64,
}

fn order(id: u64) -> Order {
    Order { id, quantity: 2 }
}

/// Counts handler runs.
#[derive(Clone, Default)]
struct Runs(Arc<AtomicU32>);

impl Runs {
    /// Counts a run; returns its number, from 1.
    fn run(&self) -> u32 {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn count(&self) -> u32 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A minute's backoff, without jitter.
fn minute_backoff() -> RouteOptions {
    RouteOptions::new().backoff(Backoff::fixed(Duration::from_secs(60)))
}

/// Under a paused clock, what takes minutes of tokio time takes well under
/// this much wall-clock time.
const QUICK: Duration = Duration::from_secs(2);

#[tokio::test]
async fn a_handled_message_is_acked_after_one_attempt() {
    let kit = TestBroker::new();
    let app = kit
        .start(App::new(kit.broker()).route("orders", |_: Order| async {}))
        .await
        .unwrap();
    let tracked = app.publish("orders", &order(1));
    let settled = tracked.outcome().await;
    assert_eq!(settled.end(), &End::Acked);
    assert!(settled.is_acked());
    assert_eq!((settled.attempts(), settled.retries()), (1, 0));
    assert!(settled.reply_message().is_none(), "no reply was asked for");
    assert_eq!(tracked.outcome_now(), Some(settled));
    assert_eq!(app.stats("orders").acked, 1);
    let report = app.shutdown().await;
    assert!(report.drained);
}

async fn place_order(order: Order) -> Result<Receipt, Error> {
    if order.quantity == 0 {
        return Err(Error::permanent("empty order").with_kind("invalid-order"));
    }
    Ok(Receipt {
        order_id: order.id,
        total_cents: u64::from(order.quantity) * 250,
    })
}

#[tokio::test]
async fn a_request_is_answered_with_the_handlers_value() {
    let kit = TestBroker::new();
    let app = kit
        .start(App::new(kit.broker()).route("orders", place_order))
        .await
        .unwrap();
    let receipt: Result<Receipt, _> = app.request("orders", &order(7)).await;
    assert_eq!(
        receipt,
        Ok(Receipt {
            order_id: 7,
            total_cents: 500
        })
    );

    // The same through a tracked message: the reply is in its outcome.
    let message = Message::msgpack(&order(8)).unwrap();
    let settled = app.send_request("orders", message).outcome().await;
    assert!(settled.is_acked());
    let reply = settled.reply_message().expect("a reply");
    assert_eq!(reply.content_type.as_deref(), Some("application/msgpack"));
    assert_eq!(settled.reply::<Receipt>().unwrap().order_id, 8);
}

#[tokio::test]
async fn a_failed_request_gets_an_error_reply_and_is_dead_lettered() {
    let kit = TestBroker::new();
    let app = kit
        .start(App::new(kit.broker()).route("orders", place_order))
        .await
        .unwrap();
    let empty = Order { id: 9, quantity: 0 };
    let error = app.request::<_, Receipt>("orders", &empty).await.unwrap_err();
    assert_eq!(
        (error.kind.as_str(), error.message.as_str()),
        ("invalid-order", "empty order")
    );

    let settled = app
        .send_request("orders", Message::json(&empty).unwrap())
        .outcome()
        .await;
    assert_eq!(settled.reason(), Some(DeadLetterReason::Permanent));
    assert_eq!(settled.reply::<Receipt>().unwrap_err().kind, "invalid-order");
}

#[tokio::test]
async fn a_permanent_error_is_dead_lettered_at_once_with_its_kind() {
    let kit = TestBroker::new();
    let runs = Runs::default();
    let counted = runs.clone();
    let handler = move |_: Order| {
        counted.run();
        async { Err::<(), _>(Error::permanent("no such customer").with_kind("unknown-customer")) }
    };
    let app = kit
        .start(App::new(kit.broker()).route_with("orders", handler, minute_backoff()))
        .await
        .unwrap();
    let message = Message::json(&order(3)).unwrap().with_header("tenant", "acme");
    let settled = app.send("orders", message.clone()).outcome().await;
    let End::DeadLettered(letter) = settled.end() else {
        panic!("dead-lettered, not {settled:?}");
    };
    assert_eq!(letter.reason(), Some(DeadLetterReason::Permanent));
    assert_eq!(letter.error_kind(), Some("unknown-customer"));
    assert_eq!(letter.error_message(), Some("no such customer"));
    assert_eq!(letter.origin_queue(), Some("orders"));
    assert_eq!(letter.original(), message, "the original, byte for byte");
    assert_eq!((settled.attempts(), settled.retries(), runs.count()), (1, 0, 1));
    assert!(settled.is_dead_lettered() && !settled.is_rejected() && !settled.is_acked());
    // The same dead letter waits in the dead-letter queue.
    let waiting = app.dead_letters("orders").await;
    assert_eq!(waiting, std::slice::from_ref(letter));
}

#[tokio::test(start_paused = true)]
async fn retries_with_a_minutes_backoff_take_no_time_under_a_paused_clock() {
    let started = Instant::now();
    let kit = TestBroker::new();
    let runs = Runs::default();
    let counted = runs.clone();
    let handler = move |_: Order| {
        let run = counted.run();
        async move {
            if run < 3 {
                return Err(Error::new(format!("busy (run {run})")));
            }
            Ok(())
        }
    };
    let app = kit
        .start(App::new(kit.broker()).route_with("orders", handler, minute_backoff()))
        .await
        .unwrap();
    let tokio_start = tokio::time::Instant::now();
    let settled = app.publish("orders", &order(1)).outcome().await;
    assert!(settled.is_acked(), "{settled:?}");
    assert_eq!((settled.attempts(), settled.retries(), runs.count()), (3, 2, 3));
    assert!(
        tokio_start.elapsed() >= Duration::from_secs(120),
        "two backoffs of a minute passed on tokio's clock: {:?}",
        tokio_start.elapsed()
    );
    assert!(started.elapsed() < QUICK, "took {:?}", started.elapsed());
    assert_eq!(app.stats("orders").retried, 2);
}

#[tokio::test(start_paused = true)]
async fn exhausted_attempts_are_dead_lettered_with_the_attempt_count() {
    let started = Instant::now();
    let kit = TestBroker::new();
    let handler = |_: Order| async { Err::<(), _>(Error::new("still broken")) };
    let options = minute_backoff().max_attempts(3);
    let app = kit
        .start(App::new(kit.broker()).route_with("orders", handler, options))
        .await
        .unwrap();
    let settled = app.publish("orders", &order(1)).outcome().await;
    assert!(matches!(settled.end(), End::DeadLettered(_)), "{settled:?}");
    assert_eq!(settled.reason(), Some(DeadLetterReason::MaxAttempts));
    let letter = settled.dead_letter().unwrap();
    assert_eq!(letter.attempts(), Some(3));
    assert_eq!(letter.error_kind(), Some("handler"));
    assert_eq!((settled.attempts(), settled.retries()), (3, 2));
    assert!(started.elapsed() < QUICK, "took {:?}", started.elapsed());
}

#[tokio::test(start_paused = true)]
async fn a_handler_timeout_is_a_failed_attempt_that_takes_no_time() {
    let started = Instant::now();
    let kit = TestBroker::new();
    let handler = |ctx: Context, _: Order| async move {
        if ctx.attempt() == 1 {
            tokio::time::sleep(Duration::from_secs(600)).await;
        }
    };
    let options = minute_backoff().timeout(Duration::from_secs(90));
    let app = kit
        .start(App::new(kit.broker()).route_with("orders", handler, options))
        .await
        .unwrap();
    let settled = app.publish("orders", &order(1)).outcome().await;
    assert!(settled.is_acked(), "{settled:?}");
    assert_eq!(settled.attempts(), 2);
    assert_eq!(app.stats("orders").timeouts, 1);
    assert!(started.elapsed() < QUICK, "took {:?}", started.elapsed());
}

#[tokio::test]
async fn undecodable_input_is_rejected_without_a_run() {
    let kit = TestBroker::new();
    let runs = Runs::default();
    let counted = runs.clone();
    let handler = move |_: Order| {
        counted.run();
        async {}
    };
    let app = kit
        .start(App::new(kit.broker()).route("orders", handler))
        .await
        .unwrap();
    let garbage = Message::new(&b"\xff not json"[..]).with_content_type("application/json");
    let settled = app.send("orders", garbage.clone()).outcome().await;
    let End::Rejected(letter) = settled.end() else {
        panic!("rejected, not {settled:?}");
    };
    assert_eq!(letter.reason(), Some(DeadLetterReason::Decode));
    assert_eq!(letter.message.body, garbage.body);
    assert_eq!(runs.count(), 0);

    let unknown = Message::new("x").with_content_type("text/csv");
    let settled = app.send("orders", unknown).outcome().await;
    assert_eq!(settled.reason(), Some(DeadLetterReason::ContentType));
    assert!(settled.is_rejected() && !settled.is_dead_lettered());
    assert_eq!(app.stats("orders").rejected, 2);
}

#[tokio::test]
async fn a_repeated_idempotency_key_is_skipped_as_a_duplicate() {
    let kit = TestBroker::new();
    let runs = Runs::default();
    let counted = runs.clone();
    let handler = move |_: Order| {
        let run = counted.run();
        async move { Reply(run) }
    };
    let app = kit
        .start(App::new(kit.broker()).route("orders", handler))
        .await
        .unwrap();
    // A publisher that sends the same message twice: same message id, same
    // key. Each copy is tracked on its own.
    let message = Message::json(&order(5))
        .unwrap()
        .with_message_id("order-5")
        .with_idempotency_key("order-5");
    let first = app.send("orders", message.clone());
    assert!(first.outcome().await.is_acked());
    let again = app.send("orders", message);
    let settled = again.outcome().await;
    assert!(settled.is_duplicate(), "{settled:?}");
    assert_eq!(settled.end(), &End::Duplicate);
    assert_eq!(runs.count(), 1);

    // A duplicate request gets the original reply.
    let request = Message::json(&order(6)).unwrap().with_idempotency_key("order-6");
    let original = app.send_request("orders", request.clone()).outcome().await;
    let repeated = app.send_request("orders", request).outcome().await;
    assert!(original.is_acked() && repeated.is_duplicate());
    assert_eq!(original.reply::<u32>(), Ok(2));
    assert_eq!(repeated.reply::<u32>(), Ok(2));
    assert_eq!(runs.count(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_duplicate_that_arrives_while_the_first_runs_is_waited_through() {
    let kit = TestBroker::new();
    let runs = Runs::default();
    let counted = runs.clone();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let entry = gate.clone();
    let handler = move |_: Order| {
        counted.run();
        let entry = entry.clone();
        async move {
            let _permit = entry.acquire().await;
        }
    };
    let app = kit
        .start(App::new(kit.broker()).route("orders", handler))
        .await
        .unwrap();
    let message = Message::json(&order(5)).unwrap().with_idempotency_key("order-5");
    let first = app.send("orders", message.clone());
    let second = app.send("orders", message);
    // The second is deferred (its key is claimed) again and again meanwhile.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(second.outcome_now().is_none());
    assert!(app.stats("orders").deferred >= 2);
    gate.add_permits(1);
    assert!(first.outcome().await.is_acked());
    let settled = second.outcome().await;
    assert!(settled.is_duplicate(), "{settled:?}");
    assert_eq!(runs.count(), 1);
}

async fn ship(ctx: Context, order: Order) -> Result<(), Error> {
    ctx.publish("shipments", &order).await?;
    let note = Message::json(&format!("order {} shipped", order.id))?.with_header("tenant", "acme");
    ctx.send("notifications", note).await
}

#[tokio::test]
async fn messages_the_handler_published_can_be_inspected() {
    let kit = TestBroker::new();
    let app = kit
        .start(App::new(kit.broker()).route("orders", ship))
        .await
        .unwrap();
    for id in [1, 2] {
        assert!(app.publish("orders", &order(id)).outcome().await.is_acked());
    }
    assert_eq!(app.published_as::<Order>("shipments"), [order(1), order(2)]);
    let notes = app.published("notifications");
    assert_eq!(notes.len(), 2);
    assert_eq!(notes[0].header("tenant"), Some("acme"));
    assert_eq!(
        app.published_as::<String>("notifications"),
        ["order 1 shipped", "order 2 shipped"]
    );
    assert!(
        app.published("orders").is_empty(),
        "the kit's own messages are not listed"
    );
    assert!(app.published("nowhere").is_empty());
    // A client on the kit's broker is recorded too.
    app.client().publish("shipments", &order(3)).await.unwrap();
    assert_eq!(app.published_as::<Order>("shipments").len(), 3);
}

#[tokio::test]
async fn a_reply_to_a_named_queue_is_recorded() {
    let kit = TestBroker::new();
    let app = kit
        .start(App::new(kit.broker()).route("orders", place_order))
        .await
        .unwrap();
    let message = Message::json(&order(4))
        .unwrap()
        .with_reply_to("receipts")
        .with_correlation_id("c-4");
    let settled = app.send("orders", message).outcome().await;
    assert_eq!(settled.reply::<Receipt>().unwrap().order_id, 4);
    let replies = app.replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].0, "receipts");
    assert_eq!(replies[0].1.correlation_id.as_deref(), Some("c-4"));
}

#[tokio::test]
async fn replies_without_ids_and_to_copies_of_one_request_are_each_recorded() {
    let kit = TestBroker::new();
    let app = kit
        .start(App::new(kit.broker()).route("orders", place_order))
        .await
        .unwrap();
    // No correlation id and no message id: the reply carries none either.
    let bare = Message::json(&order(7)).unwrap().with_reply_to("receipts");
    let settled = app.send("orders", bare).outcome().await;
    assert_eq!(settled.reply::<Receipt>().unwrap().order_id, 7);
    // Two copies of one request (same correlation id), published at once:
    // each gets its own reply.
    let copy = Message::json(&order(8))
        .unwrap()
        .with_reply_to("receipts")
        .with_correlation_id("c-8");
    let first = app.send("orders", copy.clone());
    let second = app.send("orders", copy);
    for tracked in [&first, &second] {
        let settled = tracked.outcome().await;
        assert_eq!(settled.reply::<Receipt>().unwrap().order_id, 8, "{settled:?}");
    }
    assert_eq!(app.replies().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_session_gap_times_out_and_dead_letters_without_taking_time() {
    let started = Instant::now();
    let kit = TestBroker::new();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let handler = move |meta: wharf::Meta, _: Order| {
        log.lock().unwrap().push(meta.sequence());
        async {}
    };
    // The default gap timeout: 30 s.
    let app = kit
        .start(App::new(kit.broker()).route("orders", handler))
        .await
        .unwrap();
    let in_session = |n: u64| Message::json(&order(n)).unwrap().with_session("customer-1", n);
    assert!(app.send("orders", in_session(1)).outcome().await.is_acked());
    let tokio_start = tokio::time::Instant::now();
    // 2 never comes.
    let settled = app.send("orders", in_session(3)).outcome().await;
    assert_eq!(
        settled.reason(),
        Some(DeadLetterReason::SessionGap),
        "{settled:?}"
    );
    assert!(tokio_start.elapsed() >= Duration::from_secs(30));
    assert_eq!(*seen.lock().unwrap(), [Some(1)]);
    assert_eq!(app.stats("orders").gap_timeouts, 1);
    assert!(started.elapsed() < QUICK, "took {:?}", started.elapsed());
}

#[tokio::test(start_paused = true)]
async fn a_message_that_never_ends_fails_naming_it_and_what_happened() {
    let kit = TestBroker::new().outcome_limits(Duration::from_secs(30), Duration::from_secs(600));
    let app = kit
        .start(App::new(kit.broker()).route("orders", |_: Order| async {}))
        .await
        .unwrap();
    let lost = Message::json(&order(1)).unwrap().with_message_id("order-1");
    let unsettled = app.send("no-route-here", lost).try_outcome().await.unwrap_err();
    let text = unsettled.to_string();
    assert!(text.contains("\"order-1\""), "{text}");
    assert!(text.contains("\"no-route-here\""), "{text}");
    assert!(text.contains("does a route consume"), "{text}");

    // A message that keeps failing says so.
    let kit = TestBroker::new().outcome_limits(Duration::from_secs(30), Duration::from_secs(150));
    let failing = |_: Order| async { Err::<(), _>(Error::new("down")) };
    let app = kit
        .start(App::new(kit.broker()).route_with("orders", failing, minute_backoff()))
        .await
        .unwrap();
    let unsettled = app.publish("orders", &order(2)).try_outcome().await.unwrap_err();
    let text = unsettled.to_string();
    assert!(text.contains("message #"), "{text}");
    assert!(
        text.contains("attempt 1 failed, to be retried, attempt 2 failed, to be retried"),
        "{text}"
    );
}

#[tokio::test]
#[should_panic(expected = "has not ended")]
async fn outcome_panics_when_the_message_does_not_end() {
    let kit = TestBroker::new().outcome_limits(Duration::from_millis(50), Duration::from_secs(60));
    let app = kit
        .start(App::new(kit.broker()).route("orders", |_: Order| async {}))
        .await
        .unwrap();
    app.publish("elsewhere", &order(1)).outcome().await;
}

#[tokio::test]
async fn an_app_on_another_broker_is_refused() {
    let kit = TestBroker::new();
    let error = kit
        .start(App::new(wharf::Broker::memory()).route("orders", |_: Order| async {}))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), wharf::BrokerErrorKind::Config);
    assert!(error.to_string().contains("TestBroker"), "{error}");
}

#[tokio::test]
async fn several_apps_can_run_on_one_kit() {
    let kit = TestBroker::new();
    let orders = kit
        .start(App::new(kit.broker()).route("orders", ship))
        .await
        .unwrap();
    let shipping = kit
        .start(App::new(kit.broker()).route("shipments", |_: Order| async {}))
        .await
        .unwrap();
    assert!(orders.publish("orders", &order(1)).outcome().await.is_acked());
    assert!(
        shipping
            .publish("shipments", &order(2))
            .outcome()
            .await
            .is_acked()
    );
    // What one app's handler published, whichever app is asked.
    assert_eq!(shipping.published_as::<Order>("shipments"), [order(1)]);
}

/// A route bound to an exchange runs under the kit as on RabbitMQ: a
/// handler's event published to the exchange reaches the bound route, and
/// the kit lists it under the exchange's name.
#[tokio::test]
async fn events_published_to_an_exchange_reach_bound_routes_under_the_kit() {
    use wharf::Binding;
    let kit = TestBroker::new();
    let runs = Runs::default();
    let shipped = {
        let runs = runs.clone();
        move |_: Order| {
            runs.0.fetch_add(1, Ordering::SeqCst);
            async {}
        }
    };
    let app = App::new(kit.broker())
        .route("orders", |ctx: Context, order: Order| async move {
            ctx.publish_to_exchange("events", "orders.shipped", &order).await
        })
        .route_with(
            "shipping",
            shipped,
            RouteOptions::new().bind(Binding::topic("events", "orders.*")),
        );
    let app = kit.start(app).await.unwrap();
    assert!(app.publish("orders", &order(9)).outcome().await.is_acked());
    let deadline = Instant::now() + QUICK;
    while runs.0.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the bound route never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(app.published_as::<Order>("events"), [order(9)]);
    app.shutdown().await;
}
