//! `Box<dyn Error + Send + Sync>` as a handler's error type: any error
//! converts into it with `?`; retryable, with the whole cause chain.

use std::error::Error;
use wharf::{App, Broker, BrokerError, BrokerErrorKind, IntoFailure};

type BoxError = Box<dyn Error + Send + Sync>;

async fn parse(text: String) -> Result<u32, BoxError> {
    let n: u32 = text.parse()?;
    if n == 0 {
        return Err("zero is not an order number".into());
    }
    Ok(n)
}

async fn publish(_: u32) -> Result<(), BoxError> {
    Err(BrokerError::new(BrokerErrorKind::Publish, "publish failed")
        .with_source(std::io::Error::other("connection reset"))
        .into())
}

/// Without `Send` and `Sync` too.
async fn plain(_: u32) -> Result<(), Box<dyn Error>> {
    Err("no".into())
}

fn main() {
    let _app = App::new(Broker::memory())
        .route("parse", parse)
        .route("publish", publish)
        .route("plain", plain);

    let error: BoxError = "x".parse::<u32>().unwrap_err().into();
    let failure = error.into_failure();
    assert!(!failure.permanent);
    assert_eq!(failure.kind, "handler");
    assert_eq!(failure.message, "invalid digit found in string");

    let error: BoxError = BrokerError::new(BrokerErrorKind::Publish, "publish failed")
        .with_source(std::io::Error::other("connection reset"))
        .into();
    assert_eq!(error.into_failure().message, "publish failed: connection reset");
}
