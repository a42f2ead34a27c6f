//! One worker process: the route, the store, the recorder, and live
//! counters written to Redis for the runner.

use crate::keys::Keys;
use crate::payload::{Effect, Job, Step, micros_now};
use crate::topology;
use crate::{CONCURRENCY, LEASE, NATS_URL, REDIS_URL, TIMEOUT, WORK};
use redis::AsyncCommands;
use std::process::ExitCode;
use std::time::Duration;
use wharf::store::{NatsKvStore, RedisStore};
use wharf::{App, Backoff, Broker, Context, Error, GapPolicy, Meta, RouteOptions, State};

#[derive(Clone)]
pub struct Recorder {
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
async fn flaky_step(ctx: Context, State(rec): State<Recorder>, meta: Meta, job: Step) -> Result<(), Error> {
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

pub fn main() -> ExitCode {
    // A worker outlives no runner (a runner killed mid-case).
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // `WHARF_CLUSTER_LOG=wharf=debug` in the runner's environment: the
    // workers' logs on stderr, for a case that needs looking into.
    if let Ok(filter) = std::env::var("WHARF_CLUSTER_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
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
        let lease = std::env::var("WHARF_CLUSTER_LEASE_S")
            .ok()
            .and_then(|s| s.parse().ok())
            .map_or(LEASE, Duration::from_secs);
        RouteOptions::new()
            .session_buffer(buffer)
            .backoff(Backoff::fixed(backoff))
            .concurrency(CONCURRENCY)
            .timeout(TIMEOUT)
            .lease(lease)
            .max_attempts(20)
            .defer_delay(Duration::from_millis(100))
            .gap_timeout(gap_timeout)
            .gap_policy(gap_policy)
    };
    // The failover cases' cluster: replicated queues or streams.
    let wanted = topology::topology(|name| std::env::var(name).ok());
    let options = match wanted.queue_type {
        Some(queue_type) => options.queue_type(queue_type),
        None => options,
    };
    let options = match wanted.stream_replicas {
        Some(replicas) => options.stream_replicas(replicas),
        None => options,
    };
    let app = App::with_state(broker.clone(), recorder);
    let app = match env("WHARF_CLUSTER_STORE").as_str() {
        "redis" => app.store(
            RedisStore::connect(REDIS_URL)
                .await
                .unwrap()
                .with_prefix(keys.store_prefix()),
        ),
        _ => {
            let url = std::env::var(topology::STORE_URL).unwrap_or_else(|_| NATS_URL.to_owned());
            let store = NatsKvStore::connect(&url)
                .await
                .unwrap()
                .with_bucket_prefix(keys.bucket_prefix());
            app.store(match std::env::var(topology::STORE_REPLICAS) {
                Ok(replicas) => store.with_replicas(replicas.parse().expect("store replicas are a number")),
                Err(_) => store,
            })
        }
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
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
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
