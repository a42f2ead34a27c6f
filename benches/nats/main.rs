//! wharf on NATS against raw `async-nats`: same run, same server, same
//! 256-byte JSON payload.
//!
//! **Consume** (each run on a fresh stream, pre-filled with
//! `WHARF_BENCH_MESSAGES` messages, 200,000 by default: about 1.3 s of
//! consuming; at 50,000, 0.3 s, the ratio's 11-run medians ranged from
//! 0.83 to 0.98 over one morning. Published with JetStream publish acks to `wharf.p0.<queue>` before the consumer starts):
//!
//! - `consume/raw`: a stream made the way wharf makes one (`WHARF_<queue>`,
//!   subjects `wharf.p0.<queue>` … `wharf.p9.<queue>`, WorkQueue retention,
//!   file storage), a durable pull consumer `wharf` (explicit ack, ack wait
//!   30 s), `consumer.stream().max_messages_per_batch(256)`; each message is
//!   decoded with `serde_json` and acked (`message.ack().await`); at the end
//!   `client.flush()`, so the last ack has reached the server;
//! - `consume/wharf`: `Broker::declare`, the same pre-fill, then
//!   `App::route_with(queue, handler, prefetch 256, concurrency 256)` with a
//!   typed handler `async fn(Order)`: wharf decodes, runs the handler and
//!   acks; at the end `Transport::flush`.
//!
//! The clock runs from the first message handled to the last ack sent (and
//! flushed), so the consumer's start-up (JetStream API calls to look up or
//! create the stream and consumer, which wharf makes more of) is not in the
//! throughput; it is shown apart, as `start ms`: from starting the consumer
//! to the first message.
//!
//! **Stream replicas** (`r1/raw`, `r1/wharf`, `r3/raw`, `r3/wharf`): the
//! same consume on a three-server JetStream cluster started for the run
//! with `scripts/local-cluster.sh nats-up` (about a second; `nats-down` at
//! the end, also after a panic), on a stream of one or three replicas:
//! the raw stream made with `num_replicas`, wharf's declared with
//! `Topology::stream_replicas` and its route given
//! `RouteOptions::stream_replicas`. R1 and R3 both run on the cluster, so
//! they compare on the same servers; raw async-nats and wharf both connect
//! with the three URLs (each picks one at random, and JetStream places the
//! stream on servers of its choosing, so a run's route to the stream
//! leader varies). The topology table shows both consumers per replica
//! count (and on the shared server, when `consume/…` ran), wharf/raw,
//! R3/R1, the cluster's nats-server CPU per message (all three) and the
//! pre-fill's publish rate (publish acks, before the clock). They run in
//! the smoke run too (1,000 messages).
//!
//! **Retention study** (`retention/workqueue`, `retention/interest`,
//! `retention/limits`; raw async-nats only, see `retention.rs`):
//! `consume/raw` on a stream made as wharf's but for its retention policy,
//! its consumer created before the pre-fill; after the clock, the time and
//! nats-server CPU until the server has settled, and what the stream still
//! holds (Limits keeps every acked message).
//!
//! **Request/reply** (`rr/<client>-<server>`: `WHARF_BENCH_REQUESTS`, 5,000,
//! sequential requests, one at a time, after a warm-up; `rr64/…`:
//! `WHARF_BENCH_INFLIGHT_REQUESTS`, 50,000, from 64 tasks that each keep one
//! request in flight), every pairing of a raw or wharf client and a raw or
//! wharf server, each on its own connection, all on core NATS (no
//! JetStream):
//!
//! - raw server: `queue_subscribe("wharf.*.<queue>", "wharf")`; decodes the
//!   order, encodes the answer and publishes it to the request's reply
//!   subject (with `correlation-id` and `wharf-status: ok` headers when the
//!   request carries a `correlation-id`, as a wharf client expects);
//! - raw client: `client.request("wharf.p0.<queue>", body)` (async-nats'
//!   shared inbox subscription);
//! - wharf server: a route with `RouteOptions::persistent(false)` (a core
//!   NATS service) returning `Reply<Answer>`, concurrency 64;
//! - wharf client: `Broker::client().request(queue, &order)`.
//!
//! Servers run on a runtime of their own (threads `bench-server`, with
//! their own NATS connection), clients on the measured runtime (threads
//! `bench-worker`), so CPU time splits into client and server; the
//! nats-server process's CPU time (from `/proc`, when it runs on this
//! machine) is shown too.
//!
//! Figures: messages (requests)/s; p50/p99 round trips; CPU µs per message
//! of the client side (the measured runtime's worker threads: the consumer
//! or the requesting client, with its NATS connection task), of the server
//! side (rr), of the whole process (kernel share apart), and of nats-server
//! (the process listening on the URL's port; the cluster's three servers
//! for `r1/…` and `r3/…`);
//! context switches per message (process, `getrusage`).
//!
//! Every scenario runs `WHARF_BENCH_RUNS` (5) times, interleaved (each round
//! in an order of its own, shuffled from `WHARF_BENCH_SEED`, 1 unless set),
//! after one smaller unmeasured round, and the
//! table shows medians (min–max for throughput and p50), then the ratios
//! the project aims for: wharf consume
//! ≥ 0.9× raw, wharf → wharf request/reply p50 ≤ 1.1× raw → raw, and with
//! 64 in flight ≥ 0.9× raw throughput. It is a report and never fails
//! because of a goal; it panics if a message is lost, handled twice,
//! retried, dead-lettered or left in its stream, or a request fails.
//!
//! ```text
//! cargo bench --features nats --bench nats              # full run, about 2 minutes
//! cargo bench --features nats --bench nats -- --test    # smoke run (or WHARF_BENCH_QUICK=1)
//! WHARF_BENCH_ONLY=topology cargo bench --features nats --bench nats   # stream replicas
//! ```
//!
//! NATS (with JetStream, `nats-server -js`) at `WHARF_TEST_NATS_URL`
//! (default `nats://127.0.0.1:4222`); if it is unreachable the bench prints
//! `SKIPPED` and exits 0, or fails with `CI=true`. Queues are named
//! `wharf-test.bench.*`; every stream whose name holds this run's queue
//! prefix (`WHARF_wharf-test_2Ebench_2E<run>…`, and wharf's dead-letter and
//! delay streams) is deleted after each round and at the end.
//!
//! `WHARF_BENCH_ONLY=<items>` (comma-separated) runs only the scenarios
//! whose name is an item, starts with `<item>/`, or ends with `/<item>`:
//! `consume` = both consumers on the shared server; `r3` = both on an R3
//! stream; `topology` = `consume/…`, `r1/…` and `r3/…`; `retention` = the
//! three policies; `rr64` = all request/reply with 64 in flight. The
//! cluster starts only when a selected scenario needs it. `WHARF_BENCH_WORKERS` changes the number of tokio workers of the
//! measured runtime (2), `WHARF_BENCH_SERVER_WORKERS` those of the servers'
//! runtime (2), `WHARF_BENCH_IN_FLIGHT` the requests in flight (64).

