//! What the pipeline records through the `metrics` facade: names, labels and
//! values, read back from a small in-test recorder. One test per process, as
//! it installs the global recorder.

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wharf::{App, Backoff, Broker, Context, Error, Message, RouteOptions};

#[derive(Default)]
struct Samples(Mutex<Vec<f64>>);

impl metrics::HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

/// Every series by its text form, `name{label="value",…}` with sorted labels.
#[derive(Default)]
struct Capture {
    counters: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    gauges: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    histograms: Mutex<BTreeMap<String, Arc<Samples>>>,
}

fn series(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={:?}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let cell = self
            .counters
            .lock()
            .unwrap()
            .entry(series(key))
            .or_default()
            .clone();
        Counter::from_arc(cell)
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let cell = self
            .gauges
            .lock()
            .unwrap()
            .entry(series(key))
            .or_default()
            .clone();
        Gauge::from_arc(cell)
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let cell = self
            .histograms
            .lock()
            .unwrap()
            .entry(series(key))
            .or_default()
            .clone();
        Histogram::from_arc(cell)
    }
}

impl Capture {
    fn counter(&self, name: &str, outcome_or_reason: Option<(&str, &str)>) -> u64 {
        self.counters
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{name}{{")))
            .filter(|(k, _)| outcome_or_reason.is_none_or(|(l, v)| k.contains(&format!("{l}=\"{v}\""))))
            .map(|(_, v)| v.load(Ordering::Relaxed))
            .sum()
    }
}

#[derive(serde::Deserialize)]
struct Order {
    id: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_records_outcomes_reasons_and_durations_with_configuration_labels_only() {
    let capture: &'static Capture = Box::leak(Box::default());
    metrics::set_global_recorder(capture).expect("the only recorder in this process");

    let broker = Broker::memory();
    let queue = "metrics.orders";
    let handler = |ctx: Context, order: Order| async move {
        match order.id {
            1 => Ok(()),
            2 => Err(Error::permanent("declined")),
            _ if ctx.attempt() == 1 => Err(Error::new("busy")),
            _ => Ok(()),
        }
    };
    let options = RouteOptions::new()
        .name("place-order")
        .backoff(Backoff::fixed(Duration::from_millis(10)));
    let running = App::new(broker.clone())
        .route_with(queue, handler, options)
        .start()
        .await
        .unwrap();
    let client = broker.client();
    for id in 1..=3u64 {
        let message = Message::json(&serde_json::json!({ "id": id }))
            .unwrap()
            .with_message_id(format!("secret-message-id-{id}"));
        client.send(queue, message).await.unwrap();
    }
    // Two rejections: a payload that does not decode (found when the
    // handler's arguments are extracted, inside the invocation) and an
    // unknown content type (refused before any invocation).
    client.send(queue, Message::new(&b"not json"[..])).await.unwrap();
    client
        .send(
            queue,
            Message::new(&b"{\"id\": 1}"[..]).with_content_type("text/plain"),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while running.stats(queue).acked < 2 || running.stats(queue).rejected < 2 {
        assert!(Instant::now() < deadline, "stats: {:?}", running.stats(queue));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    running.shutdown().await;

    let handled = "wharf_messages_handled_total";
    assert_eq!(
        capture.counter("wharf_messages_received_total", None),
        6,
        "5 messages, one retried"
    );
    assert_eq!(capture.counter(handled, Some(("outcome", "acked"))), 2);
    assert_eq!(capture.counter(handled, Some(("outcome", "retried"))), 1);
    assert_eq!(capture.counter(handled, Some(("outcome", "dead_lettered"))), 1);
    assert_eq!(capture.counter(handled, Some(("outcome", "rejected"))), 2);
    assert_eq!(capture.counter("wharf_retries_total", None), 1);
    let dead = "wharf_dead_letters_total";
    assert_eq!(capture.counter(dead, Some(("reason", "permanent"))), 1);
    assert_eq!(capture.counter(dead, Some(("reason", "decode"))), 1);
    assert_eq!(capture.counter(dead, Some(("reason", "content-type"))), 1);
    assert_eq!(capture.counter(dead, None), 3);

    let histograms = capture.histograms.lock().unwrap();
    let durations =
        &histograms[r#"wharf_handler_duration_seconds{handler="place-order",queue="metrics.orders"}"#];
    // One sample per invocation (docs/metrics.md, "Which deliveries have a
    // duration sample"): orders 1 and 2, order 3 twice, and the payload that
    // did not decode; not the content-type rejection, refused before any
    // invocation.
    assert_eq!(
        durations.0.lock().unwrap().len(),
        5,
        "one sample per handler invocation"
    );
    let gauges = capture.gauges.lock().unwrap();
    let in_flight = &gauges[r#"wharf_messages_in_flight{handler="place-order",queue="metrics.orders"}"#];
    assert_eq!(f64::from_bits(in_flight.load(Ordering::Relaxed)), 0.0);

    // Labels come from configuration only: nothing from a message shows up.
    let all: Vec<String> = capture
        .counters
        .lock()
        .unwrap()
        .keys()
        .chain(gauges.keys())
        .chain(histograms.keys())
        .cloned()
        .collect();
    assert!(all.iter().all(|s| !s.contains("secret")), "{all:#?}");
    // Every route series names its queue; the app's own (connection,
    // readiness, the in-memory store) carry the broker kind, the store
    // record kind or nothing.
    let app_wide = [
        "wharf_broker_connected{",
        "wharf_broker_reconnects_total{",
        "wharf_ready{",
        "wharf_store_records{",
        "wharf_store_evictions_total{",
    ];
    assert!(
        all.iter()
            .filter(|s| !app_wide.iter().any(|name| s.starts_with(name)))
            .all(|s| s.contains(r#"queue="metrics.orders""#)),
        "{all:#?}"
    );
    assert!(
        all.iter()
            .any(|s| s == r#"wharf_broker_connected{broker="memory"}"#),
        "{all:#?}"
    );
    // The default (in-memory) store reports its size and evictions.
    for kind in ["idempotency", "session"] {
        assert!(
            all.contains(&format!(r#"wharf_store_records{{kind="{kind}"}}"#))
                && all.contains(&format!(r#"wharf_store_evictions_total{{kind="{kind}"}}"#)),
            "{all:#?}"
        );
    }
}
