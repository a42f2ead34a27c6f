//! The synchronisation primitives of wharf's hand-made concurrency (the
//! window, the client's inbox, the NATS outbox's queue): std's (and
//! futures' `AtomicWaker`), or loom's in the model tests
//! (`RUSTFLAGS="--cfg wharf_loom"`, see `.ci/run`), which run every interleaving
//! of a few threads instead of hoping a stress test hits the bad one.

#[cfg(not(all(test, wharf_loom)))]
pub(crate) use futures_util::task::AtomicWaker;
#[cfg(not(all(test, wharf_loom)))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
#[cfg(not(all(test, wharf_loom)))]
pub(crate) use std::sync::{Mutex, MutexGuard};

/// futures' `AtomicWaker`, as the code calls it, over loom's.
#[cfg(all(test, wharf_loom))]
pub(crate) struct AtomicWaker(loom::future::AtomicWaker);

#[cfg(all(test, wharf_loom))]
impl AtomicWaker {
    pub(crate) fn new() -> Self {
        AtomicWaker(loom::future::AtomicWaker::new())
    }

    pub(crate) fn register(&self, waker: &std::task::Waker) {
        self.0.register_by_ref(waker);
    }

    pub(crate) fn wake(&self) {
        self.0.wake();
    }
}
#[cfg(all(test, wharf_loom))]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
#[cfg(all(test, wharf_loom))]
pub(crate) use loom::sync::{Mutex, MutexGuard};
