//! Recording what already happened while the store fails over.
//!
//! Once a handler has run, its session must move on and its idempotency
//! key must be marked done; a store that cannot be reached at that moment
//! (a replicated store electing a new leader takes a few seconds, 16 s in
//! one failover run) would otherwise leave the session waiting for its gap
//! timeout (and then dead-letter what waits) and the key claimed until its
//! lease runs out. So such a write is tried again, backing off, for up to
//! the route's gap timeout and at least its lease (30 s and 15 s by
//! default), each try within what is left of it.
//!
//! Repeating them is harmless, and so is recording after the lease: a
//! session finish moves the session past that number only, whoever ran it
//! (a takeover that ran it again finds the session past it), and a
//! completion under a claim another worker took over changes nothing.
//! Within the lease nobody else has taken the turn or claim over; past it,
//! a takeover may run the message again (the documented duplicate window).
//! Past the gap timeout the other workers' gap policy has moved the session
//! on, so trying longer gains nothing. A permanent error (a configuration)
//! is not retried.

use crate::error::BrokerError;
use std::future::Future;
use std::time::Duration;
// Tokio's clock, as for the leases.
use tokio::time::Instant;

/// The first pause between two tries; it doubles up to [`LONGEST_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);

/// How long a route keeps trying to record a run: its gap timeout, and at
/// least its lease.
pub(super) fn recording_limit(lease: Duration, gap_timeout: Duration) -> Duration {
    lease.max(gap_timeout)
}

/// Runs `write` until it succeeds, fails permanently, or `limit` has
/// passed; the last result.
pub(super) async fn record_within<T, F, Fut>(
    limit: Duration,
    what: &'static str,
    mut write: F,
) -> Result<T, BrokerError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, BrokerError>>,
{
    let deadline = Instant::now() + limit;
    let mut pause = FIRST_PAUSE;
    let mut tries = 1u32;
    loop {
        let tried = match tokio::time::timeout_at(deadline, write()).await {
            Ok(tried) => tried,
            Err(_) => Err(BrokerError::new(
                crate::error::BrokerErrorKind::Store,
                format!("{what}: the store did not answer within {limit:?}"),
            )),
        };
        match tried {
            Ok(done) => {
                if tries > 1 {
                    tracing::info!(what, tries, "recorded after the store came back");
                }
                return Ok(done);
            }
            Err(error) if error.is_permanent() || Instant::now() + pause >= deadline => return Err(error),
            Err(error) => {
                tracing::debug!(what, tries, error = %crate::error::Chain(&error), "store unavailable; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(LONGEST_PAUSE);
                tries += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::BrokerErrorKind;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn unavailable() -> BrokerError {
        BrokerError::new(BrokerErrorKind::Store, "no leader")
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_back_within_the_lease_records() {
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let done = record_within(Duration::from_secs(15), "test", || async {
            // Unavailable for about 5 s, as during an election.
            if started.elapsed() < Duration::from_secs(5) {
                calls.fetch_add(1, Ordering::Relaxed);
                return Err(unavailable());
            }
            Ok(7)
        })
        .await;
        assert_eq!(done.unwrap(), 7);
        assert!(calls.load(Ordering::Relaxed) > 3, "retried, backing off");
        assert!(started.elapsed() < Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn it_gives_up_after_its_limit_or_at_once_when_permanent() {
        let started = Instant::now();
        let failed = record_within(Duration::from_secs(6), "test", || async {
            Err::<(), _>(unavailable())
        })
        .await;
        assert!(failed.is_err());
        let took = started.elapsed();
        assert!(
            took <= Duration::from_secs(6) && took >= Duration::from_secs(5),
            "{took:?}"
        );

        let calls = AtomicU32::new(0);
        let permanent = record_within(Duration::from_secs(6), "test", || async {
            calls.fetch_add(1, Ordering::Relaxed);
            Err::<(), _>(BrokerError::new(BrokerErrorKind::Config, "bad"))
        })
        .await;
        assert!(permanent.is_err());
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }
}
