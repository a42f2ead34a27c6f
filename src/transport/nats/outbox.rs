//! The request client's outgoing requests, handed to async-nats in batches
//! while several are in flight.
//!
//! async-nats' connection task writes whatever it has been handed each
//! time it runs, and a request handed over on its own wakes it: with 64
//! requests in flight, each published as its requester made it, the
//! connection wrote about three requests per socket write, and nats-server
//! read as often. So a request made while others of its reply address
//! await replies (the client says how many) joins a queue here; one made
//! alone is published at once, as the wait for company would only add a
//! task and a yield to its round trip. The first request of a batch spawns
//! a task that yields once (so that every request made meanwhile joins: the
//! replies to a batch of requests wake their requesters together) and then
//! hands the whole batch over in a row, which the connection task writes in
//! one go. Measured with 64 in flight: about 40 requests per write instead
//! of 3, and a quarter less CPU per request in the client and in
//! nats-server (`docs/performance.md`). The task keeps draining, a yield
//! between batches, until it finds the queue empty.
//!
//! A request that async-nats refuses (the client closed; a payload over
//! the server's limit), or that a dropped task could not hand over (the
//! connection's runtime shutting down), is reported on `failures` with its
//! reply subject, so that its requester fails at once instead of at its
//! timeout. The queue holds at most [`MAX_QUEUED`] requests: beyond that
//! (async-nats' own channel full, a connection that cannot write) a request
//! is published the usual way, its requester waiting until async-nats
//! takes it.

use crate::util::sync::{Mutex, MutexGuard};
use async_nats::Subject;
use async_nats::client::traits::Publisher;
use async_nats::message::OutboundMessage;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Requests the queue holds at most.
pub(crate) const MAX_QUEUED: usize = 1024;

/// A request that could not be handed to the client: its reply subject and
/// why.
pub(crate) type Failure = (Subject, String);

/// Requests waiting to be handed to the client.
pub(crate) struct Outbox {
    client: async_nats::Client,
    /// The connection's runtime, where the task that hands requests over
    /// runs: requests may come from any runtime, and one of them shutting
    /// down must not take the task (and others' requests) with it.
    runtime: tokio::runtime::Handle,
    queue: Queue<OutboundMessage>,
    failures: mpsc::UnboundedSender<Failure>,
}

/// The requests waiting and whether a task is handing them over: the
/// outbox's locking, apart from async-nats and tokio so that the loom
/// model below can run every interleaving of it.
struct Queue<T> {
    state: Mutex<QueueState<T>>,
}

struct QueueState<T> {
    pending: Vec<T>,
    /// A task has been spawned to hand the queue over and has not ended.
    flushing: bool,
}

impl<T> Queue<T> {
    fn new() -> Self {
        Queue {
            state: Mutex::new(QueueState {
                pending: Vec::new(),
                flushing: false,
            }),
        }
    }

    /// Queues `item`: `Ok(true)` when the caller must start a task to hand
    /// the queue over (none is running), `Err` with the item when the queue
    /// is full.
    fn push(&self, item: T) -> Result<bool, T> {
        let mut state = self.state();
        if state.pending.len() >= MAX_QUEUED {
            return Err(item);
        }
        state.pending.push(item);
        Ok(!std::mem::replace(&mut state.flushing, true))
    }

    /// The task takes what is queued into `batch`; `false` when there was
    /// nothing, and then the task is no longer running (under the same lock
    /// as the look: a request queued after it starts a new task).
    fn take(&self, batch: &mut impl Extend<T>) -> bool {
        let mut state = self.state();
        if state.pending.is_empty() {
            state.flushing = false;
            return false;
        }
        batch.extend(state.pending.drain(..));
        true
    }

    /// The task was dropped unfinished: it is no longer running, and what
    /// was queued is returned.
    fn abandon(&self) -> Vec<T> {
        let mut state = self.state();
        state.flushing = false;
        std::mem::take(&mut state.pending)
    }

    #[cfg(test)]
    fn pending(&self) -> usize {
        self.state().pending.len()
    }

    #[cfg(test)]
    fn flushing(&self) -> bool {
        self.state().flushing
    }

    fn state(&self) -> MutexGuard<'_, QueueState<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Outbox {
    pub(crate) fn new(
        client: async_nats::Client,
        runtime: tokio::runtime::Handle,
        failures: mpsc::UnboundedSender<Failure>,
    ) -> Arc<Self> {
        Arc::new(Outbox {
            client,
            runtime,
            queue: Queue::new(),
            failures,
        })
    }

