//! Session change notifications: every write to a session record is a
//! publish that a plain subscription sees, relayed to the routes waiting on
//! that session.

use super::NatsKvStore;
use super::keys::decode_key;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

impl NatsKvStore {
    /// A receiver of the sessions bucket's changes, starting its listener
    /// unless one runs; `None` outside a Tokio runtime.
    pub(super) fn subscribe_changes(&self) -> Option<broadcast::Receiver<Arc<str>>> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let mut changes = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = changes.as_ref().filter(|s| s.receiver_count() > 0) {
            return Some(sender.subscribe());
        }
        let (sender, receiver) = broadcast::channel(4096);
        let [_, bucket] = self.bucket_names();
        runtime.spawn(relay_changes(self.client.clone(), bucket, sender.clone()));
        *changes = Some(sender);
        Some(receiver)
    }
}

/// Relays the names of sessions written in `bucket` (a KV write is a
/// publish on `$KV.<bucket>.<key>`, which a plain subscription sees) until
/// nobody listens.
async fn relay_changes(
    client: async_nats::Client,
    bucket: String,
    sender: tokio::sync::broadcast::Sender<std::sync::Arc<str>>,
) {
    use futures_util::StreamExt;
    let prefix = format!("$KV.{bucket}.s.");
    let mut subscription = match client.subscribe(format!("{prefix}>")).await {
        Ok(subscription) => subscription,
        Err(error) => {
            tracing::warn!(%error, "session changes: cannot subscribe; waiting sessions are re-checked on a timer");
            return;
        }
    };
    loop {
        let message = tokio::select! {
            message = subscription.next() => message,
            () = tokio::time::sleep(Duration::from_secs(5)) => {
                if sender.receiver_count() == 0 {
                    return;
                }
                continue;
            }
        };
        let Some(message) = message else { return };
        let Some(session) = message.subject.strip_prefix(prefix.as_str()).and_then(decode_key) else {
            continue;
        };
        if sender.send(session.into()).is_err() {
            return;
        }
    }
}
