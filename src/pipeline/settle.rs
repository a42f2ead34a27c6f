//! The settle step: every path through the pipeline ends here, in exactly
//! one settlement of its delivery and one counted outcome. A job that is not
//! run now goes back to the broker: deferred for later, or given back at
//! shutdown, neither using up an attempt.
//!
//! A route may have a [`SettleListener`] (`wharf::testing` sets one): told
//! of every settlement once the broker has it, so that a test can await the
//! outcome of one message instead of polling counters.

use super::{Handled, Job, Pipeline, TurnEnd};
use crate::error::BrokerError;
use crate::transport::{BoxFuture, Delivery, Settlement};
use crate::wire::message::Message;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// A settlement the broker accepted, as a [`SettleListener`] is told of it.
pub(crate) struct SettleEvent<'a> {
    /// The message as delivered (the transport's own, not a copy).
    pub(crate) message: &'a Arc<Message>,
    /// Its delivery count: the attempt it was settled on.
    pub(crate) attempt: u32,
    pub(crate) outcome: Handled,
    /// The dead-letter copy stored, when it was dead-lettered.
    pub(crate) dead_letter: Option<&'a Message>,
}

/// Told of every settlement of a route once the broker has it; called in
/// the settling task, so it must be quick and must not block.
pub(crate) type SettleListener = Arc<dyn Fn(&SettleEvent<'_>) + Send + Sync>;

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
    // every message's path do not keep room for them. A listener wraps the
    // transport's settling future in one of its own, the same size here:
    // without one, settling costs what it did.
    pub(super) fn settle_ok(
        &self,
        delivery: Delivery,
        settlement: Settlement,
        outcome: Handled,
    ) -> impl Future<Output = bool> + Send + '_ {
        let settling = match &self.settle_listener {
            None => delivery.settle(settlement),
            Some(listener) => settle_and_tell(listener.clone(), delivery, settlement, outcome),
        };
        async move {
            match settling.await {
                Ok(()) => {
                    self.observe.handled(outcome);
                    true
                }
                Err(error) => {
                    // The broker still holds the message and will deliver it
                    // again; nothing is lost, and nothing is counted as done.
                    tracing::warn!(error = %crate::error::Chain(&error), ?outcome, "settling failed; the broker will redeliver");
                    false
                }
            }
        }
    }
}

/// Settles `delivery`, then tells `listener` if the broker accepted it.
fn settle_and_tell(
    listener: SettleListener,
    delivery: Delivery,
    settlement: Settlement,
    outcome: Handled,
) -> BoxFuture<'static, Result<(), BrokerError>> {
    let message = delivery.message.clone();
    let attempt = delivery.delivery_count;
    let dead_letter = match &settlement {
        Settlement::DeadLetter { message } => Some(message.as_ref().clone()),
        _ => None,
    };
    let settling = delivery.settle(settlement);
    Box::pin(async move {
        settling.await?;
        listener(&SettleEvent {
            message: &message,
            attempt,
            outcome,
            dead_letter: dead_letter.as_ref(),
        });
        Ok(())
    })
}
