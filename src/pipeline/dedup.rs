//! The idempotency step: a key that ran to completion is not run again; a
//! duplicate request gets the original reply; concurrent duplicates wait.

use super::lease::Held;
use super::store_retry::{record_within, recording_limit};
use super::{Handled, Job, Pipeline, TurnEnd, reply};
use crate::store::{Claim, StoredReply};
use crate::transport::Settlement;
use bytes::Bytes;
use std::sync::Arc;

impl<S: Send + Sync + 'static> Pipeline<S> {
    /// Claims the job's idempotency key. Returns the job if it should run.
    pub(super) async fn dedup_admit(self: &Arc<Self>, mut job: Job) -> Option<Job> {
        let Some(key) = job.idempotency_key() else {
            return Some(job);
        };
        match self.shared.store.claim(key, self.lease).await {
            Ok(Claim::Acquired(token)) => {
                let held = Held::Claim {
                    key: key.to_owned(),
                    token,
                };
                let hold = self.leases.hold(held);
                let keys = job.keys_mut();
                keys.claim = Some(token);
                keys.claim_hold = Some(hold);
                Some(job)
            }
            Ok(Claim::Done(reply)) => {
                Box::pin(self.duplicate(job, reply)).await;
                None
            }
            // Running it now could run it twice; acking it could lose it if
            // the running copy fails. It comes back once that one is settled.
            Ok(Claim::InProgress) => {
                Box::pin(self.defer(job, "a message with the same idempotency key is running")).await;
                None
            }
            Err(error) => {
                tracing::warn!(error = %crate::error::Chain(&error), "idempotency store unavailable");
                Box::pin(self.defer(job, "idempotency store unavailable")).await;
                None
            }
        }
    }

    /// Acks a duplicate without running the handler; a request gets the
    /// original reply again. A session message still uses up its number.
    async fn duplicate(self: &Arc<Self>, mut job: Job, stored: Option<StoredReply>) {
        tracing::debug!("duplicate idempotency key; handler not run");
        let request = job.delivery.message.clone();
        if let Some(address) = request.reply_to.as_deref() {
            let mut response = match stored {
                Some(stored) => reply::ok(&request, stored.body, &stored.content_type),
                None => reply::ok(
                    &request,
                    crate::handler::outcome::unit_reply(job.codec),
                    job.codec.content_type(),
                ),
            };
            job.stamp(&mut response);
            if let Err(error) = self.shared.transport.reply(address, response).await {
                tracing::warn!(error = %crate::error::Chain(&error), "repeated reply could not be published");
                return self.defer(job, "reply publish failed").await;
            }
            self.observe.replied(true);
        }
        self.session_end(&mut job, TurnEnd::Finished).await;
        self.settle(job.delivery, Settlement::Ack, Handled::Duplicate)
            .await;
    }

    /// Records a claimed idempotency key as done, with the reply to give
    /// its duplicates.
    pub(super) async fn complete(&self, job: &Job, reply: Option<Bytes>) {
        let (Some(key), Some(token)) = (job.idempotency_key(), job.claim()) else {
            return;
        };
        let stored = reply.map(|body| StoredReply {
            body,
            content_type: job.codec.content_type().into(),
        });
        // The run happened: recorded even while the store fails over.
        let recorded = record_within(
            recording_limit(self.lease, self.gap_timeout),
            "idempotency record",
            || {
                self.shared
                    .store
                    .complete(key, token, stored.clone(), self.window)
            },
        )
        .await;
        if let Err(error) = recorded {
            tracing::warn!(error = %crate::error::Chain(&error), "idempotency record not saved; a duplicate may run again");
        }
    }

    pub(super) async fn release_claim(&self, job: &Job) {
        if let (Some(key), Some(token)) = (job.idempotency_key(), job.claim())
            && let Err(error) = self.shared.store.release(key, token).await
        {
            tracing::warn!(error = %crate::error::Chain(&error), "idempotency claim not released; it expires with its lease");
        }
    }
}
