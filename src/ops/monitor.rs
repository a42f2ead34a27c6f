//! What a running app reports about itself besides its routes: whether it
//! is ready, whether the broker connection is up and how often it came
//! back, and how many messages wait in each route's queue.

use crate::ops::health::Health;
use crate::ops::metrics::{BROKER_CONNECTED, BROKER_RECONNECTS, QUEUE_DEPTH, QUEUE_DEPTH_EVERY, READY};
use crate::transport::Transport;
use metrics::{counter, gauge};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Starts the monitors; they end with `stop`.
pub(crate) fn start(
    transport: Arc<dyn Transport>,
    health: Health,
    queues: Vec<String>,
    stop: CancellationToken,
) {
    tokio::spawn(follow_connection(transport.clone(), stop.clone()));
    tokio::spawn(follow_readiness(health, stop.clone()));
    tokio::spawn(sample_depths(transport, queues, stop));
}

/// `wharf_broker_connected` and `wharf_broker_reconnects_total`.
async fn follow_connection(transport: Arc<dyn Transport>, stop: CancellationToken) {
    let broker = transport.kind();
    let connected = gauge!(BROKER_CONNECTED, "broker" => broker);
    let reconnects = counter!(BROKER_RECONNECTS, "broker" => broker);
    let mut state = transport.connected();
    let mut was_up = *state.borrow_and_update();
    connected.set(f64::from(u8::from(was_up)));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            changed = state.changed() => if changed.is_err() { return },
        }
        let up = *state.borrow_and_update();
        if up && !was_up {
            reconnects.increment(1);
            tracing::info!(broker, "broker connection re-established");
        }
        connected.set(f64::from(u8::from(up)));
        was_up = up;
    }
}

/// `wharf_ready`, as `/readyz` answers; 0 once stopped.
async fn follow_readiness(mut health: Health, stop: CancellationToken) {
    let ready = gauge!(READY);
    loop {
        ready.set(f64::from(u8::from(health.is_ready())));
        tokio::select! {
            () = stop.cancelled() => break,
            more = health.changed() => if !more { break },
        }
    }
    ready.set(0.0);
}

/// `wharf_queue_depth{queue}` every [`QUEUE_DEPTH_EVERY`].
async fn sample_depths(transport: Arc<dyn Transport>, queues: Vec<String>, stop: CancellationToken) {
    let gauges: Vec<_> = queues
        .iter()
        .map(|queue| gauge!(QUEUE_DEPTH, "queue" => queue.clone()))
        .collect();
    loop {
        for (queue, depth) in queues.iter().zip(&gauges) {
            match transport.depth(queue).await {
                Ok(waiting) => depth.set(waiting as f64),
                // A core NATS service has no stream to count; a broker
                // that is away answers later.
                Err(error) => {
                    tracing::debug!(%queue, error = %crate::error::Chain(&error), "queue depth unavailable")
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(QUEUE_DEPTH_EVERY) => {}
        }
    }
}
