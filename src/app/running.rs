//! A started app: consumer loops, stats, health and graceful shutdown.

use crate::error::BrokerError;
use crate::ops::health::{Health, Phase};
use crate::ops::http::HttpServer;
use crate::ops::stats::RouteStats;
use crate::pipeline::{Lifecycle, Pipeline};
use crate::transport::{BoxFuture, Delivery, DeliveryStream, Settlement, Transport};
use futures_util::StreamExt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Waker};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What the app needs of a route, whatever its state type.
pub(crate) trait RouteControl: Send + Sync {
    fn stats(&self) -> RouteStats;
    fn close_sessions(&self) -> BoxFuture<'_, ()>;
}

impl<S: Send + Sync + 'static> RouteControl for Arc<Pipeline<S>> {
    fn stats(&self) -> RouteStats {
        Pipeline::stats(self)
    }

    fn close_sessions(&self) -> BoxFuture<'_, ()> {
        Box::pin(Pipeline::close_sessions(self))
    }
}

/// How a shutdown went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShutdownReport {
    /// True if every in-flight handler finished within the grace period.
    pub drained: bool,
    /// Final counters of every route, by queue.
    pub routes: Vec<(String, RouteStats)>,
}

impl ShutdownReport {
    /// Final counters of the route on `queue` (all zero for an unknown queue).
    pub fn stats(&self, queue: &str) -> RouteStats {
        self.routes
            .iter()
            .find(|(q, _)| q == queue)
            .map(|(_, stats)| *stats)
            .unwrap_or_default()
    }
}

/// A running app, from [`App::start`](crate::App::start).
pub struct Running {
    transport: Arc<dyn Transport>,
    lifecycle: Lifecycle,
    grace: Duration,
    phase: watch::Sender<Phase>,
    routes: Vec<(String, Arc<dyn RouteControl>)>,
    consumers: Vec<JoinHandle<()>>,
    /// `/healthz`, `/readyz`, `/metrics`, when configured; serves until the
    /// app is dropped, through the drain.
    http: Option<HttpServer>,
    /// Ends the readiness, connection and queue-depth monitors.
    monitors: CancellationToken,
}

impl Running {
    pub(crate) fn new(transport: Arc<dyn Transport>, lifecycle: Lifecycle, grace: Duration) -> Self {
        Running {
            transport,
            lifecycle,
            grace,
            phase: watch::channel(Phase::Starting).0,
            routes: Vec::new(),
            consumers: Vec::new(),
            http: None,
            monitors: CancellationToken::new(),
        }
    }

    /// Serves `/healthz`, `/readyz` and `/metrics` on `addr` from now on.
    pub(crate) async fn serve_http(&mut self, addr: SocketAddr) -> Result<(), BrokerError> {
        let metrics = match crate::ops::metrics::exporter::install() {
            Ok(exporter) => Some(exporter),
            Err(error) => {
                tracing::warn!(error = %crate::error::Chain(&error), "/metrics will answer 503");
                None
            }
        };
        self.http = Some(HttpServer::start(addr, self.health(), metrics).await?);
        Ok(())
    }

