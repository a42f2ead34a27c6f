//! The cases, one file per group, and the messages they publish.

pub mod checkpoint;
pub mod early_arrivals;
pub mod failover;
pub mod gap;
pub mod idempotency;
pub mod recovery;
pub mod sessions;
pub mod sessions_with_defaults;

use crate::payload::{Step, micros_now};
use wharf::Message;

/// Number `seq` of `session`: the payload names both, for the recorder.
pub fn in_session(session: &str, seq: u64) -> Message {
    Message::json(&Step {
        session: session.to_owned(),
        seq,
    })
    .unwrap()
    .with_session(session, seq)
}

/// A deterministic shuffle (xorshift), so that a failing order can be
/// reproduced from the seed printed.
pub fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed | 1;
    for i in (1..items.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        items.swap(i, (state % (i as u64 + 1)) as usize);
    }
}

pub fn seed() -> u64 {
    let seed = micros_now();
    println!("shuffle seed {seed}");
    seed
}
