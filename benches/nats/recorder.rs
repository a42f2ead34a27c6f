//! Which orders were handled, and when the first one was.

use crate::bench::start_clock;
use crate::common::clock::Clock;
use crate::common::completion::Completion;
use crate::common::payload::Order;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Which orders were handled and whether any twice, and when the first one
/// was. Shared by the raw consumer and the wharf handler (a global, as the
/// handler is a plain `async fn`), so both do the same work per message.
pub struct Recorder {
    /// Times handled, by order id.
    slots: Vec<AtomicU8>,
    handled: AtomicU64,
    duplicates: AtomicU64,
    strangers: AtomicU64,
    /// The clock, started by the first message handled.
    first: Mutex<Option<Clock>>,
    /// Signalled when the run's messages are all handled: the measuring
    /// thread sleeps on it instead of polling.
    completion: Completion,
}

static RECORDER: OnceLock<Recorder> = OnceLock::new();

pub fn recorder() -> &'static Recorder {
    RECORDER.get().expect("recorder set up")
}

impl Recorder {
    pub fn install(capacity: u64) {
        let slots = (0..capacity).map(|_| AtomicU8::new(0)).collect();
        let recorder = Recorder {
            slots,
            handled: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            strangers: AtomicU64::new(0),
            first: Mutex::new(None),
            completion: Completion::new(),
        };
        assert!(RECORDER.set(recorder).is_ok(), "recorder installed twice");
    }

    pub fn reset(&self, count: u64) {
        assert!(
            count as usize <= self.slots.len(),
            "recorder too small for {count} messages"
        );
        for slot in &self.slots[..count as usize] {
            slot.store(0, Ordering::Relaxed);
        }
        self.handled.store(0, Ordering::Relaxed);
        self.duplicates.store(0, Ordering::Relaxed);
        self.strangers.store(0, Ordering::Relaxed);
        *self.first.lock().unwrap() = None;
        self.completion.reset(count);
    }

    /// Waits until the expected messages are handled, or `timeout`;
    /// whether they are.
    pub fn wait(&self, timeout: Duration) -> bool {
        self.completion.wait(timeout)
    }

    pub fn record(&self, order: &Order) {
        match self.slots.get(order.id as usize) {
            Some(slot) => {
                if slot.fetch_add(1, Ordering::Relaxed) != 0 {
                    self.duplicates.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                self.strangers.fetch_add(1, Ordering::Relaxed);
            }
        }
        let handled = self.handled.fetch_add(1, Ordering::AcqRel) + 1;
        if handled == 1 {
            *self.first.lock().unwrap() = Some(start_clock());
        }
        self.completion.handled(handled);
    }

    /// The clock the first message started.
    pub fn take_clock(&self) -> Clock {
        self.first.lock().unwrap().take().expect("a first message")
    }

    /// Panics unless orders `0..count` were each handled exactly once.
    pub fn check(&self, count: u64, scenario: &str) {
        let duplicates = self.duplicates.load(Ordering::Relaxed);
        let strangers = self.strangers.load(Ordering::Relaxed);
        let handled = self.slots[..count as usize]
            .iter()
            .filter(|s| s.load(Ordering::Relaxed) != 0)
            .count() as u64;
        let lost = count - handled;
        assert!(
            duplicates == 0 && strangers == 0 && lost == 0,
            "{scenario}: {lost} of {count} messages lost, {duplicates} handled twice, \
             {strangers} unexpected"
        );
    }
}

/// The wharf handler of the consume scenario: decoded by wharf, recorded.
pub async fn take_order(order: Order) {
    recorder().record(&order);
}
