//! The ids wharf makes: correlation ids of the client's requests and
//! message ids of NATS copies (`<prefix>-<n>`), idempotency claim tokens,
//! and trace span ids.
//!
//! Each must differ from every other process's, so all draw on one source
//! of random numbers: fastrand (already built for `backon`), one generator
//! per thread, seeded from std's `RandomState` (the operating system's
//! randomness) rather than fastrand's default seed, which is a hash of the
//! monotonic clock and the thread. Numbered ids are a random prefix and a
//! counter, so that ids of one prefix never repeat; the counter is written
//! with `itoa` (`format!` cost more than the rest of a request's
//! bookkeeping).

use std::cell::RefCell;
use std::hash::BuildHasher;

thread_local! {
    static RNG: RefCell<fastrand::Rng> =
        RefCell::new(fastrand::Rng::with_seed(std::hash::RandomState::new().hash_one(())));
}

/// 64 random bits.
fn random() -> u64 {
    RNG.with(|rng| rng.borrow_mut().u64(..))
}

/// A prefix no other process (nor other call) is likely to make:
/// `<process id>-<64 random bits>`, both in lower-case hex, so the numbered
/// ids built on it are plain `[0-9a-f-]` tokens (NATS reply subjects carry
/// them as they are: `docs/wire-format.md`).
pub(crate) fn prefix() -> String {
    format!("{:x}-{:x}", std::process::id(), random())
}

/// `<prefix>-<n>`, `n` in decimal.
pub(crate) fn numbered(prefix: &str, n: u64) -> String {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(n);
    let mut id = String::with_capacity(prefix.len() + 1 + digits.len());
    id.push_str(prefix);
    id.push('-');
    id.push_str(digits);
    id
}

/// An idempotency claim token (`store::fresh_token`).
pub(crate) fn claim_token() -> u64 {
    random()
}

/// A trace span id: never zero (the W3C's invalid span id).
pub(crate) fn span_id() -> u64 {
    RNG.with(|rng| rng.borrow_mut().u64(1..))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn numbered_ids_are_the_prefix_and_the_number_in_decimal() {
        assert_eq!(numbered("2f29-18ea", 0), "2f29-18ea-0");
        assert_eq!(numbered("2f29-18ea", 1_000_000_007), "2f29-18ea-1000000007");
        assert_eq!(numbered("p", u64::MAX), format!("p-{}", u64::MAX));
    }

    #[test]
    fn prefixes_are_the_process_id_and_random_hex() {
        let prefix = prefix();
        let (pid, random) = prefix.split_once('-').unwrap();
        assert_eq!(pid, format!("{:x}", std::process::id()));
        assert!(
            !random.is_empty()
                && random
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        let prefixes: HashSet<String> = (0..1000).map(|_| super::prefix()).collect();
        assert_eq!(prefixes.len(), 1000);
    }

    #[test]
    fn tokens_and_span_ids_differ_across_threads() {
        let draw = || {
            (0..10_000)
                .flat_map(|_| [claim_token(), span_id()])
                .collect::<Vec<u64>>()
        };
        let other = std::thread::spawn(draw);
        let mut all: HashSet<u64> = draw().into_iter().collect();
        all.extend(other.join().unwrap());
        assert_eq!(all.len(), 40_000, "threads are seeded apart");
        assert!((0..100_000).all(|_| span_id() != 0));
    }
}
