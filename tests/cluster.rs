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

mod support;

use futures_util::future::join_all;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wharf::store::{NatsKvStore, RedisStore};
use wharf::transport::QueueSpec;
use wharf::{App, Backoff, Broker, Context, Error, GapPolicy, Message, Meta, RouteOptions, State};

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BrokerKind {
    Amqp,
    /// RabbitMQ with quorum work queues (`?queue_type=quorum`).
    AmqpQuorum,
    Nats,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StoreKind {
    Redis,
    NatsKv,
}

#[derive(Clone, Copy, Debug)]
struct Pair {
    broker: BrokerKind,
    store: StoreKind,
}

impl Pair {
    fn name(self) -> String {
        let broker = match self.broker {
            BrokerKind::Amqp => "amqp",
            BrokerKind::AmqpQuorum => "amqp-quorum",
            BrokerKind::Nats => "nats",
        };
        let store = match self.store {
            StoreKind::Redis => "redis",
            StoreKind::NatsKv => "natskv",
        };
        format!("{broker}+{store}")
    }

    fn broker_url(self) -> &'static str {
        match self.broker {
            BrokerKind::Amqp => AMQP_URL,
            BrokerKind::AmqpQuorum => AMQP_QUORUM_URL,
            BrokerKind::Nats => NATS_URL,
        }
    }
}

const PAIRS: [Pair; 4] = [
    Pair {
        broker: BrokerKind::Amqp,
        store: StoreKind::Redis,
    },
    Pair {
        broker: BrokerKind::Amqp,
        store: StoreKind::NatsKv,
    },
    Pair {
        broker: BrokerKind::Nats,
        store: StoreKind::Redis,
    },
    Pair {
        broker: BrokerKind::Nats,
        store: StoreKind::NatsKv,
    },
];

/// Quorum queues run the case where a killed worker's deliveries come back
/// counted (`x-delivery-count`) and wait for its claims' leases to run out.
const QUORUM_PAIRS: [Pair; 2] = [
    Pair {
        broker: BrokerKind::AmqpQuorum,
        store: StoreKind::Redis,
    },
    Pair {
        broker: BrokerKind::AmqpQuorum,
        store: StoreKind::NatsKv,
    },
];

fn main() -> ExitCode {
    if std::env::var("WHARF_CLUSTER_ROLE").as_deref() == Ok("worker") {
        return worker::main();
    }
    runner::main()
}

/// Payload of the idempotency runs.
#[derive(Serialize, Deserialize)]
struct Effect {
    key: String,
}

/// Payload of the session runs.
#[derive(Serialize, Deserialize)]
struct Step {
    session: String,
    seq: u64,
}

/// Payload of the recovery runs: one job, recorded where and when it ran.
#[derive(Serialize, Deserialize)]
struct Job {
    id: u64,
}

fn micros_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

/// Names of everything one run keeps in Redis.
#[derive(Clone)]
struct Keys {
    run: String,
}

impl Keys {
    fn prefix(&self) -> String {
        format!("wharf-test:cluster:{}:", self.run)
    }
    fn effect(&self, key: &str) -> String {
        format!("{}effect:{key}", self.prefix())
    }
    fn effects(&self) -> String {
        format!("{}effects", self.prefix())
    }
    fn order(&self, session: &str) -> String {
        format!("{}order:{session}", self.prefix())
    }
    fn spans(&self) -> String {
        format!("{}spans", self.prefix())
    }
    /// `id pid µs` of every job run as it starts.
    fn job_starts(&self) -> String {
        format!("{}job-starts", self.prefix())
    }
    /// `id pid µs` of every job run as it ends.
    fn job_ends(&self) -> String {
        format!("{}job-ends", self.prefix())
    }
    fn ready(&self) -> String {
        format!("{}ready", self.prefix())
    }
    fn live(&self, pid: u32) -> String {
        format!("{}live:{pid}", self.prefix())
    }
    fn store_prefix(&self) -> String {
        format!("{}store:", self.prefix())
    }
    /// NATS KV bucket prefix (bucket names allow `[A-Za-z0-9_-]`).
    fn bucket_prefix(&self) -> String {
        let run: String = self
            .run
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("wharftest_{run}")
    }
}

mod worker {
    //! One worker process: the route, the store, the recorder, and live
    //! counters written to Redis for the runner.

    use super::*;

    #[derive(Clone)]
    pub(super) struct Recorder {
        redis: redis::aio::MultiplexedConnection,
        keys: Keys,
        /// Simulated work per handler run.
        work: Duration,
    }

    fn env(name: &str) -> String {
        std::env::var(name).unwrap_or_else(|_| panic!("worker needs {name}"))
    }

    async fn effect(State(rec): State<Recorder>, job: Effect) -> Result<(), Error> {
        tokio::time::sleep(rec.work).await;
        let mut redis = rec.redis.clone();
        let _: i64 = redis
            .incr(rec.keys.effect(&job.key), 1)
            .await
            .map_err(Error::new)?;
        let _: i64 = redis.incr(rec.keys.effects(), 1).await.map_err(Error::new)?;
        Ok(())
    }

    async fn step(State(rec): State<Recorder>, meta: Meta, job: Step) -> Result<(), Error> {
        assert_eq!(meta.sequence(), Some(job.seq));
        let started = micros_now();
        if !rec.work.is_zero() {
            tokio::time::sleep(rec.work).await;
        }
        let mut redis = rec.redis.clone();
        let _: i64 = redis
            .rpush(rec.keys.order(&job.session), job.seq)
            .await
            .map_err(Error::new)?;
        let span = format!(
            "{} {started} {} {}",
            job.session,
            micros_now(),
            std::process::id()
        );
        let _: i64 = redis.rpush(rec.keys.spans(), span).await.map_err(Error::new)?;
        Ok(())
    }

    /// Like [`step`], but number 5 of every session fails its first two
    /// attempts (its retries may run in any worker).
    async fn flaky_step(
        ctx: Context,
        State(rec): State<Recorder>,
        meta: Meta,
        job: Step,
    ) -> Result<(), Error> {
        if job.seq == 5 && ctx.attempt() <= 2 {
            return Err(Error::new(std::io::Error::other("not yet")));
        }
        step(State(rec), meta, job).await
    }

    /// One job of the recovery runs: its start and end are recorded with
    /// this worker's pid, so that the runner sees which worker ran it when,
    /// and what a killed worker had started and not finished.
    async fn job(State(rec): State<Recorder>, job: Job) -> Result<(), Error> {
        let mut redis = rec.redis.clone();
        let pid = std::process::id();
        let started = format!("{} {pid} {}", job.id, micros_now());
        let _: i64 = redis
            .rpush(rec.keys.job_starts(), started)
            .await
            .map_err(Error::new)?;
        tokio::time::sleep(rec.work).await;
        let ended = format!("{} {pid} {}", job.id, micros_now());
        let _: i64 = redis
            .rpush(rec.keys.job_ends(), ended)
            .await
            .map_err(Error::new)?;
        Ok(())
    }

    /// A multi-step job that resumes from its checkpoint: used by the
    /// checkpoint run (each message adds its number to a running total).
    async fn total(ctx: Context, job: Step) -> Result<(), Error> {
        let so_far: u64 = ctx.session_state().await?.unwrap_or(0);
        ctx.set_session_state(&(so_far + job.seq)).await?;
        Ok(())
    }

    pub(super) fn main() -> ExitCode {
        // A worker outlives no runner (a runner killed mid-case).
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(run());
        ExitCode::SUCCESS
    }