#[path = "../common/mod.rs"]
mod common;
// The local clusters of the tests (`scripts/local-cluster.sh`), for the
// `r1/…` and `r3/…` scenarios.
#[path = "../../tests/support/mod.rs"]
mod support;

mod bench;
mod config;
mod consume;
mod recorder;
mod report;
mod request_reply;
mod retention;
mod retention_report;
mod scenario;
mod streams;
mod topology_report;

use bench::{Bench, Cluster};
use common::measured::Measured;
use common::report::{redacted, thousands};
use common::rounds::Rounds;
use common::setup::broker_unusable;
use config::Config;
use recorder::Recorder;
use scenario::Scenario;

/// Pull batch of the raw consumer; prefetch and concurrency of wharf's.
const BATCH: usize = 256;

fn main() {
    let config = Config::from_env();
    let mut scenarios: Vec<Scenario> = Scenario::all()
        .into_iter()
        .filter(|s| s.selected(&config.only))
        .collect();
    assert!(
        !scenarios.is_empty(),
        "WHARF_BENCH_ONLY={:?} selects no scenario; names: {:?}",
        config.only,
        Scenario::all().iter().map(|s| s.name()).collect::<Vec<_>>()
    );
    let url = redacted(&config.url);
    let mut bench = match Bench::new(config) {
        Ok(bench) => bench,
        Err(error) => {
            broker_unusable(
                &format!("CI=true and NATS at {url} is not usable: {error}"),
                &format!(
                    "the nats bench needs NATS with JetStream at {url}, which is not usable \
                     ({error}); run scripts/brokers.sh to start it"
                ),
            );
            return;
        }
    };
    bench.sweep_leftovers();
    if scenarios.iter().any(|s| s.on_cluster()) {
        bench.cluster = Cluster::start(&bench.control);
        if bench.cluster.is_none() {
            scenarios.retain(|s| !s.on_cluster());
            if scenarios.is_empty() {
                return;
            }
        }
    }
    Recorder::install(bench.config.messages.max(bench.config.warm_up_sizes().messages));
    let config = &bench.config;
    eprintln!(
        "nats bench: {} scenario(s), {} run(s) each{}",
        scenarios.len(),
        config.runs,
        if config.quick { " (quick)" } else { "" }
    );

    // Each round in an order of its own, shuffled from `WHARF_BENCH_SEED`
    // (see `Rounds::run`).
    let rounds = Rounds {
        scenarios: &scenarios,
        runs: config.runs,
        quick: config.quick,
        seed: Some(config.seed),
    };
    let results = rounds.run(
        |scenario| {
            bench.run(scenario, config.warm_up_sizes());
            retention::forget_leftovers();
        },
        |scenario| bench.run(scenario, config.sizes()),
        |round, scenario, measured: &Measured| {
            let latency = if measured.latencies.is_empty() {
                format!("  start {:>5.1} ms", measured.startup_ms())
            } else {
                format!(
                    "  p50 {:>5.0} µs  p99 {:>5.0} µs",
                    measured.percentile(50.0),
                    measured.percentile(99.0)
                )
            };
            eprintln!(
                "  run {}/{} {:<18} {:>8} /s  CPU µs: client {:>5.2} server {:>5.2} process {:>5.2} \
                 nats-server {:>5.2}{latency}",
                round + 1,
                config.runs,
                scenario.name(),
                thousands(measured.rate()),
                measured.workers_per(),
                measured.helpers_per(),
                measured.cpu_per(),
                measured.broker_per(),
            );
        },
        || bench.delete_all(),
    );
    report::report(config, &results);
    topology_report::report(config, &results);
    retention_report::report(config, &results);
}
