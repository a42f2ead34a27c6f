//! The NATS bench's servers (the shared one, and the cluster it starts for
//! the replica scenarios) with its own connection to each, its streams,
//! pre-filling, and the dispatch of a run to its scenario.

use crate::common::broker_cpu::{self, listening_pid, local_port, pid_file};
use crate::common::clock::{Accounting, Clock};
use crate::common::measured::{Fill, Measured};
use crate::common::payload::order_json;
use crate::common::setup::{new_runtime, run_id};
use crate::config::{Config, Sizes};
use crate::scenario::Scenario;
use crate::streams::{CONSUMER, enc, stream_name, subject};
use crate::support::local_cluster::NatsCluster;
use async_nats::jetstream;
use bytes::Bytes;
use futures_util::StreamExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

/// Messages published before waiting for their publish acks when
/// pre-filling.
const PREFILL_WINDOW: u64 = 1_000;
/// Name of the measured runtime's worker threads (consumers, clients).
const WORKER_THREAD: &str = "bench-worker";
/// Name of the servers' runtime's worker threads.
const SERVER_THREAD: &str = "bench-server";

/// The clock accounts the measured runtime's workers (the client side), the
/// servers' runtime's and the nats-server processes of the run (chosen per
/// run: [`Bench::run`]) apart.
static ACCOUNTING: Accounting = Accounting {
    threads: [WORKER_THREAD, SERVER_THREAD],
    broker: broker_cpu::cpu_time,
};

/// Starts measuring: see [`Clock::start`].
pub fn start_clock() -> Clock {
    Clock::start(&ACCOUNTING)
}

/// Order `id` as the body of a NATS message.
pub fn order_body(id: u64) -> Bytes {
    Bytes::from(order_json(id, 0))
}

/// A raw async-nats connection to `url`: one server, or several
/// comma-separated (async-nats picks one at random, as wharf's does).
pub async fn connect(url: &str) -> async_nats::Client {
    async_nats::connect(url.split(',').map(str::trim).collect::<Vec<_>>())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to NATS: {e}"))
}

/// A NATS deployment the bench runs on: the shared server, or the cluster
/// it started; with the bench's own JetStream context on it, on the
/// control runtime.
pub struct Target {
    /// Its client URLs, comma-separated (raw async-nats and wharf alike).
    pub url: String,
    pub js: jetstream::Context,
    /// The nats-server processes whose CPU time the clock reads for runs
    /// here (none when unknown: the server does not run here).
    broker: Vec<u32>,
}

impl Target {
    /// Connects to `url` on `runtime` and checks that JetStream answers;
    /// `Err` if it does not.
    fn connect(runtime: &Runtime, url: &str, broker: Vec<u32>) -> Result<Target, String> {
        let js = runtime.block_on(async {
            let servers: Vec<&str> = url.split(',').map(str::trim).collect();
            let connect = async_nats::connect(servers);
            let client = tokio::time::timeout(Duration::from_secs(5), connect)
                .await
                .map_err(|_| "no answer within 5 s".to_owned())?
                .map_err(|e| e.to_string())?;
            let js = jetstream::new(client.clone());
            // (`query_account` cannot parse nats-server 2.9's answer.)
            let mut names = js.stream_names();
            if let Some(Err(e)) = tokio::time::timeout(Duration::from_secs(5), names.next())
                .await
                .map_err(|_| "JetStream did not answer within 5 s".to_owned())?
            {
                return Err(format!("JetStream is not available: {e}"));
            }
            Ok::<_, String>(js)
        })?;
        Ok(Target {
            url: url.to_owned(),
            js,
            broker,
        })
    }
}

/// The three-server cluster of the `r1/…` and `r3/…` scenarios and the
/// guard that stops it when dropped (after the bench's connection to it,
/// declared first).
pub struct Cluster {
    pub target: Target,
    _guard: NatsCluster,
}

