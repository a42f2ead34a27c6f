//! Liveness and readiness, as the app's lifecycle and the broker connection
//! change.

use tokio::sync::watch;

/// Where the app is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Declaring queues and starting consumers.
    Starting,
    /// Consuming.
    Running,
    /// Shutdown began: no new messages, in-flight handlers finishing.
    Draining,
    /// Everything settled and the connection closed.
    Stopped,
}

/// Readiness of a running app: ready when connected, consuming and not
/// draining. Cheap to clone; reflects changes as they happen.
#[derive(Clone, Debug)]
pub struct Health {
    phase: watch::Receiver<Phase>,
    connected: watch::Receiver<bool>,
}

impl Health {
    pub(crate) fn new(phase: watch::Receiver<Phase>, connected: watch::Receiver<bool>) -> Self {
        Health { phase, connected }
    }

    /// The lifecycle phase.
    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Whether the broker connection is up.
    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// Whether the app should receive traffic: connected, consuming, not draining.
    pub fn is_ready(&self) -> bool {
        self.is_connected() && self.phase() == Phase::Running
    }
}

impl Health {
    /// Waits until the phase or the connection changes; `false` once
    /// neither can change any more.
    pub(crate) async fn changed(&mut self) -> bool {
        tokio::select! {
            changed = self.phase.changed() => changed.is_ok(),
            changed = self.connected.changed() => changed.is_ok(),
        }
    }
}
