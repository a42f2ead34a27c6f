//! The end of a run, as the handlers see it: the measuring thread sleeps
//! until the last expected message is handled instead of polling, which
//! would cost this process CPU time (a sleep and wake-up every poll).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Set (and signalled) when `expected` messages are handled.
pub struct Completion {
    /// Handled messages that complete the run.
    expected: AtomicU64,
    all_handled: Mutex<bool>,
    done: Condvar,
}

impl Completion {
    pub fn new() -> Self {
        Completion {
            expected: AtomicU64::new(u64::MAX),
            all_handled: Mutex::new(false),
            done: Condvar::new(),
        }
    }

    /// A new run, complete at `count` messages handled.
    pub fn reset(&self, count: u64) {
        self.expected.store(count, Ordering::Relaxed);
        *self.all_handled.lock().unwrap() = false;
    }

    /// `handled` messages are handled so far: wakes the waiter at the last.
    pub fn handled(&self, handled: u64) {
        if handled == self.expected.load(Ordering::Relaxed) {
            *self.all_handled.lock().unwrap() = true;
            self.done.notify_all();
        }
    }

    /// Waits until the expected messages are handled, or `timeout`;
    /// whether they are.
    pub fn wait(&self, timeout: Duration) -> bool {
        let done = self.all_handled.lock().unwrap();
        let (done, _) = self.done.wait_timeout_while(done, timeout, |d| !*d).unwrap();
        *done
    }
}
