//! The delay between a route's attempts (a route option).

use backon::{BackoffBuilder, ExponentialBuilder};
use std::time::Duration;

/// Delay between attempts: exponential with jitter, capped.
///
/// The delay before attempt `n + 1` is `initial · factor^(n-1)`, plus a random
/// jitter of up to the same amount (from the `backon` crate), never more than
/// `max`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    factor: f32,
    jitter: bool,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::exponential(Duration::from_secs(1), Duration::from_secs(60))
    }
}

impl Backoff {
    /// Doubling delays from `initial`, capped at `max`, with jitter.
    pub fn exponential(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            factor: 2.0,
            jitter: true,
        }
    }

    /// The same delay every time, without jitter.
    pub fn fixed(delay: Duration) -> Self {
        Backoff {
            initial: delay,
            max: delay,
            factor: 1.0,
            jitter: false,
        }
    }

    /// Growth factor per attempt (at least 1).
    pub fn with_factor(mut self, factor: f32) -> Self {
        self.factor = factor.max(1.0);
        self
    }

    /// Turns jitter off (delays become predictable; retries of many messages
    /// that failed together then also come back together).
    pub fn without_jitter(mut self) -> Self {
        self.jitter = false;
        self
    }

    /// The longest delay between attempts.
    pub(crate) fn max_delay(&self) -> Duration {
        self.max
    }

    /// The delay after the `failed`-th failed attempt (1-based), in whole
    /// milliseconds.
    pub fn delay(&self, failed: u32) -> Duration {
        let mut builder = ExponentialBuilder::new()
            .with_min_delay(self.initial)
            .with_max_delay(self.max)
            .with_factor(self.factor)
            .without_max_times();
        if self.jitter {
            builder = builder.with_jitter();
        }
        let steps = failed.saturating_sub(1).min(64) as usize;
        let delay = builder.build().nth(steps).unwrap_or(self.max).min(self.max);
        // backon computes in f32; whole milliseconds are what brokers take
        // (AMQP expiration, NATS nak delay) and keep delays exact.
        Duration::from_millis((delay.as_secs_f64() * 1000.0).round() as u64)
    }
}
