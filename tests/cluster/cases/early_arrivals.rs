//! Ten thousand early arrivals in one session stay bounded in memory.

use super::in_session;
use crate::CONCURRENCY;
use crate::cluster::Cluster;
use crate::pairs::Pair;
use redis::AsyncCommands;
use std::process::Child;
use std::time::{Duration, Instant};

/// Session buffer of each worker in the early-arrivals run.
pub const EARLY_BUFFER: usize = 1000;

/// One session with 10,000 early arrivals (2..=10001 published before
/// 1): memory stays bounded — beyond each worker's buffer they go back
/// to the broker — and all complete in order once 1 arrives.
pub async fn early_arrivals(pair: Pair) {
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
pub fn rss_of(workers: &[Child]) -> u64 {
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
