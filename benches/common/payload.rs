//! The payload both benches send: a 256-byte JSON order, and the answer
//! of the request/reply scenarios.

use serde::{Deserialize, Serialize};
use std::sync::OnceLock;
use std::time::Instant;
use wharf::Reply;

/// Size of every order's JSON encoding.
pub const PAYLOAD_BYTES: usize = 256;

/// The payload: its JSON encoding is exactly [`PAYLOAD_BYTES`] long (the
/// note pads it). `sent_ns` is when it was published, on [`now_ns`]'s clock
/// (0 where no latency is taken from it).
#[derive(Debug, Serialize, Deserialize)]
pub struct Order {
    pub id: u64,
    pub sent_ns: u64,
    pub customer: String,
    pub sku: String,
    pub quantity: u32,
    pub unit_price_cents: u64,
    pub currency: String,
    pub express: bool,
    pub note: String,
}

/// The reply of the request/reply scenarios.
#[derive(Debug, Serialize, Deserialize)]
pub struct Answer {
    pub id: u64,
    pub accepted: bool,
}

pub fn order(id: u64, sent_ns: u64) -> Order {
    let mut order = Order {
        id,
        sent_ns,
        customer: "customer-00042".to_owned(),
        sku: "SKU-TEAPOT-0815-BLUE".to_owned(),
        quantity: 3,
        unit_price_cents: 2_499,
        currency: "EUR".to_owned(),
        express: false,
        note: String::new(),
    };
    let unpadded = serde_json::to_vec(&order).expect("encode order").len();
    assert!(
        unpadded <= PAYLOAD_BYTES,
        "payload without note is {unpadded} bytes"
    );
    order.note = "x".repeat(PAYLOAD_BYTES - unpadded);
    order
}

pub fn order_json(id: u64, sent_ns: u64) -> Vec<u8> {
    let body = serde_json::to_vec(&order(id, sent_ns)).expect("encode order");
    assert_eq!(body.len(), PAYLOAD_BYTES, "payload size");
    body
}

/// Nanoseconds on one monotonic clock shared by publishers and handlers.
pub fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// The wharf handler of the request/reply scenarios.
pub async fn answer(order: Order) -> Reply<Answer> {
    Reply(Answer {
        id: order.id,
        accepted: true,
    })
}
