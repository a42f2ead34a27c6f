//! The transport-neutral pipeline, one small module per step:
//!
//! decode ([`validate`]) → session order ([`session`]) → idempotency
//! ([`dedup`]) → handler ([`invoke`]) → reply ([`reply`]) → settle
//! ([`settle`], with [`retry`] deciding) → metrics and tracing ([`observe`])
//! around all of it.
//!
//! Session order comes before idempotency: a message first waits for its
//! turn, then claims its key, so that a duplicate is acked in its turn and
//! its session moves past it (docs/semantics.md, "The pipeline").
//!
//! Every path through it ends in exactly one settlement of the delivery and
//! one counted outcome.

pub(crate) mod backoff;
mod dedup;
mod invoke;
mod lease;
mod observe;
mod reply;
pub(crate) mod retry;
pub(crate) mod route_options;
mod session;
mod settle;
mod validate;

pub(crate) use observe::Handled;

use crate::error::{BrokerError, Failure};
use crate::handler::BoxedHandler;
use crate::handler::extract::Incoming;
use crate::handler::route_shared::{RouteShared, scoped_key};
use crate::ops::stats::RouteStats;
use crate::pipeline::route_options::{GapPolicy, RouteOptions};
use crate::store::{ClaimToken, StoredReply};
use crate::transport::{BoxFuture, Delivery, Settlement};
use crate::util::log_text::{Logged, Shortened};
use crate::wire::codec::Codec;
use crate::wire::dead_letter_reason::DeadLetterReason;
use crate::wire::error_body::ErrorBody;
use crate::wire::trace_context::TraceContext;
use bytes::Bytes;
use futures_util::FutureExt;
use invoke::Invocation;
use observe::Observer;
use retry::{Decision, RetryPolicy};
use session::{Baton, SessionGate, TurnEnd};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// A handler that finishes on its first poll but takes longer than this has
/// blocked its thread (CPU work or a blocking call without awaiting). Polled
/// in the consumer, it would stop the route from taking further messages
/// meanwhile, so its route switches to a task per delivery.
const BLOCKING: Duration = Duration::from_millis(1);

/// Blocking runs, of the last eight that finished on their first poll,
/// before a route switches to a task per delivery.
const BLOCKING_STRIKES: u32 = 3;

fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
}

/// A delivery on its way through the pipeline.
pub(crate) struct Job {
    delivery: Delivery,
    codec: Codec,
    /// Idempotency and session state, boxed: most messages have neither, and
    /// the job is moved through every step.
    keys: Option<Box<Keys>>,
    /// This handling's place in the message's trace, when it carries one:
    /// the parent of its reply and of what its handler publishes.
    trace: Option<Arc<TraceContext>>,
}

/// A job's idempotency and session state.
#[derive(Default)]
struct Keys {
    /// Scoped idempotency key, and the claim once taken.
    idempotency_key: Option<String>,
    claim: Option<ClaimToken>,
    /// Scoped session key and sequence number, when session order applies.
    session: Option<(String, u64)>,
    /// The validated `sequence` header, for `Meta`.
    sequence: Option<u64>,
    /// The session's turn (lease) is held by this job.
    turn: bool,
    /// The session's local baton, while this job holds it.
    baton: Option<Baton>,
    /// Renews the idempotency claim while the job holds it.
    claim_hold: Option<lease::LeaseHold>,
    /// Renews the session's turn while the job holds it.
    turn_hold: Option<lease::LeaseHold>,
}

impl Job {
    fn new(
        delivery: Delivery,
        codec: Codec,
        keys: Option<Box<Keys>>,
        trace: Option<Arc<TraceContext>>,
    ) -> Self {
        Job {
            delivery,
            codec,
            keys,
            trace,
        }
    }

    /// Carries the job's trace (if any) on to a message it sends.
    fn stamp(&self, message: &mut crate::wire::message::Message) {
        if let Some(trace) = &self.trace {
            trace.stamp(message);
        }
    }

    fn keys_mut(&mut self) -> &mut Keys {
        self.keys.get_or_insert_with(Box::default)
    }

    fn idempotency_key(&self) -> Option<&str> {
        self.keys.as_ref()?.idempotency_key.as_deref()
    }

    fn claim(&self) -> Option<ClaimToken> {
        self.keys.as_ref()?.claim
    }

    fn session(&self) -> Option<&(String, u64)> {
        self.keys.as_ref()?.session.as_ref()
    }

