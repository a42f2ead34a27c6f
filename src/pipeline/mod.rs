//! The transport-neutral pipeline, one small module per step:
//!
//! decode ([`validate`]) → session order ([`session`]) → idempotency
//! ([`dedup`]) → handler ([`invoke`]) → reply ([`reply`]) → settle
//! ([`settle`]; a failed attempt is retried or dead-lettered by [`failure`],
//! with [`retry`] deciding) → metrics and tracing ([`observe`]) around all
//! of it. A [`job`] carries each delivery through the steps, and [`lease`]
//! renews the claims and turns it holds in the store. This file assembles a
//! route's pipeline and takes each message along its main path.
//!
//! Session order comes before idempotency: a message first waits for its
//! turn, then claims its key, so that a duplicate is acked in its turn and
//! its session moves past it (docs/semantics.md, "The pipeline").
//!
//! Every path through it ends in exactly one settlement of the delivery and
//! one counted outcome.

pub(crate) mod backoff;
mod dedup;
mod failure;
mod invoke;
mod job;
mod lease;
mod observe;
mod reply;
pub(crate) mod retry;
pub(crate) mod route_options;
mod session;
mod settle;
mod store_retry;
mod validate;

pub(crate) use observe::Handled;
pub(crate) use settle::{SettleEvent, SettleListener};

use crate::error::{BrokerError, Failure};
use crate::handler::BoxedHandler;
use crate::handler::extract::Incoming;
use crate::handler::route_shared::{RouteShared, scoped_key};
use crate::ops::stats::RouteStats;
use crate::pipeline::route_options::{GapPolicy, RouteOptions};
use crate::transport::{BoxFuture, Delivery, Settlement};
use crate::util::log_text::Logged;
use crate::wire::codec::Codec;
use crate::wire::dead_letter_reason::DeadLetterReason;
use crate::wire::trace_context::TraceContext;
use bytes::Bytes;
use futures_util::FutureExt;
use invoke::Invocation;
use job::{Job, Keys};
use observe::Observer;
use retry::RetryPolicy;
use session::{SessionGate, TurnEnd};
use std::borrow::Cow;
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
    /// Told of each settlement (`wharf::testing`); see [`settle`].
    settle_listener: Option<SettleListener>,
}

impl<S: Send + Sync + 'static> Pipeline<S> {
    pub(crate) fn new(
        shared: RouteShared,
        handler: BoxedHandler<S>,
        state: S,
        options: &RouteOptions,
        lifecycle: Lifecycle,
        settle_listener: Option<SettleListener>,
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
            settle_listener,
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
                let failure = Failure {
                    permanent: true,
                    kind: rejection.kind.unwrap_or(Cow::Borrowed(rejection.reason.as_str())),
                    message: rejection.message,
                    details: None,
                };
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
}
