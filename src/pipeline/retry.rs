//! Retry policy: retry after a backoff delay, or dead-letter.

use crate::dead_letter::DeadLetterReason;
use crate::error::Failure;
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

/// What to do with a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Decision {
    Retry(Duration),
    DeadLetter(DeadLetterReason),
}

/// The retry policy of a route.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RetryPolicy {
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
}

impl RetryPolicy {
    pub(crate) fn decide(&self, attempt: u32, failure: &Failure) -> Decision {
        if failure.permanent {
            Decision::DeadLetter(DeadLetterReason::Permanent)
        } else if attempt >= self.max_attempts {
            Decision::DeadLetter(DeadLetterReason::MaxAttempts)
        } else {
            Decision::Retry(self.backoff.delay(attempt))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_under_the_cap() {
        let backoff = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..50 {
            let first = backoff.delay(1);
            assert!(first >= Duration::from_millis(100) && first <= Duration::from_millis(200));
            let third = backoff.delay(3);
            assert!(third >= Duration::from_millis(400) && third <= Duration::from_millis(800));
            assert!(backoff.delay(30) <= Duration::from_secs(1));
        }
        let exact = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1)).without_jitter();
        assert_eq!(exact.delay(2), Duration::from_millis(200));
        assert_eq!(exact.delay(10), Duration::from_secs(1));
    }

    #[test]
    fn retry_delay_follows_the_failed_attempt_number() {
        let policy = RetryPolicy {
            max_attempts: 5,
            backoff: Backoff::exponential(Duration::from_millis(100), Duration::from_secs(10))
                .without_jitter(),
        };
        let retryable = Failure::new(false, "handler", "boom");
        assert_eq!(
            policy.decide(1, &retryable),
            Decision::Retry(Duration::from_millis(100))
        );
        assert_eq!(
            policy.decide(2, &retryable),
            Decision::Retry(Duration::from_millis(200))
        );
        assert_eq!(
            policy.decide(3, &retryable),
            Decision::Retry(Duration::from_millis(400))
        );
    }

    #[test]
    fn permanent_and_exhausted_failures_dead_letter() {
        let policy = RetryPolicy {
            max_attempts: 3,
            backoff: Backoff::fixed(Duration::from_millis(5)),
        };
        let retryable = Failure::new(false, "handler", "boom");
        let permanent = Failure::new(true, "handler", "no");
        assert_eq!(
            policy.decide(1, &retryable),
            Decision::Retry(Duration::from_millis(5))
        );
        assert_eq!(
            policy.decide(3, &retryable),
            Decision::DeadLetter(DeadLetterReason::MaxAttempts)
        );
        assert_eq!(
            policy.decide(1, &permanent),
            Decision::DeadLetter(DeadLetterReason::Permanent)
        );
    }
}
