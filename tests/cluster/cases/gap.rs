//! Gaps in a session across workers: the gap policies, and a retry that
//! is not a gap.

use super::in_session;
use crate::cluster::Cluster;
use crate::pairs::Pair;
use crate::support;
use redis::AsyncCommands;
use std::time::{Duration, Instant};
use wharf::GapPolicy;

/// A missing number blocks only its session until the gap timeout; the
/// policy then applies across all three workers.
pub async fn gap(pair: Pair, policy: GapPolicy) {
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
pub async fn retry_not_gap(pair: Pair) {
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
        orders.push(cluster.order(&format!("r{s}")).await);
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
