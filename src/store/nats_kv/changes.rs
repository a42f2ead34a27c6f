//! Session change notifications: a worker that ends a turn or moves a
//! session while another worker may wait for it (the record says so: a
//! number of it was ever reported early, or it is held) publishes the session's KV key on the changes
//! subject, `wharf.store.<sessions bucket>.changed`; one subscription per
//! process relays it to the routes waiting on that session. Turns nobody
//! waits for announce nothing, and the bucket's own writes are not
//! watched.

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
        runtime.spawn(relay_changes(
            self.client.clone(),
            self.changes_subject(),
            sender.clone(),
        ));
        *changes = Some(sender);
        Some(receiver)
    }
}

impl NatsKvStore {
    /// The subject session changes are announced on.
    pub(super) fn changes_subject(&self) -> String {
        let [_, bucket] = self.bucket_names();
        format!("wharf.store.{bucket}.changed")
    }

    /// Tells every worker that the session of `kv_key` (`s.<enc(session)>`)
    /// changed. A lost announcement only delays a waiting worker until its
    /// watcher looks again.
    pub(super) async fn announce(&self, kv_key: &str) {
        let Some(session) = kv_key.strip_prefix("s.") else {
            return;
        };
        let payload = bytes::Bytes::copy_from_slice(session.as_bytes());
        if let Err(error) = self.client.publish(self.changes_subject(), payload).await {
            tracing::debug!(error = %crate::error::Chain(&error), "announcing a session change failed");
        }
    }
}

/// Relays the names of sessions announced on `subject` until nobody
/// listens.
async fn relay_changes(
    client: async_nats::Client,
    subject: String,
    sender: tokio::sync::broadcast::Sender<std::sync::Arc<str>>,
) {
    use futures_util::StreamExt;
    let mut subscription = match client.subscribe(subject).await {
        Ok(subscription) => subscription,
        Err(error) => {
            tracing::warn!(error = %crate::error::Chain(&error), "session changes: cannot subscribe; waiting sessions are re-checked on a timer");
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
        let Some(session) = std::str::from_utf8(&message.payload).ok().and_then(decode_key) else {
            continue;
        };
        if sender.send(session.into()).is_err() {
            return;
        }
    }
}