    /// Queues `message` (a request with its reply subject) to be published;
    /// gives it back when the queue is full.
    #[must_use = "a request given back must be published another way"]
    pub(crate) fn send(self: &Arc<Self>, message: OutboundMessage) -> Option<OutboundMessage> {
        let start = match self.queue.push(message) {
            Ok(start) => start,
            Err(message) => return Some(message),
        };
        if start {
            self.runtime.spawn(flush(self.clone()));
        }
        None
    }

    /// Requests queued and not yet handed over (tests).
    #[cfg(all(test, not(wharf_loom)))]
    fn pending(&self) -> usize {
        self.queue.pending()
    }
}

/// Hands the queue over, batch by batch, until it is empty.
fn flush(outbox: Arc<Outbox>) -> impl Future<Output = ()> + Send {
    // Made before the task first runs, so that a task dropped unfinished
    // (even unpolled: its runtime shut down) reports what it had not
    // handed over.
    let mut flushing = Flushing {
        outbox,
        batch: VecDeque::new(),
        sending: None,
        done: false,
    };
    async move {
        loop {
            tokio::task::yield_now().await;
            if !flushing.outbox.queue.take(&mut flushing.batch) {
                flushing.finish();
                return;
            }
            while let Some(message) = flushing.batch.pop_front() {
                flushing.sending = message.reply.clone();
                let sent = flushing.outbox.client.publish_message(message).await;
                if let (Err(e), Some(reply)) = (sent, flushing.sending.take()) {
                    let _ = flushing.outbox.failures.send((reply, e.to_string()));
                }
            }
        }
    }
}

/// The flushing task's state, kept outside its future's locals: when the
/// task is dropped unfinished, the requests it holds or has not yet taken
/// are reported as failed and `flushing` is cleared.
struct Flushing {
    outbox: Arc<Outbox>,
    /// Taken from the queue, not yet handed over.
    batch: VecDeque<OutboundMessage>,
    /// The reply subject of the request being handed over.
    sending: Option<Subject>,
    done: bool,
}

impl Flushing {
    /// The task ends having cleared `flushing` itself.
    fn finish(&mut self) {
        self.done = true;
    }
}

impl Drop for Flushing {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let pending = self.outbox.queue.abandon();
        let unsent = self.sending.take().into_iter().chain(
            self.batch
                .drain(..)
                .chain(pending)
                .filter_map(|message| message.reply),
        );
        for reply in unsent {
            let why = "the task publishing requests was dropped (its runtime is shutting down)";
            let _ = self.outbox.failures.send((reply, why.to_owned()));
        }
    }
}

#[cfg(all(test, not(wharf_loom)))]
mod tests {
    use super::*;

    /// A client whose server never answers: `connect` with
    /// `retry_on_initial_connect` returns at once, and what is published
    /// waits in its buffer.
    async fn unconnected_client() -> async_nats::Client {
        async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect("nats://127.0.0.1:1")
            .await
            .expect("a client that connects in the background")
    }

    fn request(n: u32) -> OutboundMessage {
        OutboundMessage {
            subject: format!("wharf.p0.outbox-test-{n}").into(),
            reply: Some(format!("_INBOX.outbox.{n}").into()),
            payload: bytes::Bytes::from_static(b"{}"),
            headers: None,
        }
    }

    fn replies(failed: &mut mpsc::UnboundedReceiver<Failure>) -> Vec<String> {
        std::iter::from_fn(|| failed.try_recv().ok())
            .map(|(reply, _)| reply.to_string())
            .collect()
    }

    #[test]
    fn requests_left_by_a_flush_dropped_with_its_runtime_fail_at_once() {
        let keeper = tokio::runtime::Runtime::new().unwrap();
        let client = keeper.block_on(unconnected_client());
        let (failures, mut failed) = mpsc::unbounded_channel();
        // The connection's runtime shuts down before its flush task runs.
        let doomed = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let outbox = Outbox::new(client, doomed.handle().clone(), failures);
        doomed.block_on(async {
            assert!(outbox.send(request(1)).is_none());
            assert!(outbox.send(request(2)).is_none());
        });
        drop(doomed);
        assert_eq!(replies(&mut failed), ["_INBOX.outbox.1", "_INBOX.outbox.2"]);
        assert_eq!(outbox.pending(), 0);
        assert!(!outbox.queue.flushing(), "the dropped task let go");
        // Later requests fail too, at once, rather than wait in the queue.
        keeper.block_on(async { assert!(outbox.send(request(3)).is_none()) });
        assert_eq!(replies(&mut failed), ["_INBOX.outbox.3"]);
    }

