//! Typed handlers: plain async functions whose arguments are extractors.

pub(crate) mod context;
pub(crate) mod extract;
pub mod middleware;
pub(crate) mod outcome;
pub(crate) mod route_shared;

use crate::handler::extract::Incoming;
use crate::handler::outcome::{IntoOutcome, Outcome};
use signature::{AsyncFn, Extractors};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// The future a handler call returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// An async function usable as a wharf handler.
///
/// Implemented for `async fn`s (and closures returning futures) of up to
/// eight arguments, each implementing [`FromMessage`](crate::FromMessage), returning a type that
/// implements [`IntoOutcome`]. You do not implement this trait yourself.
///
/// ```
/// use wharf::{Context, Error, Meta};
/// #[derive(serde::Deserialize)]
/// struct Order { id: u64 }
/// #[derive(serde::Serialize)]
/// struct Receipt { id: u64 }
///
/// async fn place(ctx: Context, meta: Meta, order: Order) -> Result<Receipt, Error> {
///     let _ = (ctx.attempt(), meta.message_id());
///     Ok(Receipt { id: order.id })
/// }
/// let app = wharf::App::new(wharf::Broker::memory()).route("orders", place);
/// ```
///
/// A function whose argument is not an extractor is refused at compile time,
/// and the error names the bound that fails (here: `NotAnExtractor` is not
/// `serde::Deserialize`, so it cannot be the payload):
///
/// ```compile_fail
/// struct NotAnExtractor;
/// async fn bad(_: NotAnExtractor) {}
/// let app = wharf::App::new(wharf::Broker::memory()).route("orders", bad);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a wharf handler",
    label = "not a handler",
    note = "a handler is an `async fn` (or a closure returning a future) of at most eight arguments, each implementing `wharf::FromMessage`, returning `()`, `Result<T: Serialize, E: IntoFailure>` or `Reply<T: Serialize>`"
)]
pub trait Handler<Args, S>: Clone + Send + Sync + Sized + 'static {
    /// Extracts the arguments and starts the handler.
    fn call(&self, incoming: &Incoming<'_>, state: &S) -> HandlerFuture;
}

/// A handler with its argument types erased, as a route stores it.
pub(crate) type BoxedHandler<S> = Arc<dyn Fn(&Incoming<'_>, &S) -> HandlerFuture + Send + Sync>;

pub(crate) fn boxed<H, Args, S>(handler: H) -> BoxedHandler<S>
where
    H: Handler<Args, S>,
    Args: 'static,
    S: 'static,
{
    Arc::new(move |incoming: &Incoming<'_>, state: &S| handler.call(incoming, state))
}

// One impl, so that rustc confirms it and reports the bound that actually
// fails (an argument that is not `Deserialize`, a reply that is not
// `Serialize`, the wrong `State<T>`, an error type that is not an error)
// instead of "not a wharf handler". With one impl per arity, as before, `Args`
// was unknown when the bound was checked, rustc could not pick an impl and
// named only `Handler`. Here the function's shape alone fixes `Args` (a
// function implements `Fn` for one argument list), and each remaining bound
// has a single impl to look into.
impl<F, Args, S> Handler<Args, S> for F
where
    F: AsyncFn<Args> + Clone + Send + Sync + 'static,
    F::Future: Send + 'static,
    <F::Future as Future>::Output: IntoOutcome,
    Args: Extractors<S> + Send,
    S: Send + Sync + 'static,
{
    fn call(&self, incoming: &Incoming<'_>, state: &S) -> HandlerFuture {
        let args = match Args::extract(incoming, state) {
            Ok(args) => args,
            Err(rejection) => return Box::pin(std::future::ready(Outcome::Rejected(rejection))),
        };
        let reply = incoming.reply;
        let future = self.call_with(args);
        Box::pin(async move { future.await.into_outcome(reply) })
    }
}

/// The two halves of a handler's signature. Public traits in a private
/// module: they appear in `Handler`'s impl and in compiler errors, but users
/// neither name nor implement them.
mod signature {
    use crate::handler::extract::{FromMessage, Incoming, Rejection};
    use std::future::Future;

    /// A function of the arguments `Args` (a tuple) returning a future.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` is not a wharf handler",
        label = "not an `async fn` of at most eight arguments",
        note = "a handler is an `async fn` (or a closure returning a future) of at most eight arguments"
    )]
    pub trait AsyncFn<Args> {
        /// What the call returns.
        type Future: Future;
        /// Calls the function with the extracted arguments.
        fn call_with(&self, args: Args) -> Self::Future;
    }

    /// A tuple of handler arguments, each built by its [`FromMessage`].
    pub trait Extractors<S>: Sized {
        /// Builds every argument, or rejects the message at the first refusal.
        fn extract(incoming: &Incoming<'_>, state: &S) -> Result<Self, Rejection>;
    }

    macro_rules! impl_signature {
        ($($arg:ident),*) => {
            #[allow(non_snake_case, unused_variables)]
            impl<F, Fut, $($arg,)*> AsyncFn<($($arg,)*)> for F
            where
                F: Fn($($arg),*) -> Fut,
                Fut: Future,
            {
                type Future = Fut;
                fn call_with(&self, ($($arg,)*): ($($arg,)*)) -> Fut {
                    (self)($($arg),*)
                }
            }

            #[allow(non_snake_case, unused_variables)]
            impl<S, $($arg,)*> Extractors<S> for ($($arg,)*)
            where
                $($arg: FromMessage<S>,)*
            {
                fn extract(incoming: &Incoming<'_>, state: &S) -> Result<Self, Rejection> {
                    Ok(($($arg::from_message(incoming, state)?,)*))
                }
            }
        };
    }

    impl_signature!();
    impl_signature!(T1);
    impl_signature!(T1, T2);
    impl_signature!(T1, T2, T3);
    impl_signature!(T1, T2, T3, T4);
    impl_signature!(T1, T2, T3, T4, T5);
    impl_signature!(T1, T2, T3, T4, T5, T6);
    impl_signature!(T1, T2, T3, T4, T5, T6, T7);
    impl_signature!(T1, T2, T3, T4, T5, T6, T7, T8);
}
