//! The names and settings wharf gives a queue's JetStream stream and
//! consumer, written out by hand for the raw consumer.

use async_nats::jetstream;
use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::stream::{RetentionPolicy, StorageType};
use std::time::Duration;

/// The durable consumer wharf uses on a queue without priority.
pub const CONSUMER: &str = "wharf";

/// `enc` of the NATS mapping: keeps `[A-Za-z0-9-]`, writes every other
/// byte as `_XX`.
pub fn enc(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("_{byte:02X}"));
        }
    }
    out
}

/// The stream holding `queue`.
pub fn stream_name(queue: &str) -> String {
    format!("WHARF_{}", enc(queue))
}

/// The subject of `queue` at priority 0.
pub fn subject(queue: &str) -> String {
    format!("wharf.p0.{queue}")
}

/// The stream wharf makes for a queue without priority, made by hand.
pub fn stream_config(queue: &str) -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: stream_name(queue),
        subjects: (0..=9).map(|p| format!("wharf.p{p}.{queue}")).collect(),
        retention: RetentionPolicy::WorkQueue,
        storage: StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

/// The durable pull consumer wharf makes, made by hand.
pub fn consumer_config() -> pull::Config {
    pull::Config {
        durable_name: Some(CONSUMER.to_owned()),
        ack_policy: AckPolicy::Explicit,
        ack_wait: Duration::from_secs(30),
        max_deliver: -1,
        ..Default::default()
    }
}
