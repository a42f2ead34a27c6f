//! Routes subscribed to NATS subjects (`RouteOptions::subscribe`): events
//! published on the team's own subjects, by core NATS or JetStream
//! publishers, reach every route subscribed with a matching pattern, once
//! each; the workers of one route compete; retries, dead letters and
//! replays stay on the route's own subjects; a stream that is missing,
//! does not capture the pattern or is a work queue is a clear error, and
//! so are subscriptions where they cannot work.

#![cfg(feature = "nats")]

mod support;

use std::time::Duration;
use support::events::{self, Order, PATIENCE, Seen, sorted, start, unique_events};
use support::{chain, skip, unique_queue, wait_for};
use wharf::{App, Broker, BrokerErrorKind, RouteOptions, Subscription};

const URL: &str = "nats://127.0.0.1:4222";

async fn broker(test: &str) -> Option<Broker> {
    events::connect(test, URL, "NATS").await
}

async fn clean_up(broker: &Broker, queues: &[&str], streams: &[&str]) {
    events::clean_up_nats(broker, URL, queues, streams).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_subscribed_to_a_subject_each_get_every_event() {
    let test = "two_services_subscribed_to_a_subject_each_get_every_event";
    let Some(broker) = broker(test).await else {
        return;
    };
    let (stream, prefix) = unique_events("orders");
    let (audit, billing) = (unique_queue("audit"), unique_queue("billing"));
    let audit_seen = [Seen::default(), Seen::default()];
    let billing_seen = Seen::default();
    // Audit starts first and declares the stream with its wider pattern.
    let audit_options =
        RouteOptions::new().subscribe(Subscription::new(&stream, format!("{prefix}.orders.>")));
    let audit_apps = [
        start(&broker, &audit, audit_options.clone(), &audit_seen[0]).await,
        start(&broker, &audit, audit_options, &audit_seen[1]).await,
    ];
    let billing_app = start(
        &broker,
        &billing,
        RouteOptions::new().subscribe(Subscription::new(&stream, format!("{prefix}.orders.*.created"))),
        &billing_seen,
    )
    .await;

    // 41 is paid: for audit only.
    events::publish_order_events(&broker, URL, &prefix).await;
    events::assert_each_once(&[
        ("billing", &[billing_seen], (1..=40).collect()),
        ("audit", &audit_seen, (1..=41).collect()),
    ])
    .await;

    billing_app.shutdown().await;
    for app in audit_apps {
        app.shutdown().await;
    }
    clean_up(&broker, &[&audit, &billing], &[&stream]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribed_route_retries_dead_letters_and_replays_on_its_own_subjects() {
    let test = "a_subscribed_route_retries_dead_letters_and_replays_on_its_own_subjects";
    let Some(broker) = broker(test).await else {
        return;
    };
    let (stream, prefix) = unique_events("retries");
    let (flaky, steady) = (unique_queue("flaky"), unique_queue("steady"));
    let options = RouteOptions::new().subscribe(Subscription::new(&stream, format!("{prefix}.>")));
    let client = broker.client();
    events::retries_dead_letters_and_replays_stay_on_the_route(
        &broker,
        (&flaky, &steady),
        |_| options.clone(),
        async |id| {
            client
                .publish_to_subject(&format!("{prefix}.order"), &Order { id })
                .await
                .unwrap();
        },
    )
    .await;
    clean_up(&broker, &[&flaky, &steady], &[&stream]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_missing_not_capturing_or_a_work_queue_is_a_clear_error() {
    let test = "a_stream_missing_not_capturing_or_a_work_queue_is_a_clear_error";
    let Some(broker) = broker(test).await else {
        return;
    };
    let (stream, prefix) = unique_events("errors");
    let (work_queue, wq_prefix) = unique_events("workq");
    let (queue, narrow) = (unique_queue("never-subscribed"), unique_queue("narrow"));
    let refused = async |options: RouteOptions| {
        let error = App::new(broker.clone())
            .route_with(&queue, |_: Order| async {}, options)
            .start()
            .await
            .err()
            .expect("the start is refused");
        assert_eq!(error.kind(), BrokerErrorKind::Config, "{}", chain(&error));
        chain(&error)
    };

    let message =
        refused(RouteOptions::new().subscribe(Subscription::new(&stream, format!("{prefix}.a")).existing()))
            .await;
    assert!(
        message.contains("does not exist") && message.contains("existing"),
        "{message}"
    );

    // Declared for `<prefix>.orders.*`; a wider pattern is not captured.
    let first = start(
        &broker,
        &narrow,
        RouteOptions::new().subscribe(Subscription::new(&stream, format!("{prefix}.orders.*"))),
        &Seen::default(),
    )
    .await;
    first.shutdown().await;
    let message =
        refused(RouteOptions::new().subscribe(Subscription::new(&stream, format!("{prefix}.orders.>"))))
            .await;
    assert!(message.contains("does not cover"), "{message}");

    // A work-queue stream gives each message to one reader only.
    let jetstream = async_nats::jetstream::new(async_nats::connect(URL).await.unwrap());
    jetstream
        .create_stream(async_nats::jetstream::stream::Config {
            name: work_queue.clone(),
            subjects: vec![format!("{wq_prefix}.>")],
            retention: async_nats::jetstream::stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await
        .unwrap();
    let message =
        refused(RouteOptions::new().subscribe(Subscription::new(&work_queue, format!("{wq_prefix}.>"))))
            .await;
    assert!(message.contains("is a work queue"), "{message}");

    let message = refused(
        RouteOptions::new()
            .priority(true)
            .subscribe(Subscription::new(&stream, format!("{prefix}.orders.*"))),
    )
    .await;
    assert!(message.contains("priority"), "{message}");
    let message = refused(
        RouteOptions::new()
            .subscribe(Subscription::new(&stream, format!("{prefix}.orders.a")))
            .subscribe(Subscription::new(&stream, format!("{prefix}.orders.b"))),
    )
    .await;
    assert!(message.contains("once per stream"), "{message}");
    let message = refused(RouteOptions::new().subscribe(Subscription::new(&stream, "wharf.p0.x"))).await;
    assert!(message.contains("wharf's or the server's own"), "{message}");

    let error = broker
        .client()
        .publish_to_subject(&format!("{prefix}.orders.*"), &Order { id: 1 })
        .await
        .unwrap_err();
    assert_eq!(error.kind(), BrokerErrorKind::Config, "{}", chain(&error));

    // Subjects are NATS's: the in-memory broker refuses them.
    let memory = Broker::memory();
    let error = App::new(memory.clone())
        .route_with(
            "q",
            |_: Order| async {},
            RouteOptions::new().subscribe(Subscription::new("S", "a.b")),
        )
        .start()
        .await
        .err()
        .expect("refused on memory");
    assert!(
        chain(&error).contains("event subjects are NATS's"),
        "{}",
        chain(&error)
    );
    let error = memory
        .client()
        .publish_to_subject("a.b", &Order { id: 1 })
        .await
        .unwrap_err();
    assert_eq!(error.kind(), BrokerErrorKind::Config);

    clean_up(&broker, &[&queue, &narrow], &[&stream, &work_queue]).await;
}

/// A Python service (nats-py, no wharf code, `tests/interop/nats_events.py`)
/// publishes events with core NATS and with JetStream; two Rust services
/// subscribed to patterns of one stream each handle every event they
/// subscribed to once.
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
    let (stream, prefix) = unique_events("py");
    let (audit, billing) = (unique_queue("py-audit"), unique_queue("py-billing"));
    let (audit_seen, billing_seen) = (Seen::default(), Seen::default());
    let apps = [
        start(
            &broker,
            &audit,
            RouteOptions::new().subscribe(Subscription::new(&stream, format!("{prefix}.>"))),
            &audit_seen,
        )
        .await,
        start(
            &broker,
            &billing,
            RouteOptions::new().subscribe(Subscription::new(&stream, format!("{prefix}.orders.created"))),
            &billing_seen,
        )
        .await,
    ];

    const EVENTS: u64 = 20;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/nats_events.py");
    let args = [prefix.clone(), EVENTS.to_string(), URL.to_owned()];
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python).arg(script).args(args).output()
    })
    .await
    .unwrap()
    .expect("the Python publisher runs");
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
    clean_up(&broker, &[&audit, &billing], &[&stream]).await;
}

/// Sessions and idempotency keys hold for events that arrive through a
/// subscription: a session's events run in sequence order whatever order
/// they were published in, and a repeated idempotency key runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_idempotency_hold_for_events_on_subjects() {
    let test = "sessions_and_idempotency_hold_for_events_on_subjects";
    let Some(broker) = broker(test).await else {
        return;
    };
    let (stream, prefix) = unique_events("session");
    let queue = unique_queue("ledger");
    let client = broker.client();
    let options = RouteOptions::new().subscribe(Subscription::new(&stream, format!("{prefix}.ledger")));
    events::sessions_and_idempotency_hold(&broker, &queue, options, &prefix, async |message| {
        client
            .send_to_subject(&format!("{prefix}.ledger"), message)
            .await
            .unwrap();
    })
    .await;
    clean_up(&broker, &[&queue], &[&stream]).await;
}

/// Core NATS services (`persistent(false)`) take events live with
/// `Subscription::core`: each service gets every event once, its workers
/// share them; a durable route cannot subscribe that way, nor a core
/// service through a stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_services_each_get_every_live_event() {
    let test = "core_services_each_get_every_live_event";
    let Some(broker) = broker(test).await else {
        return;
    };
    let (stream, prefix) = unique_events("core");
    let (pricing, search) = (unique_queue("pricing"), unique_queue("search"));
    let pricing_seen = Seen::default();
    let search_seen = [Seen::default(), Seen::default()];
    let live = |pattern: String| {
        RouteOptions::new()
            .persistent(false)
            .subscribe(Subscription::core(pattern))
    };
    let apps = [
        start(
            &broker,
            &pricing,
            live(format!("{prefix}.products.*")),
            &pricing_seen,
        )
        .await,
        start(
            &broker,
            &search,
            live(format!("{prefix}.products.>")),
            &search_seen[0],
        )
        .await,
        start(
            &broker,
            &search,
            live(format!("{prefix}.products.>")),
            &search_seen[1],
        )
        .await,
    ];
    // Subscriptions are made when the routes start; give them a moment to
    // reach the server before publishing live events.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let raw = async_nats::connect(URL).await.unwrap();
    for id in 1..=30u64 {
        let body = serde_json::to_vec(&Order { id }).unwrap();
        raw.publish(format!("{prefix}.products.changed"), body.into())
            .await
            .unwrap();
    }
    raw.flush().await.unwrap();
    events::assert_each_once(&[
        ("pricing", &[pricing_seen], (1..=30).collect()),
        ("search", &search_seen, (1..=30).collect()),
    ])
    .await;
    for app in apps {
        app.shutdown().await;
    }

    let refused = async |options: RouteOptions| {
        let error = App::new(broker.clone())
            .route_with(&unique_queue("never-core"), |_: Order| async {}, options)
            .start()
            .await
            .err()
            .expect("the start is refused");
        assert_eq!(error.kind(), BrokerErrorKind::Config, "{}", chain(&error));
        chain(&error)
    };
    let message = refused(RouteOptions::new().subscribe(Subscription::core(format!("{prefix}.x")))).await;
    assert!(
        message.contains("a core subscription takes events live"),
        "{message}"
    );
    let message = refused(
        RouteOptions::new()
            .persistent(false)
            .subscribe(Subscription::new(&stream, format!("{prefix}.x"))),
    )
    .await;
    assert!(message.contains("Subscription::core"), "{message}");
    clean_up(&broker, &[&pricing, &search], &[&stream]).await;
}

/// A worker of a core NATS service that stops hands the events it
/// received and did not start (its pipeline's and what its subscriptions
/// still buffered) to the service's other workers, on its own subjects:
/// not back on the event subject, where the other services would get
/// them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_core_worker_hands_its_events_to_its_own_service_only() {
    let test = "a_stopping_core_worker_hands_its_events_to_its_own_service_only";
    let Some(broker) = broker(test).await else {
        return;
    };
    let (_, prefix) = unique_events("core-handback");
    let (pricing, search) = (unique_queue("hb-pricing"), unique_queue("hb-search"));
    let live = RouteOptions::new()
        .persistent(false)
        .subscribe(Subscription::core(format!("{prefix}.products.>")));
    let (pricing_seen, stopping_seen, staying_seen) = (Seen::default(), Seen::default(), Seen::default());
    let slow = {
        let seen = stopping_seen.clone();
        move |order: Order| {
            let seen = seen.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                seen.lock().unwrap().push(order.id);
            }
        }
    };
    let stopping = App::new(broker.clone())
        .route_with(&search, slow, live.clone().concurrency(1))
        .start()
        .await
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
    let staying = start(&broker, &search, live.clone(), &staying_seen).await;
    let pricing_app = start(&broker, &pricing, live, &pricing_seen).await;
    // Subscriptions are made when the routes start; give them a moment to
    // reach the server before publishing live events.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let raw = async_nats::connect(URL).await.unwrap();
    for id in 1..=20u64 {
        let body = serde_json::to_vec(&Order { id }).unwrap();
        raw.publish(format!("{prefix}.products.changed"), body.into())
            .await
            .unwrap();
    }
    raw.flush().await.unwrap();
    wait_for("the stopping worker started on its events", PATIENCE, || {
        !stopping_seen.lock().unwrap().is_empty()
    })
    .await;
    stopping.shutdown().await;
    let handled_before = stopping_seen.lock().unwrap().len();
    events::assert_each_once(&[
        ("pricing", &[pricing_seen], (1..=20).collect()),
        (
            "search",
            &[stopping_seen, staying_seen.clone()],
            (1..=20).collect(),
        ),
    ])
    .await;
    eprintln!(
        "{test}: the stopping worker handled {handled_before}, the staying one {}",
        staying_seen.lock().unwrap().len()
    );
    staying.shutdown().await;
    pricing_app.shutdown().await;
    clean_up(&broker, &[&pricing, &search], &[]).await;
}