    fn sequence(&self) -> Option<u64> {
        self.keys.as_ref()?.sequence
    }

    fn turn(&self) -> bool {
        self.keys.as_ref().is_some_and(|k| k.turn)
    }

    fn take_baton(&mut self) -> Option<Baton> {
        self.keys.as_mut()?.baton.take()
    }
}

/// Lifecycle signals shared by all routes of an app.
#[derive(Clone, Default)]
pub(crate) struct Lifecycle {
    /// Stop taking messages (drain begins); see [`Lifecycle::stop`].
    pub(crate) stop: CancellationToken,
    /// Set with `stop`, for the consumers' check before each message:
    /// `CancellationToken::is_cancelled` takes the token's lock.
    stopping: Arc<AtomicBool>,
    /// Grace period over: abandon running handlers.
    pub(crate) abandon: CancellationToken,
    /// Every task that holds a delivery.
    pub(crate) tasks: TaskTracker,
}

impl Lifecycle {
    /// Stops taking messages: the drain begins.
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.stop.cancel();
    }

    /// Whether [`stop`](Self::stop) was called.
    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}

/// One route's pipeline.
pub(crate) struct Pipeline<S> {
    pub(crate) shared: Arc<RouteShared>,
    handler: BoxedHandler<S>,
    state: S,
    limits: validate::Limits,
    policy: RetryPolicy,
    timeout: Option<Duration>,
    lease: Duration,
    /// Renews the claims and turns jobs hold in the store.
    leases: Arc<lease::Leases>,
    window: Duration,
    defer_delay: Duration,
    gap_timeout: Duration,
    gap_policy: GapPolicy,
    sessions: Arc<SessionGate>,
    observe: Observer,
    /// Concurrency slots; a delivery holds one only while its handler runs.
    pub(crate) slots: Arc<Semaphore>,
    /// Run every delivery in its own task instead of first polling it in the
    /// consumer: set once a handler has blocked (see [`BLOCKING`]).
    pub(crate) spawn_first: AtomicBool,
    /// The last eight first-poll handler runs, one bit each: 1 = it blocked.
    recent_runs: AtomicU8,
    /// The pipeline (not a handler) panicked since the consumer last looked.
    pub(crate) panicked: AtomicBool,
    pub(crate) lifecycle: Lifecycle,
}

