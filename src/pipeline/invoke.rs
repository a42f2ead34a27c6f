//! The handler step: run the handler with a time limit, catching panics,
//! and abandon it when shutdown's grace period is over.

use crate::error::Failure;
use crate::handler::extract::{Incoming, Rejection};
use crate::handler::outcome::{Outcome, panicked};
use crate::handler::{BoxedHandler, HandlerFuture};
use bytes::Bytes;
use futures_util::FutureExt;
use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::task::Poll;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How a handler run ended.
#[derive(Debug)]
pub(crate) enum Invocation {
    /// Handled, with the encoded reply if one was asked for.
    Done(Option<Bytes>),
    /// Failed: an error, a panic or the time limit.
    Failed(Failure),
    /// The message is poison.
    Rejected(Rejection),
    /// Abandoned at shutdown; the message goes back to the broker.
    Aborted,
}

/// Runs the handler. The flag says whether it finished on its first poll,
/// without waiting for anything.
pub(crate) async fn invoke<S>(
    handler: &BoxedHandler<S>,
    incoming: &Incoming<'_>,
    state: &S,
    timeout: Option<Duration>,
    abandon: &CancellationToken,
) -> (Invocation, bool) {
    // Extractors run synchronously inside the call; a panicking custom
    // extractor is a failed attempt like a panicking handler.
    let future = match std::panic::catch_unwind(AssertUnwindSafe(|| handler(incoming, state))) {
        Ok(future) => future,
        Err(panic) => return (Invocation::Failed(panicked(panic)), true),
    };
    let mut guarded = AssertUnwindSafe(future).catch_unwind();
    // Many handlers finish without waiting: try once before arming the timer
    // and the shutdown watch, which only a waiting handler needs.
    let first = std::future::poll_fn(|cx| Poll::Ready(guarded.poll_unpin(cx))).await;
    let at_once = first.is_ready();
    let result = match first {
        Poll::Ready(result) => Ok(result),
        Poll::Pending => match Box::pin(wait(guarded, timeout, abandon)).await {
            Some(result) => result,
            None => return (Invocation::Aborted, false),
        },
    };
    let invocation = match result {
        Ok(Ok(Outcome::Done { reply })) => Invocation::Done(reply),
        Ok(Ok(Outcome::Failed(failure))) => Invocation::Failed(failure),
        Ok(Ok(Outcome::Rejected(rejection))) => Invocation::Rejected(rejection),
        Ok(Err(panic)) => Invocation::Failed(panicked(panic)),
        Err(limit) => Invocation::Failed(Failure::new(
            false,
            "timeout",
            format!("handler did not finish within {limit:?}"),
        )),
    };
    (invocation, at_once)
}

type Guarded = futures_util::future::CatchUnwind<AssertUnwindSafe<HandlerFuture>>;

/// The rest of a handler run that had to wait: under the time limit, and
/// abandoned (`None`) when shutdown's grace period is over.
async fn wait(
    guarded: Guarded,
    timeout: Option<Duration>,
    abandon: &CancellationToken,
) -> Option<Result<Result<Outcome, Box<dyn Any + Send>>, Duration>> {
    let limited = async move {
        match timeout {
            Some(limit) => tokio::time::timeout(limit, guarded).await.map_err(|_| limit),
            None => Ok(guarded.await),
        }
    };
    tokio::select! {
        biased;
        result = limited => Some(result),
        () = abandon.cancelled() => None,
    }
}
