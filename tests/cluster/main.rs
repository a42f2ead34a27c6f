//! Many workers, one truth: three worker *processes* consume one queue and
//! share one store, on every broker × store pair (RabbitMQ or NATS, Redis or
//! NATS KV). The handlers' side effects are recorded in Redis, outside the
//! workers, so what a killed worker did is still counted. The run with a
//! killed worker's idempotency claims also runs on RabbitMQ quorum queues,
//! which count redeliveries where classic queues only flag them.
//!
//! This binary has no libtest harness: run without `WHARF_CLUSTER_ROLE` it
//! is the test runner (arguments that are not flags filter the cases by
//! name, as libtest does); started by the runner with
//! `WHARF_CLUSTER_ROLE=worker` it is one worker process.
//!
//! `cargo test --all-features --test cluster -- --nocapture` runs them all;
//! `... --test cluster -- amqp+redis` the cases of one pair.
//!
//! Most cases give the workers short settings (a 2 s timeout, a 6 s lease)
//! so that a crash is over quickly. The cases named `..._with_defaults_...`
//! and the recovery cases run them with the defaults instead
//! (`WHARF_CLUSTER_DEFAULTS=1`: `RouteOptions::new()` with only the
//! concurrency set, the queue declared with `QueueSpec::new`), because a
//! crash must not look like a gap with the settings users get.
//! `WHARF_CLUSTER_LEASE_S=90` in the runner's environment gives those
//! workers that lease instead — the lease wharf used to have — to show what
//! went wrong with it (their checks then fail on NATS).
//!
//! The runner's side: `runner.rs` (the cases and their names),
//! `cluster.rs` (starting, killing and watching worker processes),
//! `cases/` (one file per group of cases); the worker's side: `worker.rs`;
//! both: `pairs.rs` (the broker × store matrix), `keys.rs` (what a run
//! keeps in Redis), `payload.rs`.

#[path = "../support/mod.rs"]
mod support;

mod cases;
mod cluster;
mod keys;
mod pairs;
mod payload;
mod runner;
mod topology;
mod worker;

use std::process::ExitCode;
use std::time::Duration;
use wharf::transport::QueueSpec;

const REDIS_URL: &str = "redis://127.0.0.1:6379";
const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const AMQP_QUORUM_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f?queue_type=quorum";
const NATS_URL: &str = "nats://127.0.0.1:4222";

/// Worker processes per cluster.
const WORKERS: usize = 3;
/// Handlers at once per worker.
const CONCURRENCY: usize = 8;
/// Handler timeout; the lease is short so that a killed worker's claims,
/// turns and (NATS) deliveries come back within the test.
const TIMEOUT: Duration = Duration::from_secs(2);
const LEASE: Duration = Duration::from_secs(6);
/// Simulated work per handler run, so that runs overlap measurably.
const WORK: Duration = Duration::from_millis(2);

/// The lease of a route and queue left at their defaults
/// (`RouteOptions::lease`, the NATS consumer's ack wait).
fn default_lease() -> Duration {
    QueueSpec::new("any").lease
}

fn main() -> ExitCode {
    if std::env::var("WHARF_CLUSTER_ROLE").as_deref() == Ok("worker") {
        return worker::main();
    }
    runner::main()
}