    #[test]
    fn a_full_queue_gives_the_request_back() {
        let keeper = tokio::runtime::Runtime::new().unwrap();
        let client = keeper.block_on(unconnected_client());
        let (failures, _failed) = mpsc::unbounded_channel();
        // Nothing runs the flush task while the queue fills.
        let idle = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let outbox = Outbox::new(client, idle.handle().clone(), failures);
        for n in 0..MAX_QUEUED {
            assert!(outbox.send(request(n as u32)).is_none());
        }
        let refused = outbox.send(request(9999)).expect("the queue is full");
        assert_eq!(refused.reply.unwrap().as_str(), "_INBOX.outbox.9999");
        assert_eq!(outbox.pending(), MAX_QUEUED);
    }

    #[tokio::test]
    async fn a_request_the_client_refuses_is_reported_with_its_reply_subject() {
        let client = unconnected_client().await;
        let (failures, mut failed) = mpsc::unbounded_channel();
        let outbox = Outbox::new(client, tokio::runtime::Handle::current(), failures);
        // Over async-nats' default limit (1 MiB before the server says).
        let mut message = request(3);
        message.payload = bytes::Bytes::from(vec![b'x'; 2 * 1024 * 1024]);
        assert!(outbox.send(message).is_none());
        assert!(outbox.send(request(4)).is_none());
        let (reply, why) = tokio::time::timeout(std::time::Duration::from_secs(5), failed.recv())
            .await
            .expect("reported at once")
            .expect("a failure");
        assert_eq!(reply.as_str(), "_INBOX.outbox.3");
        assert!(why.contains("limit"), "{why}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(failed.try_recv().is_err(), "the other request was handed over");
        assert_eq!(outbox.pending(), 0);
    }
}

/// Model tests (`RUSTFLAGS="--cfg wharf_loom"`): every interleaving of requests
/// queued while the task hands the queue over and finds it empty.
#[cfg(all(test, wharf_loom))]
mod loom_tests {
    use super::*;

    /// The task that `push` asked for: takes batches until the queue is
    /// empty, handing them to `sent`.
    fn flusher(queue: Arc<Queue<u32>>, sent: Arc<Mutex<Vec<u32>>>) -> loom::thread::JoinHandle<()> {
        loom::thread::spawn(move || {
            let mut batch = Vec::new();
            while queue.take(&mut batch) {
                sent.lock().unwrap().append(&mut batch);
            }
        })
    }

    #[test]
    fn loom_a_request_queued_as_the_task_finds_the_queue_empty_is_sent() {
        loom::model(|| {
            let queue = Arc::new(Queue::<u32>::new());
            let sent = Arc::new(Mutex::new(Vec::new()));
            let push = |queue: Arc<Queue<u32>>, sent: Arc<Mutex<Vec<u32>>>, n| {
                queue.push(n).unwrap().then(|| flusher(queue.clone(), sent))
            };
            let other = {
                let (queue, sent) = (queue.clone(), sent.clone());
                loom::thread::spawn(move || push(queue, sent, 1))
            };
            let mine = push(queue.clone(), sent.clone(), 0);
            let theirs = other.join().unwrap();
            for task in mine.into_iter().chain(theirs) {
                task.join().unwrap();
            }
            let mut sent = std::mem::take(&mut *sent.lock().unwrap());
            sent.sort_unstable();
            assert_eq!(sent, [0, 1], "every request handed over, once");
            assert_eq!(queue.pending(), 0);
            assert!(!queue.flushing(), "no task left marked running");
        });
    }

    #[test]
    fn loom_a_request_queued_as_the_task_is_dropped_is_reported_or_sent() {
        // The task is dropped (its runtime shutting down) while a request
        // is queued: the request is either abandoned (reported as failed)
        // or queued after, and then starts a task of its own.
        loom::model(|| {
            let queue = Arc::new(Queue::<u32>::new());
            assert_eq!(queue.push(0), Ok(true));
            let dropped = {
                let queue = queue.clone();
                loom::thread::spawn(move || queue.abandon())
            };
            let start = queue.push(1).unwrap();
            let mut reported = dropped.join().unwrap();
            if start {
                assert!(queue.take(&mut reported));
                assert!(!queue.take(&mut reported));
            }
            reported.sort_unstable();
            assert_eq!(reported, [0, 1]);
            assert!(!queue.flushing());
        });
    }
}
