//! Routes bound to RabbitMQ exchanges (`RouteOptions::bind`): events
//! published to a topic, direct, fanout or headers exchange reach every
//! route bound with a match, once each; the workers of one route compete
//! on its queue; retries, dead letters and replays stay on the route's own
//! queue; an exchange that is missing or of another kind is a clear
//! error, and brokers without exchanges refuse bindings.

#![cfg(feature = "amqp")]

mod support;

use lapin::options::ExchangeDeleteOptions;
use lapin::{Connection, ConnectionProperties};
use std::time::Duration;
use support::events::{self, Order, PATIENCE, Seen, sorted, start};
use support::{chain, skip, unique_queue, wait_for};
use wharf::{App, Binding, Broker, BrokerErrorKind, HeadersMatch, Message, RouteOptions};

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

async fn broker(test: &str) -> Option<Broker> {
    events::connect(test, URL, "RabbitMQ").await
}

/// Deletes the test's queues and exchanges.
async fn clean_up(broker: &Broker, queues: &[&str], exchanges: &[&str]) {
    for queue in queues {
        broker.delete_queue(queue).await.unwrap();
    }
    let connection = Connection::connect(URL, ConnectionProperties::default())
        .await
        .unwrap();
    for exchange in exchanges {
        let channel = connection.create_channel().await.unwrap();
        let _ = channel
            .exchange_delete((*exchange).into(), ExchangeDeleteOptions::default())
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_bound_to_a_topic_exchange_each_get_every_matching_event() {
    let test = "two_services_bound_to_a_topic_exchange_each_get_every_matching_event";
    let Some(broker) = broker(test).await else {
        return;
    };
    let exchange = unique_queue("orders-events");
    let (billing, shipping) = (unique_queue("billing"), unique_queue("shipping"));
    let billing_seen = Seen::default();
    let shipping_seen = [Seen::default(), Seen::default()];
    let billing_app = start(
        &broker,
        &billing,
        RouteOptions::new().bind(Binding::topic(&exchange, "orders.*.created")),
        &billing_seen,
    )
    .await;
    // Shipping runs as two workers (pods) of one service: they compete.
    let shipping_options = RouteOptions::new().bind(Binding::topic(&exchange, "orders.#"));
    let shipping_apps = [
        start(&broker, &shipping, shipping_options.clone(), &shipping_seen[0]).await,
        start(&broker, &shipping, shipping_options, &shipping_seen[1]).await,
    ];

    let client = broker.client();
    // 1–40: orders.<region>.created, for both services.
    for id in 1..=40u64 {
        let key = if id % 2 == 0 {
            "orders.eu.created"
        } else {
            "orders.us.created"
        };
        client
            .publish_to_exchange(&exchange, key, &Order { id })
            .await
            .unwrap();
    }
    // 41: orders.eu.paid, for shipping only; 42: payments.created, for neither.
    client
        .publish_to_exchange(&exchange, "orders.eu.paid", &Order { id: 41 })
        .await
        .unwrap();
    client
        .publish_to_exchange(&exchange, "payments.created", &Order { id: 42 })
        .await
        .unwrap();

    events::assert_each_once(&[
        ("billing", &[billing_seen], (1..=40).collect()),
        ("shipping", &shipping_seen, (1..=41).collect()),
    ])
    .await;
    billing_app.shutdown().await;
    for app in shipping_apps {
        app.shutdown().await;
    }
    clean_up(&broker, &[&billing, &shipping], &[&exchange]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_route_retries_dead_letters_and_replays_on_its_own_queue() {
    let test = "a_bound_route_retries_dead_letters_and_replays_on_its_own_queue";
    let Some(broker) = broker(test).await else {
        return;
    };
    let exchange = unique_queue("fanout-events");
    let (flaky, steady) = (unique_queue("flaky"), unique_queue("steady"));
    let options = RouteOptions::new().bind(Binding::fanout(&exchange));
    let client = broker.client();
    events::retries_dead_letters_and_replays_stay_on_the_route(
        &broker,
        (&flaky, &steady),
        |_| options.clone(),
        async |id| {
            client
                .publish_to_exchange(&exchange, "ignored-by-fanout", &Order { id })
                .await
                .unwrap();
        },
    )
    .await;
    clean_up(&broker, &[&flaky, &steady], &[&exchange]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_and_headers_exchanges_route_by_key_and_by_headers() {
    let test = "direct_and_headers_exchanges_route_by_key_and_by_headers";
    let Some(broker) = broker(test).await else {
        return;
    };
    let (direct, headers) = (unique_queue("direct-events"), unique_queue("headers-events"));
    let (eu, gold) = (unique_queue("eu"), unique_queue("gold-eu"));
    let (eu_seen, gold_seen) = (Seen::default(), Seen::default());
    let eu_app = start(
        &broker,
        &eu,
        RouteOptions::new().bind(Binding::direct(&direct, "eu")),
        &eu_seen,
    )
    .await;
    let gold_app = start(
        &broker,
        &gold,
        RouteOptions::new().bind(Binding::headers(
            &headers,
            HeadersMatch::All,
            [("region", "eu"), ("tier", "gold")],
        )),
        &gold_seen,
    )
    .await;

    let client = broker.client();
    let order = |id| Message::json(&Order { id }).unwrap();
    client.send_to_exchange(&direct, "eu", order(1)).await.unwrap();
    client.send_to_exchange(&direct, "us", order(2)).await.unwrap();
    let tagged =
        |id, region: &str, tier: &str| order(id).with_header("region", region).with_header("tier", tier);
    client
        .send_to_exchange(&headers, "", tagged(3, "eu", "gold"))
        .await
        .unwrap();
    client
        .send_to_exchange(&headers, "", tagged(4, "eu", "silver"))
        .await
        .unwrap();
    client
        .send_to_exchange(&headers, "", tagged(5, "us", "gold"))
        .await
        .unwrap();

    wait_for("the matching events handled", PATIENCE, || {
        !eu_seen.lock().unwrap().is_empty() && !gold_seen.lock().unwrap().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sorted(&eu_seen), vec![1], "direct: the key \"eu\" only");
    assert_eq!(
        sorted(&gold_seen),
        vec![3],
        "headers: region eu and tier gold only"
    );

    eu_app.shutdown().await;
    gold_app.shutdown().await;
    clean_up(&broker, &[&eu, &gold], &[&direct, &headers]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_missing_or_of_another_kind_is_a_clear_error() {
    let test = "an_exchange_missing_or_of_another_kind_is_a_clear_error";
    let Some(broker) = broker(test).await else {
        return;
    };
    let (missing, fanout) = (unique_queue("missing-exchange"), unique_queue("a-fanout"));
    let (queue, never) = (unique_queue("bound"), unique_queue("never-bound"));
    let refused = async |binding: Binding| {
        let started = App::new(broker.clone())
            .route_with(&never, |_: Order| async {}, RouteOptions::new().bind(binding))
            .start()
            .await;
        let error = started.err().expect("the start is refused");
        assert_eq!(error.kind(), BrokerErrorKind::Config, "{}", chain(&error));
        chain(&error)
    };

    let message = refused(Binding::topic(&missing, "a.b").existing()).await;
    assert!(
        message.contains(&format!("exchange {missing:?} does not exist")) && message.contains("existing"),
        "{message}"
    );

    // Declared as fanout by a first route, then bound to as topic.
    let seen = Seen::default();
    let first = start(
        &broker,
        &queue,
        RouteOptions::new().bind(Binding::fanout(&fanout)),
        &seen,
    )
    .await;
    first.shutdown().await;
    let message = refused(Binding::topic(&fanout, "a.b")).await;
    assert!(
        message.contains("exists as a fanout exchange") && message.contains("as topic"),
        "{message}"
    );

    // RabbitMQ's own exchanges are taken as they are.
    let amq_seen = Seen::default();
    let amq = start(
        &broker,
        &queue,
        RouteOptions::new().bind(Binding::topic("amq.topic", format!("{queue}.#"))),
        &amq_seen,
    )
    .await;
    broker
        .client()
        .publish_to_exchange("amq.topic", &format!("{queue}.x"), &Order { id: 7 })
        .await
        .unwrap();
    wait_for("the event through amq.topic handled", PATIENCE, || {
        !amq_seen.lock().unwrap().is_empty()
    })
    .await;
    amq.shutdown().await;

    // A publish to an exchange that does not exist is a Config error, on a
    // channel of its own: the client's other publishes go on.
    let client = broker.client();
    let error = client
        .publish_to_exchange(&missing, "k", &Order { id: 8 })
        .await
        .unwrap_err();
    assert_eq!(error.kind(), BrokerErrorKind::Config, "{}", chain(&error));
    client.publish(&queue, &Order { id: 9 }).await.unwrap();

    clean_up(&broker, &[&queue, &never], &[&missing, &fanout]).await;
}

/// The in-memory broker routes through exchanges as RabbitMQ does, so a
/// bound route runs the same in the quick start and under
/// `wharf::testing`.
#[tokio::test]
async fn the_in_memory_broker_routes_through_exchanges_too() {
    let broker = Broker::memory();
    let (billing, shipping) = (Seen::default(), Seen::default());
    let apps = [
        start(
            &broker,
            "billing",
            RouteOptions::new().bind(Binding::topic("orders", "orders.*.created")),
            &billing,
        )
        .await,
        start(
            &broker,
            "shipping",
            RouteOptions::new().bind(Binding::topic("orders", "orders.#")),
            &shipping,
        )
        .await,
    ];
    let client = broker.client();
    client
        .publish_to_exchange("orders", "orders.eu.created", &Order { id: 1 })
        .await
        .unwrap();
    client
        .publish_to_exchange("orders", "orders.eu.paid", &Order { id: 2 })
        .await
        .unwrap();
    wait_for("both routes handled their events", PATIENCE, || {
        billing.lock().unwrap().len() == 1 && shipping.lock().unwrap().len() == 2
    })
    .await;
    assert_eq!(sorted(&billing), vec![1]);
    assert_eq!(sorted(&shipping), vec![1, 2]);
    let error = client
        .publish_to_exchange("nowhere", "k", &Order { id: 3 })
        .await
        .unwrap_err();
    assert!(
        chain(&error).contains("no exchange \"nowhere\""),
        "{}",
        chain(&error)
    );
    for app in apps {
        app.shutdown().await;
    }
}

/// NATS has no exchanges: a bound route, and a publish to an exchange, are
/// refused with a `Config` error naming the exchange.
#[cfg(feature = "nats")]
#[tokio::test]
async fn nats_refuses_exchanges() {
    const NATS: &str = "nats://127.0.0.1:4222";
    let test = "nats_refuses_exchanges";
    if let Err(why) = support::broker_reachable(NATS) {
        return skip(test, &format!("NATS is not reachable: {why}"));
    }
    let broker = Broker::connect(NATS).await.unwrap();
    let queue = unique_queue("bound-on-nats");
    let error = App::new(broker.clone())
        .route_with(
            &queue,
            |_: Order| async {},
            RouteOptions::new().bind(Binding::fanout("audit")),
        )
        .start()
        .await
        .err()
        .expect("refused on NATS");
    assert_eq!(error.kind(), BrokerErrorKind::Config);
    assert!(
        chain(&error).contains("exchange \"audit\": exchanges are RabbitMQ's"),
        "{}",
        chain(&error)
    );
    let error = broker
        .client()
        .publish_to_exchange("audit", "k", &Order { id: 1 })
        .await
        .unwrap_err();
    assert_eq!(error.kind(), BrokerErrorKind::Config);
}

/// A Python service (pika, no wharf code, `tests/interop/amqp_events.py`)
/// publishes `orders.created` events to a topic exchange; two Rust
/// services bound to it each handle every event they subscribed to once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_a_python_publisher_sends_reach_two_rust_services_once_each() {
    let test = "events_a_python_publisher_sends_reach_two_rust_services_once_each";
    let Some(broker) = broker(test).await else {
        return;
    };
    let python = match support::provision::python() {
        Ok(python) => python,
        Err(why) => return skip(test, &format!("no Python environment: {why}")),
    };
    let exchange = unique_queue("py-orders");
    let (billing, audit) = (unique_queue("py-billing"), unique_queue("py-audit"));
    let (billing_seen, audit_seen) = (Seen::default(), Seen::default());
    let apps = [
        start(
            &broker,
            &billing,
            RouteOptions::new().bind(Binding::topic(&exchange, "orders.created")),
            &billing_seen,
        )
        .await,
        start(
            &broker,
            &audit,
            RouteOptions::new().bind(Binding::topic(&exchange, "orders.#")),
            &audit_seen,
        )
        .await,
    ];

    const EVENTS: u64 = 20;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/amqp_events.py");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .arg(&exchange)
            .arg(EVENTS.to_string())
            .arg(URL)
            .output()
            .map(|output| (output, exchange))
    })
    .await
    .unwrap()
    .expect("the Python publisher runs");
    let (output, exchange) = output;
    assert!(
        output.status.success(),
        "the Python publisher failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    wait_for("both services handled the events", PATIENCE, || {
        billing_seen.lock().unwrap().len() >= EVENTS as usize
            && audit_seen.lock().unwrap().len() > EVENTS as usize
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        sorted(&billing_seen),
        (1..=EVENTS).collect::<Vec<_>>(),
        "billing: each created order once"
    );
    assert_eq!(
        sorted(&audit_seen),
        (1..=EVENTS + 1).collect::<Vec<_>>(),
        "audit: every order event once, the cancellation too"
    );
    for app in apps {
        app.shutdown().await;
    }
    clean_up(&broker, &[&billing, &audit], &[&exchange]).await;
}

/// Sessions and idempotency keys hold for events that arrive through an
/// exchange: a session's events run in sequence order whatever order they
/// were published in, and a repeated idempotency key runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_idempotency_hold_for_events_through_an_exchange() {
    let test = "sessions_and_idempotency_hold_for_events_through_an_exchange";
    let Some(broker) = broker(test).await else {
        return;
    };
    let exchange = unique_queue("session-events");
    let queue = unique_queue("ledger");
    let client = broker.client();
    let options = RouteOptions::new().bind(Binding::direct(&exchange, "ledger"));
    events::sessions_and_idempotency_hold(&broker, &queue, options, &exchange, async |message| {
        client
            .send_to_exchange(&exchange, "ledger", message)
            .await
            .unwrap();
    })
    .await;
    clean_up(&broker, &[&queue], &[&exchange]).await;
}

/// A bound route whose queue is deleted under its running worker (by an
/// operator, a clean-up script) declares it again with its bindings, as
/// after a reconnect: the events keep reaching the handler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_deleted_under_a_running_worker_is_declared_again_with_its_bindings() {
    let test = "a_queue_deleted_under_a_running_worker_is_declared_again_with_its_bindings";
    let Some(broker) = broker(test).await else {
        return;
    };
    let (exchange, queue) = (unique_queue("deleted-events"), unique_queue("deleted"));
    let seen = Seen::default();
    let running = start(
        &broker,
        &queue,
        RouteOptions::new().bind(Binding::topic(&exchange, "orders.#")),
        &seen,
    )
    .await;
    let client = broker.client();
    client
        .publish_to_exchange(&exchange, "orders.created", &Order { id: 1 })
        .await
        .unwrap();
    wait_for("the first event handled", PATIENCE, || {
        seen.lock().unwrap().as_slice() == [1]
    })
    .await;

    let raw = Connection::connect(URL, ConnectionProperties::default())
        .await
        .unwrap();
    raw.create_channel()
        .await
        .unwrap()
        .queue_delete(
            queue.as_str().into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await
        .unwrap();
    // Events published while the queue is gone are routed nowhere: publish
    // until one arrives.
    let mut id = 1;
    let took = std::time::Instant::now();
    while !seen.lock().unwrap().iter().any(|&seen| seen > 1) {
        assert!(
            took.elapsed() < PATIENCE,
            "no event reached the handler after its queue was deleted"
        );
        id += 1;
        client
            .publish_to_exchange(&exchange, "orders.created", &Order { id })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "{test}: events reach the handler again {:?} after the deletion",
        took.elapsed()
    );
    running.shutdown().await;
    clean_up(&broker, &[&queue], &[&exchange]).await;
}
