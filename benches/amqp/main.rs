//! wharf on RabbitMQ against raw `lapin`: same run, same broker, same
//! 256-byte JSON payload, prefetch 256.
//!
//! **Consume** (each run on a fresh durable queue, pre-filled with
//! `WHARF_BENCH_MESSAGES` persistent messages, 20,000 by default, published
//! with confirms before the clock starts):
//!
//! - `consume/raw-ack-each`: `basic_qos(256)`, `basic_consume`, decode each
//!   delivery with `serde_json`, then `delivery.ack(..).await`: one awaited
//!   ack per message;
//! - `consume/raw-ack-64`: the same, but one awaited `multiple` ack every 64
//!   deliveries (and one for the rest at the end);
//! - `consume/wharf`: `App::route_with(queue, handler, prefetch 256,
//!   concurrency 256)` with a typed handler `async fn(Order)`: wharf decodes,
//!   runs the handler and acks (coalesced, see `src/transport/amqp/acks.rs`).
//!
//! The clock runs from starting the consumer to the last ack: for raw lapin
//! the last awaited ack; for wharf, the route's `acked` counter reaching the
//! message count and the held-back acks being flushed (`Transport::flush`).
//! The main thread waits for that outside the runtime: it sleeps on a
//! condition variable that the handler signals at the last message, then
//! polls the counters for the few microseconds the last acks take (polling
//! all along, a sleep and wake-up every 250 µs, cost this process about
//! 1 µs per message and made wharf look 10 % dearer than it is).
//!
//! Figures: messages/s and CPU time of the whole process per message
//! (`CLOCK_PROCESS_CPUTIME_ID`; the bench's idle publisher included), with
//! the kernel's share, the share of the measured runtime's worker threads
//! (`tokio`) and of lapin's I/O threads (`lapin`, from
//! `/proc/self/task/*/schedstat`), and context switches per message (all
//! threads, `getrusage`): a thread that sleeps until another wakes it
//! switches once.
//!
//! **Queue types** (`quorum/raw-ack-64`, `quorum/wharf`): the same
//! pre-filled consume as `consume/raw-ack-64` and `consume/wharf` on a
//! quorum work queue (`x-queue-type: quorum`, and wharf's
//! `x-delivery-limit`, declared alike for both; wharf's route has
//! `RouteOptions::queue_type(QueueType::Quorum)`), on the same shared node:
//! a quorum queue of one member is still a Raft log, written and fsynced
//! before a publish is confirmed, and its acks go through the log too.
//! With `WHARF_BENCH_RABBIT_CLUSTER=1` also `cluster-classic/…` and
//! `cluster-quorum/…`: a three-node cluster started for the run with
//! `scripts/local-cluster.sh rabbit-up` (about 25 s; `rabbit-down` at the
//! end, also after a panic), raw lapin and the bench's own connection on
//! node 1, wharf given all three URLs (it connects to the first), so every
//! queue and quorum leader is on node 1 and a quorum queue has members on
//! all three. The topology table shows both consumers per queue type,
//! wharf/raw, quorum/classic, RabbitMQ's CPU per message (the shared
//! node's process, found by its listening port; the cluster's three nodes)
//! and the pre-fill's publish rate (the bench's own confirmed publishes,
//! before the clock).
//!
//! **Paced** (`paced/…`): the same three consumers on an empty queue while
//! a publisher (own connection, own runtime thread) publishes
//! `WHARF_BENCH_PACED_MESSAGES` (4,000) at `WHARF_BENCH_RATE` (2,000) msg/s;
//! p50/p99 latency from publish (a timestamp in the payload) to the handler.
//! (Pre-filled queues would only measure queueing.) CPU figures include the
//! publisher here.
//!
//! **Request/reply** (`rr/<client>-<server>`): `WHARF_BENCH_REQUESTS`
//! (2,000) sequential requests, one at a time, after a warm-up, with every
//! pairing of a raw or wharf client and a raw or wharf server (each on its
//! own connection). The raw server consumes the request queue, replies to
//! `reply_to` with the `correlation_id` through the default exchange and
//! acks; the raw client uses direct reply-to (`amq.rabbitmq.reply-to`,
//! `no_ack`, requests published on the same channel). The wharf client is
//! `Client::request`, the wharf server a route returning a value. CPU per
//! request covers client *and* server (one process).
//!
//! **Request/reply on a quorum queue** (`rr-quorum/raw-raw`,
//! `rr-quorum/wharf-wharf`): the same, with the request queue declared
//! quorum (the raw server's by the bench as wharf would; wharf's route with
//! `RouteOptions::queue_type`), shown beside `rr/raw-raw` and
//! `rr/wharf-wharf` in a table of its own.
//!
//! Every scenario runs `WHARF_BENCH_RUNS` (5) times, interleaved, after one
//! smaller unmeasured round, and the table shows medians (min–max for
//! throughput and request/reply p50), then the ratios the
//! project aims for: wharf consume ≥ 0.95× raw `multiple` ack, wharf
//! request/reply p50 ≤ 1.1× raw. It is a report and never fails because of
//! a goal; it panics if a message is lost, handled twice, retried,
//! dead-lettered or left in its queue.
//!
//! ```text
//! cargo bench --features amqp --bench amqp              # full run, about 2 minutes
//! cargo bench --features amqp --bench amqp -- --test    # smoke run (or WHARF_BENCH_QUICK=1)
//! WHARF_BENCH_RABBIT_CLUSTER=1 WHARF_BENCH_ONLY=topology \
//!   cargo bench --features amqp --bench amqp             # queue types, with the cluster
//! ```
//!
//! RabbitMQ at `WHARF_TEST_AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`);
//! if it is unreachable the bench prints `SKIPPED` and exits 0, or fails
//! with `CI=true`. Queues are named `wharf-test.bench.*` and deleted
//! afterwards (`scripts/sweep-test-queues.sh` removes leftovers).
//!
//! `WHARF_BENCH_ONLY=<items>` (comma-separated) runs only the scenarios
//! whose name is an item, starts with `<item>/`, or ends with `/<item>`:
//! `wharf` = every wharf consumer; `rr` = request/reply on a classic
//! queue; `quorum` = both quorum consumers; `rr-quorum` = both quorum
//! request/reply runs; and `topology` = the topology tables' scenarios
//! (`consume/raw-ack-64`, `consume/wharf`, `quorum/…`, `cluster-…` when
//! `WHARF_BENCH_RABBIT_CLUSTER=1`, `rr/raw-raw`, `rr/wharf-wharf` and
//! `rr-quorum/…`).
//! `WHARF_BENCH_WORKERS` changes the number of tokio workers (2).
//!
//! RabbitMQ's own speed varies from run to run on a busy machine (the same
//! raw consumer ranges from 38,000 to 75,000 msg/s on a shared 2-core VM):
//! compare CPU per message and medians of several runs, and instruction
//! counts (callgrind) for changes to wharf's own code.
//!
//! Profiling (the measured part lies between `wharf_bench_measure_begin`
//! and `wharf_bench_measure_end`; read `callgrind.out.<pid>.2`):
//!
//! ```text
//! WHARF_BENCH_QUICK=1 WHARF_BENCH_ONLY=consume/wharf WHARF_BENCH_MESSAGES=5000 \
//!   valgrind --tool=callgrind --dump-before=wharf_bench_measure_begin \
//!   --dump-before=wharf_bench_measure_end target/release/deps/amqp-<hash>

