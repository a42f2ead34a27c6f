//! A team's own error enum as a handler's error type, deciding per variant
//! whether a failure is permanent, and its kind and details.

use std::borrow::Cow;
use std::fmt;
use wharf::{App, Broker, Error, HandlerError, IntoFailure};

#[derive(Debug)]
enum OrderError {
    OutOfStock { sku: String, missing: u32 },
    Db(std::io::Error),
}

impl fmt::Display for OrderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OrderError::OutOfStock { sku, missing } => write!(f, "{missing} of {sku} missing"),
            OrderError::Db(_) => f.write_str("stock database unavailable"),
        }
    }
}

impl std::error::Error for OrderError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OrderError::Db(cause) => Some(cause),
            OrderError::OutOfStock { .. } => None,
        }
    }
}

impl HandlerError for OrderError {
    fn is_permanent(&self) -> bool {
        matches!(self, OrderError::OutOfStock { .. })
    }

    fn kind(&self) -> Cow<'static, str> {
        match self {
            OrderError::OutOfStock { .. } => "out-of-stock".into(),
            OrderError::Db(_) => "db".into(),
        }
    }

    fn details(&self) -> Option<serde_json::Value> {
        match self {
            OrderError::OutOfStock { sku, missing } => Some(serde_json::json!({ "sku": sku, "missing": missing })),
            OrderError::Db(_) => None,
        }
    }
}

/// Every failure retryable: the one-line impl.
#[derive(Debug)]
struct Flaky;

impl fmt::Display for Flaky {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("flaky")
    }
}

impl std::error::Error for Flaky {}
impl HandlerError for Flaky {}

#[derive(serde::Deserialize)]
struct Order {
    sku: String,
    quantity: u32,
}

async fn place(order: Order) -> Result<u64, OrderError> {
    if order.quantity > 2 {
        return Err(OrderError::OutOfStock { sku: order.sku, missing: order.quantity - 2 });
    }
    Ok(7)
}

async fn boxed(_: Order) -> Result<(), Box<OrderError>> {
    Err(Box::new(OrderError::Db(std::io::Error::other("reset"))))
}

async fn flaky(_: u32) -> Result<(), Flaky> {
    Err(Flaky)
}

/// A handler returning wharf's `Error` that keeps the enum's decision.
async fn mixed(order: Order) -> Result<u64, Error> {
    let id = place(order).await.map_err(Error::from_handler_error)?;
    let _: u32 = "12".parse()?;
    Ok(id)
}

fn main() {
    let _app = App::new(Broker::memory())
        .route("orders", place)
        .route("orders-boxed", boxed)
        .route("flaky", flaky)
        .route("mixed", mixed);

    let out_of_stock = OrderError::OutOfStock { sku: "tea".into(), missing: 3 }.into_failure();
    assert!(out_of_stock.permanent);
    assert_eq!(out_of_stock.kind, "out-of-stock");
    assert_eq!(out_of_stock.message, "3 of tea missing");
    assert_eq!(out_of_stock.details, Some(serde_json::json!({ "sku": "tea", "missing": 3 })));

    let db = OrderError::Db(std::io::Error::other("connection reset")).into_failure();
    assert!(!db.permanent);
    assert_eq!(db.kind, "db");
    assert_eq!(db.message, "stock database unavailable: connection reset");
    assert_eq!(db.details, None);

    let boxed = Box::new(OrderError::OutOfStock { sku: "tea".into(), missing: 1 }).into_failure();
    assert!(boxed.permanent);

    let flaky = Flaky.into_failure();
    assert!(!flaky.permanent);
    assert_eq!(flaky.kind, "handler");

    let kept = Error::from_handler_error(OrderError::OutOfStock { sku: "tea".into(), missing: 1 });
    assert!(kept.is_permanent());
    assert_eq!(kept.kind(), "out-of-stock");
}
