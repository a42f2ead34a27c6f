//! What the idempotency and session steps cost with each store: the
//! in-memory store, Redis (`RedisStore`) and NATS KV (`NatsKvStore`),
//! against plain wharf in the same run (issue 19), on each transport: the
//! in-memory one (where the store's cost is not hidden behind a broker's),
//! RabbitMQ and NATS JetStream.
//!
//! Scenarios, for each transport `<t>` of `WHARF_BENCH_TRANSPORTS`
//! (comma-separated, `memory,amqp,nats` by default), each run on a fresh
//! queue pre-filled with `WHARF_BENCH_MESSAGES` 256-byte JSON messages
//! (20,000 by default) before the clock starts, with a no-op
//! `async fn(Order)` handler, prefetch and concurrency 256:
//!
//! - `<t>/plain`: idempotency and sessions off, messages without those
//!   headers;
//! - `<t>/<store>/idempotency`: every message with its own idempotency key;
//! - `<t>/<store>/sessions`: 64 sessions, messages round robin in sequence
//!   order (numbers from 1);
//!
//! for `<store>` in `memory`, `redis` (`redis://127.0.0.1:6379`,
//! `WHARF_REDIS_URL`; a key prefix of the run's own) and `nats-kv`
//! (`nats://127.0.0.1:4222`, `WHARF_NATS_URL`; buckets of the run's own).
//! Each run gets a fresh store (connected before the clock starts), so no
//! run sees another's keys.
//!
//! Transports: `memory` is a fresh `Broker::memory()` per run, filled
//! through its client. `amqp` (RabbitMQ at
//! `amqp://guest:guest@127.0.0.1:5672/%2f`, `WHARF_AMQP_URL`) and `nats`
//! (NATS with JetStream at `WHARF_NATS_URL`, the KV store's server too):
//! each run declares a queue of its own (`wharf-test.bench.<run>.stores.…`;
//! on NATS wharf makes its stream `WHARF_<queue, encoded>`) through the
//! bench's own wharf connection, sends it the messages with wharf's client
//! (`Client::send`, each confirmed by the broker, 512 in flight), then
//! connects the app's own `Broker::connect` before the clock starts; after
//! the run it checks the queue is empty and deletes it with
//! `Broker::delete_queue` (dead-letter and delay queues, or streams, too).
//!
//! The clock runs from starting the app to the route's last ack, flushed
//! (`Transport::flush`). Figures, the median of `WHARF_BENCH_RUNS` (3) runs,
//! all scenarios of all transports interleaved in rounds after a warm-up
//! round, each round in an order of its own, shuffled from
//! `WHARF_BENCH_SEED` (1 unless set):
//!
//! - messages/s, and its ratio to `<t>/plain` of the same transport;
//! - worker CPU µs per message: the measured runtime's threads (wharf, the
//!   store clients, async-nats' connections; from
//!   `/proc/self/task/*/schedstat`) plus lapin's I/O threads (RabbitMQ's
//!   connection); and the whole process's;
//! - the store server's CPU µs per message: Redis from `INFO cpu`
//!   (`used_cpu_sys` + `used_cpu_user`); for every NATS-transport row and
//!   every nats-kv row the local nats-server's CPU (from `/proc`), which on
//!   the NATS transport includes the broker's work: compare it with
//!   `nats/plain`'s;
//! - the store's statistics per message (a second table). Redis, from the
//!   server (`INFO commandstats`, before and after): all commands (those
//!   run by scripts included), script calls (`EVALSHA` + `EVAL`) and round
//!   trips (calls of commands no store script runs; see
//!   `redis_stats.rs`). NATS KV: from the store's own connection (a client
//!   the bench makes and hands to `NatsKvStore::new`; its
//!   `statistics()`), messages sent (requests and publishes: the round
//!   trips) and received (replies, and session changes its watch heard);
//!   from the server, writes stored (the buckets' streams'
//!   `last_sequence`) and the account's JetStream API requests (`api.total`
//!   of `$JS.API.INFO`: account-wide, so on the NATS transport it counts
//!   wharf's consumer's requests too).
//!
//! ```text
//! cargo bench --all-features --bench stores             # full run
//! cargo bench --all-features --bench stores -- --test   # smoke run (CI)
//! ```
//!
//! The smoke run takes 200 messages, one run, no warm-up. Every run deletes
//! its queue, its Redis keys (by prefix) and its KV buckets afterwards. A
//! broker or store whose server cannot be reached is left out, loudly (with
//! `CI=true` the bench fails). `WHARF_BENCH_ONLY` picks scenarios: an item
//! is a name or a run of whole `/`-separated parts of one (`plain,redis`,
//! `sessions`, `amqp/redis`, `nats/nats-kv/idempotency`).

#[path = "../common/mod.rs"]
mod common;

mod bench;
mod kv;
mod kv_stats;
mod redis_stats;
mod report;
mod scenario;
mod transport;

use bench::Bench;
use common::config::{env_number, only, quick};
use common::rounds::Rounds;
use scenario::{Scenario, StoreKind, Transport};

/// The servers' URLs.
pub struct Urls {
    pub amqp: String,
    pub nats: String,
    pub redis: String,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

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
    // Shuffled rounds by default: no scenario always follows the same one.
    let seed = Some(env_number("WHARF_BENCH_SEED", 1));
    let urls = Urls {
        amqp: env_or("WHARF_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
        nats: env_or("WHARF_NATS_URL", "nats://127.0.0.1:4222"),
        redis: env_or("WHARF_REDIS_URL", "redis://127.0.0.1:6379"),
    };
    let transports = Transport::from_env();

    let bench = Bench::new(messages, &transports, &urls);
    let only = only();
    let picked: Vec<Scenario> = Scenario::all(&transports)
        .into_iter()
        .filter(|s| s.selected(&only))
        .collect();
    assert!(
        !picked.is_empty(),
        "WHARF_BENCH_ONLY={only:?} selects no scenario; names: {:?}",
        Scenario::all(&transports)
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
    );
    let scenarios: Vec<Scenario> = picked
        .into_iter()
        .filter(|s| bench.has(s.store) && bench.brokers.has(s.transport))
        .collect();
    println!(
        "wharf stores bench: transports {}, {messages} messages of {} bytes, prefetch 256, {runs} run(s){}",
        transports.iter().map(|t| t.name()).collect::<Vec<_>>().join(", "),
        common::payload::PAYLOAD_BYTES,
        if quick { " (smoke run)" } else { "" }
    );
    for transport in [Transport::Amqp, Transport::Nats] {
        if transports.contains(&transport) && !bench.brokers.has(transport) {
            common::setup::broker_unusable(
                &format!("the {} broker is not reachable", transport.name()),
                &format!(
                    "the {} broker is not reachable, its scenarios left out",
                    transport.name()
                ),
            );
        }
    }
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
                "  round {} {:<28} {:>10} msg/s",
                round + 1,
                scenario.name(),
                common::report::thousands(run.rate())
            )
        },
        || bench.clear(),
    );
    report::print(&results, &bench.figures.borrow());
}
