//! RabbitMQ goes away and comes back in the middle of a run, and then its
//! connections are cut: nothing is lost, the worker reconnects and resumes by itself, readiness follows the
//! connection, and requests fail clearly instead of hanging while it is gone.
//!
//! Its own test binary: it restarts the broker's application with
//! `rabbitmqctl stop_app` / `start_app`, which no other test may see.

#![cfg(feature = "amqp")]

mod support;

use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{skip, unique_queue, wait_for};
use wharf::{App, Broker, BrokerErrorKind, Context, RouteOptions};

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const MESSAGES: u64 = 5_000;

/// The tests that cut the broker's connections run one at a time.
static DISRUPTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(serde::Serialize, serde::Deserialize)]
struct Order {
    id: u64,
}

fn rabbitmqctl(args: &[&str]) {
    let status = Command::new("rabbitmqctl")
        .args(args)
        .status()
        .expect("run rabbitmqctl");
    assert!(status.success(), "rabbitmqctl {args:?} failed: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_run_loses_nothing() {
    if Command::new("rabbitmqctl").arg("--help").output().is_err() {
        return skip("amqp_restart", "rabbitmqctl is not installed");
    }
    let _one_at_a_time = DISRUPTING.lock().await;
    if let Err(why) = support::broker_reachable(URL) {
        return skip("amqp_restart", &format!("RabbitMQ is not reachable: {why}"));
    }
    let broker = match Broker::connect(URL).await {
        Ok(broker) => broker,
        Err(error) => return skip("amqp_restart", &format!("RabbitMQ is not reachable: {error}")),
    };
    let queue = unique_queue("restart");

    let seen: Arc<Mutex<(HashSet<u64>, u64)>> = Arc::default();
    let record = seen.clone();
    let handler = move |_: Context, order: Order| {
        let record = record.clone();
        async move {
            let mut seen = record.lock().unwrap();
            seen.0.insert(order.id);
            seen.1 += 1;
        }
    };
    let running = App::new(broker.clone())
        .route_with(&queue, handler, RouteOptions::new().concurrency(32))
        .http("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    let health = running.health();
    assert!(health.is_ready());
    let ops = running.http_addr().expect("operations listener");
    assert_eq!(support::http_get(ops, "/readyz").await.0, 200);

    // The publisher keeps going through the outage, retrying what fails.
    let publisher = {
        let (client, queue) = (broker.client(), queue.clone());
        tokio::spawn(async move {
            let mut retries = 0u64;
            for id in 0..MESSAGES {
                while client.publish(&queue, &Order { id }).await.is_err() {
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            retries
        })
    };
    let distinct = || seen.lock().unwrap().0.len() as u64;
    wait_for("1,000 messages handled", Duration::from_secs(60), || {
        distinct() >= 1_000
    })
    .await;

    let stopping = tokio::task::spawn_blocking(|| rabbitmqctl(&["stop_app"]));
    wait_for("readiness to go false", Duration::from_secs(30), || {
        !health.is_ready()
    })
    .await;
    stopping.await.unwrap();
    support::assert_reconnecting(ops).await;
    assert!(distinct() < MESSAGES, "the broker went away mid-run");

    // While the broker is away, a request fails clearly instead of hanging.
    let asked = Instant::now();
    let error = broker
        .client()
        .request_timeout::<_, u64>(&queue, &1u64, Duration::from_secs(60))
        .await
        .unwrap_err();
    let waited = asked.elapsed();
    assert!(
        matches!(&error, wharf::RequestError::Broker(e) if e.kind() == BrokerErrorKind::Connection),
        "{error}"
    );
    assert!(
        waited < Duration::from_secs(20),
        "answered in {waited:?}, not after the 60 s timeout"
    );

    tokio::task::spawn_blocking(|| rabbitmqctl(&["start_app"]))
        .await
        .unwrap();
    wait_for("readiness to come back", Duration::from_secs(60), || {
        health.is_ready()
    })
    .await;
    support::assert_reconnected(ops, broker.kind()).await;
    let retries = tokio::time::timeout(Duration::from_secs(120), publisher)
        .await
        .expect("the publisher finished")
        .unwrap();
    wait_for("every message handled", Duration::from_secs(120), || {
        distinct() == MESSAGES
    })
    .await;

    // The connections are cut (not the broker): the worker notices,
    // reconnects and consumes again.
    tokio::task::spawn_blocking(|| rabbitmqctl(&["close_all_connections", "wharf restart test"]))
        .await
        .unwrap();
    wait_for(
        "readiness to go false after the cut",
        Duration::from_secs(30),
        || !health.is_ready(),
    )
    .await;
    wait_for("readiness after the cut", Duration::from_secs(60), || {
        health.is_ready()
    })
    .await;
    let client = broker.client();
    for id in MESSAGES..MESSAGES + 500 {
        while client.publish(&queue, &Order { id }).await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    wait_for("500 more handled", Duration::from_secs(60), || {
        distinct() == MESSAGES + 500
    })
    .await;

    let report = running.shutdown().await;
    let stats = report.stats(&queue);
    let handled = seen.lock().unwrap().1;
    eprintln!(
        "restart run: {} distinct messages handled ({handled} handler runs, {} repeated by \
         redelivery), {retries} publish retries during the outage; route stats {stats:?}",
        MESSAGES + 500,
        handled - MESSAGES - 500
    );
    assert_eq!((stats.dead_lettered, stats.rejected), (0, 0));
    assert_eq!(
        broker.queue_depth(&queue).await.unwrap(),
        0,
        "nothing left behind"
    );
    assert!(broker.dead_letters(&queue).list(10).await.unwrap().is_empty());
    broker.delete_queue(&queue).await.unwrap();
    broker.close().await;
}

/// A client whose reply address (a direct reply-to consumer) died with its
/// connection while it was idle opens a new one for its next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_client_requests_again_after_its_connection_was_cut() {
    if Command::new("rabbitmqctl").arg("--help").output().is_err() {
        return skip("amqp_restart", "rabbitmqctl is not installed");
    }
    let _one_at_a_time = DISRUPTING.lock().await;
    if let Err(why) = support::broker_reachable(URL) {
        return skip("amqp_restart", &format!("RabbitMQ is not reachable: {why}"));
    }
    let broker = match Broker::connect(URL).await {
        Ok(broker) => broker,
        Err(error) => return skip("amqp_restart", &format!("RabbitMQ is not reachable: {error}")),
    };
    let queue = unique_queue("idle-client");
    let next = |n: u64| async move { wharf::Reply(n + 1) };
    let running = App::new(broker.clone())
        .route(&queue, next)
        .start()
        .await
        .unwrap();
    let health = running.health();
    let client = broker.client();
    let two: u64 = client
        .request_timeout(&queue, &1u64, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(two, 2);

    tokio::task::spawn_blocking(|| rabbitmqctl(&["close_all_connections", "wharf idle client test"]))
        .await
        .unwrap();
    wait_for("readiness lost", Duration::from_secs(10), || !health.is_ready()).await;
    wait_for("readiness back", Duration::from_secs(30), || health.is_ready()).await;

    let three: u64 = client
        .request_timeout(&queue, &2u64, Duration::from_secs(10))
        .await
        .expect("the idle client's first request after the reconnect");
    assert_eq!(three, 3);
    running.shutdown().await;
    broker.delete_queue(&queue).await.unwrap();
    broker.close().await;
}

#[tokio::test]
async fn an_unreachable_broker_is_a_clear_error_not_a_hang() {
    let started = Instant::now();
    let error = Broker::connect("amqp://guest:s3cret@127.0.0.1:1/%2f")
        .await
        .unwrap_err();
    assert_eq!(error.kind(), BrokerErrorKind::Connection);
    let text = error.to_string();
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// After a reconnect a bound route's bindings are made again: one removed
/// while the worker was connected (by an operator, say) is back once the
/// connection was cut, and the events it routes reach the handler again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_are_made_again_after_a_reconnect() {
    use lapin::options::ExchangeDeleteOptions;
    if Command::new("rabbitmqctl").arg("--help").output().is_err() {
        return skip("amqp_restart", "rabbitmqctl is not installed");
    }
    let _one_at_a_time = DISRUPTING.lock().await;
    if let Err(why) = support::broker_reachable(URL) {
        return skip("amqp_restart", &format!("RabbitMQ is not reachable: {why}"));
    }
    let broker = match Broker::connect(URL).await {
        Ok(broker) => broker,
        Err(error) => return skip("amqp_restart", &format!("RabbitMQ is not reachable: {error}")),
    };
    let (exchange, queue) = (unique_queue("rebind-events"), unique_queue("rebind"));
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let handler = {
        let seen = seen.clone();
        move |order: Order| {
            seen.lock().unwrap().push(order.id);
            std::future::ready(())
        }
    };
    let running = App::new(broker.clone())
        .route_with(
            &queue,
            handler,
            RouteOptions::new().bind(wharf::Binding::topic(&exchange, "orders.#")),
        )
        .start()
        .await
        .unwrap();
    let health = running.health();
    let client = broker.client();
    let publish = async |id: u64| {
        while client
            .publish_to_exchange(&exchange, "orders.created", &Order { id })
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    publish(1).await;
    wait_for("the first event handled", Duration::from_secs(15), || {
        seen.lock().unwrap().as_slice() == [1]
    })
    .await;

    // An operator removes the binding: event 2 is routed nowhere.
    let raw = lapin::Connection::connect(URL, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = raw.create_channel().await.unwrap();
    channel
        .queue_unbind(
            queue.as_str().into(),
            exchange.as_str().into(),
            "orders.#".into(),
            Default::default(),
        )
        .await
        .unwrap();
    publish(2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [1],
        "unbound: event 2 was dropped"
    );

    tokio::task::spawn_blocking(|| rabbitmqctl(&["close_all_connections", "wharf rebind test"]))
        .await
        .unwrap();
    wait_for("readiness lost", Duration::from_secs(30), || !health.is_ready()).await;
    wait_for("readiness back", Duration::from_secs(60), || health.is_ready()).await;
    publish(3).await;
    wait_for(
        "the event after the reconnect handled",
        Duration::from_secs(15),
        || seen.lock().unwrap().contains(&3),
    )
    .await;
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [1, 3],
        "bound again after the reconnect"
    );

    running.shutdown().await;
    broker.delete_queue(&queue).await.unwrap();
    let raw = lapin::Connection::connect(URL, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = raw.create_channel().await.unwrap();
    let _ = channel
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await;
    broker.close().await;
}
