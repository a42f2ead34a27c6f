//! wharf in one minute, with no broker: `cargo run --example quickstart`.
//!
//! Registers a typed handler, publishes orders, makes one request/reply
//! round trip, and shows a retried-then-successful message, a duplicate that
//! is skipped and a poison message landing in the dead-letter queue.
//! Set `WHARF_BROKER_URL` to run the same program against a real broker.

use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use wharf::{App, Backoff, Broker, Context, Error, Message, RouteOptions};

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    id: u64,
    item: String,
    quantity: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct Receipt {
    order_id: u64,
    total_cents: u64,
}

/// The handler: a plain async fn. Its argument is decoded from JSON or
/// MessagePack; its return value is the reply when the message asks for one.
async fn place_order(ctx: Context, order: Order) -> Result<Receipt, Error> {
    if order.item == "flaky-widget" && ctx.attempt() == 1 {
        // Retryable by default: wharf redelivers it after a backoff delay.
        return Err(Error::new("warehouse is busy, try again"));
    }
    println!(
        "  handled order {:>2} ({} x {}) on attempt {}",
        order.id,
        order.quantity,
        order.item,
        ctx.attempt()
    );
    Ok(Receipt {
        order_id: order.id,
        total_cents: u64::from(order.quantity) * 250,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let broker = Broker::from_env().await?;
    println!(
        "wharf quick start on the {} broker ({})",
        broker.kind(),
        broker.url()
    );

    // A fresh queue each run (on a real broker, an earlier run's messages
    // and dead letters would still be there).
    broker.delete_queue("quickstart.orders").await?;
    let options = RouteOptions::new().backoff(Backoff::fixed(Duration::from_millis(200)));
    let running = App::new(broker.clone())
        .route_with("quickstart.orders", place_order, options)
        .start()
        .await?;
    let client = broker.client();

    println!("\npublishing three orders:");
    for (id, item) in [(1, "teapot"), (2, "kettle"), (3, "mug")] {
        client
            .publish(
                "quickstart.orders",
                &Order {
                    id,
                    item: item.into(),
                    quantity: 2,
                },
            )
            .await?;
    }
    wait_for(&running, |s| s.acked >= 3).await?;

    println!("\nrequest/reply round trip:");
    let order = Order {
        id: 4,
        item: "saucer".into(),
        quantity: 4,
    };
    let receipt: Receipt = client.request("quickstart.orders", &order).await?;
    println!("  reply: {receipt:?}");

    println!("\na message that fails once, then succeeds:");
    client
        .publish(
            "quickstart.orders",
            &Order {
                id: 5,
                item: "flaky-widget".into(),
                quantity: 1,
            },
        )
        .await?;
    wait_for(&running, |s| s.acked >= 5).await?;

    println!("\nthe same idempotency key twice:");
    for _ in 0..2 {
        let message = Message::json(&Order {
            id: 6,
            item: "spoon".into(),
            quantity: 6,
        })?
        .with_idempotency_key("order-6");
        client.send("quickstart.orders", message).await?;
    }
    wait_for(&running, |s| s.acked >= 6 && s.duplicates >= 1).await?;
    println!("  second copy skipped as a duplicate");

    println!("\na poison message (not JSON):");
    client
        .send("quickstart.orders", Message::new(&b"\xff\xfe not json"[..]))
        .await?;
    wait_for(&running, |s| s.rejected >= 1).await?;
    let dead = broker.dead_letters("quickstart.orders").list(10).await?;
    for letter in &dead {
        println!(
            "  in {}: reason={} error={:?}",
            broker.dead_letters("quickstart.orders").queue(),
            letter.reason().map(|r| r.to_string()).unwrap_or_default(),
            letter.error_message().unwrap_or_default()
        );
    }

    let stats = running.stats("quickstart.orders");
    running.shutdown().await;
    broker.delete_queue("quickstart.orders").await?;
    broker.close().await;
    println!(
        "\nsummary: received {}, acked {}, retried {}, duplicates {}, dead-lettered {}, replies {}",
        stats.received,
        stats.acked,
        stats.retried,
        stats.duplicates,
        stats.rejected + stats.dead_lettered,
        stats.replies
    );
    let expected = stats.acked == 6
        && stats.retried == 1
        && stats.duplicates == 1
        && stats.rejected == 1
        && stats.replies == 1
        && dead.len() == 1;
    if !expected {
        return Err(format!("unexpected outcome: {stats:?}, {} dead letters", dead.len()).into());
    }
    println!("all as expected.");
    Ok(())
}

/// Waits (at most 10 s) until the route's counters satisfy `done`.
async fn wait_for(
    running: &wharf::Running,
    done: impl Fn(&wharf::RouteStats) -> bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(&running.stats("quickstart.orders")) {
        if Instant::now() > deadline {
            return Err(format!("timed out; stats: {:?}", running.stats("quickstart.orders")).into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}
