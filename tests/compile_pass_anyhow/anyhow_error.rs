//! `anyhow::Error` as a handler's error type (wharf's feature `anyhow`):
//! retryable, the message with its whole context chain.

use anyhow::Context as _;
use wharf::{App, Broker, IntoFailure};

async fn reserve(sku: String) -> anyhow::Result<u32> {
    let n: u32 = sku.parse().context("reading the SKU")?;
    anyhow::ensure!(n > 0, "SKU 0 does not exist");
    Ok(n)
}

fn main() {
    let _app = App::new(Broker::memory()).route("reserve", reserve);

    let error = Err::<(), _>(std::io::Error::other("connection reset"))
        .context("reserving stock")
        .unwrap_err();
    let failure = error.into_failure();
    assert!(!failure.permanent);
    assert_eq!(failure.kind, "handler");
    assert_eq!(failure.message, "reserving stock: connection reset");
}
