//! Idempotency keys across workers, with and without a killed worker.

use super::{seed, shuffle};
use crate::CONCURRENCY;
use crate::cluster::Cluster;
use crate::pairs::Pair;
use crate::payload::Effect;
use crate::support;
use redis::AsyncCommands;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use wharf::Message;

pub const KEYS: usize = 500;
pub const COPIES: usize = 4;
/// Simulated work per run in the idempotency run with a killed worker.
pub const KILLED_RUN_WORK_MS: u64 = 50;

/// 2,000 messages, 500 idempotency keys each sent 4 times, interleaved:
/// the side effect happens once per key. With `kill`, one worker is
/// SIGKILLed mid-run and restarted; the only repeats allowed are runs
/// the killed worker had started and not recorded as done (the crash
/// window), at most its concurrency. Its runs take 50 ms there, so that
/// it is killed holding claims: their messages come back from the broker
/// and wait (deferred) until the claims' leases run out, and none may be
/// dead-lettered for it.
pub async fn idempotency(pair: Pair, kill: bool) {
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
