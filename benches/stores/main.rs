//! What the idempotency and session steps cost with each store: the
//! in-memory store, Redis (`RedisStore`) and NATS KV (`NatsKvStore`),
//! against plain wharf in the same run (issue 19).
//!
//! **Scope: the in-memory transport only** so far; the same scenarios on
//! RabbitMQ and JetStream are still to come. On the in-memory transport the
//! store's cost is not hidden behind a broker's.
//!
//! Scenarios (each on a fresh in-memory broker, pre-filled with
//! `WHARF_BENCH_MESSAGES` 256-byte JSON messages, 20,000 by default, before
//! the clock starts; a no-op `async fn(Order)` handler, prefetch and
//! concurrency 256):
//!
//! - `plain`: idempotency and sessions off, messages without those headers;
//! - `<store>/idempotency`: every message with its own idempotency key;
//! - `<store>/sessions`: 64 sessions, messages round robin in sequence
//!   order (numbers from 1);
//!
//! for `<store>` in `memory`, `redis` (`redis://127.0.0.1:6379`,
//! `WHARF_REDIS_URL`; a prefix of this run's own) and `nats-kv`
//! (`nats://127.0.0.1:4222`, `WHARF_NATS_URL`; buckets of this run's own).
//! Each run gets a fresh store (connected before the clock starts), so no
//! run sees another's keys.
//!
//! The clock runs from starting the app to the route's last ack. Figures,
//! the median of `WHARF_BENCH_RUNS` (3) runs, interleaved in rounds after a
//! warm-up round (`WHARF_BENCH_SEED` shuffles each round's order):
//! messages/s; the CPU µs per message of the worker (the runtime's threads,
//! from `/proc/self/task/*/schedstat`) and of the whole process; for Redis,
//! the server's commands per message (the sum of `calls` in `INFO
//! commandstats`, before and after, commands run by scripts included), its
//! script calls per message (`evalsha` + `eval`: the worker's round trips
//! for the store) and its CPU µs per message (`used_cpu_sys` +
//! `used_cpu_user` of `INFO cpu`); for NATS KV, the CPU µs per message of
//! the local nats-server process (from `/proc`), round trips not measured;
//! and the ratio of messages/s to plain.
//!
//! ```text
//! cargo bench --all-features --bench stores             # full run
//! cargo bench --all-features --bench stores -- --test   # smoke run (CI)
//! ```
//!
//! The smoke run takes 200 messages, one run, no warm-up. Every run deletes
//! its Redis keys (by prefix) and its KV buckets afterwards. A store whose
//! server cannot be reached is left out (with `CI=true` the bench fails);
//! `WHARF_BENCH_ONLY` picks scenarios (`plain,redis`, `sessions`, …).

#[path = "../common/mod.rs"]
mod common;
#[path = "../nats/nats_server.rs"]
mod nats_server;

mod bench;
mod kv;
mod redis_stats;
mod report;
mod scenario;

use bench::Bench;
use common::config::{env_number, only, quick, selected};
use common::rounds::Rounds;
use scenario::{Scenario, StoreKind};

fn main() {
    let quick = quick();
    let messages = if quick {
        200
    } else {
        env_number("WHARF_BENCH_MESSAGES", 20_000)
    };
    let runs = if quick {
        1
    } else {
        env_number("WHARF_BENCH_RUNS", 3) as usize
    };
    let seed = std::env::var("WHARF_BENCH_SEED")
        .ok()
        .map(|raw| raw.trim().parse().expect("WHARF_BENCH_SEED must be a number"));
    let redis_url = std::env::var("WHARF_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let nats_url = std::env::var("WHARF_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());

    let bench = Bench::new(messages, &redis_url, &nats_url);
    let only = only();
    let scenarios: Vec<Scenario> = Scenario::all()
        .into_iter()
        .filter(|s| selected(&s.name(), &only))
        .filter(|s| bench.has(s.store))
        .collect();
    println!(
        "wharf stores bench: in-memory transport, {messages} messages of {} bytes, prefetch 256, {runs} run(s){}",
        common::payload::PAYLOAD_BYTES,
        if quick { " (smoke run)" } else { "" }
    );
    for kind in [StoreKind::Redis, StoreKind::NatsKv] {
        if !bench.has(kind) {
            common::setup::broker_unusable(
                &format!("{} is not reachable", kind.name()),
                &format!("{} not reachable, its scenarios left out", kind.name()),
            );
        }
    }

    let rounds = Rounds {
        scenarios: &scenarios,
        runs,
        quick,
        seed,
    };
    let results = rounds.run(
        |scenario| {
            bench.run(scenario, (messages / 4).max(1));
        },
        |scenario| bench.measure(scenario),
        |round, scenario, run| {
            eprintln!(
                "  round {} {:<22} {:>10} msg/s",
                round + 1,
                scenario.name(),
                common::report::thousands(run.rate())
            )
        },
        || bench.clear(),
    );
    report::print(&results, &bench.figures.borrow());
}
