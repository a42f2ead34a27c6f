//! A team's own error enum decides, per variant, what becomes of the
//! message (issue 20, item 3): the permanent variant is dead-lettered at
//! once, with its kind in the dead letter and its kind and details in the
//! error reply; the retryable variant is retried up to `max_attempts`,
//! its message carrying the whole cause chain. A boxed error is retried
//! too. Through the whole pipeline, on the test kit's in-memory broker.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use wharf::testing::{End, TestApp, TestBroker};
use wharf::{App, Backoff, BrokerError, BrokerErrorKind, DeadLetterReason, HandlerError, RouteOptions};

#[derive(Debug)]
enum StockError {
    /// Retrying cannot make stock appear.
    OutOfStock { sku: String, missing: u32 },
    /// The database may be back in a moment.
    Db(std::io::Error),
}

impl fmt::Display for StockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StockError::OutOfStock { sku, missing } => write!(f, "{missing} of {sku} missing"),
            StockError::Db(_) => f.write_str("stock database unavailable"),
        }
    }
}

impl std::error::Error for StockError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StockError::Db(cause) => Some(cause),
            StockError::OutOfStock { .. } => None,
        }
    }
}

impl HandlerError for StockError {
    fn is_permanent(&self) -> bool {
        matches!(self, StockError::OutOfStock { .. })
    }

    fn kind(&self) -> Cow<'static, str> {
        match self {
            StockError::OutOfStock { .. } => Cow::Borrowed("out-of-stock"),
            StockError::Db(_) => Cow::Borrowed("stock-db"),
        }
    }

    fn details(&self) -> Option<serde_json::Value> {
        match self {
            StockError::OutOfStock { sku, missing } => {
                Some(serde_json::json!({ "sku": sku, "missing": missing }))
            }
            StockError::Db(_) => None,
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Order {
    sku: String,
    quantity: u32,
}

const MAX_ATTEMPTS: u32 = 3;

fn options() -> RouteOptions {
    RouteOptions::new()
        .max_attempts(MAX_ATTEMPTS)
        .backoff(Backoff::fixed(Duration::from_secs(30)))
}

/// Two of every SKU in stock; SKU `db-down` finds the database down.
async fn reserve(order: Order) -> Result<u32, StockError> {
    if order.sku == "db-down" {
        return Err(StockError::Db(std::io::Error::other("connection reset")));
    }
    if order.quantity > 2 {
        return Err(StockError::OutOfStock {
            sku: order.sku,
            missing: order.quantity - 2,
        });
    }
    Ok(order.quantity)
}

async fn start(kit: &TestBroker) -> TestApp {
    kit.start(App::new(kit.broker()).route_with("reserve", reserve, options()))
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_permanent_variant_is_dead_lettered_at_once_with_its_kind_and_details() {
    let kit = TestBroker::new();
    let app = start(&kit).await;

    let order = Order {
        sku: "tea".into(),
        quantity: 5,
    };
    let remote = app
        .request::<_, u32>("reserve", &order)
        .await
        .expect_err("an error reply");
    assert_eq!(remote.kind, "out-of-stock");
    assert_eq!(remote.message, "3 of tea missing");
    assert_eq!(
        remote.details,
        Some(serde_json::json!({ "sku": "tea", "missing": 3 }))
    );

    let settled = app.publish("reserve", &order).outcome().await;
    assert!(matches!(settled.end(), End::DeadLettered(_)), "{settled:?}");
    assert_eq!(settled.reason(), Some(DeadLetterReason::Permanent));
    assert_eq!((settled.attempts(), settled.retries()), (1, 0), "not retried");
    let letter = settled.dead_letter().unwrap();
    assert_eq!(letter.error_kind(), Some("out-of-stock"));
    assert_eq!(letter.error_message(), Some("3 of tea missing"));

    // The same route succeeds for what is in stock.
    let order = Order {
        sku: "tea".into(),
        quantity: 2,
    };
    assert_eq!(app.request::<_, u32>("reserve", &order).await, Ok(2));
}

#[tokio::test(start_paused = true)]
async fn a_retryable_variant_is_retried_until_its_attempts_are_used_up() {
    let kit = TestBroker::new();
    let app = start(&kit).await;

    let order = Order {
        sku: "db-down".into(),
        quantity: 1,
    };
    let settled = app.publish("reserve", &order).outcome().await;
    assert_eq!(
        settled.reason(),
        Some(DeadLetterReason::MaxAttempts),
        "{settled:?}"
    );
    assert_eq!(
        (settled.attempts(), settled.retries()),
        (MAX_ATTEMPTS, MAX_ATTEMPTS - 1)
    );
    let letter = settled.dead_letter().unwrap();
    assert_eq!(letter.error_kind(), Some("stock-db"));
    assert_eq!(
        letter.error_message(),
        Some("stock database unavailable: connection reset"),
        "the message carries the cause"
    );
}

#[tokio::test(start_paused = true)]
async fn a_boxed_error_is_retried_and_dead_lettered_with_its_cause_chain() {
    let kit = TestBroker::new();
    let runs = Arc::new(AtomicU32::new(0));
    let counter = runs.clone();
    let ship = move |_: u32| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            let error = BrokerError::new(BrokerErrorKind::Publish, "publishing the shipment failed")
                .with_source(std::io::Error::other("connection reset"));
            Err::<u32, Box<dyn std::error::Error + Send + Sync>>(error.into())
        }
    };
    let app = kit
        .start(App::new(kit.broker()).route_with("ship", ship, options()))
        .await
        .unwrap();
    let settled = app.publish("ship", &1u32).outcome().await;
    assert_eq!(
        settled.reason(),
        Some(DeadLetterReason::MaxAttempts),
        "{settled:?}"
    );
    let letter = settled.dead_letter().unwrap();
    assert_eq!(letter.error_kind(), Some("handler"));
    assert_eq!(
        letter.error_message(),
        Some("publishing the shipment failed: connection reset")
    );
    assert_eq!(runs.load(Ordering::SeqCst), MAX_ATTEMPTS, "one run per attempt");
}
