//! Keeping a worker's store claims its own while it lives.
//!
//! An idempotency claim and a session's turn are leased in the store for
//! the route's lease (15 s by default), so that a crashed worker's claims
//! end by themselves. A live worker renews each one it holds every third of
//! the lease for as long as it holds it — a handler may run for many
//! leases — so the lease only bounds how long a dead worker blocks others.
//!
//! A job registers what it holds here ([`Leases::hold`]); the [`LeaseHold`]
//! it gets back stops the renewals when dropped, with the job, whatever
//! way the job ends. One task per route renews, and only while something
//! is held: it ends when nothing is, and the next hold starts another. A
//! renewal that finds the claim no longer held (completed, released, taken
//! over after its lease ran out) drops the entry; a store that cannot be
//! reached is tried again at the next round.

use crate::store::{ClaimToken, Store};
use slab::Slab;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// What a job holds in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Held {
    /// The idempotency claim of a (scoped) key.
    Claim { key: String, token: ClaimToken },
    /// The turn of a (scoped) session for a sequence number.
    Turn { session: String, sequence: u64 },
}

/// A route's held leases and its renewing task.
pub(crate) struct Leases {
    store: Arc<dyn Store>,
    lease: Duration,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// What is held, with the round it was taken in.
    entries: Slab<(Held, u64)>,
    round: u64,
    /// Whether the renewing task runs.
    renewing: bool,
}

/// One held lease, renewed until this is dropped.
pub(crate) struct LeaseHold {
    leases: Arc<Leases>,
    key: usize,
}

impl Drop for LeaseHold {
    fn drop(&mut self) {
        self.leases.inner().entries.try_remove(self.key);
    }
}

impl Leases {
    /// Leases of `lease` in `store`.
    pub(crate) fn new(store: Arc<dyn Store>, lease: Duration) -> Arc<Self> {
        Arc::new(Leases {
            store,
            lease,
            inner: Mutex::default(),
        })
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Renews `held` until the returned hold is dropped.
    pub(crate) fn hold(self: &Arc<Self>, held: Held) -> LeaseHold {
        let mut inner = self.inner();
        let round = inner.round;
        let key = inner.entries.insert((held, round));
        if !inner.renewing {
            inner.renewing = true;
            tokio::spawn(renew(self.clone()));
        }
        LeaseHold {
            leases: self.clone(),
            key,
        }
    }

    /// One round: what was held since before the previous one is due; ends
    /// the renewing (`None`) when nothing is held.
    fn due(&self) -> Option<Vec<(usize, Held)>> {
        let mut inner = self.inner();
        if inner.entries.is_empty() {
            inner.renewing = false;
            return None;
        }
        inner.round += 1;
        let round = inner.round;
        Some(
            inner
                .entries
                .iter()
                .filter(|(_, (_, since))| since + 1 < round)
                .map(|(key, (held, _))| (key, held.clone()))
                .collect(),
        )
    }

    /// Stops renewing the entry at `key` if it still holds `held` (its
    /// claim is no longer this worker's).
    fn forget(&self, key: usize, held: &Held) {
        let mut inner = self.inner();
        if let Some((entry, since)) = inner.entries.get_mut(key)
            && entry == held
        {
            // Left in place (its hold frees it), but never due again.
            *since = u64::MAX - 1;
        }
    }
}

/// Renews what `leases` holds every third of the lease until it holds
/// nothing.
async fn renew(leases: Arc<Leases>) {
    let period = (leases.lease / 3).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(period).await;
        let Some(due) = leases.due() else {
            return;
        };
        for (key, held) in due {
            let renewed = match &held {
                Held::Claim { key, token } => leases.store.renew_claim(key, *token, leases.lease).await,
                Held::Turn { session, sequence } => {
                    leases.store.session_renew(session, *sequence, leases.lease).await
                }
            };
            match renewed {
                Ok(true) => {}
                Ok(false) => {
                    tracing::debug!(?held, "no longer held in the store; not renewed any more");
                    leases.forget(key, &held);
                }
                Err(error) => {
                    tracing::warn!(error = %crate::error::Chain(&error), "renewing a lease in the store failed; trying again")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Claim, MemoryStore};

    #[tokio::test]
    async fn held_claims_are_renewed_until_the_hold_is_dropped() {
        let store = Arc::new(MemoryStore::new());
        let lease = Duration::from_millis(300);
        let leases = Leases::new(store.clone(), lease);
        let Claim::Acquired(token) = store.claim("q/k", lease).await.unwrap() else {
            panic!("acquired")
        };
        let hold = leases.hold(Held::Claim {
            key: "q/k".into(),
            token,
        });
        // Ten leases later, still this worker's.
        tokio::time::sleep(lease * 10).await;
        assert_eq!(store.claim("q/k", lease).await.unwrap(), Claim::InProgress);
        drop(hold);
        tokio::time::sleep(lease * 3).await;
        assert!(
            matches!(store.claim("q/k", lease).await.unwrap(), Claim::Acquired(_)),
            "no longer renewed once dropped: it expired"
        );
        assert!(
            !leases.inner().renewing,
            "the renewing task ended with nothing held"
        );
    }
}
