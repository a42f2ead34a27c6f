//! [`HandlerError`]: a team's own error type as a handler's error, deciding
//! per variant what is permanent.

use std::borrow::Cow;
use std::error::Error as StdError;

/// An error type that handlers return directly, `Result<T, MyError>`,
/// and that decides per value what wharf does with the message.
///
/// Every method has a default: `impl wharf::HandlerError for MyError {}`
/// is enough for a type whose every failure is worth retrying. Override
/// them to decide per variant:
/// - [`is_permanent`](HandlerError::is_permanent): dead-letter at once
///   (and send a request its error reply) instead of retrying;
/// - [`kind`](HandlerError::kind): the short machine-readable kind in the
///   error reply and in the dead letter's `wharf-error-kind` header;
/// - [`details`](HandlerError::details): structured details for the error
///   reply.
///
/// The message is the error's `Display` followed by its `source()` chain,
/// joined by `": "`. Write `Display` and `Error` by hand, as below, or
/// with a derive such as `thiserror`'s.
///
/// ```
/// use std::borrow::Cow;
/// use std::fmt;
/// use wharf::{App, Broker, HandlerError, IntoFailure};
///
/// #[derive(Debug)]
/// enum OrderError {
///     /// Retrying cannot make stock appear: permanent.
///     OutOfStock { sku: String, missing: u32 },
///     /// The database may be back in a moment: retryable.
///     Db(std::io::Error),
/// }
///
/// impl fmt::Display for OrderError {
///     fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
///         match self {
///             OrderError::OutOfStock { sku, missing } => write!(f, "{missing} × {sku} missing"),
///             OrderError::Db(_) => f.write_str("stock database unavailable"),
///         }
///     }
/// }
///
/// impl std::error::Error for OrderError {
///     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
///         match self {
///             OrderError::Db(cause) => Some(cause),
///             OrderError::OutOfStock { .. } => None,
///         }
///     }
/// }
///
/// impl HandlerError for OrderError {
///     fn is_permanent(&self) -> bool {
///         matches!(self, OrderError::OutOfStock { .. })
///     }
///
///     fn kind(&self) -> Cow<'static, str> {
///         match self {
///             OrderError::OutOfStock { .. } => "out-of-stock".into(),
///             OrderError::Db(_) => "db".into(),
///         }
///     }
///
///     fn details(&self) -> Option<serde_json::Value> {
///         match self {
///             OrderError::OutOfStock { sku, missing } => {
///                 Some(serde_json::json!({ "sku": sku, "missing": missing }))
///             }
///             OrderError::Db(_) => None,
///         }
///     }
/// }
///
/// #[derive(serde::Deserialize)]
/// struct Order { sku: String, quantity: u32 }
///
/// async fn place(order: Order) -> Result<u64, OrderError> {
///     let in_stock = 2;
///     if order.quantity > in_stock {
///         return Err(OrderError::OutOfStock { sku: order.sku, missing: order.quantity - in_stock });
///     }
///     Ok(42)
/// }
///
/// let _app = App::new(Broker::memory()).route("orders", place);
///
/// // What wharf makes of each variant:
/// let out_of_stock = OrderError::OutOfStock { sku: "tea".into(), missing: 3 }.into_failure();
/// assert!(out_of_stock.permanent);
/// assert_eq!(out_of_stock.kind, "out-of-stock");
/// assert_eq!(out_of_stock.details, Some(serde_json::json!({ "sku": "tea", "missing": 3 })));
///
/// let db = OrderError::Db(std::io::Error::other("connection reset")).into_failure();
/// assert!(!db.permanent);
/// assert_eq!(db.kind, "db");
/// assert_eq!(db.message, "stock database unavailable: connection reset");
/// ```
///
/// Implemented by wharf's own errors ([`BrokerError`](crate::BrokerError):
/// permanent when its [`is_permanent`](crate::BrokerError::is_permanent),
/// kind `broker`; [`RequestError`](crate::RequestError), kind `request`;
/// [`CodecError`](crate::CodecError), permanent, kind `decode`, `encode`
/// or `content-type`) and, retryable with kind `handler`, by the standard
/// errors a handler may pass on with `?`: `std::io::Error`,
/// `serde_json::Error`, `rmp_serde`'s decode and encode errors,
/// `std::fmt::Error`, `ParseIntError`, `ParseFloatError`, `Utf8Error`,
/// `FromUtf8Error`. Any other error type, and a handler that mixes several,
/// can return [`Error`](crate::Error) (any `std::error::Error` converts with
/// `?`), `Box<dyn std::error::Error + Send + Sync>`, or `anyhow::Error`
/// (cargo feature `anyhow`).
// The error for a handler whose error type is not a `HandlerError`
// (`IntoFailure` is reached through it): for a team's own error type, the
// one line that fixes it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be returned as a wharf handler error: it does not implement `wharf::HandlerError`",
    note = "if `{Self}` is your own error type, add `impl wharf::HandlerError for {Self} {{}}` (every failure retryable; override its methods to decide per variant what is permanent); otherwise return `wharf::Error` (any `std::error::Error` converts into it with `?`), `Box<dyn std::error::Error + Send + Sync>`, or `anyhow::Error` with wharf's feature `anyhow`"
)]
pub trait HandlerError: StdError {
    /// True when retrying cannot help: the message is dead-lettered at
    /// once. Default: `false`, retried with backoff up to the route's
    /// `max_attempts`.
    fn is_permanent(&self) -> bool {
        false
    }

