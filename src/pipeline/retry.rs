//! Retry policy: retry after a backoff delay, or dead-letter.

use crate::error::Failure;
use crate::pipeline::backoff::Backoff;
use crate::wire::dead_letter_reason::DeadLetterReason;
use std::time::Duration;

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
