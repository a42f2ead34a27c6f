//! Typed handlers: plain async functions whose arguments are extractors.

use crate::extract::{FromMessage, Incoming};
use crate::outcome::{IntoOutcome, Outcome};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// The future a handler call returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// An async function usable as a wharf handler.
///
/// Implemented for `async fn`s (and closures returning futures) of up to
/// eight arguments, each implementing [`FromMessage`], returning a type that
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
/// A function whose argument is not an extractor is refused at compile time:
///
/// ```compile_fail
/// struct NotAnExtractor;
/// async fn bad(_: NotAnExtractor) {}
/// let app = wharf::App::new(wharf::Broker::memory()).route("orders", bad);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a wharf handler",
    label = "not a handler",
    note = "a handler is an `async fn` whose arguments implement `wharf::FromMessage` (the payload type must implement `serde::Deserialize`; `Context`, `Meta`, `State<S>`, `Raw` are the other extractors) and whose return type is `()`, `Result<T: Serialize, E: IntoFailure>` or `Reply<T>`",
    note = "with `App::with_state`, `State<S>` must use exactly the app's state type `S`"
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

macro_rules! impl_handler {
    ($($arg:ident),*) => {
        #[allow(non_snake_case, unused_variables)]
        impl<F, Fut, R, S, $($arg,)*> Handler<($($arg,)*), S> for F
        where
            F: Fn($($arg),*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = R> + Send + 'static,
            R: IntoOutcome,
            S: Send + Sync + 'static,
            $($arg: FromMessage<S> + Send,)*
        {
            fn call(&self, incoming: &Incoming<'_>, state: &S) -> HandlerFuture {
                $(
                    let $arg = match $arg::from_message(incoming, state) {
                        Ok(value) => value,
                        Err(rejection) => {
                            return Box::pin(std::future::ready(Outcome::Rejected(rejection)));
                        }
                    };
                )*
                let reply = incoming.reply;
                let future = (self)($($arg),*);
                Box::pin(async move { future.await.into_outcome(reply) })
            }
        }
    };
}

impl_handler!();
impl_handler!(T1);
impl_handler!(T1, T2);
impl_handler!(T1, T2, T3);
impl_handler!(T1, T2, T3, T4);
impl_handler!(T1, T2, T3, T4, T5);
impl_handler!(T1, T2, T3, T4, T5, T6);
impl_handler!(T1, T2, T3, T4, T5, T6, T7);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8);