    /// A short machine-readable kind, sent in error replies and the
    /// dead letter's `wharf-error-kind` header so that callers and
    /// operators can match on it. Default: `handler`.
    fn kind(&self) -> Cow<'static, str> {
        Cow::Borrowed("handler")
    }

    /// Structured details for the error reply's `details` field.
    /// Default: none.
    fn details(&self) -> Option<serde_json::Value> {
        None
    }
}

/// A boxed handler error decides as the error in the box does (for
/// `Result<T, Box<MyError>>`, which keeps a large error off the stack).
impl<E: HandlerError> HandlerError for Box<E> {
    fn is_permanent(&self) -> bool {
        (**self).is_permanent()
    }

    fn kind(&self) -> Cow<'static, str> {
        (**self).kind()
    }

    fn details(&self) -> Option<serde_json::Value> {
        (**self).details()
    }
}

// The standard errors a handler may return as they are: retryable, kind
// `handler` (what every `std::error::Error` was before this trait).
impl HandlerError for std::io::Error {}
impl HandlerError for std::fmt::Error {}
impl HandlerError for std::num::ParseIntError {}
impl HandlerError for std::num::ParseFloatError {}
impl HandlerError for std::str::Utf8Error {}
impl HandlerError for std::string::FromUtf8Error {}
impl HandlerError for serde_json::Error {}
impl HandlerError for rmp_serde::decode::Error {}
impl HandlerError for rmp_serde::encode::Error {}

#[cfg(test)]
mod tests {
    use crate::error::{BrokerError, BrokerErrorKind, Error, IntoFailure};
    use std::borrow::Cow;
    use std::fmt;

    #[derive(Debug)]
    enum Payment {
        Declined { code: u32 },
        Gateway(BrokerError),
    }

    impl fmt::Display for Payment {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Payment::Declined { code } => write!(f, "card declined ({code})"),
                Payment::Gateway(_) => f.write_str("payment gateway unreachable"),
            }
        }
    }

    impl std::error::Error for Payment {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            match self {
                Payment::Gateway(cause) => Some(cause),
                Payment::Declined { .. } => None,
            }
        }
    }

    impl super::HandlerError for Payment {
        fn is_permanent(&self) -> bool {
            matches!(self, Payment::Declined { .. })
        }

        fn kind(&self) -> Cow<'static, str> {
            match self {
                Payment::Declined { .. } => Cow::Borrowed("card-declined"),
                Payment::Gateway(_) => Cow::Borrowed("gateway"),
            }
        }

        fn details(&self) -> Option<serde_json::Value> {
            match self {
                Payment::Declined { code } => Some(serde_json::json!({ "code": code })),
                Payment::Gateway(_) => None,
            }
        }
    }

    fn gateway() -> Payment {
        Payment::Gateway(
            BrokerError::new(BrokerErrorKind::Connection, "link lost")
                .with_source(std::io::Error::other("connection reset")),
        )
    }

    #[test]
    fn each_variant_decides_permanence_kind_and_details() {
        let declined = Payment::Declined { code: 51 }.into_failure();
        assert!(declined.permanent);
        assert_eq!(declined.kind, "card-declined");
        assert_eq!(declined.message, "card declined (51)");
        assert_eq!(declined.details, Some(serde_json::json!({ "code": 51 })));

        let gateway = gateway().into_failure();
        assert!(!gateway.permanent);
        assert_eq!(gateway.kind, "gateway");
        assert_eq!(
            gateway.message,
            "payment gateway unreachable: link lost: connection reset"
        );
        assert_eq!(gateway.details, None);
    }

    #[test]
    fn boxed_and_wrapped_errors_keep_the_decision() {
        let boxed = Box::new(Payment::Declined { code: 5 }).into_failure();
        assert!(boxed.permanent);
        assert_eq!(boxed.kind, "card-declined");

        let error = Error::from_handler_error(Payment::Declined { code: 5 });
        assert!(error.is_permanent());
        assert_eq!(error.kind(), "card-declined");
        assert_eq!(error.details(), Some(&serde_json::json!({ "code": 5 })));
        let error = Error::from_handler_error(gateway());
        assert!(!error.is_permanent());
        assert_eq!(
            error.to_string(),
            "payment gateway unreachable: link lost: connection reset"
        );

        // `?` into `wharf::Error` cannot see the decision: retryable.
        let plain = Error::from(Payment::Declined { code: 5 });
        assert!(!plain.is_permanent());
        assert_eq!(plain.kind(), "handler");
    }

    #[test]
    fn standard_errors_are_retryable_with_their_chain() {
        let io = std::io::Error::other("disk full").into_failure();
        assert_eq!(
            (io.permanent, &*io.kind, &*io.message),
            (false, "handler", "disk full")
        );
        let parse = "x".parse::<u32>().unwrap_err().into_failure();
        assert!(!parse.permanent);
        assert_eq!(parse.message, "invalid digit found in string");
        let json = serde_json::from_str::<u32>("{").unwrap_err().into_failure();
        assert!(!json.permanent);
        assert_eq!(json.kind, "handler");
    }

    #[test]
    fn boxed_dyn_errors_are_retryable_with_their_chain() {
        let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(
            BrokerError::new(BrokerErrorKind::Publish, "publish failed")
                .with_source(std::io::Error::other("reset")),
        );
        let failure = boxed.into_failure();
        assert!(!failure.permanent);
        assert_eq!(failure.kind, "handler");
        assert_eq!(failure.message, "publish failed: reset");
        let unsendable: Box<dyn std::error::Error> = "no stock".into();
        assert_eq!(unsendable.into_failure().message, "no stock");
    }
}
