//! [`BrokerError`]: what wharf's own broker and store operations return.

use super::{BoxError, HandlerError};
use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;

/// What kind of broker operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BrokerErrorKind {
    /// The broker URL or configuration is invalid.
    Config,
    /// The URL names a transport this build does not include.
    Unsupported,
    /// The broker cannot be reached or the connection was lost.
    Connection,
    /// The broker or client was closed.
    Closed,
    /// Declaring a queue or stream failed.
    Declare,
    /// Publishing failed or was not confirmed.
    Publish,
    /// Consuming or settling a delivery failed.
    Consume,
    /// The idempotency/session store failed.
    Store,
    /// The address (a reply address) can never be used on this broker:
    /// trying again cannot help.
    Address,
}

/// An error from a broker or store operation.
///
/// `Display` shows wharf's own message ("publish to \"orders\" failed");
/// the broker client's error that caused it is its
/// [`source()`](std::error::Error::source), as the Rust API guidelines
/// ask, so that error reporters (`anyhow`'s `{:#}`, `tracing` with an
/// error chain) show each cause once. `Debug` shows both.
///
/// ```
/// use std::error::Error as _;
/// use wharf::{BrokerError, BrokerErrorKind};
///
/// let error = BrokerError::new(BrokerErrorKind::Publish, "publish failed")
///     .with_source(std::io::Error::other("connection reset"));
/// assert_eq!(error.to_string(), "publish failed");
/// assert_eq!(error.source().unwrap().to_string(), "connection reset");
/// ```
///
/// Returned from a handler, it fails the message like any
/// [`HandlerError`]: permanently when [`is_permanent`](BrokerError::is_permanent),
/// with the kind `broker`.
pub struct BrokerError {
    kind: BrokerErrorKind,
    message: String,
    source: Option<BoxError>,
}

impl BrokerError {
    /// A new error of `kind`.
    pub fn new(kind: BrokerErrorKind, message: impl Into<String>) -> Self {
        BrokerError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying cause, returned by `source()`.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// What failed.
    pub fn kind(&self) -> BrokerErrorKind {
        self.kind
    }

    /// True when the connection is the problem (retrying later may help).
    pub fn is_connection(&self) -> bool {
        matches!(self.kind, BrokerErrorKind::Connection | BrokerErrorKind::Closed)
    }

    /// True when trying the same operation again cannot succeed: what was
    /// asked is invalid on this broker (configuration, an unusable address,
    /// a priority no lane carries), not a failure of the moment.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self.kind,
            BrokerErrorKind::Config | BrokerErrorKind::Unsupported | BrokerErrorKind::Address
        )
    }
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("source", &self.source)
            .finish()
    }
}

impl StdError for BrokerError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn StdError + 'static))
    }
}

/// Permanent when [`BrokerError::is_permanent`] (a configuration or an
/// address no retry can fix), kind `broker`.
impl HandlerError for BrokerError {
    fn is_permanent(&self) -> bool {
        BrokerError::is_permanent(self)
    }

    fn kind(&self) -> Cow<'static, str> {
        Cow::Borrowed("broker")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Chain, IntoFailure};

    #[test]
    fn the_cause_is_the_source_not_part_of_the_message() {
        let error = BrokerError::new(BrokerErrorKind::Publish, "publish failed")
            .with_source(std::io::Error::other("reset"));
        assert_eq!(error.to_string(), "publish failed");
        let source = error.source().expect("the cause");
        assert_eq!(source.to_string(), "reset");
        assert!(source.downcast_ref::<std::io::Error>().is_some());
        assert_eq!(Chain(&error).to_string(), "publish failed: reset");
        assert!(format!("{error:?}").contains("reset"));
        assert!(BrokerError::new(BrokerErrorKind::Store, "x").source().is_none());
    }

    #[test]
    fn as_a_handler_error_it_keeps_its_cause_and_permanence() {
        let failure = BrokerError::new(BrokerErrorKind::Publish, "publish failed")
            .with_source(std::io::Error::other("reset"))
            .into_failure();
        assert!(!failure.permanent);
        assert_eq!(failure.kind, "broker");
        assert_eq!(failure.message, "publish failed: reset");
        let failure = BrokerError::new(BrokerErrorKind::Address, "no such reply subject").into_failure();
        assert!(failure.permanent);
    }
}
