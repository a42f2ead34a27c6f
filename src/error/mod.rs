//! Errors: what handlers return ([`Error`], or their own errors through
//! [`HandlerError`]), what becomes of it ([`Failure`]), and what wharf's
//! own operations return ([`BrokerError`]).

mod broker;
pub(crate) mod chain;
mod handler_error;

pub use broker::{BrokerError, BrokerErrorKind};
pub(crate) use chain::Chain;
pub use handler_error::HandlerError;

use serde::Serialize;
use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// The error a handler returns.
///
/// Retryable by default: the message is redelivered after a backoff delay,
/// up to the route's `max_attempts`. [`Error::permanent`] sends the message
/// to the dead-letter queue at once. Any `std::error::Error` converts into it
/// with `?`, as a retryable error of kind `handler` (`From` cannot tell a
/// [`HandlerError`]'s choices apart; [`Error::from_handler_error`] keeps
/// them). A handler may also return its own error type: see
/// [`HandlerError`].
///
/// ```
/// use wharf::Error;
/// #[derive(serde::Serialize)]
/// struct Shortfall { missing: u32 }
///
/// fn check(stock: u32, wanted: u32) -> Result<(), Error> {
///     if stock < wanted {
///         return Err(Error::permanent("not enough stock")
///             .with_kind("out-of-stock")
///             .with_details(&Shortfall { missing: wanted - stock }));
///     }
///     Ok(())
/// }
/// let err = check(1, 3).unwrap_err();
/// assert!(err.is_permanent());
/// assert_eq!(err.kind(), "out-of-stock");
/// ```
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    permanent: bool,
    kind: Cow<'static, str>,
    source: BoxError,
    details: Option<serde_json::Value>,
}

impl Error {
    /// A retryable error.
    pub fn new(error: impl Into<BoxError>) -> Self {
        Error {
            inner: Box::new(Inner {
                permanent: false,
                kind: Cow::Borrowed("handler"),
                source: error.into(),
                details: None,
            }),
        }
    }

    /// `error` with what it decides as a [`HandlerError`]: permanence,
    /// kind and details. For a handler that returns `wharf::Error` and
    /// meets your own error type:
    /// `reserve(&order).await.map_err(Error::from_handler_error)?`.
    pub fn from_handler_error<E: HandlerError + Send + Sync + 'static>(error: E) -> Self {
        let (permanent, kind, details) = (error.is_permanent(), error.kind(), error.details());
        let mut error = Error::new(error).with_kind(kind);
        error.inner.permanent = permanent;
        error.inner.details = details;
        error
    }

    /// A permanent error: the message is dead-lettered without retries, and a
    /// request gets an error reply.
    pub fn permanent(error: impl Into<BoxError>) -> Self {
        Error::new(error).into_permanent()
    }

    /// Marks this error permanent.
    pub fn into_permanent(mut self) -> Self {
        self.inner.permanent = true;
        self
    }

    /// Sets a short machine-readable kind (default `handler`), sent in error
    /// replies and dead-letter headers so callers can match on it.
    pub fn with_kind(mut self, kind: impl Into<Cow<'static, str>>) -> Self {
        self.inner.kind = kind.into();
        self
    }

    /// Attaches structured details, sent in the error reply's `details` field.
    /// A value that cannot be serialised is recorded as its error text.
    pub fn with_details<T: Serialize + ?Sized>(mut self, details: &T) -> Self {
        self.inner.details = Some(
            serde_json::to_value(details)
                .unwrap_or_else(|e| serde_json::Value::String(format!("unserialisable details: {e}"))),
        );
        self
    }

    /// True when the message should not be retried.
    pub fn is_permanent(&self) -> bool {
        self.inner.permanent
    }

    /// The kind given with [`with_kind`](Error::with_kind), or `handler`.
    pub fn kind(&self) -> &str {
        &self.inner.kind
    }

    /// The details given with [`with_details`](Error::with_details).
    pub fn details(&self) -> Option<&serde_json::Value> {
        self.inner.details.as_ref()
    }
}

impl<E: StdError + Send + Sync + 'static> From<E> for Error {
    fn from(error: E) -> Self {
        Error::new(error)
    }
}

/// The error and its `source()` chain: `publish failed: connection reset`.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Chain(&*self.inner.source).fmt(f)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("permanent", &self.inner.permanent)
            .field("kind", &self.inner.kind)
            .field("message", &self.to_string())
            .field("details", &self.inner.details)
            .finish()
    }
}

/// A handler failure reduced to what wharf needs: retry or not, and what to
/// tell the caller and the dead-letter queue.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    /// Dead-letter at once instead of retrying.
    pub permanent: bool,
    /// Short machine-readable kind.
    pub kind: Cow<'static, str>,
    /// Human-readable message.
    pub message: String,
    /// Structured details for the error reply.
    pub details: Option<serde_json::Value>,
}