#[path = "../common/mod.rs"]
mod common;
// The local clusters of the tests (`scripts/local-cluster.sh`), for the
// `cluster-…` scenarios.
#[path = "../../tests/support/mod.rs"]
mod support;

mod bench;
mod config;
mod consume;
mod recorder;
mod report;
mod request_reply;
mod scenario;
mod topology_report;

use bench::{Bench, Cluster};
use common::measured::Measured;
use common::report::{redacted, thousands};
use common::rounds::Rounds;
use common::setup::broker_unusable;
use config::Config;
use recorder::Recorder;
use scenario::Scenario;

/// Prefetch of every consumer (raw and wharf; wharf's concurrency too).
const PREFETCH: u16 = 256;

fn main() {
    let config = Config::from_env();
    let all = Scenario::all(config.rabbit_cluster);
    let mut scenarios: Vec<Scenario> = all.iter().copied().filter(|s| s.selected(&config.only)).collect();
    assert!(
        !scenarios.is_empty(),
        "WHARF_BENCH_ONLY={:?} selects no scenario; names: {:?}{}",
        config.only,
        all.iter().map(|s| s.name()).collect::<Vec<_>>(),
        if config.rabbit_cluster {
            ""
        } else {
            " (and cluster-classic/… and cluster-quorum/… with WHARF_BENCH_RABBIT_CLUSTER=1)"
        }
    );
    let url = redacted(&config.url);
    let mut bench = match Bench::new(config) {
        Ok(bench) => bench,
        Err(error) => {
            broker_unusable(
                &format!("CI=true and RabbitMQ at {url} is not usable: {error}"),
                &format!(
                    "the amqp bench needs RabbitMQ at {url}, which is not reachable ({error}); \
                     run scripts/brokers.sh to start it"
                ),
            );
            return;
        }
    };
    if scenarios.iter().any(|s| s.on_cluster()) {
        bench.cluster = Cluster::start(&bench.control);
        if bench.cluster.is_none() {
            scenarios.retain(|s| !s.on_cluster());
            if scenarios.is_empty() {
                return;
            }
        }
    }
    Recorder::install(bench.config.messages.max(bench.config.paced_messages));
    let config = &bench.config;
    eprintln!(
        "amqp bench: {} scenario(s), {} run(s) each{}",
        scenarios.len(),
        config.runs,
        if config.quick { " (quick)" } else { "" }
    );

    let rounds = Rounds {
        scenarios: &scenarios,
        runs: config.runs,
        quick: config.quick,
        seed: None,
    };
    let results = rounds.run(
        |scenario| {
            bench.run(scenario, config.warm_up_sizes());
        },
        |scenario| bench.run(scenario, config.sizes()),
        |round, scenario, measured: &Measured| {
            let latency = if measured.latencies.is_empty() {
                String::new()
            } else {
                format!(
                    "  p50 {:>5.0} µs  p99 {:>5.0} µs",
                    measured.percentile(50.0),
                    measured.percentile(99.0)
                )
            };
            eprintln!(
                "  run {}/{} {:<26} {:>7} /s {:>8.2} CPU µs (tokio {:.2}, lapin {:.2}) {:>6.2} cswch each, \
                 RabbitMQ {:.2} µs{latency}",
                round + 1,
                config.runs,
                scenario.name(),
                thousands(measured.rate()),
                measured.cpu_per(),
                measured.workers_per(),
                measured.helpers_per(),
                measured.switches_per(),
                measured.broker_per(),
            );
        },
        || bench.delete_all(),
    );
    report::report(config, &results);
    topology_report::report(config, &results);
}
