//! Which orders were handled, and how long after publishing.

use crate::common::completion::Completion;
use crate::common::payload::{Order, now_ns};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Which orders were handled, how long after publishing, and whether any
/// twice. Shared by the raw consumers and the wharf handler (a global, as
/// the handler is a plain `async fn`), so both do the same work per message.
pub struct Recorder {
    /// Latency + 1 in ns by order id; 0 = not handled.
    slots: Vec<AtomicU64>,
    handled: AtomicU64,
    duplicates: AtomicU64,
    strangers: AtomicU64,
    /// Signalled when the run's messages are all handled: the measuring
    /// thread sleeps on it.
    completion: Completion,
}

static RECORDER: OnceLock<Recorder> = OnceLock::new();

pub fn recorder() -> &'static Recorder {
    RECORDER.get().expect("recorder set up")
}

impl Recorder {
    pub fn install(capacity: u64) {
        let slots = (0..capacity).map(|_| AtomicU64::new(0)).collect();
        let recorder = Recorder {
            slots,
            handled: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            strangers: AtomicU64::new(0),
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
        self.completion.reset(count);
    }

    /// Waits until the expected messages are handled, or `timeout`;
    /// whether they are.
    pub fn wait(&self, timeout: Duration) -> bool {
        self.completion.wait(timeout)
    }

    pub fn record(&self, order: &Order) {
        let latency = now_ns().saturating_sub(order.sent_ns);
        match self.slots.get(order.id as usize) {
            Some(slot) => {
                if slot.swap(latency + 1, Ordering::Relaxed) != 0 {
                    self.duplicates.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                self.strangers.fetch_add(1, Ordering::Relaxed);
            }
        }
        let handled = self.handled.fetch_add(1, Ordering::AcqRel) + 1;
        self.completion.handled(handled);
    }

    /// Panics unless orders `0..count` were each handled exactly once;
    /// returns their latencies.
    pub fn check(&self, count: u64, scenario: &str) -> Vec<u64> {
        let duplicates = self.duplicates.load(Ordering::Relaxed);
        let strangers = self.strangers.load(Ordering::Relaxed);
        let latencies: Vec<u64> = self.slots[..count as usize]
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .filter(|l| *l != 0)
            .map(|l| l - 1)
            .collect();
        let lost = count - latencies.len() as u64;
        assert!(
            duplicates == 0 && strangers == 0 && lost == 0,
            "{scenario}: {lost} of {count} messages lost, {duplicates} handled twice, \
             {strangers} unexpected"
        );
        latencies
    }
}

/// The wharf handler of the consume scenarios: decoded by wharf, recorded.
pub async fn take_order(order: Order) {
    recorder().record(&order);
}
