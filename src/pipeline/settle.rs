//! The settle step: every path through the pipeline ends here, in exactly
//! one settlement of its delivery and one counted outcome. A job that is not
//! run now goes back to the broker: deferred for later, or given back at
//! shutdown, neither using up an attempt.

use super::{Handled, Job, Pipeline, TurnEnd};
use crate::transport::{Delivery, Settlement};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

impl<S: Send + Sync + 'static> Pipeline<S> {
    /// Shutdown: the handler did not finish, the message goes back.
    pub(super) async fn give_back(self: &Arc<Self>, mut job: Job) {
        self.release_claim(&job).await;
        self.session_end(&mut job, TurnEnd::Abandoned).await;
        self.settle(job.delivery, Settlement::Return, Handled::Returned)
            .await;
    }

    /// Not runnable now: back to the broker for later, no attempt used.
    pub(super) async fn defer(self: &Arc<Self>, job: Job, why: &str) {
        self.defer_for(job, why, self.defer_delay).await;
    }

    /// [`defer`](Self::defer) for `delay`.
    pub(super) async fn defer_for(self: &Arc<Self>, mut job: Job, why: &str, delay: Duration) {
        if self.lifecycle.stopping() {
            return self.give_back(job).await;
        }
        tracing::debug!(why, ?delay, "message deferred");
        self.release_claim(&job).await;
        self.session_end(&mut job, TurnEnd::Abandoned).await;
        self.settle(job.delivery, Settlement::Defer { delay }, Handled::Deferred)
            .await;
    }

    /// Settles `delivery` and counts `outcome` once the broker has it.
    pub(super) fn settle(
        &self,
        delivery: Delivery,
        settlement: Settlement,
        outcome: Handled,
    ) -> impl Future<Output = ()> + Send + '_ {
        let settled = self.settle_ok(delivery, settlement, outcome);
        async move {
            settled.await;
        }
    }

    // Not async up to the settle call: the delivery and settlement are
    // handed to the transport before the future is made, so the futures of
    // every message's path do not keep room for them.
    pub(super) fn settle_ok(
        &self,
        delivery: Delivery,
        settlement: Settlement,
        outcome: Handled,
    ) -> impl Future<Output = bool> + Send + '_ {
        let settling = delivery.settle(settlement);
        async move {
            match settling.await {
                Ok(()) => {
                    self.observe.handled(outcome);
                    true
                }
                Err(error) => {
                    // The broker still holds the message and will deliver it
                    // again; nothing is lost, and nothing is counted as done.
                    tracing::warn!(%error, ?outcome, "settling failed; the broker will redeliver");
                    false
                }
            }
        }
    }
}
