//! Runs of the scenarios: one unmeasured warm-up round, then the measured
//! rounds, interleaved, each in the listed order or in one shuffled from a
//! seed; and the raw/wharf sides of a scenario.

use super::measured::Measured;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

/// Who plays a part of a scenario: raw broker client code, or wharf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Raw,
    Wharf,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Raw => "raw",
            Side::Wharf => "wharf",
        }
    }
}

/// The request/reply pairings, client then server, in the report's order.
pub const PAIRS: [(Side, Side); 4] = [
    (Side::Raw, Side::Raw),
    (Side::Wharf, Side::Raw),
    (Side::Raw, Side::Wharf),
    (Side::Wharf, Side::Wharf),
];

/// How the scenarios run.
pub struct Rounds<'a, S> {
    pub scenarios: &'a [S],
    /// Measured runs of each scenario.
    pub runs: usize,
    /// A smoke run: no warm-up round.
    pub quick: bool,
    /// Seeds each round's order of the scenarios (`WHARF_BENCH_SEED`);
    /// `None`: the listed order in every round.
    pub seed: Option<u64>,
}

impl<S: Copy> Rounds<'_, S> {
    /// Runs every scenario: `warm_up` once each (unless quick), then
    /// `measure` `runs` times each, telling `log` about each run; `clear`
    /// after the warm-up, after each round and at the end (also when a run
    /// panics, whose panic then goes on). The measured runs by scenario.
    pub fn run(
        &self,
        warm_up: impl Fn(S),
        measure: impl Fn(S) -> Measured,
        log: impl Fn(usize, S, &Measured),
        clear: impl Fn(),
    ) -> Vec<(S, Vec<Measured>)> {
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            if !self.quick {
                // One smaller, unmeasured run of each: connections, allocator
                // and broker warm, so the first measured round is not an outlier.
                for scenario in self.scenarios {
                    warm_up(*scenario);
                }
                clear();
                eprintln!("  warmed up");
            }
            let mut results: Vec<(S, Vec<Measured>)> =
                self.scenarios.iter().map(|s| (*s, Vec::new())).collect();
            // Runs interleaved, so the machine's drift spreads over every
            // scenario. With a seed, each round in an order of its own
            // (shuffled), so that no scenario always follows the same one:
            // what ran just before changes a run's figures (nats-server
            // still clearing a consumed stream; threads left awake or
            // asleep), and with the rounds merely rotated, each scenario but
            // the round's first had the same predecessor every time
            // (measured on NATS: raw → raw request/reply, always right after
            // wharf's consume run, had a p50 10 µs lower than in runs of its
            // own).
            let scenario_count = results.len();
            let mut shuffle = self.seed.map(Shuffle::new);
            for round in 0..self.runs {
                let order = match &mut shuffle {
                    Some(shuffle) => shuffle.permutation(scenario_count),
                    None => (0..scenario_count).collect(),
                };
                for index in order {
                    let (scenario, runs) = &mut results[index];
                    let measured = measure(*scenario);
                    log(round, *scenario, &measured);
                    runs.push(measured);
                }
                // The queues (streams) of a round go at once: a full run
                // holds 60,000 persistent messages' worth of RabbitMQ queues
                // otherwise.
                clear();
            }
            results
        }));
        clear();
        outcome.unwrap_or_else(|panic| resume_unwind(panic))
    }
}

/// A round's order of the scenarios: Fisher–Yates with SplitMix64, so a
/// seed gives the same orders on every machine (no dependency for ten
/// lines).
pub struct Shuffle(u64);

impl Shuffle {
    pub fn new(seed: u64) -> Self {
        Shuffle(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// `0..count` in a new order.
    pub fn permutation(&mut self, count: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..count).collect();
        for i in (1..count).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        order
    }
}
