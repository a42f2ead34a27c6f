//! The operations listener of a whole app (`App::http`): `/readyz` through
//! a worker's life (starting, running, draining, gone), `/healthz`, and
//! `/metrics` with the values the pipeline recorded, in the Prometheus text
//! format. On the in-memory broker; `tests/prometheus.rs` scrapes a worker
//! on the real brokers with a real Prometheus.
//!
//! Its own test binary: the first listener installs wharf's Prometheus
//! recorder for the whole process.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{http_get as get, sample};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use wharf::{App, Broker, Error, Message, RouteOptions};

/// The tests take turns: `wharf_ready` and `wharf_broker_connected` are
/// one series per process, and each test's app sets them.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_worker_from_start_through_drain() {
    let _turn = TURN.lock().await;
    let broker = Broker::memory();
    let gate = Arc::new(Semaphore::new(0));
    let held = gate.clone();
    let slow = move |_n: u64| {
        let held = held.clone();
        async move {
            let _permit = held.acquire().await;
        }
    };
    let running = App::new(broker.clone())
        .route("ops-drain", slow)
        .http(local())
        .shutdown_grace(Duration::from_secs(10))
        .start()
        .await
        .unwrap();
    let addr = running.http_addr().expect("listening");
    assert_eq!(get(addr, "/readyz").await, (200, "ready\n".into()));
    assert_eq!(get(addr, "/healthz").await, (200, "ok\n".into()));

    // A handler in flight keeps the drain going.
    broker.client().publish("ops-drain", &1u64).await.unwrap();
    let started = Instant::now();
    while running.stats("ops-drain").in_flight == 0 {
        assert!(started.elapsed() < Duration::from_secs(5), "the handler started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let health = running.health();
    let shutdown = tokio::spawn(running.shutdown());
    while health.is_ready() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, body) = get(addr, "/readyz").await;
    assert_eq!(
        (status, body.as_str()),
        (503, "not ready: draining: shutting down\n")
    );
    assert_eq!(get(addr, "/healthz").await.0, 200, "alive while draining");
    let (_, metrics) = get(addr, "/metrics").await;
    assert_eq!(sample(&metrics, "wharf_ready"), Some(0.0), "{metrics}");

    gate.add_permits(1);
    let report = shutdown.await.unwrap();
    assert!(report.drained);
    assert_eq!(report.stats("ops-drain").acked, 1);
    // The listener went with the app.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(TcpStream::connect(addr).await.is_err(), "closed with the app");
}

async fn place(n: u64) -> Result<u64, Error> {
    match n {
        0 => Err(Error::permanent("zero").with_kind("invalid")),
        _ => Ok(n * 2),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_what_the_worker_did() {
    let _turn = TURN.lock().await;
    let broker = Broker::memory();
    let running = App::new(broker.clone())
        .route_with("ops-metrics", place, RouteOptions::new().name("place"))
        .http(local())
        .start()
        .await
        .unwrap();
    let addr = running.http_addr().unwrap();
    let client = broker.client().with_timeout(Duration::from_secs(5));
    for n in 1..=5u64 {
        let doubled: u64 = client.request("ops-metrics", &n).await.unwrap();
        assert_eq!(doubled, n * 2);
    }
    assert!(client.request::<_, u64>("ops-metrics", &0u64).await.is_err());
    broker
        .client()
        .send("ops-metrics", Message::new("not json"))
        .await
        .unwrap();
    let started = Instant::now();
    while running.stats("ops-metrics").rejected == 0 {
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let (status, metrics) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    let route = r#"queue="ops-metrics",handler="place""#;
    let value =
        |series: String| sample(&metrics, &series).unwrap_or_else(|| panic!("no {series} in\n{metrics}"));
    assert_eq!(value(format!("wharf_messages_received_total{{{route}}}")), 7.0);
    assert_eq!(
        value(format!(
            r#"wharf_messages_handled_total{{{route},outcome="acked"}}"#
        )),
        5.0
    );
    assert_eq!(
        value(format!(
            r#"wharf_messages_handled_total{{{route},outcome="dead_lettered"}}"#
        )),
        1.0
    );
    assert_eq!(
        value(format!(
            r#"wharf_messages_handled_total{{{route},outcome="rejected"}}"#
        )),
        1.0
    );
    assert_eq!(
        value(format!(
            r#"wharf_dead_letters_total{{{route},reason="permanent"}}"#
        )),
        1.0
    );
    assert_eq!(
        value(format!(r#"wharf_dead_letters_total{{{route},reason="decode"}}"#)),
        1.0
    );
    assert_eq!(
        value(format!(r#"wharf_replies_sent_total{{{route},status="ok"}}"#)),
        5.0
    );
    assert_eq!(
        value(format!(r#"wharf_replies_sent_total{{{route},status="error"}}"#)),
        1.0
    );
    // Every invocation, the one whose payload did not decode included.
    assert_eq!(
        value(format!("wharf_handler_duration_seconds_count{{{route}}}")),
        7.0
    );
    assert_eq!(
        value(format!(
            r#"wharf_handler_duration_seconds_bucket{{{route},le="+Inf"}}"#
        )),
        7.0
    );
    assert_eq!(value(format!("wharf_messages_in_flight{{{route}}}")), 0.0);
    assert_eq!(
        value(r#"wharf_client_request_duration_seconds_count{queue="ops-metrics",outcome="ok"}"#.into()),
        5.0
    );
    assert_eq!(
        value(
            r#"wharf_client_request_duration_seconds_count{queue="ops-metrics",outcome="remote_error"}"#
                .into()
        ),
        1.0
    );
    assert_eq!(value(r#"wharf_broker_connected{broker="memory"}"#.into()), 1.0);
    assert_eq!(value("wharf_ready".into()), 1.0);
    assert!(
        metrics.contains("# TYPE wharf_handler_duration_seconds histogram"),
        "{metrics}"
    );
    assert!(metrics.contains("# HELP wharf_messages_handled_total "));
    // Labels come from configuration, never from the messages.
    assert!(!metrics.contains("not json"));
    running.shutdown().await;
}

#[tokio::test]
async fn a_bad_listener_address_is_a_clear_start_error() {
    // The address is taken: this app cannot listen there.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let error = match App::new(Broker::memory())
        .route("ops-taken", place)
        .http(addr)
        .start()
        .await
    {
        Ok(_) => panic!("started on a taken address"),
        Err(error) => error,
    };
    assert!(error.to_string().contains(&addr.to_string()), "{error}");
}
