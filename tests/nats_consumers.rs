//! Routes reading a team's stream through a durable consumer named for
//! the service (`Subscription::consumer`): each service naming its own
//! consumer gets every event, the workers of one service share theirs;
//! the team's own consumer is used as it is; retries, dead letters,
//! replays and hand-backs at shutdown stay on the route's own subjects;
//! a consumer that is missing or does not work as wharf needs is a clear
//! error listing each difference.

#![cfg(feature = "nats")]

mod support;

use async_nats::jetstream::consumer::{AckPolicy, push};
use async_nats::jetstream::stream::RetentionPolicy;
use async_nats::jetstream::{self, consumer::pull, stream};
use std::time::Duration;
use support::events::{self, Order, PATIENCE, Seen, merged, start, try_start, unique_events};
use support::{chain, unique_queue, wait_for};
use wharf::{App, Broker, BrokerErrorKind, RouteOptions, Subscription};

const URL: &str = "nats://127.0.0.1:4222";

async fn broker(test: &str) -> Option<Broker> {
    events::connect(test, URL, "NATS").await
}

/// The team's own stream `name`, capturing `<prefix>.>`, made without
/// wharf.
async fn team_stream(name: &str, prefix: &str, retention: RetentionPolicy) -> jetstream::stream::Stream {
    let jetstream = jetstream::new(async_nats::connect(URL).await.unwrap());
    jetstream
        .create_stream(stream::Config {
            name: name.to_owned(),
            subjects: vec![format!("{prefix}.>")],
            retention,
            ..Default::default()
        })
        .await
        .unwrap()
}

/// A pull consumer of the team's, as `nats consumer add` makes it.
fn team_consumer(name: &str, filter: String) -> pull::Config {
    pull::Config {
        durable_name: Some(name.to_owned()),
        filter_subject: filter,
        ack_policy: AckPolicy::Explicit,
        ack_wait: Duration::from_secs(60),
        max_deliver: -1,
        ..Default::default()
    }
}