impl<S: Send + Sync + 'static> Pipeline<S> {
    pub(crate) fn new(
        shared: RouteShared,
        handler: BoxedHandler<S>,
        state: S,
        options: &RouteOptions,
        lifecycle: Lifecycle,
    ) -> Self {
        let observe = Observer::new(&shared.queue, &shared.handler_name);
        Pipeline {
            handler,
            state,
            limits: validate::Limits {
                max_body_bytes: options.max_body_bytes,
                idempotency: options.idempotency,
                sessions: options.sessions,
            },
            policy: RetryPolicy {
                max_attempts: options.max_attempts,
                backoff: options.backoff,
            },
            timeout: options.timeout,
            lease: options.effective_lease(),
            leases: lease::Leases::new(shared.store.clone(), options.effective_lease()),
            window: options.idempotency_window,
            defer_delay: options.defer_delay,
            gap_timeout: options.gap_timeout,
            gap_policy: options.gap_policy,
            // Waiting messages hold no concurrency slot but do count against
            // prefetch. Up to prefetch − 1 may wait, so the consumer can
            // always receive the message a gap waits for; past that, the one
            // furthest from its turn goes back to the broker.
            sessions: Arc::new(SessionGate::new(
                options.effective_prefetch().saturating_sub(1),
                observe.buffer_reporter(),
            )),
            observe,
            slots: Arc::new(Semaphore::new(options.concurrency)),
            spawn_first: AtomicBool::new(false),
            recent_runs: AtomicU8::new(0),
            panicked: AtomicBool::new(false),
            lifecycle,
            shared: Arc::new(shared),
        }
    }

    pub(crate) fn stats(&self) -> RouteStats {
        self.observe.stats.snapshot()
    }

    /// Takes one delivery through every step. The caller holds a
    /// concurrency slot for the duration.
    pub(crate) fn process(self: &Arc<Self>, delivery: Delivery) -> impl Future<Output = ()> + Send + '_ {
        let message = &delivery.message;
        // Publishers choose the ids, at any length: logs get a bounded part
        // (worked out only when the span is enabled).
        let span = tracing::info_span!(
            "wharf.message",
            queue = %self.shared.queue,
            handler = %self.shared.handler_name,
            message_id = message.message_id.as_deref().map(Logged::id).as_ref().map(Logged::value),
            correlation_id = message.correlation_id.as_deref().map(Logged::id).as_ref().map(Logged::value),
            session = message.session_id().map(Logged::id).as_ref().map(Logged::value),
            attempt = delivery.delivery_count,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
            parent_span_id = tracing::field::Empty,
        );
        let trace = TraceContext::of(message).map(|received| {
            let handling = received.child();
            if !span.is_disabled() {
                span.record("trace_id", format_args!("{:032x}", handling.trace_id));
                span.record("span_id", format_args!("{:016x}", handling.span_id));
                span.record("parent_span_id", format_args!("{:016x}", received.span_id));
            }
            Arc::new(handling)
        });
        // A panic outside the handler (handlers' own panics are failed
        // attempts) must not end the consumer: the job is dropped, so its
        // delivery goes back to the broker and its session baton is put
        // down; the consumer carries on. Reported inside the message's span,
        // which names it.
        AssertUnwindSafe(self.process_inner(delivery, trace))
            .catch_unwind()
            .map(|result| {
                if let Err(panic) = result {
                    self.panicked.store(true, Ordering::Relaxed);
                    tracing::error!(
                        queue = %self.shared.queue,
                        panic = panic_text(&*panic),
                        "the pipeline panicked; the message goes back to the broker"
                    );
                }
            })
            .instrument(span)
    }

    // The steps each message takes are awaited here, in the future
    // allocated per message; what only some messages need is decided by
    // plain functions and awaited as boxed futures, so that the values it
    // needs do not take room in every message's future. A boxed future is
    // bound with `let` before it is awaited: awaited in the same expression,
    // the unboxed future it was made from stays a temporary alive across the
    // await and keeps a slot in this future (measured: 1,120 bytes instead
    // of 952; `running::tests` checks the size).
    async fn process_inner(self: &Arc<Self>, delivery: Delivery, trace: Option<Arc<TraceContext>>) {
        self.observe.received();
        let job = match self.admit(delivery, trace) {
            Ok(job) => job,
            Err(dead_letter) => return dead_letter.await,
        };
        // Session order comes before idempotency: a message takes its turn
        // first, so that a duplicate, acked without running, still uses up
        // its sequence number and its session moves on.
        let job = if job.session().is_some() {
            let admit = Box::pin(self.session_admit(job));
            let Some(job) = admit.await else {
                return;
            };
            job
        } else {
            job
        };
        let job = if job.idempotency_key().is_some() {
            let admit = Box::pin(self.dedup_admit(job));
            let Some(job) = admit.await else {
                return;
            };
            job
        } else {
            job
        };
        self.run(job).await
    }

    /// The job of a delivery whose envelope is valid and that has attempts
    /// left; else its way to the dead-letter queue.
    fn admit(
        self: &Arc<Self>,
        delivery: Delivery,
        trace: Option<Arc<TraceContext>>,
    ) -> Result<Job, BoxFuture<'_, ()>> {
        if delivery.delivery_count > self.policy.max_attempts {
            return Err(Box::pin(self.out_of_attempts(delivery, trace)));
        }
        let queue = &self.shared.queue;
        let checked = match delivery.malformed_reason() {
            Some(why) => Err(validate::Invalid {
                reason: DeadLetterReason::InvalidHeader,
                message: why.to_owned(),
            }),
            None => validate::check(&delivery.message, &self.limits),
        };
        let checked = match (checked, delivery.message.reply_to.as_deref()) {
            (Ok(envelope), Some(address)) => self.check_reply_address(address).map(|()| envelope),
            (checked, _) => checked,
        };
        let admitted = checked.map(|envelope| {
            let keys = (envelope.idempotency_key.is_some() || envelope.session.is_some()).then(|| {
                let ordered = envelope.session.filter(|_| envelope.ordered);
                Box::new(Keys {
                    idempotency_key: envelope.idempotency_key.map(|key| scoped_key(queue, key)),
                    session: ordered.map(|(session, n)| (scoped_key(queue, session), n)),
                    sequence: envelope.session.map(|(_, n)| n),
                    ..Keys::default()
                })
            });
            (envelope.codec, keys)
        });
        match admitted {
            Ok((codec, keys)) => Ok(Job::new(delivery, codec, keys, trace)),
            Err(invalid) => {
                // The envelope is unreadable, so the error reply (if any) is JSON.
                let job = Job::new(delivery, Codec::Json, None, trace);
                let failure = Failure::new(true, invalid.reason.as_str(), invalid.message);
                Err(Box::pin(async move {
                    self.dead_letter(job, invalid.reason, &failure, false).await;
                }))
            }
        }
    }

    /// Records whether a handler run that finished on its first poll
    /// blocked its thread (see [`BLOCKING`]). A handler that blocks does so
    /// on most runs; a thread that was merely descheduled (a busy machine, a
    /// CPU-throttled pod) makes a run look slow now and then. So a route
    /// switches to a task per delivery when [`BLOCKING_STRIKES`] of the last
    /// eight such runs blocked.
    fn note_inline_run(&self, took: Duration) {
        if self.spawn_first.load(Ordering::Relaxed) {
            return;
        }
        let blocked = u8::from(took > BLOCKING);
        let before = self.recent_runs.load(Ordering::Relaxed);
        let recent = (before << 1) | blocked;
        if recent != before {
            self.recent_runs.store(recent, Ordering::Relaxed);
        }
        if blocked == 1
            && recent.count_ones() >= BLOCKING_STRIKES
            && !self.spawn_first.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                ?took,
                "handler runs without awaiting for long stretches; each message now gets its own \
                 task so the route's handlers still run in parallel (use spawn_blocking for CPU work)"
            );
        }
    }

    /// Whether replies can ever go to `address` on this broker; else the
    /// reason to dead-letter the message before it runs: no run could be
    /// answered, so none is made (`docs/wire-format.md`, "Reply addresses").
    fn check_reply_address(&self, address: &str) -> Result<(), validate::Invalid> {
        self.shared
            .transport
            .check_reply_address(address)
            .map_err(|why| validate::Invalid {
                reason: DeadLetterReason::Reply,
                message: format!(
                    "reply address {address:?} can never be used on {}: {why}; not run",
                    self.shared.transport.kind()
                ),
            })
    }

    /// A message with no attempts left: dead-lettered before any step can
    /// fail on it again. Either it arrived with them used up (its
    /// `wharf-attempt`, whoever wrote it, is at or above `max_attempts`),
    /// or this worker and its broker counted more deliveries than attempts:
    /// a delivery was dropped unsettled (its worker died or the pipeline
    /// panicked). Only the second is reported as `redelivered`: a header
    /// says how many attempts were made, not that a worker died.
    async fn out_of_attempts(self: &Arc<Self>, mut delivery: Delivery, trace: Option<Arc<TraceContext>>) {
        let max = self.policy.max_attempts;
        // Read again here, off the common path: a malformed value was
        // not counted (the transport flagged the delivery instead).
        let carried = crate::wire::attempt_header::carried(
            delivery.message.header(crate::wire::headers::names::ATTEMPT),
        )
        .unwrap_or(0);
        let failure = if carried >= max {
            // The dead letter says how many attempts were made: the ones
            // it came with, as this delivery was not one.
            delivery.delivery_count = carried;
            Failure::new(
                true,
                "attempts-used-up",
                format!(
                    "arrived with wharf-attempt {carried}: {carried} attempts (failed runs, or deliveries \
                     never settled) were made before this delivery (max_attempts is {max}); not run"
                ),
            )
        } else {
            Failure::new(
                true,
                "redelivered",
                format!(
                    "delivered {} times, more than max_attempts ({max}): failed attempts and deliveries \
                     that were never settled (a worker died or the pipeline panicked); not run",
                    delivery.delivery_count
                ),
            )
        };
        let job = Job::new(delivery, Codec::Json, None, trace);
        self.dead_letter(job, DeadLetterReason::MaxAttempts, &failure, false)
            .await;
    }

    /// The pipeline after session order, for a job whose turn came.
    async fn admitted(self: &Arc<Self>, job: Job) {
        let Some(job) = self.dedup_admit(job).await else {
            return;
        };
        self.run(job).await
    }

    /// Runs the handler of an admitted job and settles the result.
    async fn run(self: &Arc<Self>, job: Job) {
        let attempt = job.delivery.delivery_count.max(1);
        let message = &job.delivery.message;
        let wants_reply = message.reply_to.is_some() || job.claim().is_some();
        self.observe.started();
        let started = Instant::now();
        let (invocation, at_once) = {
            // Borrows the job: scoped to the handler run.
            let incoming = Incoming {
                message,
                codec: job.codec,
                attempt,
                sequence: job.sequence(),
                reply: wants_reply.then_some(job.codec),
                route: &self.shared,
                trace: job.trace.as_ref(),
            };
            invoke::invoke(
                &self.handler,
                &incoming,
                &self.state,
                self.timeout,
                &self.lifecycle.abandon,
            )
            .await
        };
        let took = started.elapsed();
        self.observe.finished(took);
        if at_once {
            self.note_inline_run(took);
        }
        match invocation {
            Invocation::Done(reply) => self.succeed(job, reply).await,
            other => self.not_done(job, attempt, other).await,
        }
    }

    /// What follows a handler run that did not succeed.
    fn not_done(self: &Arc<Self>, job: Job, attempt: u32, invocation: Invocation) -> BoxFuture<'_, ()> {
        match invocation {
            Invocation::Done(reply) => Box::pin(self.succeed(job, reply)),
            Invocation::Failed(failure) => Box::pin(self.fail(job, attempt, failure)),
            Invocation::Rejected(rejection) => Box::pin(async move {
                let failure = Failure::new(true, rejection.reason.as_str(), rejection.message);
                self.dead_letter(job, rejection.reason, &failure, true).await;
            }),
            Invocation::Aborted => Box::pin(self.give_back(job)),
        }
    }

    // Every successful message goes through here, inside the future
    // allocated per message: what only some messages need (a failed reply,
    // an idempotency record, a session turn) is in futures of its own, boxed
    // when needed, so that this one stays small.
    async fn succeed(self: &Arc<Self>, mut job: Job, reply: Option<Bytes>) {
        if let Some(sent) = self.send_reply(&job, reply.as_ref()) {
            if let Err(error) = sent.await {
                let failed = Box::pin(self.reply_failed(job, error));
                return failed.await;
            }
            self.observe.replied(true);
        }
        if job.claim().is_some() {
            let complete = Box::pin(self.complete(&job, reply));
            complete.await;
        }
        if job.turn() {
            let end = Box::pin(self.session_end(&mut job, TurnEnd::Finished));
            end.await;
        }
        self.settle(job.delivery, Settlement::Ack, Handled::Acked).await;
    }

    /// Publishes the handler's reply, if it has one and the request wants
    /// it. (Not async: the reply message is built and handed over before
    /// the caller awaits, so the caller's future does not keep room for it.)
    fn send_reply(&self, job: &Job, reply: Option<&Bytes>) -> Option<BoxFuture<'_, Result<(), BrokerError>>> {
        let (Some(address), Some(body)) = (job.delivery.message.reply_to.as_deref(), reply) else {
            return None;
        };
        let mut response = reply::ok(&job.delivery.message, body.clone(), job.codec.content_type());
        job.stamp(&mut response);
        Some(self.shared.transport.reply(address, response))
    }

    /// The handler succeeded but its reply could not be published: a
    /// failed attempt, unless the broker refused the address itself, which
    /// no retry can change (dead-lettered at once, reason `reply`).
    async fn reply_failed(self: &Arc<Self>, job: Job, error: BrokerError) {
        if error.kind() == crate::error::BrokerErrorKind::Address {
            let address = job.delivery.message.reply_to.as_deref().unwrap_or_default();
            let failure = Failure::new(
                true,
                "reply",
                format!("the broker refused reply address {address:?}: {error}"),
            );
            self.dead_letter(job, DeadLetterReason::Reply, &failure, true)
                .await;
            return;
        }
        tracing::warn!(%error, "reply could not be published; the message will be retried");
        let failure = Failure::new(false, "reply", error.to_string());
        let attempt = job.delivery.delivery_count.max(1);
        self.fail(job, attempt, failure).await
    }

    /// Records a claimed idempotency key as done, with the reply to give
    /// its duplicates.
    async fn complete(&self, job: &Job, reply: Option<Bytes>) {
        let (Some(key), Some(token)) = (job.idempotency_key(), job.claim()) else {
            return;
        };
        let stored = reply.map(|body| StoredReply {
            body,
            content_type: job.codec.content_type().into(),
        });
        if let Err(error) = self.shared.store.complete(key, token, stored, self.window).await {
            tracing::warn!(%error, "idempotency record not saved; a duplicate may run again");
        }
    }

    async fn fail(self: &Arc<Self>, mut job: Job, attempt: u32, failure: Failure) {
        self.observe.failure_kind(&failure.kind);
        match self.policy.decide(attempt, &failure) {
            Decision::Retry(delay) => {
                tracing::info!(kind = %failure.kind, error = %Shortened::error(&failure.message), ?delay, "attempt {attempt} failed; retrying");
                self.release_claim(&job).await;
                self.session_end(&mut job, TurnEnd::Retrying).await;
                self.settle(job.delivery, Settlement::Retry { delay }, Handled::Retried)
                    .await;
            }
            Decision::DeadLetter(reason) => {
                self.dead_letter(job, reason, &failure, true).await;
            }
        }
    }

    /// Sends a message to the dead-letter queue, with an error reply to a
    /// request. `advance_session` moves its session past it once stored (not
    /// for session-gap dead letters, whose session the gap policy moves).
    /// Returns whether the dead letter was stored.
    async fn dead_letter(
        self: &Arc<Self>,
        mut job: Job,
        reason: DeadLetterReason,
        failure: &Failure,
        advance_session: bool,
    ) -> bool {
        tracing::warn!(%reason, kind = %failure.kind, error = %Shortened::error(&failure.message), "message dead-lettered");
        let message = &job.delivery.message;
        // No error reply to an address that cannot take one.
        let reply_to = message
            .reply_to
            .as_deref()
            .filter(|_| reason != DeadLetterReason::Reply);
        if let Some(address) = reply_to {
            let body = ErrorBody {
                kind: failure.kind.to_string(),
                message: failure.message.clone(),
                details: failure.details.clone(),
            };
            let mut response = reply::error(message, job.codec, &body);
            job.stamp(&mut response);
            match self.shared.transport.reply(address, response).await {
                Ok(()) => self.observe.replied(false),
                Err(error) => tracing::warn!(%error, "error reply could not be published"),
            }
        }
        self.release_claim(&job).await;
        let dead = settle::dead_letter_message(
            message,
            &settle::Failed {
                reason,
                error_kind: &failure.kind,
                error_message: &failure.message,
                queue: &self.shared.queue,
                handler: &self.shared.handler_name,
                attempts: job.delivery.delivery_count,
            },
        );
        let outcome = if reason.is_bad_input() {
            Handled::Rejected
        } else {
            Handled::DeadLettered
        };
        self.observe.dead_letter(reason);
        let baton = job.take_baton();
        let turn = job.turn();
        let settled = self
            .settle_ok(
                job.delivery,
                Settlement::DeadLetter {
                    message: Box::new(dead),
                },
                outcome,
            )
            .await;
        // Only once the dead letter is stored may the session move past it;
        // otherwise a redelivery would be acked as stale and lost.
        let end = if advance_session && settled {
            TurnEnd::Finished
        } else {
            TurnEnd::Abandoned
        };
        let session = job.keys.as_ref().and_then(|k| k.session.as_ref());
        self.end_turn(session, turn, baton, end).await;
        settled
    }

    /// Shutdown: the handler did not finish, the message goes back.
    async fn give_back(self: &Arc<Self>, mut job: Job) {
        self.release_claim(&job).await;
        self.session_end(&mut job, TurnEnd::Abandoned).await;
        self.settle(job.delivery, Settlement::Return, Handled::Returned)
            .await;
    }

    /// Not runnable now: back to the broker for later, no attempt used.
    async fn defer(self: &Arc<Self>, job: Job, why: &str) {
        self.defer_for(job, why, self.defer_delay).await;
    }

    /// [`defer`](Self::defer) for `delay`.
    async fn defer_for(self: &Arc<Self>, mut job: Job, why: &str, delay: Duration) {
        if self.lifecycle.stopping() {
            return self.give_back(job).await;
        }
        tracing::debug!(why, ?delay, "message deferred");
        self.release_claim(&job).await;
        self.session_end(&mut job, TurnEnd::Abandoned).await;
        self.settle(job.delivery, Settlement::Defer { delay }, Handled::Deferred)
            .await;
    }

    async fn release_claim(&self, job: &Job) {
        if let (Some(key), Some(token)) = (job.idempotency_key(), job.claim())
            && let Err(error) = self.shared.store.release(key, token).await
        {
            tracing::warn!(%error, "idempotency claim not released; it expires with its lease");
        }
    }

    fn settle(
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
    fn settle_ok(
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