impl Cluster {
    /// Starts three nats-servers with JetStream in one cluster with
    /// `scripts/local-cluster.sh` (about a second); `None` after a loud
    /// skip when nats-server is not installed.
    pub fn start(control: &Runtime) -> Option<Cluster> {
        let guard = NatsCluster::start("nats bench, r1 and r3 scenarios")?;
        let broker = (1..=3)
            .filter_map(|n| pid_file(&guard.dir().join(format!("n{n}.pid"))))
            .collect();
        let target = Target::connect(control, &guard.url(), broker)
            .unwrap_or_else(|e| panic!("cannot use the cluster at {}: {e}", guard.url()));
        eprintln!("nats bench: cluster up: {}", guard.url());
        Some(Cluster {
            target,
            _guard: guard,
        })
    }
}

/// The bench.
pub struct Bench {
    pub config: Config,
    /// The measured runtime: consumers and clients.
    pub runtime: Runtime,
    /// Request/reply servers, raw and wharf.
    pub servers: Runtime,
    /// The bench's own connections' runtime (one worker: pre-filling and
    /// stream administration), so that they do not share the measured
    /// runtime.
    pub control: Runtime,
    /// The shared server (`WHARF_TEST_NATS_URL`).
    pub shared: Target,
    /// The cluster, when a selected scenario runs on it.
    pub cluster: Option<Cluster>,
    run_id: String,
    next_queue: AtomicU64,
}

impl Bench {
    /// Connects to the shared server; `Err` if NATS with JetStream is not
    /// reachable.
    pub fn new(config: Config) -> Result<Self, String> {
        let runtime = new_runtime(config.workers, WORKER_THREAD);
        let servers = new_runtime(config.server_workers, SERVER_THREAD);
        let control = new_runtime(1, "bench-control");
        let broker = local_port(&config.url, 4222)
            .and_then(listening_pid)
            .into_iter()
            .collect();
        let shared = Target::connect(&control, &config.url, broker)?;
        Ok(Bench {
            config,
            runtime,
            servers,
            control,
            shared,
            cluster: None,
            run_id: run_id(),
            next_queue: AtomicU64::new(0),
        })
    }

    /// Where `scenario` runs.
    pub fn target(&self, scenario: Scenario) -> &Target {
        if scenario.on_cluster() {
            &self
                .cluster
                .as_ref()
                .expect("the cluster is up for its scenarios")
                .target
        } else {
            &self.shared
        }
    }

    /// The prefix of this run's queue names.
    fn queue_prefix(&self) -> String {
        format!("wharf-test.bench.{}.", self.run_id)
    }

    /// A fresh queue name (its streams are deleted at the end).
    pub fn queue(&self, scenario: Scenario) -> String {
        let n = self.next_queue.fetch_add(1, Ordering::Relaxed);
        format!("{}{}.{n}", self.queue_prefix(), scenario.name().replace('/', "."))
    }

    /// Deletes every stream whose name holds this run's queue prefix:
    /// the bench's own and whatever wharf made for its queues, on the
    /// shared server and the cluster.
    pub fn delete_all(&self) {
        let marker = enc(&self.queue_prefix());
        let cluster = self.cluster.as_ref().map(|c| &c.target);
        for target in std::iter::once(&self.shared).chain(cluster) {
            self.delete_streams(target, |name| name.contains(&marker));
        }
    }

    /// Deletes the streams earlier bench processes that are gone left
    /// behind (a run that panicked while NATS was away, or was killed).
    pub fn sweep_leftovers(&self) {
        let bench_queues = enc("wharf-test.bench.");
        let separator = enc(".");
        self.delete_streams(&self.shared, |name| {
            let Some((_, rest)) = name.split_once(&bench_queues) else {
                return false;
            };
            let pid = rest.split(&separator).next().unwrap_or_default();
            u32::from_str_radix(pid, 16)
                .is_ok_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
        });
    }