    /// The address `/healthz`, `/readyz` and `/metrics` are served on, if
    /// they are (see [`App::http`](crate::App::http)).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(HttpServer::addr)
    }

    pub(crate) fn begin<S: Send + Sync + 'static>(
        mut self,
        routes: Vec<(String, Arc<dyn RouteControl>)>,
        streams: Vec<(Arc<Pipeline<S>>, DeliveryStream)>,
    ) -> Self {
        self.routes = routes;
        self.consumers = streams
            .into_iter()
            .map(|(pipeline, stream)| tokio::spawn(consume(pipeline, stream)))
            .collect();
        let queues = self.routes.iter().map(|(queue, _)| queue.clone()).collect();
        crate::ops::monitor::start(
            self.transport.clone(),
            self.health(),
            queues,
            self.monitors.clone(),
        );
        self.phase.send_replace(Phase::Running);
        self
    }

    /// Counters of the route on `queue` (all zero for an unknown queue).
    pub fn stats(&self, queue: &str) -> RouteStats {
        self.routes
            .iter()
            .find(|(q, _)| q == queue)
            .map(|(_, route)| route.stats())
            .unwrap_or_default()
    }

    /// Readiness and liveness.
    pub fn health(&self) -> Health {
        Health::new(self.phase.subscribe(), self.transport.connected())
    }

    /// Graceful shutdown: readiness goes false, consumers stop taking
    /// messages, early session arrivals go back to the broker, in-flight
    /// handlers get the grace period to finish; those still running are
    /// abandoned and their messages returned. Then held-back acks are sent.
    /// Nothing is acknowledged that did not finish.
    ///
    /// The broker connection stays open: other parts of the program (a
    /// request client) may share it. [`App::run`](crate::App::run) closes it;
    /// otherwise call [`Broker::close`](crate::Broker::close) when done.
    pub async fn shutdown(mut self) -> ShutdownReport {
        self.phase.send_replace(Phase::Draining);
        self.lifecycle.stop();
        let started = tokio::time::Instant::now();
        for consumer in self.consumers.drain(..) {
            // A consumer is busy only while it polls a delivery inline.
            if tokio::time::timeout_at(started + self.grace, consumer)
                .await
                .is_err()
            {
                tracing::warn!("a consumer did not stop within the grace period");
            }
        }
        for (_, route) in &self.routes {
            route.close_sessions().await;
        }
        self.lifecycle.tasks.close();
        let drained = tokio::time::timeout_at(started + self.grace, self.lifecycle.tasks.wait())
            .await
            .is_ok();
        if !drained {
            tracing::warn!(grace = ?self.grace, "grace period over; abandoning running handlers");
            self.lifecycle.abandon.cancel();
            // Abandoned handlers settle at once; what still hangs is a store
            // or broker call, and closing the connection returns its message.
            if tokio::time::timeout(ABANDON_WAIT, self.lifecycle.tasks.wait())
                .await
                .is_err()
            {
                tracing::error!("tasks still busy after abandoning; closing the connection anyway");
            }
        }
        self.transport.flush().await;
        self.phase.send_replace(Phase::Stopped);
        self.monitors.cancel();
        tracing::info!(drained, "shutdown complete");
        ShutdownReport {
            drained,
            routes: self
                .routes
                .iter()
                .map(|(q, route)| (q.clone(), route.stats()))
                .collect(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Dropped without shutdown(): stop consuming; unsettled deliveries
        // go back to the broker as their tasks end.
        self.lifecycle.stop();
        self.lifecycle.abandon.cancel();
        self.monitors.cancel();
    }
}

/// How long shutdown waits, after abandoning handlers, for their messages
/// to be given back before it closes the connection regardless.
const ABANDON_WAIT: Duration = Duration::from_secs(5);

/// How long a consumer pauses after the pipeline panicked.
const PANIC_PAUSE: Duration = Duration::from_millis(100);

/// One route's consumer loop: take a concurrency slot, then a delivery, and
/// take it through the pipeline. Slots are held only while a handler runs.
///
/// Each delivery is first polled right here; only if it has to wait (the
/// handler awaits I/O, a store round trip…) does it move to a task of its
/// own. Most of the pipeline and any handler that finishes without waiting
/// then cost no task spawn, and a session's messages start in the order
/// they arrived. A route whose handler blocks (works for over a millisecond
/// without awaiting) switches to a task per delivery, so its handlers keep
/// running in parallel.
async fn consume<S: Send + Sync + 'static>(pipeline: Arc<Pipeline<S>>, mut stream: DeliveryStream) {
    let stop = pipeline.lifecycle.stop.clone();
    loop {
        // The delivery first, then a slot: an idle consumer must not hold a
        // slot that a woken session message is waiting for.
        let delivery = tokio::select! {
            biased;
            delivery = stream.next() => delivery,
            () = stop.cancelled() => break,
        };
        let Some(delivery) = delivery else {
            tracing::warn!(queue = %pipeline.shared.queue, "consumer ended by the transport");
            break;
        };
        let permit = match pipeline.slots.try_acquire() {
            Ok(permit) => Some(permit),
            Err(_) => tokio::select! {
                biased;
                permit = pipeline.slots.acquire() => permit.ok(),
                () = stop.cancelled() => None,
            },
        };
        let (Some(permit), false) = (permit, pipeline.lifecycle.stopping()) else {
            let _ = delivery.settle(Settlement::Return).await;
            break;
        };
        permit.forget();
        let slot = ConcurrencyPermit(pipeline.clone());
        if pipeline.panicked.load(Ordering::Relaxed) && pipeline.panicked.swap(false, Ordering::Relaxed) {
            // A bug below the handler (a store, a transport) panicked on a
            // message that is now back in the queue; do not spin on it.
            tokio::time::sleep(PANIC_PAUSE).await;
        }
        let mut task = Box::pin(message_task(slot, delivery));
        // A future polled once with a no-op waker and then spawned is polled
        // again by its task with a real waker before it can be woken, as the
        // Future contract requires; nothing is missed.
        let mut cx = Context::from_waker(Waker::noop());
        if pipeline.spawn_first.load(Ordering::Relaxed) || task.as_mut().poll(&mut cx).is_pending() {
            pipeline.lifecycle.tasks.spawn(task);
        }
    }
}

/// A delivery's concurrency slot, given back when dropped, and its
/// pipeline. (An `OwnedSemaphorePermit` would hold a second reference
/// count, taken and dropped for every message.)
struct ConcurrencyPermit<S: Send + Sync + 'static>(Arc<Pipeline<S>>);

impl<S: Send + Sync + 'static> Drop for ConcurrencyPermit<S> {
    fn drop(&mut self) {
        self.0.slots.add_permits(1);
    }
}

/// One message's way through the pipeline, holding its concurrency slot.
/// Allocated for every message: kept small by a test (see
/// `tests::MAX_TASK_BYTES`).
async fn message_task<S: Send + Sync + 'static>(slot: ConcurrencyPermit<S>, delivery: Delivery) {
    slot.0.process(delivery).await;
    drop(slot);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The largest a message's task may be: glibc's malloc serves blocks up
    /// to 1,032 bytes from its per-thread cache, several times faster than
    /// larger ones (measured with callgrind: ~600 instructions per message
    /// more at 1,248 bytes).
    const MAX_TASK_BYTES: usize = 1024;

    /// The size of what `f` returns.
    fn returned_size<A, B, R>(_: fn(A, B) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    #[test]
    fn a_message_task_fits_the_allocators_fast_path() {
        let bytes = returned_size(message_task::<()>);
        assert!(
            bytes <= MAX_TASK_BYTES,
            "a message's task is {bytes} bytes, more than {MAX_TASK_BYTES}: box what only some messages need \
             (see Pipeline::process_inner)"
        );
    }
}
