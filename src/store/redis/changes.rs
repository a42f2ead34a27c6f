//! Session change notifications: the scripts publish a session's name on
//! the changes channel when it moves or its lease ends while another worker
//! may wait for it (a number of it was ever reported early, or it is held
//! for a busy or retried one), and one listener
//! per process relays them to the routes waiting on that session.

use super::RedisStore;
use super::connect::CONNECT_TIMEOUT;
use ::redis::RedisError;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::broadcast;

/// The listener of the changes channel, shared by every route of the
/// process.
pub(super) struct Changes {
    sender: broadcast::Sender<Arc<str>>,
    /// Cleared by the listener when it ends (nobody listens any more, or
    /// its runtime went away).
    alive: Arc<AtomicBool>,
}

impl RedisStore {
    /// A receiver of the changes channel, starting its listener unless one
    /// runs; `None` outside a Tokio runtime.
    pub(super) fn subscribe_changes(&self) -> Option<broadcast::Receiver<Arc<str>>> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let mut changes = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(changes) = changes
            .as_ref()
            .filter(|c| c.alive.load(Ordering::Acquire) && c.sender.receiver_count() > 0)
        {
            return Some(changes.sender.subscribe());
        }
        let (sender, receiver) = broadcast::channel(4096);
        let alive = Arc::new(AtomicBool::new(true));
        runtime.spawn(relay_changes(
            self.client.clone(),
            self.changes_channel(),
            sender.clone(),
            alive.clone(),
        ));
        *changes = Some(Changes { sender, alive });
        Some(receiver)
    }
}

/// Relays session names from the changes channel to `sender` until nobody
/// listens. Reconnects after a failure; since names may have been missed
/// meanwhile, it then sends an empty name: anything may have changed.
async fn relay_changes(
    client: ::redis::Client,
    channel: String,
    sender: broadcast::Sender<Arc<str>>,
    alive: Arc<AtomicBool>,
) {
    struct Ended(Arc<AtomicBool>);
    impl Drop for Ended {
        fn drop(&mut self) {
            self.0.store(false, Ordering::Release);
        }
    }
    let _ended = Ended(alive);
    let mut delay = Duration::from_millis(100);
    let mut first = true;
    while sender.receiver_count() > 0 {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, RedisError>(pubsub)
        };
        let pubsub = match tokio::time::timeout(CONNECT_TIMEOUT, subscribed).await {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(error)) => {
                tracing::warn!(error = %crate::error::Chain(&error), "session changes: cannot subscribe; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                continue;
            }
            Err(_) => {
                tracing::warn!("session changes: subscribing timed out; retrying");
                continue;
            }
        };
        delay = Duration::from_millis(100);
        if !first {
            let _ = sender.send(Arc::from(""));
        }
        first = false;
        let mut messages = pubsub.into_on_message();
        loop {
            let message = tokio::select! {
                message = futures_util::StreamExt::next(&mut messages) => message,
                () = tokio::time::sleep(Duration::from_secs(5)) => {
                    if sender.receiver_count() == 0 {
                        return;
                    }
                    continue;
                }
            };
            let Some(message) = message else { break };
            if let Ok(session) = message.get_payload::<String>()
                && sender.send(Arc::from(session)).is_err()
            {
                return;
            }
        }
    }
}
