//! A cluster of worker processes on one queue: starting, killing,
//! restarting and draining them, publishing, and watching their live
//! counters until the run settles.

use crate::keys::Keys;
use crate::pairs::{Pair, StoreKind};
use crate::topology;
use crate::{LEASE, NATS_URL, REDIS_URL, WORKERS, default_lease, support};
use futures_util::future::join_all;
use redis::AsyncCommands;
use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wharf::transport::QueueSpec;
use wharf::{Broker, Message};

/// Live counters of one worker process.
#[derive(Debug, Default, Clone)]
pub struct Live {
    pub pid: u32,
    pub counters: HashMap<String, u64>,
}

impl Live {
    pub fn get(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }
}

/// Worker processes on one queue (three unless a case says otherwise),
/// and what the runner needs to watch them.
pub struct Cluster {
    pub pair: Pair,
    pub keys: Keys,
    pub queue: String,
    pub mode: &'static str,
    pub env: Vec<(&'static str, String)>,
    pub workers: Vec<Child>,
    /// When a worker was last killed: what it held comes back from the
    /// broker within the lease (NATS: the ack wait), not before.
    pub killed_at: Option<Instant>,
    /// The workers' lease.
    pub lease: Duration,
    pub broker: Broker,
    pub redis: redis::aio::MultiplexedConnection,
}

impl Cluster {
    /// Three workers with the short test settings.
    pub async fn start(
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
    pub async fn with_defaults(
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

    pub async fn launch(
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
        let url =
            topology::lookup_in(&env)(topology::BROKER_URL).unwrap_or_else(|| pair.broker_url().to_owned());
        let broker = Broker::connect(&url).await.unwrap();
        // Declared before publishing, with the workers' lease (it is
        // the NATS consumer's ack wait) and topology.
        let spec = QueueSpec {
            lease,
            topology: topology::topology(topology::lookup_in(&env)),
            ..QueueSpec::new(queue.clone())
        };
        // A JetStream cluster that has just elected its meta leader may not
        // have heard from every peer yet: replicated streams cannot be
        // placed until it has ("no suitable peers for placement", 10005).
        let placing = std::time::Instant::now();
        loop {
            match broker.declare(&spec).await {
                Ok(()) => break,
                Err(error)
                    if error.to_string().contains("no suitable peers")
                        && placing.elapsed() < Duration::from_secs(30) =>
                {
                    eprintln!("{what}: the cluster cannot place the streams yet ({error}); trying again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(error) => panic!("declaring {queue}: {error}"),
            }
        }
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

    pub fn spawn(&self) -> Child {
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

    pub async fn wait_ready(&mut self, count: usize) {
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
    pub fn kill(&mut self, i: usize) {
        self.workers[i].kill().unwrap();
        self.workers[i].wait().unwrap();
        self.killed_at = Some(Instant::now());
    }

    pub async fn restart(&mut self, i: usize) {
        let ready: usize = self.redis.scard(self.keys.ready()).await.unwrap();
        self.workers[i] = self.spawn();
        self.wait_ready(ready + 1).await;
    }

    /// Starts one more worker and waits until it consumes.
    pub async fn add_worker(&mut self) {
        let ready: usize = self.redis.scard(self.keys.ready()).await.unwrap();
        let child = self.spawn();
        self.workers.push(child);
        self.wait_ready(ready + 1).await;
    }

    /// SIGTERMs worker `i` (a drain) without waiting for it.
    pub fn terminate(&self, i: usize) {
        unsafe { libc::kill(self.workers[i].id() as i32, libc::SIGTERM) };
    }

    pub async fn publish(&self, messages: Vec<Message>) {
        let client = self.broker.client();
        for chunk in messages.chunks(64) {
            let sent = join_all(chunk.iter().map(|m| client.send(&self.queue, m.clone()))).await;
            for result in sent {
                result.unwrap();
            }
        }
    }

    /// The numbers of `session` in the order its handler runs recorded them.
    pub async fn order(&mut self, session: &str) -> Vec<u64> {
        self.redis.lrange(self.keys.order(session), 0, -1).await.unwrap()
    }

    pub async fn live(&mut self) -> Vec<Live> {
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
    pub async fn settle(
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
                .map(|l| l.get("acked") + l.get("duplicates") + l.get("deferred") + l.get("dead_lettered"))
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
    pub async fn stop(&mut self) -> Vec<Live> {
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
    pub async fn dead_letters(&self) -> (usize, String) {
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

    pub async fn cleanup(&mut self) {
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
