//! Giving back what a stopping consumer received and did not hand out.
//!
//! JetStream hands a pull consumer's messages to a worker and keeps them
//! for it until they are acked or the ack wait runs out; it has no notion
//! of a worker leaving. A worker that stops with messages in its
//! subscriptions (prefetched, not started) would leave them unavailable to
//! every other worker for the ack wait. So a consumer that is dropped ends
//! its subscriptions first (nothing more is delivered to it) and then
//! returns each message it still holds as a copy that keeps its attempt
//! count (`Settlement::Return`), confirmed before the original is acked:
//! another worker can take it at once. The transport waits for these
//! hand-backs before it flushes and closes the connection.

use super::Shared;
use super::acker::{Held, Source};
use super::delivery::{AckPrefix, delivery};
use super::pull::Pull;
use crate::transport::Settlement;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long closing the connection waits for hand-backs still under way.
const FINISH_LIMIT: Duration = Duration::from_secs(5);

/// Hand-backs under way, which the transport waits for before it flushes
/// or closes the connection.
#[derive(Default)]
pub(crate) struct Handbacks {
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Handbacks {
    /// Runs `handback` on the connection's runtime (the worker's may be
    /// going away with the consumer).
    pub(crate) fn spawn(&self, shared: &Shared, handback: impl Future<Output = ()> + Send + 'static) {
        let task = shared.runtime.spawn(handback);
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|task| !task.is_finished());
        tasks.push(task);
    }

    /// Waits for the hand-backs under way, up to a limit.
    pub(crate) async fn finish(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        let all = futures_util::future::join_all(tasks);
        if tokio::time::timeout(FINISH_LIMIT, all).await.is_err() {
            tracing::warn!("messages were still being given back when the connection closed");
        }
    }
}

/// Ends `pulls` and returns what they and `received` hold; cancels
/// `closed` once nothing more can be delivered to this worker (deliveries
/// dropped unsettled wait for it before they send their copies, which
/// would otherwise go to this worker's dying pull requests).
pub(crate) async fn hand_back(
    source: Arc<Source>,
    pulls: Vec<Pull>,
    mut received: Vec<Held>,
    closed: CancellationToken,
) {
    let closing = futures_util::future::join_all(pulls.into_iter().map(Pull::close)).await;
    received.extend(closing.into_iter().flatten().map(|message| (message, None)));
    closed.cancel();
    if received.is_empty() {
        return;
    }
    let count = received.len();
    let mut prefix = AckPrefix::default();
    let returns = received.into_iter().map(|(message, held)| {
        let delivered = prefix.delivered(message.reply.as_deref());
        delivery(&source, message, delivered, held).settle(Settlement::Return)
    });
    let failed = futures_util::future::join_all(returns)
        .await
        .into_iter()
        .filter_map(Result::err)
        .inspect(|error| tracing::warn!(queue = %source.queue, error = %crate::error::Chain(error), "giving a message back failed"))
        .count();
    tracing::debug!(queue = %source.queue, count, failed, "gave back what the consumer had not handed out");
}
