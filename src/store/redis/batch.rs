//! Group commit: the calls of one kind (claims, completions, session
//! begins, session ends) made while one batch of them is on its way to
//! Redis go out together as the next batch, in one script call.
//!
//! At most one batch of a kind is in flight. A call that finds none goes
//! out at once, alone (no waiting for company, so a lone message is not
//! delayed); the calls made meanwhile wait for it to return and then go
//! together. Under load, the messages that arrive together share one round
//! trip and one script run instead of paying for one each. Each call is
//! still one atomic step: the script handles the calls of a batch one after
//! the other, as if they had come one by one.

use crate::error::{BrokerError, BrokerErrorKind};
use crate::util::future::BoxFuture;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::oneshot;

/// The most calls one batch carries; the rest go in the next.
pub(super) const MAX_BATCH: usize = 128;

/// Sends a batch of requests and returns one reply per request, in order.
pub(super) type Run<Req, Resp> =
    Box<dyn Fn(Vec<Req>) -> BoxFuture<'static, Result<Vec<Resp>, BrokerError>> + Send + Sync>;

type Reply<Resp> = oneshot::Sender<Result<Resp, BrokerError>>;

/// One kind of call, batched.
pub(super) struct Batcher<Req, Resp> {
    inner: Arc<Inner<Req, Resp>>,
}

struct Inner<Req, Resp> {
    queue: Mutex<Queue<Req, Resp>>,
    run: Run<Req, Resp>,
    /// Names the operation in errors.
    operation: &'static str,
}

struct Queue<Req, Resp> {
    calls: Vec<(Req, Reply<Resp>)>,
    /// A flusher task runs (a batch is in flight, or about to be).
    flushing: bool,
}

impl<Req: Send + 'static, Resp: Send + 'static> Batcher<Req, Resp> {
    pub(super) fn new(operation: &'static str, run: Run<Req, Resp>) -> Self {
        Batcher {
            inner: Arc::new(Inner {
                queue: Mutex::new(Queue {
                    calls: Vec::new(),
                    flushing: false,
                }),
                run,
                operation,
            }),
        }
    }

    /// Sends `request` with the next batch and waits for its reply.
    pub(super) async fn call(&self, request: Req) -> Result<Resp, BrokerError> {
        let (reply, replied) = oneshot::channel();
        let start = {
            let mut queue = self.inner.queue();
            queue.calls.push((request, reply));
            !std::mem::replace(&mut queue.flushing, true)
        };
        if start {
            tokio::spawn(flush(self.inner.clone()));
        }
        replied.await.unwrap_or_else(|_| {
            Err(BrokerError::new(
                BrokerErrorKind::Store,
                format!(
                    "Redis store: {} was dropped unanswered (the runtime is shutting down)",
                    self.inner.operation
                ),
            ))
        })
    }
}

impl<Req, Resp> Inner<Req, Resp> {
    fn queue(&self) -> MutexGuard<'_, Queue<Req, Resp>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Sends batches until no call waits.
async fn flush<Req, Resp>(inner: Arc<Inner<Req, Resp>>) {
    // Whatever way this task ends (a panic, its runtime shutting down),
    // the next call starts another, and the calls left waiting are told.
    struct Done<'a, Req, Resp>(&'a Inner<Req, Resp>);
    impl<Req, Resp> Drop for Done<'_, Req, Resp> {
        fn drop(&mut self) {
            let mut queue = self.0.queue();
            queue.flushing = false;
            queue.calls.clear();
        }
    }
    let done = Done(&inner);
    loop {
        let calls = {
            let mut queue = inner.queue();
            if queue.calls.is_empty() {
                queue.flushing = false;
                drop(queue);
                // A call made from here on starts a flusher of its own.
                std::mem::forget(done);
                return;
            }
            let taken = queue.calls.len().min(MAX_BATCH);
            let rest = queue.calls.split_off(taken);
            std::mem::replace(&mut queue.calls, rest)
        };
        let (requests, replies): (Vec<Req>, Vec<Reply<Resp>>) = calls.into_iter().unzip();
        let count = requests.len();
        match (inner.run)(requests).await {
            Ok(answers) if answers.len() == count => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(Ok(answer));
                }
            }
            Ok(answers) => {
                let message = format!(
                    "Redis store: {} got {} answers for {count} calls",
                    inner.operation,
                    answers.len()
                );
                for reply in replies {
                    let _ = reply.send(Err(BrokerError::new(BrokerErrorKind::Store, message.clone())));
                }
            }
            Err(error) => {
                let kind = error.kind();
                // Each caller gets the whole chain: the cause is not cloned with it.
                let message = crate::error::Chain(&error).to_string();
                let mut replies = replies.into_iter();
                if let Some(first) = replies.next() {
                    let _ = first.send(Err(error));
                }
                for reply in replies {
                    let _ = reply.send(Err(BrokerError::new(kind, message.clone())));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_made_while_a_batch_is_out_go_together_and_in_order() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let seen = batches.clone();
        let batcher: Arc<Batcher<u32, u32>> = Arc::new(Batcher::new(
            "test",
            Box::new(move |requests: Vec<u32>| {
                seen.lock().unwrap().push(requests.len());
                Box::pin(async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok(requests.iter().map(|r| r * 10).collect())
                })
            }),
        ));
        let first = tokio::spawn({
            let batcher = batcher.clone();
            async move { batcher.call(1).await.unwrap() }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        let rest: Vec<_> = (2..=300)
            .map(|n| {
                let batcher = batcher.clone();
                tokio::spawn(async move { (n, batcher.call(n).await.unwrap()) })
            })
            .collect();
        assert_eq!(first.await.unwrap(), 10, "a lone call goes out at once");
        for call in rest {
            let (n, answer) = call.await.unwrap();
            assert_eq!(answer, n * 10, "each call gets its own answer");
        }
        let batches = batches.lock().unwrap().clone();
        assert_eq!(batches[0], 1);
        assert_eq!(batches.iter().sum::<usize>(), 300);
        assert!(batches.iter().all(|&b| b <= MAX_BATCH), "{batches:?}");
        assert!(
            batches.len() <= 5,
            "the waiting calls went in a few batches: {batches:?}"
        );
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_of_its_calls_and_the_next_goes_out() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let batcher: Batcher<u32, u32> = Batcher::new(
            "test",
            Box::new(move |requests: Vec<u32>| {
                let run = counted.fetch_add(1, Ordering::SeqCst);
                Box::pin(async move {
                    if run == 0 {
                        Err(BrokerError::new(BrokerErrorKind::Connection, "down"))
                    } else {
                        Ok(requests)
                    }
                })
            }),
        );
        let error = batcher.call(7).await.unwrap_err();
        assert!(error.is_connection(), "{error}");
        assert_eq!(batcher.call(8).await.unwrap(), 8);
    }
}