    async fn run() {
        let keys = Keys {
            run: env("WHARF_CLUSTER_RUN"),
        };
        let queue = env("WHARF_CLUSTER_QUEUE");
        let mode = env("WHARF_CLUSTER_MODE");
        let broker = Broker::connect(&env("WHARF_BROKER_URL")).await.unwrap();
        let redis = redis::Client::open(REDIS_URL)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let work = std::env::var("WHARF_CLUSTER_WORK_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map_or(WORK, Duration::from_millis);
        let recorder = Recorder {
            redis: redis.clone(),
            keys: keys.clone(),
            work,
        };
        let gap_policy = match std::env::var("WHARF_CLUSTER_GAP_POLICY").as_deref() {
            Ok("skip") => GapPolicy::SkipAhead,
            _ => GapPolicy::DeadLetter,
        };
        let gap_timeout = std::env::var("WHARF_CLUSTER_GAP_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map_or(Duration::from_secs(60), Duration::from_millis);
        let backoff = std::env::var("WHARF_CLUSTER_BACKOFF_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map_or(Duration::from_millis(200), Duration::from_millis);
        let buffer = std::env::var("WHARF_CLUSTER_BUFFER")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(256);
        let options = if std::env::var("WHARF_CLUSTER_DEFAULTS").as_deref() == Ok("1") {
            // What users get: the defaults, with only the concurrency set.
            let options = RouteOptions::new().concurrency(CONCURRENCY);
            match std::env::var("WHARF_CLUSTER_LEASE_S")
                .ok()
                .and_then(|s| s.parse().ok())
            {
                Some(secs) => options.lease(Duration::from_secs(secs)),
                None => options,
            }
        } else {
            RouteOptions::new()
                .session_buffer(buffer)
                .backoff(Backoff::fixed(backoff))
                .concurrency(CONCURRENCY)
                .timeout(TIMEOUT)
                .lease(LEASE)
                .max_attempts(20)
                .defer_delay(Duration::from_millis(100))
                .gap_timeout(gap_timeout)
                .gap_policy(gap_policy)
        };
        let app = App::with_state(broker.clone(), recorder);
        let app = match env("WHARF_CLUSTER_STORE").as_str() {
            "redis" => app.store(
                RedisStore::connect(REDIS_URL)
                    .await
                    .unwrap()
                    .with_prefix(keys.store_prefix()),
            ),
            _ => app.store(
                NatsKvStore::connect(NATS_URL)
                    .await
                    .unwrap()
                    .with_bucket_prefix(keys.bucket_prefix()),
            ),
        };
        let app = match mode.as_str() {
            "effects" => app.route_with(&queue, effect, options),
            "checkpoint" => app.route_with(&queue, total, options),
            "flaky" => app.route_with(&queue, flaky_step, options),
            "jobs" => app.route_with(&queue, job, options),
            _ => app.route_with(&queue, step, options),
        };
        let running = app.start().await.unwrap();
        let pid = std::process::id();
        let mut con = redis.clone();
        let _: i64 = con.sadd(keys.ready(), pid).await.unwrap();
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        let mut max_buffered = 0;
        loop {
            let stats = running.stats(&queue);
            max_buffered = max_buffered.max(stats.session_buffered);
            let live: [(&str, u64); 10] = [
                ("acked", stats.acked),
                ("retried", stats.retried),
                ("duplicates", stats.duplicates),
                ("stale", stats.stale),
                ("deferred", stats.deferred),
                ("dead_lettered", stats.dead_lettered),
                ("gap_timeouts", stats.gap_timeouts),
                ("in_flight", stats.in_flight),
                ("buffered", stats.session_buffered),
                ("max_buffered", max_buffered),
            ];
            let _: () = con.hset_multiple(keys.live(pid), &live).await.unwrap();
            tokio::select! {
                _ = terminate.recv() => break,
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        let report = running.shutdown().await;
        let stats = report.stats(&queue);
        let last: [(&str, u64); 7] = [
            ("acked", stats.acked),
            ("retried", stats.retried),
            ("duplicates", stats.duplicates),
            ("stale", stats.stale),
            ("deferred", stats.deferred),
            ("dead_lettered", stats.dead_lettered),
            ("gap_timeouts", stats.gap_timeouts),
        ];
        let _: () = con.hset_multiple(keys.live(pid), &last).await.unwrap();
        let _: () = con.hset(keys.live(pid), "stopped", 1).await.unwrap();
        broker.close().await;
    }
}

mod runner {
    //! Starts clusters, publishes, kills, waits and checks.

    use super::*;

    type Case = (
        String,
        Pair,
        fn(Pair) -> futures_util::future::LocalBoxFuture<'static, ()>,
    );

    pub(super) fn main() -> ExitCode {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
        let mut cases: Vec<Case> = Vec::new();
        for pair in PAIRS {
            let add = |cases: &mut Vec<Case>, name: &str, run: fn(Pair) -> _| {
                cases.push((format!("cluster::{}::{name}", pair.name()), pair, run));
            };
            add(&mut cases, "idempotency", |p| Box::pin(idempotency(p, false)));
            add(&mut cases, "idempotency_with_a_killed_worker", |p| {
                Box::pin(idempotency(p, true))
            });
            add(&mut cases, "sessions", |p| Box::pin(sessions(p, false)));
            add(&mut cases, "sessions_with_a_killed_worker", |p| {
                Box::pin(sessions(p, true))
            });
            add(&mut cases, "gap_dead_letters_across_workers", |p| {
                Box::pin(gap(p, GapPolicy::DeadLetter))
            });
            add(&mut cases, "gap_skips_ahead_across_workers", |p| {
                Box::pin(gap(p, GapPolicy::SkipAhead))
            });
            add(&mut cases, "a_retry_elsewhere_is_not_a_gap", |p| {
                Box::pin(retry_not_gap(p))
            });
            add(&mut cases, "checkpoint_survives_a_killed_worker", |p| {
                Box::pin(checkpoint(p))
            });
            // One store per broker is enough for the long back-pressure run.
            if matches!(
                (pair.broker, pair.store),
                (BrokerKind::Amqp, StoreKind::Redis) | (BrokerKind::Nats, StoreKind::NatsKv)
            ) {
                add(&mut cases, "ten_thousand_early_arrivals_stay_bounded", |p| {
                    Box::pin(early_arrivals(p))
                });
            }
            // The default settings, once per broker (the store is the same
            // code on both).
            if pair.store == StoreKind::Redis {
                add(&mut cases, "sessions_with_defaults_and_a_killed_worker", |p| {
                    Box::pin(sessions_with_defaults(p))
                });
                add(&mut cases, "a_drained_workers_unstarted_jobs_move_at_once", |p| {
                    Box::pin(recovery(p, Stop::Drain))
                });
                add(
                    &mut cases,
                    "a_killed_workers_jobs_come_back_within_the_lease",
                    |p| Box::pin(recovery(p, Stop::Kill)),
                );
            }
        }
        for pair in QUORUM_PAIRS {
            cases.push((
                format!("cluster::{}::idempotency_with_a_killed_worker", pair.name()),
                pair,
                |p| Box::pin(idempotency(p, true)),
            ));
        }
        if args.iter().any(|a| a == "--list") {
            for (name, ..) in &cases {
                println!("{name}: test");
            }
            return ExitCode::SUCCESS;
        }
        cases.retain(|(name, ..)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())));
        if cases.is_empty() {
            println!("cluster: 0 cases match");
            return ExitCode::SUCCESS;
        }
        let missing: Vec<String> = [("RabbitMQ", AMQP_URL), ("NATS", NATS_URL), ("Redis", REDIS_URL)]
            .into_iter()
            .filter_map(|(name, url)| {
                support::broker_reachable(url)
                    .err()
                    .map(|why| format!("{name}: {why}"))
            })
            .collect();
        if !missing.is_empty() {
            let why = format!("not reachable on 127.0.0.1: {}", missing.join("; "));
            if support::ci() {
                eprintln!("CI=true and the cluster tests cannot run: {why}");
                return ExitCode::FAILURE;
            }
            support::skip("cluster tests", &why);
            return ExitCode::SUCCESS;
        }
        println!(
            "\nrunning {} cluster cases (up to {WORKERS} worker processes each)",
            cases.len()
        );
        let mut failed = Vec::new();
        let started = Instant::now();
        for (name, pair, run) in cases {
            println!("\n--- {name}");
            let case_started = Instant::now();
            let outcome = std::panic::catch_unwind(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(run(pair))
            });
            let took = case_started.elapsed();
            match outcome {
                Ok(()) => println!("test {name} ... ok ({took:.1?})"),
                Err(_) => {
                    println!("test {name} ... FAILED ({took:.1?})");
                    failed.push(name);
                }
            }
        }
        println!(
            "\ncluster: {} failed, {:.0?} in all",
            failed.len(),
            started.elapsed()
        );
        if failed.is_empty() {
            ExitCode::SUCCESS
        } else {
            for name in failed {
                println!("    {name}");
            }
            ExitCode::FAILURE
        }
    }

    /// Live counters of one worker process.
    #[derive(Debug, Default, Clone)]
    struct Live {
        pid: u32,
        counters: HashMap<String, u64>,
    }

    impl Live {
        fn get(&self, name: &str) -> u64 {
            self.counters.get(name).copied().unwrap_or(0)
        }
    }

    /// Worker processes on one queue (three unless a case says otherwise),
    /// and what the runner needs to watch them.
    struct Cluster {
        pair: Pair,
        keys: Keys,
        queue: String,
        mode: &'static str,
        env: Vec<(&'static str, String)>,
        workers: Vec<Child>,
        /// When a worker was last killed: what it held comes back from the
        /// broker within the lease (NATS: the ack wait), not before.
        killed_at: Option<Instant>,
        /// The workers' lease.
        lease: Duration,
        broker: Broker,
        redis: redis::aio::MultiplexedConnection,
    }

    impl Cluster {
        /// Three workers with the short test settings.
        async fn start(
            pair: Pair,
            what: &str,
            mode: &'static str,
            env: Vec<(&'static str, String)>,
        ) -> Cluster {
            Cluster::launch(pair, what, mode, env, WORKERS, LEASE).await
        }

        /// `workers` workers with the default route options (concurrency
        /// aside) on a queue declared with the defaults: the lease is the
        /// default one, unless the runner's `WHARF_CLUSTER_LEASE_S` says
        /// otherwise.
        async fn with_defaults(
            pair: Pair,
            what: &str,
            mode: &'static str,
            mut env: Vec<(&'static str, String)>,
            workers: usize,
        ) -> Cluster {
            env.push(("WHARF_CLUSTER_DEFAULTS", "1".to_owned()));
            let lease = match std::env::var("WHARF_CLUSTER_LEASE_S") {
                Ok(secs) => {
                    let secs: u64 = secs.parse().expect("WHARF_CLUSTER_LEASE_S is whole seconds");
                    println!("WHARF_CLUSTER_LEASE_S: the workers' lease is {secs} s, not the default");
                    env.push(("WHARF_CLUSTER_LEASE_S", secs.to_string()));
                    Duration::from_secs(secs)
                }
                Err(_) => default_lease(),
            };
            Cluster::launch(pair, what, mode, env, workers, lease).await
        }

        async fn launch(
            pair: Pair,
            what: &str,
            mode: &'static str,
            env: Vec<(&'static str, String)>,
            workers: usize,
            lease: Duration,
        ) -> Cluster {
            // `+` is not allowed in NATS subjects.
            let queue = support::unique_queue(&format!("cluster-{what}-{}", pair.name().replace('+', "-")));
            let run = queue.trim_start_matches("wharf-test.").to_owned();
            let broker = Broker::connect(pair.broker_url()).await.unwrap();
            // Declared before publishing, with the workers' lease (it is
            // the NATS consumer's ack wait).
            let spec = QueueSpec {
                lease,
                ..QueueSpec::new(queue.clone())
            };
            broker.declare(&spec).await.unwrap();
            let redis = redis::Client::open(REDIS_URL)
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            let mut cluster = Cluster {
                pair,
                keys: Keys { run },
                queue,
                mode,
                env,
                workers: Vec::new(),
                killed_at: None,
                lease,
                broker,
                redis,
            };
            for _ in 0..workers {
                let child = cluster.spawn();
                cluster.workers.push(child);
            }
            cluster.wait_ready(workers).await;
            cluster
        }

        fn spawn(&self) -> Child {
            let store = match self.pair.store {
                StoreKind::Redis => "redis",
                StoreKind::NatsKv => "natskv",
            };
            let mut command = Command::new(std::env::current_exe().unwrap());
            command
                .env("WHARF_CLUSTER_ROLE", "worker")
                .env("WHARF_CLUSTER_RUN", &self.keys.run)
                .env("WHARF_CLUSTER_QUEUE", &self.queue)
                .env("WHARF_CLUSTER_MODE", self.mode)
                .env("WHARF_CLUSTER_STORE", store)
                .env("WHARF_BROKER_URL", self.pair.broker_url())
                .env("RUST_BACKTRACE", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit());
            for (name, value) in &self.env {
                command.env(name, value);
            }
            command.spawn().expect("worker process starts")
        }

        async fn wait_ready(&mut self, count: usize) {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let ready: usize = self.redis.scard(self.keys.ready()).await.unwrap();
                if ready >= count {
                    return;
                }
                for worker in &mut self.workers {
                    if let Ok(Some(status)) = worker.try_wait() {
                        panic!("a worker exited while starting: {status}");
                    }
                }
                assert!(Instant::now() < deadline, "workers not ready after 60 s");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        /// SIGKILLs worker `i`: no shutdown, nothing settled or released.
        fn kill(&mut self, i: usize) {
            self.workers[i].kill().unwrap();
            self.workers[i].wait().unwrap();
            self.killed_at = Some(Instant::now());
        }

        async fn restart(&mut self, i: usize) {
            let ready: usize = self.redis.scard(self.keys.ready()).await.unwrap();
            self.workers[i] = self.spawn();
            self.wait_ready(ready + 1).await;
        }

        /// Starts one more worker and waits until it consumes.
        async fn add_worker(&mut self) {
            let ready: usize = self.redis.scard(self.keys.ready()).await.unwrap();
            let child = self.spawn();
            self.workers.push(child);
            self.wait_ready(ready + 1).await;
        }

        /// SIGTERMs worker `i` (a drain) without waiting for it.
        fn terminate(&self, i: usize) {
            unsafe { libc::kill(self.workers[i].id() as i32, libc::SIGTERM) };
        }

        async fn publish(&self, messages: Vec<Message>) {
            let client = self.broker.client();
            for chunk in messages.chunks(64) {
                let sent = join_all(chunk.iter().map(|m| client.send(&self.queue, m.clone()))).await;
                for result in sent {
                    result.unwrap();
                }
            }
        }

        async fn live(&mut self) -> Vec<Live> {
            let pattern = format!("{}live:*", self.keys.prefix());
            let names: Vec<String> = self.redis.keys(pattern).await.unwrap();
            let mut all = Vec::new();
            for name in names {
                let pid = name.rsplit(':').next().unwrap().parse().unwrap();
                let counters: HashMap<String, u64> = self.redis.hgetall(name).await.unwrap();
                all.push(Live { pid, counters });
            }
            all
        }

        /// Waits until `done` holds, then until the queue is empty and no
        /// worker holds anything for a second.
        async fn settle(
            &mut self,
            what: &str,
            limit: Duration,
            mut done: impl AsyncFnMut(&mut Cluster) -> bool,
        ) {
            let deadline = Instant::now() + limit;
            while !done(self).await {
                assert!(
                    Instant::now() < deadline,
                    "timed out after {limit:?} waiting for {what}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let mut quiet_since = Instant::now();
            let mut last = None;
            loop {
                let depth = self.broker.queue_depth(&self.queue).await.unwrap_or(u64::MAX);
                let live = self.live().await;
                // A killed worker's last counters stay; only running ones can be busy.
                let running: Vec<u32> = self.workers.iter().map(Child::id).collect();
                let busy: u64 = live
                    .iter()
                    .filter(|l| running.contains(&l.pid))
                    .map(|l| l.get("in_flight") + l.get("buffered"))
                    .sum();
                let handled: u64 = live
                    .iter()
                    .map(|l| {
                        l.get("acked") + l.get("duplicates") + l.get("deferred") + l.get("dead_lettered")
                    })
                    .sum();
                // Quiet only once a killed worker's deliveries can have come back.
                let returned = self
                    .killed_at
                    .is_none_or(|at| at.elapsed() >= self.lease + Duration::from_secs(1));
                if depth != 0 || busy != 0 || last != Some(handled) || !returned {
                    quiet_since = Instant::now();
                    last = Some(handled);
                } else if quiet_since.elapsed() >= Duration::from_secs(1) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "timed out after {limit:?}: still busy after {what}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }

        /// SIGTERMs every worker, waits for them, and returns their final
        /// counters.
        async fn stop(&mut self) -> Vec<Live> {
            for worker in &mut self.workers {
                // One already stopped (and reaped) may have passed its pid on.
                if worker.try_wait().unwrap().is_none() {
                    unsafe { libc::kill(worker.id() as i32, libc::SIGTERM) };
                }
            }
            for worker in &mut self.workers {
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    if worker.try_wait().unwrap().is_some() {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "a worker did not stop within 30 s of SIGTERM"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            self.workers.clear();
            self.live().await
        }

        /// What is in the dead-letter queue (left there): how many letters,
        /// and each kind of them with its count.
        async fn dead_letters(&self) -> (usize, String) {
            let letters = self.broker.dead_letters(&self.queue).list(10_000).await.unwrap();
            let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
            for letter in &letters {
                let kind = format!(
                    "{:?}, wharf-attempt {:?}: {:?}",
                    letter.reason(),
                    letter.message.header("wharf-attempt"),
                    letter.message.header("wharf-error-message")
                );
                *kinds.entry(kind).or_default() += 1;
            }
            let described: Vec<String> = kinds.iter().map(|(kind, n)| format!("{n} × {kind}")).collect();
            (letters.len(), described.join("; "))
        }

        async fn cleanup(&mut self) {
            let pattern = format!("{}*", self.keys.prefix());
            let names: Vec<String> = self.redis.keys(pattern).await.unwrap_or_default();
            if !names.is_empty() {
                let _: Result<i64, _> = self.redis.del(names).await;
            }
            let _ = self.broker.delete_queue(&self.queue).await;
            if self.pair.store == StoreKind::NatsKv {
                let client = async_nats::connect(NATS_URL).await.unwrap();
                let jetstream = async_nats::jetstream::new(client);
                for bucket in ["idempotency", "sessions"] {
                    let _ = jetstream
                        .delete_stream(format!("KV_{}_{bucket}", self.keys.bucket_prefix()))
                        .await;
                }
            }
            self.broker.close().await;
        }
    }

    impl Drop for Cluster {
        fn drop(&mut self) {
            for worker in &mut self.workers {
                let _ = worker.kill();
                let _ = worker.wait();
            }
        }
    }

    /// Number `seq` of `session`: the payload names both, for the recorder.
    fn in_session(session: &str, seq: u64) -> Message {
        Message::json(&Step {
            session: session.to_owned(),
            seq,
        })
        .unwrap()
        .with_session(session, seq)
    }

    /// A deterministic shuffle (xorshift), so that a failing order can be
    /// reproduced from the seed printed.
    fn shuffle<T>(items: &mut [T], seed: u64) {
        let mut state = seed | 1;
        for i in (1..items.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            items.swap(i, (state % (i as u64 + 1)) as usize);
        }
    }

    fn seed() -> u64 {
        let seed = micros_now();
        println!("shuffle seed {seed}");
        seed
    }

    const KEYS: usize = 500;
    const COPIES: usize = 4;
    /// Simulated work per run in the idempotency run with a killed worker.
    const KILLED_RUN_WORK_MS: u64 = 50;

    /// 2,000 messages, 500 idempotency keys each sent 4 times, interleaved:
    /// the side effect happens once per key. With `kill`, one worker is
    /// SIGKILLed mid-run and restarted; the only repeats allowed are runs
    /// the killed worker had started and not recorded as done (the crash
    /// window), at most its concurrency. Its runs take 50 ms there, so that
    /// it is killed holding claims: their messages come back from the broker
    /// and wait (deferred) until the claims' leases run out, and none may be
    /// dead-lettered for it.
    async fn idempotency(pair: Pair, kill: bool) {
        let env = if kill {
            vec![("WHARF_CLUSTER_WORK_MS", KILLED_RUN_WORK_MS.to_string())]
        } else {
            Vec::new()
        };
        let mut cluster = Cluster::start(pair, "idem", "effects", env).await;
        let seed = seed();
        let mut messages = Vec::new();
        for copy in 0..COPIES {
            let mut keys: Vec<usize> = (0..KEYS).collect();
            shuffle(&mut keys, seed.wrapping_add(copy as u64));
            for k in keys {
                let key = format!("order-{k}");
                messages.push(
                    Message::json(&Effect { key: key.clone() })
                        .unwrap()
                        .with_idempotency_key(key),
                );
            }
        }
        let started = Instant::now();
        let publish = cluster.publish(messages);
        if kill {
            publish.await;
            let effects = cluster.keys.effects();
            let mut redis = cluster.redis.clone();
            support::wait_for_async(
                "a quarter of the keys handled",
                Duration::from_secs(60),
                async || {
                    let n: u64 = redis.get(&effects).await.unwrap_or(0);
                    n >= (KEYS / 4) as u64
                },
            )
            .await;
            cluster.kill(0);
            println!("killed worker 0 after {:.1?}", started.elapsed());
            tokio::time::sleep(Duration::from_millis(500)).await;
            cluster.restart(0).await;
        } else {
            publish.await;
        }
        let prefix = cluster.keys.prefix();
        cluster
            .settle("every key handled", Duration::from_secs(180), async |c| {
                let pattern = format!("{prefix}effect:*");
                let found: Vec<String> = c.redis.keys(pattern).await.unwrap();
                found.len() == KEYS
            })
            .await;
        let took = started.elapsed();
        let finals = cluster.stop().await;
        let mut runs_per_key = BTreeMap::new();
        for k in 0..KEYS {
            let key = format!("order-{k}");
            let runs: u64 = cluster.redis.get(cluster.keys.effect(&key)).await.unwrap_or(0);
            runs_per_key.insert(key, runs);
        }
        let total: u64 = runs_per_key.values().sum();
        let missing = runs_per_key.values().filter(|&&r| r == 0).count();
        let repeated = total - (KEYS as u64 - missing as u64);
        let duplicates: u64 = finals.iter().map(|l| l.get("duplicates")).sum();
        let deferred: u64 = finals.iter().map(|l| l.get("deferred")).sum();
        let (dead, dead_letters) = cluster.dead_letters().await;
        println!(
            "{}: {} messages, {KEYS} keys → {total} side effects, {repeated} repeated, {missing} missing; \
             {duplicates} duplicates acked without a run, {deferred} deferred (a copy was running), \
             {} dead-lettered; {took:.1?}",
            pair.name(),
            KEYS * COPIES,
            dead
        );
        cluster.cleanup().await;
        assert_eq!(missing, 0, "every key's side effect happened");
        // A message waiting for a claim (the killed worker's, until its
        // lease runs out) uses no attempts, whatever the queue counts.
        assert_eq!(dead, 0, "nothing is dead-lettered: {dead_letters}");
        if kill {
            assert!(
                repeated <= CONCURRENCY as u64,
                "only the killed worker's runs in flight may repeat: {repeated}"
            );
            assert!(deferred > 0, "messages waited for the killed worker's claims");
        } else {
            assert_eq!(total, KEYS as u64, "exactly one side effect per key");
            assert_eq!(
                duplicates,
                (KEYS * (COPIES - 1)) as u64,
                "every other copy is counted as a duplicate"
            );
        }
    }

    const SESSIONS: usize = 50;
    const STEPS: u64 = 100;

    /// 50 sessions × 100 messages, each session's numbers shuffled: every
    /// session is handled in ascending order, and sessions run concurrently.
    /// With `kill`, one worker is SIGKILLed mid-run and restarted.
    async fn sessions(pair: Pair, kill: bool) {
        let mut cluster = Cluster::start(pair, "sess", "sessions", Vec::new()).await;
        let seed = seed();
        let mut per_session: Vec<Vec<u64>> = (0..SESSIONS)
            .map(|s| {
                let mut numbers: Vec<u64> = (1..=STEPS).collect();
                shuffle(&mut numbers, seed.wrapping_add(s as u64));
                numbers
            })
            .collect();
        // Sessions interleaved: round-robin over the shuffled sequences.
        let mut messages = Vec::new();
        for i in 0..STEPS as usize {
            for (s, numbers) in per_session.iter_mut().enumerate() {
                messages.push(in_session(&format!("account-{s}"), numbers[i]));
            }
        }
        let started = Instant::now();
        cluster.publish(messages).await;
        let spans = cluster.keys.spans();
        if kill {
            let mut redis = cluster.redis.clone();
            support::wait_for_async("a quarter handled", Duration::from_secs(120), async || {
                let n: u64 = redis.llen(&spans).await.unwrap_or(0);
                n >= (SESSIONS as u64 * STEPS) / 4
            })
            .await;
            cluster.kill(0);
            println!("killed worker 0 after {:.1?}", started.elapsed());
            tokio::time::sleep(Duration::from_millis(500)).await;
            cluster.restart(0).await;
        }
        let total = SESSIONS as u64 * STEPS;
        cluster
            .settle("every session handled", Duration::from_secs(300), async |c| {
                let n: u64 = c.redis.llen(&spans).await.unwrap_or(0);
                n >= total
            })
            .await;
        let took = started.elapsed();
        let finals = cluster.stop().await;
        let mut repeated = 0;
        let mut problems = Vec::new();
        for s in 0..SESSIONS {
            let session = format!("account-{s}");
            let order: Vec<u64> = cluster
                .redis
                .lrange(cluster.keys.order(&session), 0, -1)
                .await
                .unwrap();
            let mut distinct = order.clone();
            distinct.dedup();
            repeated += order.len() - distinct.len();
            if distinct != (1..=STEPS).collect::<Vec<_>>() {
                problems.push(format!("{session}: {order:?}"));
            }
        }
        let spans: Vec<String> = cluster.redis.lrange(&spans, 0, -1).await.unwrap();
        let (max_sessions, mean) = concurrency(&spans);
        let deferred: u64 = finals.iter().map(|l| l.get("deferred")).sum();
        let stale: u64 = finals.iter().map(|l| l.get("stale")).sum();
        println!(
            "{}: {SESSIONS} sessions × {STEPS} shuffled → {} handler runs, {repeated} repeated (crash window), \
             {} out of order; sessions running at once: up to {max_sessions}, {mean:.1} on average; \
             {deferred} deferred, {stale} stale copies acked; {took:.1?}",
            pair.name(),
            spans.len(),
            problems.len()
        );
        cluster.cleanup().await;
        assert!(
            problems.is_empty(),
            "sessions out of order:\n{}",
            problems.join("\n")
        );
        if kill {
            assert!(
                repeated <= CONCURRENCY,
                "only the killed worker's runs may repeat: {repeated}"
            );
        } else {
            assert_eq!(repeated, 0, "no session message ran twice");
        }
        assert!(
            max_sessions >= 4,
            "sessions must run concurrently: up to {max_sessions} at once"
        );
    }

    /// (most sessions running at one instant, mean handler runs at once)
    /// from `session start end` spans in µs.
    fn concurrency(spans: &[String]) -> (usize, f64) {
        let mut events = Vec::new();
        let mut busy = 0u64;
        let (mut first, mut last) = (u64::MAX, 0);
        for span in spans {
            let mut parts = span.split(' ');
            let session = parts.next().unwrap().to_owned();
            let start: u64 = parts.next().unwrap().parse().unwrap();
            let end: u64 = parts.next().unwrap().parse().unwrap();
            busy += end - start;
            first = first.min(start);
            last = last.max(end);
            events.push((start, 1i32, session.clone()));
            events.push((end, -1, session));
        }
        events.sort_by_key(|(t, delta, _)| (*t, *delta));
        let mut running: HashMap<String, i32> = HashMap::new();
        let mut most = 0;
        for (_, delta, session) in events {
            *running.entry(session).or_default() += delta;
            running.retain(|_, n| *n > 0);
            most = most.max(running.len());
        }
        (most, busy as f64 / (last.saturating_sub(first)).max(1) as f64)
    }

    /// A missing number blocks only its session until the gap timeout; the
    /// policy then applies across all three workers.
    async fn gap(pair: Pair, policy: GapPolicy) {
        let (name, env) = match policy {
            GapPolicy::SkipAhead => ("gapskip", "skip"),
            GapPolicy::DeadLetter => ("gapdl", "dead-letter"),
        };
        let gap_ms = 1500;
        let mut cluster = Cluster::start(
            pair,
            name,
            "sessions",
            vec![
                ("WHARF_CLUSTER_GAP_POLICY", env.to_owned()),
                ("WHARF_CLUSTER_GAP_MS", gap_ms.to_string()),
            ],
        )
        .await;
        // Session "gap" misses number 1; session "ok" is complete.
        let mut messages = Vec::new();
        for seq in 2..=31 {
            messages.push(in_session("gap", seq));
            messages.push(in_session("ok", seq - 1));
        }
        let started = Instant::now();
        cluster.publish(messages).await;
        let ok = cluster.keys.order("ok");
        let mut redis = cluster.redis.clone();
        let ok_took = support::wait_for_async("session ok handled", Duration::from_secs(60), async || {
            let n: u64 = redis.llen(&ok).await.unwrap_or(0);
            n >= 30
        })
        .await;
        let gap_key = cluster.keys.order("gap");
        match policy {
            GapPolicy::SkipAhead => {
                cluster
                    .settle("session gap skipped ahead", Duration::from_secs(60), async |c| {
                        let n: u64 = c.redis.llen(&gap_key).await.unwrap_or(0);
                        n >= 30
                    })
                    .await;
            }
            GapPolicy::DeadLetter => {
                let letters =
                    support::dead_letters(&cluster.broker, &cluster.queue, 30, Duration::from_secs(60)).await;
                let mut numbers: Vec<u64> = letters
                    .iter()
                    .filter_map(|l| l.message.sequence()?.parse().ok())
                    .collect();
                numbers.sort();
                assert_eq!(
                    numbers,
                    (2..=31).collect::<Vec<_>>(),
                    "the 30 waiting messages are dead-lettered"
                );
                assert!(
                    letters
                        .iter()
                        .all(|l| l.reason() == Some(wharf::DeadLetterReason::SessionGap))
                );
            }
        }
        let gap_took = started.elapsed();
        // The missing number arrives late: it never ran, so it is
        // dead-lettered, not acked as a duplicate.
        cluster.publish(vec![in_session("gap", 1)]).await;
        let late = support::dead_letters(&cluster.broker, &cluster.queue, 1, Duration::from_secs(30)).await;
        cluster
            .settle("late number settled", Duration::from_secs(30), async |_| true)
            .await;
        let finals = cluster.stop().await;
        let ok_order: Vec<u64> = cluster.redis.lrange(&ok, 0, -1).await.unwrap();
        let gap_order: Vec<u64> = cluster.redis.lrange(&gap_key, 0, -1).await.unwrap();
        let gap_timeouts: u64 = finals.iter().map(|l| l.get("gap_timeouts")).sum();
        let dead: u64 = finals.iter().map(|l| l.get("dead_lettered")).sum();
        println!(
            "{} {policy:?}: session ok done in {ok_took:.1?} (not blocked by the gap); gap resolved after {gap_took:.1?} \
             (timeout {gap_ms} ms); gap_timeouts counted {gap_timeouts}; dead-lettered {dead}",
            pair.name()
        );
        cluster.cleanup().await;
        assert_eq!(ok_order, (1..=30).collect::<Vec<_>>());
        assert!(
            ok_took < Duration::from_millis(gap_ms),
            "the gap blocked another session"
        );
        assert_eq!(late.len(), 1, "the late number is dead-lettered");
        assert_eq!(late[0].message.sequence(), Some("1"));
        assert_eq!(late[0].reason(), Some(wharf::DeadLetterReason::SessionGap));
        assert!(gap_timeouts >= 1, "the gap timeout is counted");
        match policy {
            GapPolicy::SkipAhead => {
                assert_eq!(
                    gap_order,
                    (2..=31).collect::<Vec<_>>(),
                    "skip ahead keeps order across workers"
                );
                assert_eq!(dead, 1);
            }
            GapPolicy::DeadLetter => {
                assert!(
                    gap_order.is_empty(),
                    "nothing of the gapped session ran: {gap_order:?}"
                );
                assert_eq!(dead, 31);
            }
        }
    }

    /// Number 5 of each session fails twice and is retried after 2 s, longer
    /// than the 1 s gap timeout, while later numbers wait in the other
    /// workers: the session is held for the retry, so nobody's gap policy
    /// passes it, and every session completes in order.
    async fn retry_not_gap(pair: Pair) {
        let env = vec![
            ("WHARF_CLUSTER_GAP_MS", "1000".to_owned()),
            ("WHARF_CLUSTER_BACKOFF_MS", "2000".to_owned()),
        ];
        let mut cluster = Cluster::start(pair, "retry", "flaky", env).await;
        // Not a multiple of the workers: round-robin delivery then spreads
        // each session's numbers over all three.
        let sessions = 7;
        let mut messages = Vec::new();
        for seq in 1..=20 {
            for s in 0..sessions {
                messages.push(in_session(&format!("r{s}"), seq));
            }
        }
        let started = Instant::now();
        cluster.publish(messages).await;
        let spans = cluster.keys.spans();
        cluster
            .settle("every session handled", Duration::from_secs(60), async |c| {
                let n: u64 = c.redis.llen(&spans).await.unwrap_or(0);
                n >= 20 * sessions
            })
            .await;
        let took = started.elapsed();
        let finals = cluster.stop().await;
        let mut orders = Vec::new();
        for s in 0..sessions {
            let order: Vec<u64> = cluster
                .redis
                .lrange(cluster.keys.order(&format!("r{s}")), 0, -1)
                .await
                .unwrap();
            orders.push(order);
        }
        let dead: u64 = finals.iter().map(|l| l.get("dead_lettered")).sum();
        let gaps: u64 = finals.iter().map(|l| l.get("gap_timeouts")).sum();
        let retried: u64 = finals.iter().map(|l| l.get("retried")).sum();
        println!(
            "{}: {sessions} sessions × 20, number 5 failing twice, {retried} retries after 2 s (gap timeout 1 s): \
             {dead} dead-lettered, {gaps} gap timeouts, {took:.1?}",
            pair.name()
        );
        cluster.cleanup().await;
        for order in orders {
            assert_eq!(order, (1..=20).collect::<Vec<_>>());
        }
        assert_eq!((dead, gaps), (0, 0), "a retry is not a gap");
        assert_eq!(retried, 2 * sessions, "number 5 of each session failed twice");
    }

    /// A long job of 200 steps keeps a running total in its session
    /// checkpoint; one worker is killed mid-way. The total at the end is
    /// exactly the sum of the steps: every step applied once, resumed from
    /// the last good checkpoint.
    async fn checkpoint(pair: Pair) {
        let mut cluster = Cluster::start(pair, "ckpt", "checkpoint", Vec::new()).await;
        let steps = 200u64;
        let messages = (1..=steps).map(|seq| in_session("job", seq)).collect();
        let store: Box<dyn wharf::store::Store> = match pair.store {
            StoreKind::Redis => Box::new(
                RedisStore::connect(REDIS_URL)
                    .await
                    .unwrap()
                    .with_prefix(cluster.keys.store_prefix()),
            ),
            StoreKind::NatsKv => Box::new(
                NatsKvStore::connect(NATS_URL)
                    .await
                    .unwrap()
                    .with_bucket_prefix(cluster.keys.bucket_prefix()),
            ),
        };
        let session = format!("{}/job", cluster.queue);
        cluster.publish(messages).await;
        support::wait_for_async("20 steps applied", Duration::from_secs(60), async || {
            store.session_position(&session).await.unwrap().next > 20
        })
        .await;
        cluster.kill(1);
        let at_kill = store.session_position(&session).await.unwrap().next;
        cluster.restart(1).await;
        cluster
            .settle("every step applied", Duration::from_secs(120), async |_| {
                store.session_position(&session).await.unwrap().next > steps
            })
            .await;
        let state = store
            .session_state(&session)
            .await
            .unwrap()
            .expect("a checkpoint");
        let total: u64 = serde_json::from_slice(&state).unwrap();
        cluster.stop().await;
        cluster.cleanup().await;
        println!(
            "{}: checkpoint total {total} after 200 steps; a worker was killed at step {at_kill}",
            pair.name()
        );
        assert!(at_kill <= steps, "the kill came after the job had finished");
        // A step killed between saving its checkpoint and finishing its turn
        // runs again (the crash window) and adds its number twice.
        let expected = steps * (steps + 1) / 2;
        assert!(
            total >= expected && total - expected <= steps,
            "total {total}, expected {expected} (+ at most one repeated step)"
        );
    }

    /// Session buffer of each worker in the early-arrivals run.
    const EARLY_BUFFER: usize = 1000;

    /// One session with 10,000 early arrivals (2..=10001 published before
    /// 1): memory stays bounded — beyond each worker's buffer they go back
    /// to the broker — and all complete in order once 1 arrives.
    async fn early_arrivals(pair: Pair) {
        // No simulated work: one session runs one message at a time. A
        // buffer of 1,000 per worker: bounded all the same, and fewer trips
        // through the broker than with the default 256.
        let env = vec![
            ("WHARF_CLUSTER_WORK_MS", "0".to_owned()),
            ("WHARF_CLUSTER_BUFFER", EARLY_BUFFER.to_string()),
        ];
        let mut cluster = Cluster::start(pair, "early", "sessions", env).await;
        let step = |seq: u64| in_session("big", seq);
        let last = 10_001;
        let started = Instant::now();
        cluster.publish((2..=last).map(step).collect()).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss_before = rss_of(&cluster.workers);
        cluster.publish(vec![step(1)]).await;
        let order_key = cluster.keys.order("big");
        let mut max_rss = rss_before;
        cluster
            .settle("all 10,001 handled", Duration::from_secs(300), async |c| {
                max_rss = max_rss.max(rss_of(&c.workers));
                let n: u64 = c.redis.llen(&order_key).await.unwrap_or(0);
                n >= last
            })
            .await;
        let took = started.elapsed();
        let finals = cluster.stop().await;
        let order: Vec<u64> = cluster.redis.lrange(&order_key, 0, -1).await.unwrap();
        let max_buffered = finals.iter().map(|l| l.get("max_buffered")).max().unwrap_or(0);
        let deferred: u64 = finals.iter().map(|l| l.get("deferred")).sum();
        println!(
            "{}: 10,000 early arrivals: at most {max_buffered} waiting in one worker's memory, {deferred} sent back \
             to the broker meanwhile; largest worker RSS {:.1} MiB; all {last} in order after {took:.1?}",
            pair.name(),
            max_rss as f64 / 1024.0
        );
        cluster.cleanup().await;
        assert_eq!(order, (1..=last).collect::<Vec<_>>(), "all in order");
        let capacity = (CONCURRENCY + EARLY_BUFFER - 1) as u64;
        assert!(max_buffered <= capacity, "{max_buffered} waiting > {capacity}");
        assert!(deferred > 0, "back-pressure went through the broker");
    }

    /// Largest resident set (KiB) of the live workers.
    fn rss_of(workers: &[Child]) -> u64 {
        workers
            .iter()
            .filter_map(|w| std::fs::read_to_string(format!("/proc/{}/status", w.id())).ok())
            .filter_map(|status| {
                let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
                line.split_whitespace().nth(1)?.parse().ok()
            })
            .max()
            .unwrap_or(0)
    }

    const DEFAULT_SESSIONS: usize = 20;
    const DEFAULT_STEPS: u64 = 40;
    /// Handled before one worker is killed in the defaults run.
    const HANDLED_BEFORE_KILL: u64 = 250;

    /// Defect 13 of issue 17, with the settings users get: two workers
    /// share the store, 20 sessions × 40 messages are published shuffled,
    /// each run takes 25 ms, and one worker is SIGKILLed after 250 were
    /// handled and restarted at once. What it held (its session turns in
    /// the store, on NATS also the messages it was handed) comes back
    /// within the default lease, well inside the default gap timeout: every
    /// session completes in order, nothing is dead-lettered, no gap timeout
    /// fires, and only runs in flight in the killed worker repeat. (With the
    /// 90 s lease wharf used to have, the killed worker's NATS messages came
    /// back after the 30 s gap timeout had moved their sessions on.)
    async fn sessions_with_defaults(pair: Pair) {
        let env = vec![("WHARF_CLUSTER_WORK_MS", "25".to_owned())];
        let mut cluster = Cluster::with_defaults(pair, "dsess", "sessions", env, 2).await;
        let seed = seed();
        let mut messages = Vec::new();
        for s in 0..DEFAULT_SESSIONS {
            for seq in 1..=DEFAULT_STEPS {
                messages.push(in_session(&format!("s{s}"), seq));
            }
        }
        shuffle(&mut messages, seed);
        let total = DEFAULT_SESSIONS as u64 * DEFAULT_STEPS;
        let started = Instant::now();
        cluster.publish(messages).await;
        let spans_key = cluster.keys.spans();
        let mut redis = cluster.redis.clone();
        support::wait_for_async("250 handled", Duration::from_secs(60), async || {
            let n: u64 = redis.llen(&spans_key).await.unwrap_or(0);
            n >= HANDLED_BEFORE_KILL
        })
        .await;
        let killed_pid = cluster.workers[0].id();
        let killed_us = micros_now();
        cluster.kill(0);
        let handled_at_kill: u64 = cluster.redis.llen(&spans_key).await.unwrap();
        println!(
            "killed worker 0 after {:.1?}, {handled_at_kill} handled",
            started.elapsed()
        );
        cluster.restart(0).await;
        let keys = cluster.keys.clone();
        // Done once every message was handled or dead-lettered (with a lease
        // longer than the gap timeout, sessions dead-letter instead).
        let limit = 2 * cluster.lease + Duration::from_secs(60);
        cluster
            .settle("every message handled or dead-lettered", limit, async |c| {
                let mut handled = 0;
                for s in 0..DEFAULT_SESSIONS {
                    let mut order: Vec<u64> =
                        c.redis.lrange(keys.order(&format!("s{s}")), 0, -1).await.unwrap();
                    order.sort();
                    order.dedup();
                    handled += order.len() as u64;
                }
                let dead: u64 = c.live().await.iter().map(|l| l.get("dead_lettered")).sum();
                handled + dead >= total
            })
            .await;
        let took = started.elapsed();
        let finals = cluster.stop().await;
        let mut repeated = 0;
        let mut skipped = 0;
        let mut problems = Vec::new();
        for s in 0..DEFAULT_SESSIONS {
            let session = format!("s{s}");
            let order: Vec<u64> = cluster.redis.lrange(keys.order(&session), 0, -1).await.unwrap();
            let mut distinct = order.clone();
            distinct.dedup();
            repeated += order.len() - distinct.len();
            let mut numbers = distinct.clone();
            numbers.sort();
            numbers.dedup();
            skipped += DEFAULT_STEPS as usize - numbers.len();
            if distinct != (1..=DEFAULT_STEPS).collect::<Vec<_>>() {
                problems.push(format!("{session}: {order:?}"));
            }
        }
        // How long each session waited after the kill for its next run: the
        // sessions the killed worker held (turns, and on NATS messages) wait
        // for its lease; the others go on at once.
        let spans: Vec<String> = cluster.redis.lrange(&spans_key, 0, -1).await.unwrap();
        let mut first_after_kill: HashMap<&str, u64> = HashMap::new();
        let mut killed_ran = 0;
        for span in &spans {
            let parts: Vec<&str> = span.split(' ').collect();
            let start: u64 = parts[1].parse().unwrap();
            if parts[3] == killed_pid.to_string() {
                killed_ran += 1;
            }
            if start >= killed_us {
                let first = first_after_kill.entry(parts[0]).or_insert(start);
                *first = (*first).min(start);
            }
        }
        let waits: Vec<f64> = first_after_kill
            .values()
            .map(|&t| (t - killed_us) as f64 / 1e6)
            .collect();
        let last_moved_on = waits.iter().copied().fold(0.0, f64::max);
        let waited_long = waits.iter().filter(|&&w| w > 1.0).count();
        let gap_timeouts: u64 = finals.iter().map(|l| l.get("gap_timeouts")).sum();
        let deferred: u64 = finals.iter().map(|l| l.get("deferred")).sum();
        let (dead, dead_letters) = cluster.dead_letters().await;
        println!(
            "{} with defaults (lease {:?}): {DEFAULT_SESSIONS} sessions × {DEFAULT_STEPS} shuffled, 25 ms each, 2 workers; \
             one killed after {handled_at_kill} handled ({killed_ran} of them its own) and restarted: \
             all done after {took:.1?}; the last session held up by the kill moved on {last_moved_on:.1} s after it \
             ({waited_long} of {} sessions waited over 1 s); {repeated} repeated (crash window), {skipped} skipped, \
             {} out of order; {gap_timeouts} gap timeouts, {dead} dead-lettered, {deferred} deferred",
            pair.name(),
            cluster.lease,
            waits.len(),
            problems.len()
        );
        cluster.cleanup().await;
        assert!(
            problems.is_empty(),
            "sessions skipped or out of order:\n{}",
            problems.join("\n")
        );
        assert_eq!(dead, 0, "nothing is dead-lettered: {dead_letters}");
        assert_eq!(gap_timeouts, 0, "a crash is not a gap");
        assert!(
            repeated <= CONCURRENCY,
            "only the killed worker's runs in flight may repeat: {repeated}"
        );
    }

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Stop {
        /// SIGTERM: the worker drains.
        Drain,
        /// SIGKILL: the worker settles and gives back nothing.
        Kill,
    }

    const JOBS: u64 = 40;
    const JOB_MS: u64 = 2000;

    /// One run of a job as recorded by the worker.
    struct Run {
        id: u64,
        pid: u32,
        start: u64,
        end: Option<u64>,
    }

    /// Every run of every job, in the order they started. A run's end is
    /// matched to the earliest open start of the same job in the same pid.
    async fn runs(cluster: &mut Cluster) -> Vec<Run> {
        let parse = |line: &String| -> (u64, u32, u64) {
            let mut parts = line.split(' ').map(|p| p.parse::<u64>().unwrap());
            let id = parts.next().unwrap();
            let pid = parts.next().unwrap() as u32;
            (id, pid, parts.next().unwrap())
        };
        let starts: Vec<String> = cluster
            .redis
            .lrange(cluster.keys.job_starts(), 0, -1)
            .await
            .unwrap();
        let ends: Vec<String> = cluster
            .redis
            .lrange(cluster.keys.job_ends(), 0, -1)
            .await
            .unwrap();
        let mut runs: Vec<Run> = starts
            .iter()
            .map(parse)
            .map(|(id, pid, start)| Run {
                id,
                pid,
                start,
                end: None,
            })
            .collect();
        runs.sort_by_key(|r| r.start);
        for (id, pid, end) in ends.iter().map(parse) {
            if let Some(run) = runs
                .iter_mut()
                .find(|r| r.id == id && r.pid == pid && r.end.is_none() && r.start <= end)
            {
                run.end = Some(end);
            }
        }
        runs
    }

    /// The scenario: a route with concurrency 8 and 40 queued jobs
    /// of 2 s each, default settings. One worker takes them all (8 run, the
    /// rest wait in its prefetch); two more start and get nothing; then the
    /// first is stopped. Drained (SIGTERM), its unstarted jobs must start
    /// elsewhere within 1 s and its running ones finish in it, once. Killed
    /// (SIGKILL), its jobs must come back within the lease on NATS and at
    /// once on RabbitMQ, the ones it was running included.
    async fn recovery(pair: Pair, stop: Stop) {
        let env = vec![("WHARF_CLUSTER_WORK_MS", JOB_MS.to_string())];
        let what = match stop {
            Stop::Drain => "drain",
            Stop::Kill => "kill",
        };
        let mut cluster = Cluster::with_defaults(pair, what, "jobs", env, 1).await;
        let first = cluster.workers[0].id();
        let jobs = (0..JOBS).map(|id| Message::json(&Job { id }).unwrap()).collect();
        let published = Instant::now();
        cluster.publish(jobs).await;
        let starts_key = cluster.keys.job_starts();
        let mut redis = cluster.redis.clone();
        support::wait_for_async(
            "the first worker runs 8 jobs",
            Duration::from_secs(30),
            async || {
                let n: u64 = redis.llen(&starts_key).await.unwrap_or(0);
                n >= CONCURRENCY as u64
            },
        )
        .await;
        let depth = cluster.broker.queue_depth(&cluster.queue).await.ok();
        cluster.add_worker().await;
        cluster.add_worker().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = runs(&mut cluster).await;
        assert!(
            before.iter().all(|r| r.pid == first),
            "the first worker holds every job: the others got nothing before it stopped"
        );
        let stopped_us = micros_now();
        let stopped = Instant::now();
        match stop {
            Stop::Drain => cluster.terminate(0),
            Stop::Kill => cluster.kill(0),
        }
        let mut redis = cluster.redis.clone();
        let ends_key = cluster.keys.job_ends();
        let mut exited = None;
        let limit = default_lease().max(cluster.lease) + Duration::from_secs(60);
        support::wait_for_async("every job done", limit, async || {
            if exited.is_none() && cluster.workers[0].try_wait().unwrap().is_some() {
                exited = Some(stopped.elapsed());
            }
            let ends: Vec<String> = redis.lrange(&ends_key, 0, -1).await.unwrap_or_default();
            let done: std::collections::HashSet<&str> =
                ends.iter().filter_map(|e| e.split(' ').next()).collect();
            done.len() as u64 >= JOBS
        })
        .await;
        let exited = exited.or_else(|| cluster.workers[0].try_wait().unwrap().map(|_| stopped.elapsed()));
        cluster.stop().await;
        let runs = runs(&mut cluster).await;
        cluster.cleanup().await;

        let after = |t: u64| t.saturating_sub(stopped_us) as f64 / 1e6;
        let in_first: std::collections::HashSet<u64> =
            runs.iter().filter(|r| r.pid == first).map(|r| r.id).collect();
        let running_at_stop: Vec<u64> = runs
            .iter()
            .filter(|r| r.pid == first && r.start <= stopped_us && r.end.is_none_or(|e| e > stopped_us))
            .map(|r| r.id)
            .collect();
        let elsewhere: Vec<&Run> = runs.iter().filter(|r| r.pid != first).collect();
        let first_unstarted = elsewhere
            .iter()
            .filter(|r| !in_first.contains(&r.id))
            .map(|r| after(r.start))
            .fold(f64::INFINITY, f64::min);
        let all_done = runs.iter().filter_map(|r| r.end).map(after).fold(0.0, f64::max);
        let runs_of = |id: u64| runs.iter().filter(|r| r.id == id).count();
        let name = pair.name();
        let prefetched = depth.map_or("?".to_owned(), |d| d.to_string());
        let timing = format!(
            "{} jobs had started in it, {} were running when it stopped; queue depth {prefetched} while it held them",
            in_first.len(),
            running_at_stop.len()
        );
        match stop {
            Stop::Drain => {
                let exit = exited.map_or("?".to_owned(), |e| format!("{:.2} s", e.as_secs_f64()));
                println!(
                    "{name} drain: first unstarted job started elsewhere {first_unstarted:.3} s after SIGTERM; \
                     the drained worker exited after {exit}; all {JOBS} done after {all_done:.1} s \
                     ({timing}; published {:.1} s before SIGTERM)",
                    (stopped - published).as_secs_f64()
                );
                for id in &in_first {
                    let ran: Vec<&Run> = runs.iter().filter(|r| r.id == *id).collect();
                    assert!(
                        ran.len() == 1 && ran[0].end.is_some(),
                        "job {id}, started in the drained worker, finished there and ran nowhere else"
                    );
                }
                assert!(
                    first_unstarted <= 1.0,
                    "the drained worker's unstarted jobs started elsewhere {first_unstarted:.2} s after SIGTERM (> 1 s)"
                );
                for id in 0..JOBS {
                    assert_eq!(runs_of(id), 1, "job {id} ran once");
                }
            }
            Stop::Kill => {
                let rerun: Vec<f64> = running_at_stop
                    .iter()
                    .filter_map(|id| elsewhere.iter().find(|r| r.id == *id))
                    .map(|r| after(r.start))
                    .collect();
                let last_rerun = rerun.iter().copied().fold(0.0, f64::max);
                println!(
                    "{name} kill: first unstarted job started elsewhere {first_unstarted:.3} s after SIGKILL; \
                     its {} jobs in flight ran again elsewhere by {last_rerun:.2} s; all {JOBS} done after \
                     {all_done:.1} s (lease {:?}; {timing})",
                    running_at_stop.len(),
                    cluster.lease
                );
                assert_eq!(
                    rerun.len(),
                    running_at_stop.len(),
                    "every job in flight ran again"
                );
                assert!(!running_at_stop.is_empty(), "the killed worker was running jobs");
                let bound = match pair.broker {
                    BrokerKind::Nats => default_lease() + Duration::from_secs(3),
                    _ => Duration::from_secs(3),
                };
                for (what, took) in [("unstarted", first_unstarted), ("in flight", last_rerun)] {
                    assert!(
                        took <= bound.as_secs_f64(),
                        "the killed worker's {what} jobs came back after {took:.2} s (> {bound:?})"
                    );
                }
                for id in 0..JOBS {
                    if !in_first.contains(&id) {
                        assert_eq!(
                            runs_of(id),
                            1,
                            "job {id}, never started in the killed worker, ran once"
                        );
                    }
                }
            }
        }
        for id in 0..JOBS {
            assert!(
                runs.iter().any(|r| r.id == id && r.end.is_some()),
                "job {id} finished"
            );
        }
    }
}
