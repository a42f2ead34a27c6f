//! Helpers shared by the broker test binaries (`amqp_*`, `nats_*`); each
//! binary includes this module and uses part of it.
#![allow(dead_code)]

pub mod events;
pub mod local_cluster;
pub mod local_server;
pub mod provision;

// The skip policy and the set-up on first use, shared with the crate's own
// unit tests: one file, included here by path.
#[path = "../../src/test_support.rs"]
mod shared;

#[allow(unused_imports)] // Each binary uses part of it.
pub use shared::{broker_reachable, ci, skip, start_brokers};

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wharf::{Broker, DeadLetter};

/// An error and every cause in its `source()` chain, joined by `": "`:
/// wharf's errors show their own message and keep the cause there.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

/// A queue name no earlier run used: `wharf-test.<what>.<pid>.<nanos>`.
pub fn unique_queue(what: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("wharf-test.{what}.{}.{nanos:x}", std::process::id())
}

/// Polls `done` until it holds; fails the test after `limit`. Returns how
/// long it took.
pub async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    let deadline = started + limit;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

/// [`wait_for`] with an async condition.
pub async fn wait_for_async(what: &str, limit: Duration, mut done: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    let deadline = started + limit;
    while !done().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

/// Polls `done` until it holds or `limit` runs out; says which.
pub async fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Takes `count` dead letters of `queue`, waiting up to `limit`.
pub async fn dead_letters(broker: &Broker, queue: &str, count: usize, limit: Duration) -> Vec<DeadLetter> {
    let dlq = broker.dead_letters(queue);
    let mut letters = Vec::new();
    let deadline = Instant::now() + limit;
    while letters.len() < count && Instant::now() < deadline {
        match dlq.take(count - letters.len()).await {
            Ok(taken) => letters.extend(taken),
            Err(error) => eprintln!("reading {}: {error}", dlq.queue()),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    letters
}

/// `GET path` from a worker's operations listener: the status code and the
/// body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("listener up");
    let request = format!("GET {path} HTTP/1.1\r\nhost: worker\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of the sample `series` (name and labels exactly as rendered)
/// in a Prometheus text exposition.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// What a worker's operations listener says while its broker is away:
/// not ready, because it is reconnecting.
pub async fn assert_reconnecting(ops: std::net::SocketAddr) {
    let (status, body) = http_get(ops, "/readyz").await;
    assert_eq!(
        (status, body.as_str()),
        (503, "not ready: broker connection lost: reconnecting\n"),
        "/readyz while the broker is away"
    );
}

/// What it says once the broker is back: ready, connected, and the
/// reconnect counted.
pub async fn assert_reconnected(ops: std::net::SocketAddr, broker_kind: &str) {
    assert_eq!(
        http_get(ops, "/readyz").await.0,
        200,
        "/readyz after the reconnect"
    );
    let (_, metrics) = http_get(ops, "/metrics").await;
    let reconnects = sample(
        &metrics,
        &format!("wharf_broker_reconnects_total{{broker=\"{broker_kind}\"}}"),
    );
    assert!(
        reconnects >= Some(1.0),
        "reconnects counted: {reconnects:?}\n{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            &format!("wharf_broker_connected{{broker=\"{broker_kind}\"}}")
        ),
        Some(1.0)
    );
}
