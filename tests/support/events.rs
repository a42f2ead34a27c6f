//! What the event tests share (`amqp_bindings`, `nats_subjects`,
//! `existing_queues`): the event type, handlers that record what they
//! handled, and the retry / dead-letter / replay scenario both brokers run.

use super::{chain, skip, wait_for, wait_for_async};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wharf::{App, Backoff, Broker, BrokerError, Error, Meta, RouteOptions, Running};

/// A stream name and a subject prefix no earlier run used (the sweep
/// scripts remove streams named `WHARFTEST_…` a failed run left).
pub fn unique_events(what: &str) -> (String, String) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let id = format!("{}_{nanos:x}", std::process::id());
    (format!("WHARFTEST_{what}_{id}"), format!("wharftest-{what}-{id}"))
}

/// Deletes the test's queues, and the NATS streams at `url`.
#[cfg(feature = "nats")]
pub async fn clean_up_nats(broker: &Broker, url: &str, queues: &[&str], streams: &[&str]) {
    for queue in queues {
        broker.delete_queue(queue).await.unwrap();
    }
    let jetstream = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
    for stream in streams {
        let _ = jetstream.delete_stream(stream).await;
    }
}

/// Publishes the order events of the NATS fan-out tests under `prefix`:
/// 1–20 `orders.eu.created` from a core NATS publisher (no JetStream, no
/// wharf), 21–40 `orders.us.created` from wharf's client, 41
/// `orders.eu.paid`.
#[cfg(feature = "nats")]
pub async fn publish_order_events(broker: &Broker, url: &str, prefix: &str) {
    let raw = async_nats::connect(url).await.unwrap();
    for id in 1..=20u64 {
        let body = serde_json::to_vec(&Order { id }).unwrap();
        raw.publish(format!("{prefix}.orders.eu.created"), body.into())
            .await
            .unwrap();
    }
    raw.flush().await.unwrap();
    let client = broker.client();
    for id in 21..=40u64 {
        client
            .publish_to_subject(&format!("{prefix}.orders.us.created"), &Order { id })
            .await
            .unwrap();
    }
    client
        .publish_to_subject(&format!("{prefix}.orders.eu.paid"), &Order { id: 41 })
        .await
        .unwrap();
}

/// How long a test waits for events to be handled.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The event every test publishes.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Order {
    /// Which one: what the handlers record.
    pub id: u64,
}

/// Order ids a route handled, in the order it handled them.
pub type Seen = Arc<Mutex<Vec<u64>>>;

/// The broker at `url`, or `None` after saying loudly why `test` is
/// skipped (a failure under `CI=true`).
pub async fn connect(test: &str, url: &str, name: &str) -> Option<Broker> {
    if let Err(why) = super::broker_reachable(url) {
        skip(test, &format!("{name} is not reachable: {why}"));
        return None;
    }
    match Broker::connect(url).await {
        Ok(broker) => Some(broker),
        Err(error) => {
            skip(test, &format!("{name} is not reachable: {error}"));
            None
        }
    }
}

/// A handler that records each order's id in `seen`.
pub fn recorder(seen: &Seen) -> impl Fn(Order) -> std::future::Ready<()> + Clone + Send + Sync + 'static {
    let seen = seen.clone();
    move |order: Order| {
        seen.lock().unwrap().push(order.id);
        std::future::ready(())
    }
}

/// The ids in `seen`, sorted.
pub fn sorted(seen: &Seen) -> Vec<u64> {
    merged(std::slice::from_ref(seen))
}

/// The ids the workers of one service handled together, sorted.
pub fn merged(workers: &[Seen]) -> Vec<u64> {
    let mut ids: Vec<u64> = workers
        .iter()
        .flat_map(|seen| seen.lock().unwrap().clone())
        .collect();
    ids.sort_unstable();
    ids
}

/// Starts one app with one route on `queue` as `options` say, recording
/// into `seen`.
pub async fn try_start(
    broker: &Broker,
    queue: &str,
    options: RouteOptions,
    seen: &Seen,
) -> Result<Running, BrokerError> {
    App::new(broker.clone())
        .route_with(queue, recorder(seen), options)
        .start()
        .await
}

/// [`try_start`], which must succeed.
pub async fn start(broker: &Broker, queue: &str, options: RouteOptions, seen: &Seen) -> Running {
    try_start(broker, queue, options, seen)
        .await
        .unwrap_or_else(|e| panic!("app on {queue} starts: {}", chain(&e)))
}