impl Failure {
    pub(crate) fn new(permanent: bool, kind: &'static str, message: impl Into<String>) -> Self {
        Failure {
            permanent,
            kind: Cow::Borrowed(kind),
            message: message.into(),
            details: None,
        }
    }
}

/// Error types a handler may return in `Result<T, E>`.
///
/// Implemented for
/// - [`Error`], wharf's own, which says per value what is permanent;
/// - every type implementing [`HandlerError`]: your own error enums (one
///   line, `impl wharf::HandlerError for MyError {}`, makes every variant
///   retryable; its methods decide per variant), wharf's errors
///   ([`BrokerError`], [`RequestError`](crate::RequestError),
///   [`CodecError`](crate::CodecError)) and the standard errors a handler
///   meets (`std::io::Error`, `serde_json::Error`, parse errors, …);
/// - `Box<dyn std::error::Error + Send + Sync>` (and without `Send`/`Sync`),
///   retryable;
/// - `anyhow::Error` with the cargo feature `anyhow`, retryable.
///
/// The message is the error's `Display` followed by its `source()` chain:
/// `reserving stock failed: connection reset`.
///
/// There is no blanket implementation for every `std::error::Error`: it
/// would leave your own error types no way to say which variants are
/// permanent (Rust allows no second implementation for them). Implement
/// [`HandlerError`] instead; implementing `IntoFailure` yourself is only
/// needed for an error type that is no `std::error::Error`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be returned as a wharf handler error",
    note = "return `wharf::Error`; or implement `wharf::HandlerError` for your error type (`impl wharf::HandlerError for MyError {{}}` makes it retryable; its methods decide per variant what is permanent); or return `Box<dyn std::error::Error + Send + Sync>`, or `anyhow::Error` with wharf's feature `anyhow`"
)]
pub trait IntoFailure {
    /// Converts the error.
    fn into_failure(self) -> Failure;
}

impl IntoFailure for Error {
    fn into_failure(self) -> Failure {
        let message = self.to_string();
        let inner = *self.inner;
        Failure {
            permanent: inner.permanent,
            kind: inner.kind,
            message,
            details: inner.details,
        }
    }
}

// A handler error type that implements neither this trait nor
// `HandlerError` (a `String`, a team's error type without the one-line
// impl) makes rustc name `HandlerError`, whose note gives that line and
// the other ways out (tests/compile_fail/*error*.rs).
impl<E: HandlerError> IntoFailure for E {
    fn into_failure(self) -> Failure {
        Failure {
            permanent: self.is_permanent(),
            kind: self.kind(),
            message: Chain(&self).to_string(),
            details: self.details(),
        }
    }
}

/// A retryable failure of kind `handler` with the whole chain as message.
fn retryable(error: &dyn StdError) -> Failure {
    Failure::new(false, "handler", Chain(error).to_string())
}

impl IntoFailure for Box<dyn StdError + Send + Sync + 'static> {
    fn into_failure(self) -> Failure {
        retryable(&*self)
    }
}

impl IntoFailure for Box<dyn StdError + Send + 'static> {
    fn into_failure(self) -> Failure {
        retryable(&*self)
    }
}

impl IntoFailure for Box<dyn StdError + 'static> {
    fn into_failure(self) -> Failure {
        retryable(&*self)
    }
}

/// Retryable, kind `handler`; the message is the error with its context
/// chain (`reserving stock: connection reset`). For permanent failures
/// return [`Error`] or your own [`HandlerError`].
#[cfg(feature = "anyhow")]
impl IntoFailure for anyhow::Error {
    fn into_failure(self) -> Failure {
        retryable(&*self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn std_errors_are_retryable_and_keep_their_cause_chain() {
        let io = std::io::Error::other("disk full");
        let failure = Error::from(io).into_failure();
        assert!(!failure.permanent);
        assert_eq!(failure.kind, "handler");
        assert_eq!(failure.message, "disk full");
        let wrapped = BrokerError::new(BrokerErrorKind::Publish, "publish failed")
            .with_source(std::io::Error::other("reset"));
        assert_eq!(wrapped.into_failure().message, "publish failed: reset");
    }

    #[test]
    fn permanent_error_carries_kind_and_details() {
        let failure = Error::permanent("declined")
            .with_kind("card-declined")
            .with_details(&serde_json::json!({"code": 51}))
            .into_failure();
        assert!(failure.permanent);
        assert_eq!(failure.kind, "card-declined");
        assert_eq!(failure.details, Some(serde_json::json!({"code": 51})));
    }
}
