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

use crate::util::sync::{AtomicBool, AtomicUsize, AtomicWaker};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

/// Deliveries handed out and not settled, up to a limit.
pub(crate) struct Window {
    max: usize,
    open: AtomicUsize,
    /// The delivery stream, when it waits for room.
    waker: AtomicWaker,
    /// Set while the delivery stream may be waiting: a delivery freeing its
    /// place wakes it only then (an atomic read instead of the waker's
    /// read-modify-writes, once per message).
    waiting: AtomicBool,
}

impl Window {
    /// A window of `max` deliveries (at least one).
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Window {
            max: max.max(1),
            open: AtomicUsize::new(0),
            waker: AtomicWaker::new(),
            waiting: AtomicBool::new(false),
        })
    }

    /// Ready when one more delivery may be handed out.
    pub(crate) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.open.load(Ordering::SeqCst) < self.max {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // Either a delivery freeing its place after this sees `waiting`, or
        // this sees its place freed. The second look is a read-modify-write
        // (adding nothing), so it reads the latest count: if no place was
        // freed before it, the next `fetch_sub` reads from it and sees the
        // `waiting` stored before it. Acquire and release alone give that,
        // which the loom model below can check (it takes a plain `SeqCst`
        // load for an acquire one); only a stream about to wait pays for it.
        self.waiting.store(true, Ordering::SeqCst);
        if self.open.fetch_add(0, Ordering::SeqCst) < self.max {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Counts a delivery handed out until the returned slot is dropped
    /// (with its acker: settled, or dropped unsettled).
    pub(crate) fn take(self: &Arc<Self>) -> WindowPlace {
        self.acquire();
        WindowPlace(self.clone())
    }

    /// Counts a delivery handed out; the caller calls [`release`](Self::release)
    /// exactly once when it is gone (a [`WindowPlace`] without its own reference).
    pub(crate) fn acquire(&self) {
        self.open.fetch_add(1, Ordering::AcqRel);
    }

    /// A delivery counted by [`acquire`](Self::acquire) is gone.
    pub(crate) fn release(&self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) && self.waiting.swap(false, Ordering::SeqCst) {
            self.waker.wake();
        }
    }

    /// Deliveries out now.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// One delivery's place in its worker's window.
pub(crate) struct WindowPlace(Arc<Window>);

impl Drop for WindowPlace {
    fn drop(&mut self) {
        self.0.release();
    }
}

#[cfg(all(test, not(wharf_loom)))]
mod tests {
    use super::*;
    use std::task::Waker;
    use std::time::Duration;

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

    struct Wakes(AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_waiting_stream_is_woken_once_when_a_place_frees_and_not_otherwise() {
        let window = Window::new(1);
        let wakes = Arc::new(Wakes(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        // Not waiting: freeing a place wakes nobody.
        window.acquire();
        window.release();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
        // Waiting: the first place freed wakes the stream, once.
        let first = window.take();
        assert!(window.poll_room(&mut cx).is_pending());
        window.acquire();
        drop(first);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        window.release();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "woken once per wait");
        assert!(window.poll_room(&mut cx).is_ready());
        assert_eq!(window.open(), 0);
    }

    #[test]
    fn no_wakeup_is_lost_when_places_free_on_other_threads() {
        // A consumer fills a window of 4 and waits whenever it is full;
        // other threads free the places. After `Pending` the next place
        // freed must wake it: a wait of seconds is a lost wakeup.
        struct Unpark(std::thread::Thread, AtomicUsize);
        impl std::task::Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.1.fetch_add(1, Ordering::SeqCst);
                self.0.unpark();
            }
        }
        const DELIVERIES: usize = 200_000;
        let window = Window::new(4);
        let (give, take) = std::sync::mpsc::channel::<()>();
        let take = Arc::new(std::sync::Mutex::new(take));
        let freers: Vec<_> = (0..3)
            .map(|_| {
                let (window, take) = (window.clone(), take.clone());
                std::thread::spawn(move || {
                    while take.lock().unwrap().recv().is_ok() {
                        window.release();
                    }
                })
            })
            .collect();
        let unpark = Arc::new(Unpark(std::thread::current(), AtomicUsize::new(0)));
        let waker = Waker::from(unpark.clone());
        let mut cx = Context::from_waker(&waker);
        for _ in 0..DELIVERIES {
            loop {
                let wakes = unpark.1.load(Ordering::SeqCst);
                if window.poll_room(&mut cx).is_ready() {
                    break;
                }
                let waited = std::time::Instant::now();
                while unpark.1.load(Ordering::SeqCst) == wakes {
                    assert!(waited.elapsed() < Duration::from_secs(5), "a wakeup was lost");
                    std::thread::park_timeout(Duration::from_millis(100));
                }
            }
            window.acquire();
            give.send(()).unwrap();
        }
        drop(give);
        for freer in freers {
            freer.join().unwrap();
        }
        assert_eq!(window.open(), 0);
    }
}

/// Model tests (`RUSTFLAGS="--cfg wharf_loom"`): every interleaving of a stream
/// starting to wait and deliveries freeing their places.
#[cfg(all(test, wharf_loom))]
mod loom_tests {
    use super::*;
    use std::task::{Wake, Waker};

    struct Woken(AtomicUsize);

    impl Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A full window of `max`; `freers` threads each free one place while
    /// the stream polls for room once. Afterwards the stream has room or
    /// was woken: `Pending` with nobody left to wake it is a lost wakeup.
    fn stream_waits_while_places_free(max: usize, freers: usize) {
        loom::model(move || {
            let window = Window::new(max);
            for _ in 0..max {
                window.acquire();
            }
            let threads: Vec<_> = (0..freers)
                .map(|_| {
                    let window = window.clone();
                    loom::thread::spawn(move || window.release())
                })
                .collect();
            let woken = Arc::new(Woken(AtomicUsize::new(0)));
            let waker = Waker::from(woken.clone());
            let ready = window.poll_room(&mut Context::from_waker(&waker)).is_ready();
            for thread in threads {
                thread.join().unwrap();
            }
            let wakes = woken.0.load(Ordering::SeqCst);
            assert!(ready || wakes > 0, "waiting with room and nobody to wake it");
            assert!(wakes <= 1, "woken once per wait: {wakes}");
            assert_eq!(window.open(), max - freers);
        });
    }

    #[test]
    fn loom_a_place_freed_as_the_stream_starts_waiting_wakes_it() {
        stream_waits_while_places_free(1, 1);
    }

    #[test]
    fn loom_two_places_freed_as_the_stream_starts_waiting_wake_it_once() {
        stream_waits_while_places_free(2, 2);
    }
}
