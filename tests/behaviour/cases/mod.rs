//! The behaviour cases, one file per semantic.

mod bad_input;
mod idempotency;
mod middleware;
mod outside_headers;
mod payloads;
mod priority;
mod request_reply;
mod retries;
mod robustness;
mod sessions;
mod shutdown;
mod tracing;

pub use bad_input::*;
pub use idempotency::*;
pub use middleware::*;
pub use outside_headers::*;
pub use payloads::*;
pub use priority::*;
pub use request_reply::*;
pub use retries::*;
pub use robustness::*;
pub use sessions::*;
pub use shutdown::*;
pub use tracing::*;

use serde::{Deserialize, Serialize};

/// The payload most cases publish.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: u64,
    pub item: String,
}

pub fn order(id: u64) -> Order {
    Order {
        id,
        item: format!("item-{id}"),
    }
}