    /// Deletes the streams of `target` whose name `doomed` selects; tries
    /// for 10 s while NATS does not answer (a server restarting).
    fn delete_streams(&self, target: &Target, doomed: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        self.control.block_on(async {
            loop {
                let mut failed = None;
                let mut names = target.js.stream_names();
                let mut selected = Vec::new();
                while let Some(name) = names.next().await {
                    match name {
                        Ok(name) if doomed(&name) => selected.push(name),
                        Ok(_) => {}
                        Err(e) => {
                            failed = Some(format!("could not list streams: {e}"));
                            break;
                        }
                    }
                }
                for name in selected {
                    if let Err(e) = target.js.delete_stream(&name).await {
                        failed = Some(format!("could not delete stream {name}: {e}"));
                    }
                }
                let Some(error) = failed else { return };
                if Instant::now() >= deadline {
                    eprintln!("{error}");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }

    /// Messages in `queue`'s stream on `target`.
    fn stream_messages(&self, target: &Target, queue: &str) -> u64 {
        self.control.block_on(async {
            let stream = target
                .js
                .get_stream(stream_name(queue))
                .await
                .unwrap_or_else(|e| panic!("stream of {queue}: {e}"));
            stream.get_info().await.expect("stream info").state.messages
        })
    }

    /// Panics unless `queue`'s stream empties within 5 s (acks are sent
    /// without confirmation, so the last ones may still be on their way),
    /// and, if its consumer is there, nothing is pending or unacked.
    pub fn assert_empty(&self, target: &Target, queue: &str, scenario: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = self.stream_messages(target, queue);
            if left == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{scenario}: {left} messages left in the stream of {queue}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let consumer = self.control.block_on(async {
            let stream = target.js.get_stream(stream_name(queue)).await.ok()?;
            stream.consumer_info(CONSUMER).await.ok()
        });
        if let Some(info) = consumer {
            assert!(
                info.num_ack_pending == 0 && info.num_pending == 0 && info.num_redelivered == 0,
                "{scenario}: consumer {CONSUMER} of {queue}: {} unacked, {} pending, {} redelivered",
                info.num_ack_pending,
                info.num_pending,
                info.num_redelivered
            );
        }
    }

    /// Publishes `count` orders to `queue`'s priority-0 subject on
    /// `target` with JetStream publish acks, awaited per 1,000; its stream
    /// must exist. How long it took.
    pub fn prefill(&self, target: &Target, queue: &str, count: u64) -> Fill {
        let subject = subject(queue);
        let js = &target.js;
        let started = Instant::now();
        self.control.block_on(async {
            let mut id = 0;
            while id < count {
                let end = (id + PREFILL_WINDOW).min(count);
                let mut acks = Vec::with_capacity((end - id) as usize);
                for id in id..end {
                    let ack = js
                        .publish(subject.clone(), order_body(id))
                        .await
                        .unwrap_or_else(|e| panic!("publish to {subject}: {e}"));
                    acks.push(ack);
                }
                for ack in acks {
                    ack.await
                        .unwrap_or_else(|e| panic!("publish ack from {subject}: {e}"));
                }
                id = end;
            }
        });
        let took = started.elapsed();
        assert_eq!(self.stream_messages(target, queue), count, "pre-filled {queue}");
        Fill {
            messages: count,
            took,
        }
    }

    /// One run of `scenario`; the clock reads the CPU time of the
    /// nats-server(s) it runs on.
    pub fn run(&self, scenario: Scenario, sizes: Sizes) -> Measured {
        broker_cpu::measure(&self.target(scenario).broker);
        match scenario {
            Scenario::Consume(side) => self.consume(scenario, side, None, sizes.messages),
            Scenario::Replicated(replicas, side) => {
                self.consume(scenario, side, Some(replicas.count()), sizes.messages)
            }
            Scenario::Rpc(client, server) => self.request_reply(
                scenario,
                client,
                server,
                sizes.warmup_requests(),
                sizes.requests,
                1,
            ),
            Scenario::RpcInFlight(client, server) => self.request_reply(
                scenario,
                client,
                server,
                sizes.warmup_requests(),
                sizes.in_flight_requests,
                self.config.in_flight,
            ),
            Scenario::Retention(retention) => self.retention(scenario, retention, sizes.messages),
        }
    }
}
