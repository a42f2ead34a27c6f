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
//! the server's limit) is reported on `failures` with its reply subject, so
//! that its requester fails at once instead of at its timeout.

use async_nats::Subject;
use async_nats::client::traits::Publisher;
use async_nats::message::OutboundMessage;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc;

/// A request that could not be handed to the client: its reply subject and
/// why.
pub(crate) type Failure = (Subject, String);

/// Requests waiting to be handed to the client.
pub(crate) struct Outbox {
    client: async_nats::Client,
    /// Where a task is spawned when the caller is not on a runtime.
    runtime: tokio::runtime::Handle,
    state: Mutex<State>,
    failures: mpsc::UnboundedSender<Failure>,
}

#[derive(Default)]
struct State {
    pending: Vec<OutboundMessage>,
    /// A task is handing the queue over (or is about to).
    flushing: bool,
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
            state: Mutex::default(),
            failures,
        })
    }

    /// Queues `message` (a request with its reply subject) to be published.
    pub(crate) fn send(self: &Arc<Self>, message: OutboundMessage) {
        let start = {
            let mut state = self.state();
            state.pending.push(message);
            !std::mem::replace(&mut state.flushing, true)
        };
        if start {
            let flushing = flush(self.clone());
            match tokio::runtime::Handle::try_current() {
                Ok(current) => current.spawn(flushing),
                Err(_) => self.runtime.spawn(flushing),
            };
        }
    }

    /// Requests queued and not yet handed over (tests).
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.state().pending.len()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Hands the queue over, batch by batch, until it is empty.
fn flush(outbox: Arc<Outbox>) -> impl Future<Output = ()> + Send {
    // Made before the task first runs: a task dropped unfinished, even
    // unpolled (its runtime shut down), lets the next request start
    // another, which sends what is still queued.
    let mut flushing = Flushing { outbox, done: false };
    async move {
        let mut batch = Vec::new();
        loop {
            tokio::task::yield_now().await;
            {
                let mut state = flushing.outbox.state();
                if state.pending.is_empty() {
                    state.flushing = false;
                    drop(state);
                    flushing.finish();
                    return;
                }
                std::mem::swap(&mut state.pending, &mut batch);
            }
            for message in batch.drain(..) {
                let reply = message.reply.clone();
                if let Err(e) = flushing.outbox.client.publish_message(message).await
                    && let Some(reply) = reply
                {
                    let _ = flushing.outbox.failures.send((reply, e.to_string()));
                }
            }
        }
    }
}

/// The flushing task's hold on the outbox: clears `flushing` when the task
/// is dropped unfinished.
struct Flushing {
    outbox: Arc<Outbox>,
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
        if !self.done {
            self.outbox.state().flushing = false;
        }
    }
}

#[cfg(test)]
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

    #[test]
    fn a_flush_dropped_with_its_runtime_lets_the_next_request_flush() {
        let keeper = tokio::runtime::Runtime::new().unwrap();
        let client = keeper.block_on(unconnected_client());
        let (failures, _failed) = mpsc::unbounded_channel();
        let outbox = Outbox::new(client, keeper.handle().clone(), failures);
        // Queued on a runtime that shuts down before its flush task runs.
        let doomed = tokio::runtime::Builder::new_current_thread().build().unwrap();
        doomed.block_on(async { outbox.send(request(1)) });
        drop(doomed);
        assert_eq!(outbox.pending(), 1);
        assert!(!outbox.state().flushing, "the dropped task let go");
        // The next request, on a runtime that lives, takes both.
        keeper.block_on(async {
            outbox.send(request(2));
            for _ in 0..100 {
                if outbox.pending() == 0 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        });
        assert_eq!(outbox.pending(), 0, "both handed to the client");
    }

    #[tokio::test]
    async fn a_request_the_client_refuses_is_reported_with_its_reply_subject() {
        let client = unconnected_client().await;
        let (failures, mut failed) = mpsc::unbounded_channel();
        let outbox = Outbox::new(client, tokio::runtime::Handle::current(), failures);
        // Over async-nats' default limit (1 MiB before the server says).
        let mut message = request(3);
        message.payload = bytes::Bytes::from(vec![b'x'; 2 * 1024 * 1024]);
        outbox.send(message);
        outbox.send(request(4));
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
