//! A drained or killed worker's jobs move to the others: at once when
//! drained, within the lease when killed.

use crate::cluster::Cluster;
use crate::pairs::{BrokerKind, Pair};
use crate::payload::{Job, micros_now};
use crate::{CONCURRENCY, default_lease, support};
use redis::AsyncCommands;
use std::time::{Duration, Instant};
use wharf::Message;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Stop {
    /// SIGTERM: the worker drains.
    Drain,
    /// SIGKILL: the worker settles and gives back nothing.
    Kill,
}

pub const JOBS: u64 = 40;
pub const JOB_MS: u64 = 2000;

/// One run of a job as recorded by the worker.
pub struct Run {
    pub id: u64,
    pub pid: u32,
    pub start: u64,
    pub end: Option<u64>,
}

/// Every run of every job, in the order they started. A run's end is
/// matched to the earliest open start of the same job in the same pid.
pub async fn runs(cluster: &mut Cluster) -> Vec<Run> {
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
pub async fn recovery(pair: Pair, stop: Stop) {
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
        let done: std::collections::HashSet<&str> = ends.iter().filter_map(|e| e.split(' ').next()).collect();
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
