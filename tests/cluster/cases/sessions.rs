//! Ordered sessions across workers, with and without a killed worker.

use super::{in_session, seed, shuffle};
use crate::CONCURRENCY;
use crate::cluster::Cluster;
use crate::pairs::Pair;
use crate::support;
use redis::AsyncCommands;
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub const SESSIONS: usize = 50;
pub const STEPS: u64 = 100;

/// 50 sessions × 100 messages, each session's numbers shuffled: every
/// session is handled in ascending order, and sessions run concurrently.
/// With `kill`, one worker is SIGKILLed mid-run and restarted.
pub async fn sessions(pair: Pair, kill: bool) {
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
        let order = cluster.order(&session).await;
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
pub fn concurrency(spans: &[String]) -> (usize, f64) {
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
