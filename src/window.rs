//! A worker's share of a queue: at most `prefetch` deliveries handed out
//! and not yet settled, as `basic.qos` gives a RabbitMQ channel. Used by
//! the transports whose broker does not count for each worker: in-memory,
//! and NATS.
//!
//! On NATS, JetStream's own limit (`max_ack_pending`) belongs to the durable
//! consumer that every worker shares, and a pull subscription asks for more
//! as soon as its buffer drains, settled or not. Without a window of its
//! own a worker would keep taking messages while earlier ones wait in it (a
//! session's early arrivals), past the bound the pipeline relies on; the
//! pipeline would then send the excess back, and a message sent back to
//! JetStream returns behind everything published meanwhile, so in-order
//! sessions turned into a loop of deferrals.

use futures_util::task::AtomicWaker;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

/// Deliveries handed out and not settled, up to a limit.
pub(crate) struct Window {
    max: usize,
    open: AtomicUsize,
    /// The delivery stream, when it waits for room.
    waiting: AtomicWaker,
}

impl Window {
    /// A window of `max` deliveries (at least one).
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Window {
            max: max.max(1),
            open: AtomicUsize::new(0),
            waiting: AtomicWaker::new(),
        })
    }

    /// Ready when one more delivery may be handed out.
    pub(crate) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.open.load(Ordering::Acquire) < self.max {
            return Poll::Ready(());
        }
        self.waiting.register(cx.waker());
        if self.open.load(Ordering::Acquire) < self.max {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Counts a delivery handed out until the returned slot is dropped
    /// (with its acker: settled, or dropped unsettled).
    pub(crate) fn take(self: &Arc<Self>) -> Slot {
        self.open.fetch_add(1, Ordering::AcqRel);
        Slot(self.clone())
    }

    /// Deliveries out now.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// One delivery's place in its worker's window.
pub(crate) struct Slot(Arc<Window>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.waiting.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    #[test]
    fn a_full_window_waits_until_a_delivery_is_settled() {
        let window = Window::new(2);
        let mut cx = Context::from_waker(Waker::noop());
        let first = window.take();
        assert!(window.poll_room(&mut cx).is_ready());
        let second = window.take();
        assert!(window.poll_room(&mut cx).is_pending(), "two out of two");
        drop(first);
        assert!(window.poll_room(&mut cx).is_ready());
        drop(second);
        assert_eq!(window.open(), 0);
    }
}
