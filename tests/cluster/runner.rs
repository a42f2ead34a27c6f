//! Starts clusters, publishes, kills, waits and checks.

use crate::cases::checkpoint::checkpoint;
use crate::cases::early_arrivals::early_arrivals;
use crate::cases::failover::failover;
use crate::cases::gap::{gap, retry_not_gap};
use crate::cases::idempotency::idempotency;
use crate::cases::recovery::{Stop, recovery};
use crate::cases::sessions::sessions;
use crate::cases::sessions_with_defaults::sessions_with_defaults;
use crate::pairs::{BrokerKind, FAILOVER_PAIRS, PAIRS, Pair, QUORUM_PAIRS, StoreKind};
use crate::{AMQP_URL, NATS_URL, REDIS_URL, WORKERS, support};
use std::process::ExitCode;
use std::time::Instant;
use wharf::GapPolicy;

type Case = (
    String,
    Pair,
    fn(Pair) -> futures_util::future::LocalBoxFuture<'static, ()>,
);

pub fn main() -> ExitCode {
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
    // A node of a three-node cluster fails: NATS with R3 streams and the
    // R3 NATS KV store, RabbitMQ with quorum queues and the Redis store.
    for pair in FAILOVER_PAIRS {
        let name = format!("cluster::{}::failover", pair.name());
        cases.push((name, pair, |p| Box::pin(failover(p))));
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