/// A consumer name for `queue` (consumer names have no dots).
fn consumer_for(queue: &str) -> String {
    queue.replace('.', "_")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_reading_through_their_own_consumers_each_get_every_event() {
    let test = "services_reading_through_their_own_consumers_each_get_every_event";
    let Some(broker) = broker(test).await else {
        return;
    };
    let (stream, prefix) = unique_events("consumers");
    let team = team_stream(&stream, &prefix, RetentionPolicy::Limits).await;
    // Billing's consumer is the team's, made before the service started.
    let created = format!("{prefix}.orders.*.created");
    team.create_consumer(team_consumer("billing", created.clone()))
        .await
        .unwrap();
    let (audit, billing) = (unique_queue("c-audit"), unique_queue("c-billing"));
    let (audit_seen, billing_seen) = ([Seen::default(), Seen::default()], Seen::default());
    let audit_options = RouteOptions::new()
        .subscribe(Subscription::new(&stream, format!("{prefix}.orders.>")).consumer(consumer_for(&audit)));
    let billing_options = RouteOptions::new().subscribe(
        Subscription::new(&stream, &created)
            .consumer("billing")
            .existing(),
    );
    let apps = [
        start(&broker, &audit, audit_options.clone(), &audit_seen[0]).await,
        start(&broker, &audit, audit_options, &audit_seen[1]).await,
        start(&broker, &billing, billing_options, &billing_seen).await,
    ];

    // 41 is paid: for audit only.
    events::publish_order_events(&broker, URL, &prefix).await;
    events::assert_each_once(&[
        ("billing", &[billing_seen], (1..=40).collect()),
        ("audit", &audit_seen, (1..=41).collect()),
    ])
    .await;
    for app in apps {
        app.shutdown().await;
    }

    // The team's consumer was used as it is; audit's was made by wharf as
    // documented.
    let billing_info = team.consumer_info("billing").await.unwrap();
    assert_eq!(billing_info.config.ack_wait, Duration::from_secs(60));
    assert_eq!(billing_info.config.filter_subject, created);
    let audit_info = team.consumer_info(consumer_for(&audit)).await.unwrap();
    assert_eq!(audit_info.config.ack_policy, AckPolicy::Explicit);
    assert_eq!(audit_info.config.max_deliver, -1);
    assert_eq!(audit_info.config.filter_subject, format!("{prefix}.orders.>"));
    assert_eq!(
        audit_info.num_ack_pending + audit_info.num_pending as usize,
        0,
        "every event acknowledged on the consumer"
    );
    events::clean_up_nats(&broker, URL, &[&audit, &billing], &[&stream]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_dead_letters_and_replays_through_a_consumer_stay_on_the_route() {
    let test = "retries_dead_letters_and_replays_through_a_consumer_stay_on_the_route";
    let Some(broker) = broker(test).await else {
        return;
    };
    let (stream, prefix) = unique_events("c-retries");
    team_stream(&stream, &prefix, RetentionPolicy::Limits).await;
    let (flaky, steady) = (unique_queue("c-flaky"), unique_queue("c-steady"));
    let options = |queue: &str| {
        RouteOptions::new()
            .subscribe(Subscription::new(&stream, format!("{prefix}.>")).consumer(consumer_for(queue)))
    };
    let client = broker.client();
    events::retries_dead_letters_and_replays_stay_on_the_route(
        &broker,
        (&flaky, &steady),
        options,
        async |id| {
            client
                .publish_to_subject(&format!("{prefix}.order"), &Order { id })
                .await
                .unwrap();
        },
    )
    .await;
    events::clean_up_nats(&broker, URL, &[&flaky, &steady], &[&stream]).await;
}

/// Sessions and idempotency keys hold for events read through a consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_idempotency_hold_through_a_consumer() {
    let test = "sessions_and_idempotency_hold_through_a_consumer";
    let Some(broker) = broker(test).await else {
        return;
    };
    let (stream, prefix) = unique_events("c-session");
    team_stream(&stream, &prefix, RetentionPolicy::Limits).await;
    let queue = unique_queue("c-ledger");
    let options = RouteOptions::new()
        .subscribe(Subscription::new(&stream, format!("{prefix}.ledger")).consumer(consumer_for(&queue)));
    let client = broker.client();
    events::sessions_and_idempotency_hold(&broker, &queue, options, &prefix, async |message| {
        client
            .send_to_subject(&format!("{prefix}.ledger"), message)
            .await
            .unwrap();
    })
    .await;
    events::clean_up_nats(&broker, URL, &[&queue], &[&stream]).await;
}

/// A worker that stops gives back at once what it had read through the
/// consumer and not started: the next worker handles it well before the
/// consumer's ack wait (60 s, the lease) would have let it come again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_worker_gives_back_what_it_read_through_the_consumer() {
    let test = "a_stopping_worker_gives_back_what_it_read_through_the_consumer";
    let Some(broker) = broker(test).await else {
        return;
    };
    let (stream, prefix) = unique_events("c-handback");
    team_stream(&stream, &prefix, RetentionPolicy::Limits).await;
    let queue = unique_queue("c-handback");
    let options = RouteOptions::new()
        .subscribe(Subscription::new(&stream, format!("{prefix}.>")).consumer(consumer_for(&queue)))
        .lease(Duration::from_secs(60))
        .concurrency(1)
        .prefetch(20);
    let first = Seen::default();
    let slow = {
        let first = first.clone();
        move |order: Order| {
            let first = first.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                first.lock().unwrap().push(order.id);
            }
        }
    };
    let stopping = App::new(broker.clone())
        .route_with(&queue, slow, options.clone())
        .start()
        .await
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
    let client = broker.client();
    for id in 1..=20u64 {
        client
            .publish_to_subject(&format!("{prefix}.order"), &Order { id })
            .await
            .unwrap();
    }
    wait_for("the first worker started on the events", PATIENCE, || {
        !first.lock().unwrap().is_empty()
    })
    .await;
    stopping.shutdown().await;
    let handled_first = first.lock().unwrap().len();
    assert!(handled_first < 20, "the first worker stopped before the end");

    let next = Seen::default();
    let started = std::time::Instant::now();
    let running = start(&broker, &queue, options, &next).await;
    wait_for("the next worker handled the rest", PATIENCE, || {
        merged(&[first.clone(), next.clone()]).len() >= 20
    })
    .await;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        merged(&[first.clone(), next.clone()]),
        (1..=20).collect::<Vec<_>>(),
        "each event handled once across the two workers"
    );
    assert!(
        took < Duration::from_secs(30),
        "given back at once, not after the ack wait: {took:?}"
    );
    running.shutdown().await;
    // What the first worker held came back through the route's own stream.
    let jetstream = jetstream::new(async_nats::connect(URL).await.unwrap());
    let own = jetstream
        .stream_by_subject(format!("wharf.p0.{queue}"))
        .await
        .unwrap();
    let returned = jetstream
        .get_stream(own)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .last_sequence;
    assert!(
        returned >= 1,
        "the held events were given back to the route's own stream"
    );
    eprintln!(
        "{test}: the first worker handled {handled_first}, gave back {returned}; the next one handled the \
         other {} in {took:?}",
        20 - handled_first
    );
    events::clean_up_nats(&broker, URL, &[&queue], &[&stream]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_missing_or_otherwise_than_wharf_needs_is_a_clear_error() {
    let test = "a_consumer_missing_or_otherwise_than_wharf_needs_is_a_clear_error";
    let Some(broker) = broker(test).await else {
        return;
    };
    let (stream, prefix) = unique_events("c-errors");
    let team = team_stream(&stream, &prefix, RetentionPolicy::Limits).await;
    team.create_consumer(pull::Config {
        ack_policy: AckPolicy::All,
        max_deliver: 3,
        ack_wait: Duration::from_secs(1),
        ..team_consumer("sloppy", format!("{prefix}.>"))
    })
    .await
    .unwrap();
    team.create_consumer(push::Config {
        durable_name: Some("pushed".into()),
        deliver_subject: format!("{prefix}-deliver"),
        ack_policy: AckPolicy::Explicit,
        filter_subject: format!("{prefix}.>"),
        ..Default::default()
    })
    .await
    .unwrap();
    let queue = unique_queue("c-refused");
    let refused = async |consumer: &str, existing: bool| {
        let mut subscription = Subscription::new(&stream, format!("{prefix}.>")).consumer(consumer);
        if existing {
            subscription = subscription.existing();
        }
        let options = RouteOptions::new().subscribe(subscription);
        let error = try_start(&broker, &queue, options, &Seen::default())
            .await
            .err()
            .unwrap_or_else(|| panic!("reading through {consumer} is refused"));
        assert_eq!(error.kind(), BrokerErrorKind::Config, "{}", chain(&error));
        chain(&error)
    };
    let message = refused("absent", true).await;
    assert!(
        message.contains("consumer \"absent\" does not exist"),
        "{message}"
    );
    assert!(message.contains("nats consumer add"), "{message}");
    // Not taken as it is, a consumer that exists is still only checked.
    for existing in [true, false] {
        let message = refused("sloppy", existing).await;
        for difference in [
            "ack policy is all",
            "at most 3 times",
            "ack wait is 1s, shorter than the route's lease",
        ] {
            assert!(message.contains(difference), "{difference}: {message}");
        }
    }
    let message = refused("pushed", true).await;
    assert!(message.contains("push consumer"), "{message}");
    let sloppy = team.consumer_info("sloppy").await.unwrap();
    assert_eq!(sloppy.config.max_deliver, 3, "the team's consumer is left alone");

    // A team's consumer that works as wharf needs is used, and not changed,
    // even where wharf would have made it otherwise (another ack wait, a
    // smaller max_ack_pending), and even without .existing().
    team.create_consumer(pull::Config {
        max_ack_pending: 7,
        // As wharf's, so that nothing but what wharf would choose differs.
        deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::New,
        ..team_consumer("patient", format!("{prefix}.>"))
    })
    .await
    .unwrap();
    let seen = Seen::default();
    let patient =
        RouteOptions::new().subscribe(Subscription::new(&stream, format!("{prefix}.>")).consumer("patient"));
    let running = start(&broker, &queue, patient, &seen).await;
    broker
        .client()
        .publish_to_subject(&format!("{prefix}.job"), &Order { id: 8 })
        .await
        .unwrap();
    wait_for("the event read through the team's consumer", PATIENCE, || {
        seen.lock().unwrap().as_slice() == [8]
    })
    .await;
    running.shutdown().await;
    let patient = team.consumer_info("patient").await.unwrap();
    assert_eq!(
        (patient.config.ack_wait, patient.config.max_ack_pending),
        (Duration::from_secs(60), 7),
        "the team's consumer is as the team made it"
    );
    broker.delete_queue(&queue).await.unwrap();

    // A work-queue stream, refused for sourcing, can be read through one
    // consumer.
    let (work_queue, work_prefix) = unique_events("c-workqueue");
    team_stream(&work_queue, &work_prefix, RetentionPolicy::WorkQueue).await;
    let sourced = RouteOptions::new().subscribe(Subscription::new(&work_queue, format!("{work_prefix}.>")));
    let error = try_start(&broker, &queue, sourced, &Seen::default())
        .await
        .err()
        .expect("sourcing a work queue is refused");
    assert!(
        chain(&error).contains("Subscription::consumer"),
        "{}",
        chain(&error)
    );
    let seen = Seen::default();
    let running = start(
        &broker,
        &queue,
        RouteOptions::new()
            .subscribe(Subscription::new(&work_queue, format!("{work_prefix}.>")).consumer("only")),
        &seen,
    )
    .await;
    broker
        .client()
        .publish_to_subject(&format!("{work_prefix}.job"), &Order { id: 7 })
        .await
        .unwrap();
    wait_for("the work-queue event handled", PATIENCE, || {
        seen.lock().unwrap().as_slice() == [7]
    })
    .await;
    running.shutdown().await;
    events::clean_up_nats(&broker, URL, &[&queue], &[&stream, &work_queue]).await;
}

/// The route's queue depth (`Broker::queue_depth`, `wharf_queue_depth`)
/// counts the events waiting in the consumer it reads through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_depth_counts_the_events_waiting_in_the_consumer() {
    let test = "the_queue_depth_counts_the_events_waiting_in_the_consumer";
    let Some(broker) = broker(test).await else {
        return;
    };
    let (stream, prefix) = unique_events("c-depth");
    team_stream(&stream, &prefix, RetentionPolicy::Limits).await;
    let queue = unique_queue("c-depth");
    let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = Seen::default();
    let gated = {
        let (open, seen) = (open.clone(), seen.clone());
        move |order: Order| {
            let (open, seen) = (open.clone(), seen.clone());
            async move {
                seen.lock().unwrap().push(order.id);
                while !open.load(std::sync::atomic::Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    };
    let options = RouteOptions::new()
        .subscribe(Subscription::new(&stream, format!("{prefix}.>")).consumer(consumer_for(&queue)))
        .concurrency(1)
        .prefetch(1);
    let running = App::new(broker.clone())
        .route_with(&queue, gated, options)
        .start()
        .await
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
    let client = broker.client();
    for id in 1..=10u64 {
        client
            .publish_to_subject(&format!("{prefix}.order"), &Order { id })
            .await
            .unwrap();
    }
    wait_for("the first event started", PATIENCE, || {
        !seen.lock().unwrap().is_empty()
    })
    .await;
    let waiting = broker.queue_depth(&queue).await.unwrap();
    assert!(
        (5..=9).contains(&waiting),
        "the events not yet delivered from the consumer count: {waiting}"
    );
    open.store(true, std::sync::atomic::Ordering::SeqCst);
    wait_for("every event handled", PATIENCE, || {
        seen.lock().unwrap().len() == 10
    })
    .await;
    let mut depth = u64::MAX;
    for _ in 0..50 {
        depth = broker.queue_depth(&queue).await.unwrap();
        if depth == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(depth, 0, "nothing waits once all are handled");
    running.shutdown().await;
    eprintln!("{test}: {waiting} of 10 events counted as waiting while the first ran");
    events::clean_up_nats(&broker, URL, &[&queue], &[&stream]).await;
}