/// Waits until the services have handled `expected`, each once (a
/// service's workers together), and nothing more comes meanwhile.
pub async fn assert_each_once(services: &[(&str, &[Seen], Vec<u64>)]) {
    wait_for("every service handled its events", PATIENCE, || {
        services
            .iter()
            .all(|(_, workers, expected)| merged(workers).len() >= expected.len())
    })
    .await;
    // Anything more (a copy, an unmatched event) would arrive meanwhile.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (service, workers, expected) in services {
        assert_eq!(
            &merged(workers),
            expected,
            "{service}: each of its events once, across its workers"
        );
    }
}

/// Two services take the same events: `flaky` fails order 1 once and
/// order 2 for good until fixed, `steady` handles both. Order 1 must be
/// retried and order 2 dead-lettered and, once fixed, replayed, all on
/// `flaky`'s own queue, while `steady` sees each event once: nothing went
/// back through the exchange or event stream. `options` are each route's
/// (given its queue); `publish` publishes one order as an event.
pub async fn retries_dead_letters_and_replays_stay_on_the_route(
    broker: &Broker,
    (flaky, steady): (&str, &str),
    options: impl Fn(&str) -> RouteOptions,
    publish: impl AsyncFn(u64),
) {
    let broken = Arc::new(AtomicBool::new(true));
    let runs: Arc<Mutex<Vec<(u64, u32)>>> = Arc::default();
    let handler = {
        let (broken, runs) = (broken.clone(), runs.clone());
        move |meta: Meta, order: Order| {
            let (broken, runs) = (broken.clone(), runs.clone());
            async move {
                runs.lock().unwrap().push((order.id, meta.attempt()));
                match order.id {
                    1 if meta.attempt() == 1 => Err(Error::new("not yet")),
                    2 if broken.load(Ordering::SeqCst) => Err(Error::permanent("broken")),
                    _ => Ok(()),
                }
            }
        }
    };
    let flaky_app = App::new(broker.clone())
        .route_with(
            flaky,
            handler,
            options(flaky).backoff(Backoff::fixed(Duration::from_millis(100))),
        )
        .start()
        .await
        .unwrap_or_else(|e| panic!("app on {flaky} starts: {}", chain(&e)));
    let steady_seen = Seen::default();
    let steady_app = start(broker, steady, options(steady), &steady_seen).await;

    for id in [1, 2] {
        publish(id).await;
    }
    let dead_letters = broker.dead_letters(flaky);
    wait_for_async("order 2 dead-lettered", PATIENCE, async || {
        dead_letters
            .list(10)
            .await
            .is_ok_and(|letters| letters.len() == 1)
    })
    .await;
    wait_for("order 1 retried and handled", PATIENCE, || {
        runs.lock().unwrap().contains(&(1, 2))
    })
    .await;
    broken.store(false, Ordering::SeqCst);
    assert_eq!(dead_letters.replay(10).await.unwrap(), 1);
    wait_for("order 2 replayed and handled", PATIENCE, || {
        runs.lock().unwrap().iter().filter(|(id, _)| *id == 2).count() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut all = runs.lock().unwrap().clone();
    all.sort_unstable();
    assert_eq!(
        all,
        vec![(1, 1), (1, 2), (2, 1), (2, 1)],
        "retry and replay came back to the flaky route"
    );
    assert_eq!(
        sorted(&steady_seen),
        vec![1, 2],
        "the other service saw each event once: no retry or replay went through the events"
    );
    flaky_app.shutdown().await;
    steady_app.shutdown().await;
}

/// Sessions and idempotency keys hold for events: sequence 3, 1, 2 of one
/// session, then order 2's key again, sent as events by `send` (keys
/// prefixed with `keys`), run in sequence order, and the repeated key
/// does not run.
pub async fn sessions_and_idempotency_hold(
    broker: &Broker,
    queue: &str,
    options: RouteOptions,
    keys: &str,
    send: impl AsyncFn(wharf::Message),
) {
    let seen = Seen::default();
    let app = start(broker, queue, options, &seen).await;
    for (id, sequence, key) in [(3, 3, "k3"), (1, 1, "k1"), (2, 2, "k2"), (4, 4, "k2")] {
        let message = wharf::Message::json(&Order { id })
            .unwrap()
            .with_session("account-1", sequence)
            .with_idempotency_key(format!("{keys}/{key}"));
        send(message).await;
    }
    wait_for("the session's three orders handled", PATIENCE, || {
        seen.lock().unwrap().len() >= 3
    })
    .await;
    wait_for("the duplicate key settled", PATIENCE, || {
        app.stats(queue).duplicates >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec![1, 2, 3],
        "in sequence order; the repeated key (order 4) did not run"
    );
    app.shutdown().await;
}
