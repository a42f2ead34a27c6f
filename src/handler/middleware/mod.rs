//! Middleware: a team's own code around every handler call of an app or of
//! one route — metrics, authorisation, tracing fields, anything that is not
//! the handler's business.
//!
//! A middleware gets the [`Request`] (the message, its headers, the attempt,
//! the route) and the [`Next`] step, and returns the handler's
//! [`Outcome`]: it may look at the request and call `next.run(request)`,
//! look at (or change) the outcome the handler gave, or answer itself
//! without running the handler: [`Request::refuse`] (dead-lettered at once
//! with reason `refused` and its own kind), [`Request::fail`] with a
//! permanent or retryable error, or [`Request::reply`].
//!
//! ```
//! use wharf::middleware::{self, Next, Request};
//! use wharf::{App, Broker, Outcome};
//!
//! async fn only_from_billing(request: Request, next: Next) -> Outcome {
//!     if request.header("x-origin") != Some("billing") {
//!         return request.refuse("forbidden", "only billing may send invoices");
//!     }
//!     next.run(request).await
//! }
//!
//! async fn send_invoice(invoice: u64) {
//!     let _ = invoice;
//! }
//!
//! let app = App::new(Broker::memory())
//!     .middleware(middleware::from_fn(only_from_billing))
//!     .route("invoices", send_invoice);
//! ```
//!
//! Middleware runs inside the handler step: under the route's timeout, with
//! panics caught (a panic is a failed attempt, and a middleware sees its
//! handler's panic as a `failed` outcome of kind `panic`), after the
//! payload size and header validation, the session turn and the
//! idempotency check, and before the outcome is settled (retry, dead
//! letter, reply). When the route's timeout expires, the whole chain is
//! dropped: no middleware sees that outcome (counted, as always, in
//! `RouteStats::timeouts` and the failure kind `timeout`). The handler's
//! arguments are extracted when the last middleware calls `next.run`, so a
//! refusal costs no decoding. An app's middleware wraps a route's; within
//! each, the first added runs first (outermost). Routes without any
//! middleware call their handler directly, as before: nothing is spent on
//! the hook when it is not used (docs/performance.md).
//!
//! `tower` was considered and not used: a `tower::Service` is called
//! through `&mut self` after `poll_ready`, so each message would need its
//! own clone of the stack, and readiness has no meaning between a delivery
//! and its handler; docs/middleware.md gives the reasons and figures.

mod request;

pub use request::Request;

use crate::handler::extract::Incoming;
use crate::handler::outcome::{Outcome, panicked};
use crate::handler::{BoxedHandler, HandlerFuture};
use futures_util::FutureExt;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

/// Code around a handler call. See the [module docs](self).
///
/// Implement it for a type that holds configuration (a metric name, a key),
/// or wrap an `async fn(Request, Next) -> Outcome` with [`from_fn`].
pub trait Middleware: Send + Sync + 'static {
    /// Handles `request`, usually by calling `next.run(request)` and
    /// returning (or changing) its outcome.
    fn call(&self, request: Request, next: Next) -> HandlerFuture;
}

/// A [`Middleware`] made of an async function or closure; see [`from_fn`].
#[derive(Clone)]
pub struct FromFn<F>(F);

/// Makes a [`Middleware`] of an `async fn(Request, Next) -> Outcome` (or a
/// closure returning such a future).
pub fn from_fn<F, Fut>(f: F) -> FromFn<F>
where
    F: Fn(Request, Next) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    FromFn(f)
}

impl<F, Fut> Middleware for FromFn<F>
where
    F: Fn(Request, Next) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    fn call(&self, request: Request, next: Next) -> HandlerFuture {
        Box::pin((self.0)(request, next))
    }
}

impl<F> fmt::Debug for FromFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FromFn")
    }
}

/// An ordered list of middleware, outermost first.
#[derive(Clone, Default)]
pub(crate) struct Layers(Vec<Arc<dyn Middleware>>);

impl Layers {
    pub(crate) fn push(&mut self, middleware: impl Middleware) {
        self.0.push(Arc::new(middleware));
    }

    /// `outer`'s middleware, then this list's.
    pub(crate) fn after(&self, outer: &Layers) -> Layers {
        Layers(outer.0.iter().chain(&self.0).cloned().collect())
    }

    /// `handler` behind these layers; `handler` itself when there are none.
    pub(crate) fn wrap<S: Send + Sync + 'static>(
        self,
        handler: BoxedHandler<S>,
        state: S,
    ) -> BoxedHandler<S> {
        if self.0.is_empty() {
            return handler;
        }
        // A panic of the handler (or of an extractor) becomes its outcome
        // here, so that the middleware around it sees a failed attempt of
        // kind `panic` rather than being unwound through.
        let innermost: Inner = Arc::new(move |incoming: &Incoming<'_>| {
            match std::panic::catch_unwind(AssertUnwindSafe(|| handler(incoming, &state))) {
                Ok(future) => Box::pin(
                    AssertUnwindSafe(future)
                        .catch_unwind()
                        .map(|result| result.unwrap_or_else(|panic| Outcome::Failed(panicked(panic)))),
                ),
                Err(panic) => Box::pin(std::future::ready(Outcome::Failed(panicked(panic)))),
            }
        });
        let chain = Arc::new(Chain {
            layers: self.0.into_boxed_slice(),
            handler: innermost,
        });
        Arc::new(move |incoming: &Incoming<'_>, _: &S| {
            Next {
                chain: chain.clone(),
                index: 0,
            }
            .run(Request::new(incoming))
        })
    }
}

impl fmt::Debug for Layers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} middleware", self.0.len())
    }
}

/// The handler with the app state bound: what the last layer calls.
type Inner = Arc<dyn Fn(&Incoming<'_>) -> HandlerFuture + Send + Sync>;

struct Chain {
    layers: Box<[Arc<dyn Middleware>]>,
    handler: Inner,
}

/// The rest of the chain after a middleware: the next middleware, or the
/// handler.
pub struct Next {
    chain: Arc<Chain>,
    index: usize,
}

impl Next {
    /// Passes `request` on and returns the future of its outcome. The
    /// handler's arguments are extracted here, before the future is
    /// returned; a payload that does not decode gives an
    /// [`Outcome::Rejected`] at once.
    pub fn run(self, request: Request) -> HandlerFuture {
        match self.chain.layers.get(self.index) {
            Some(layer) => {
                let next = Next {
                    chain: self.chain.clone(),
                    index: self.index + 1,
                };
                layer.call(request, next)
            }
            None => (self.chain.handler)(&request.incoming()),
        }
    }
}

impl fmt::Debug for Next {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Next")
            .field("remaining", &(self.chain.layers.len() - self.index))
            .finish()
    }
}
