//! Events, not only queues: `cargo run --example events`.
//!
//! Two services subscribe to one stream of order events: billing to
//! `events-example.orders.*.created`, audit to everything under
//! `events-example.orders`. Each gets every
//! event it subscribed to, once; a publisher only names the event.
//!
//! On RabbitMQ (`WHARF_BROKER_URL=amqp://…`) and in memory (the default)
//! the routes' queues are bound to the topic exchange `events-example`; on
//! NATS (`WHARF_BROKER_URL=nats://…`) they subscribe to the subjects,
//! captured by the stream `EVENTS_EXAMPLE`: audit's stream sources them,
//! billing reads the stream through its own durable consumer
//! `events-example-billing` (docs/amqp.md, "Exchanges and routing keys";
//! docs/nats.md, "Events on your own subjects").

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use wharf::{App, Binding, Broker, RouteOptions, State, Subscription};

const EXCHANGE: &str = "events-example";
const STREAM: &str = "EVENTS_EXAMPLE";

#[derive(Debug, Serialize, Deserialize)]
struct OrderEvent {
    id: u64,
    region: String,
}

/// How many events each service handled.
#[derive(Clone, Default)]
struct Counts {
    billing: Arc<AtomicUsize>,
    audit: Arc<AtomicUsize>,
}

async fn bill(State(counts): State<Counts>, event: OrderEvent) {
    counts.billing.fetch_add(1, Ordering::SeqCst);
    println!("  billing: order {} created in {}", event.id, event.region);
}

async fn audit(State(counts): State<Counts>, event: OrderEvent) {
    counts.audit.fetch_add(1, Ordering::SeqCst);
    println!("  audit:   order {} event seen", event.id);
}

/// A route taking the events on `pattern`: bound to the exchange, or
/// subscribed to the subjects on NATS (through `consumer` if named).
fn events(broker: &Broker, pattern: &str, consumer: Option<&str>) -> RouteOptions {
    match broker.kind() {
        "nats" => {
            let subscription = Subscription::new(STREAM, pattern.replace('#', ">"));
            RouteOptions::new().subscribe(match consumer {
                Some(consumer) => subscription.consumer(consumer),
                None => subscription,
            })
        }
        _ => RouteOptions::new().bind(Binding::topic(EXCHANGE, pattern)),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let broker = Broker::from_env().await?;
    println!("wharf events on the {} broker ({})", broker.kind(), broker.url());
    for queue in ["events-example.billing", "events-example.audit"] {
        broker.delete_queue(queue).await?;
    }

    // Two services; here in one process, usually two deployments. Audit,
    // with the wider pattern, starts first: on NATS it declares the stream.
    let counts = Counts::default();
    let audit_service = App::with_state(broker.clone(), counts.clone())
        .route_with(
            "events-example.audit",
            audit,
            events(&broker, "events-example.orders.#", None),
        )
        .start()
        .await?;
    let billing_service = App::with_state(broker.clone(), counts.clone())
        .route_with(
            "events-example.billing",
            bill,
            events(
                &broker,
                "events-example.orders.*.created",
                Some("events-example-billing"),
            ),
        )
        .start()
        .await?;

    let client = broker.client();
    let published = [
        ("events-example.orders.eu.created", 1),
        ("events-example.orders.us.created", 2),
        ("events-example.orders.eu.paid", 1),
    ];
    for (key, id) in published {
        let event = OrderEvent {
            id,
            region: key.split('.').nth(2).unwrap_or_default().to_owned(),
        };
        match broker.kind() {
            "nats" => client.publish_to_subject(key, &event).await?,
            _ => client.publish_to_exchange(EXCHANGE, key, &event).await?,
        }
    }

    let deadline = Instant::now() + Duration::from_secs(10);
    while (
        counts.billing.load(Ordering::SeqCst),
        counts.audit.load(Ordering::SeqCst),
    ) != (2, 3)
    {
        if Instant::now() > deadline {
            return Err("the events did not all arrive within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("billing handled 2 created orders, audit all 3 events");
    billing_service.shutdown().await;
    audit_service.shutdown().await;
    Ok(())
}
