//! Boxed futures, as the object-safe transport and store traits return.

use crate::error::BrokerError;
use std::future::Future;
use std::pin::Pin;

/// A boxed, sendable future, as the object-safe transport and store traits
/// return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An operation that has already succeeded, as a [`BoxFuture`] that does
/// not allocate (the future is zero-sized). For transports and stores whose
/// operation completed synchronously.
pub fn succeeded() -> BoxFuture<'static, Result<(), BrokerError>> {
    Box::pin(Succeeded)
}

struct Succeeded;

impl Future for Succeeded {
    type Output = Result<(), BrokerError>;

    fn poll(self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        std::task::Poll::Ready(Ok(()))
    }
}
