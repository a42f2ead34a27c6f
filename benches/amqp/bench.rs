//! The RabbitMQ bench's nodes (the shared one, and the cluster it may
//! start) with its own connection to each, its queues, pre-filling and
//! paced publishing, and the dispatch of a run to its scenario.

use crate::common::broker_cpu::{self, listening_pid, local_port, pid_file};
use crate::common::clock::{Accounting, Clock};
use crate::common::measured::{Fill, Measured};
use crate::common::payload::{now_ns, order_json};
use crate::common::report::redacted;
use crate::common::setup::{new_runtime, run_id};
use crate::config::{Config, Sizes};
use crate::scenario::{Layout, Scenario};
use crate::support::local_cluster::RabbitCluster;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, PublisherConfirm};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use wharf::QueueType;
use wharf::transport::amqp::topology::QUORUM_DELIVERY_LIMIT;

pub const JSON: &str = "application/json";
const PERSISTENT: u8 = 2;
/// Messages published before waiting for their confirms when pre-filling.
const PREFILL_WINDOW: u64 = 1_000;
/// Name of the measured runtime's worker threads.
const WORKER_THREAD: &str = "bench-worker";
/// Name of lapin's I/O threads (one per connection).
const LAPIN_THREAD: &str = "lapin-io-loop";

/// The clock accounts the measured runtime's workers and lapin's I/O
/// threads apart, and the RabbitMQ node(s) of the run when they run here
/// (chosen per run: [`Bench::run`]).
static ACCOUNTING: Accounting = Accounting {
    threads: [WORKER_THREAD, LAPIN_THREAD],
    broker: broker_cpu::cpu_time,
};

/// Starts measuring: see [`Clock::start`].
pub fn start_clock() -> Clock {
    Clock::start(&ACCOUNTING)
}

pub fn persistent_json() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_content_type(JSON.into())
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

pub async fn connect(url: &str) -> Connection {
    Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to RabbitMQ: {e}"))
}

pub async fn check_confirms(confirms: Vec<PublisherConfirm>, queue: &str) {
    for confirm in confirms {
        match confirm.await.expect("publisher confirm") {
            Confirmation::Ack(None) => {}
            other => panic!("publishing to {queue} failed: {other:?}"),
        }
    }
}

/// A RabbitMQ node the bench runs on (the shared one, or node 1 of the
/// cluster it started), and the bench's own connection to it for
/// declaring, pre-filling, paced publishing and queue administration.
pub struct Node {
    /// Where raw lapin and the bench's own connection connect.
    pub url: String,
    /// What wharf connects to: `url`, or every node of the cluster
    /// (comma-separated; wharf tries them in turn, so node 1 first).
    pub wharf_url: String,
    /// The bench's own connection, made again when it was closed: other
    /// checkouts' tests close every connection of the shared node now and
    /// then (`rabbitmqctl close_all_connections`), and the bench may wait
    /// half a minute for the cluster after connecting.
    link: Mutex<Link>,
    /// The queues made on it so far (deleted after each round).
    queues: Mutex<Vec<String>>,
    /// The RabbitMQ processes whose CPU time the clock reads for runs
    /// here (none when unknown: the node does not run here).
    broker: Vec<u32>,
}

/// The bench's own connection to a node, and its channel in confirm mode.
#[derive(Clone)]
pub struct Link {
    pub connection: Arc<Connection>,
    pub publisher: Channel,
}

impl Link {
    /// Connects to `url`; `Err` if RabbitMQ does not answer within 5 s.
    async fn connect(url: &str) -> Result<Link, String> {
        let connect = Connection::connect(url, ConnectionProperties::default());
        let connection = tokio::time::timeout(Duration::from_secs(5), connect)
            .await
            .map_err(|_| "no answer within 5 s".to_owned())?
            .map_err(|e| e.to_string())?;
        let publisher = connection.create_channel().await.map_err(|e| e.to_string())?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        Ok(Link {
            connection: Arc::new(connection),
            publisher,
        })
    }

    fn usable(&self) -> bool {
        self.connection.status().connected() && self.publisher.status().connected()
    }
}

impl Node {
    /// Connects the bench's own connection to `url` on `runtime`; `Err` if
    /// RabbitMQ is unreachable.
    pub fn connect(runtime: &Runtime, url: &str, wharf_url: &str, broker: Vec<u32>) -> Result<Node, String> {
        let link = runtime.block_on(Link::connect(url))?;
        Ok(Node {
            url: url.to_owned(),
            wharf_url: wharf_url.to_owned(),
            link: Mutex::new(link),
            queues: Mutex::new(Vec::new()),
            broker,
        })
    }

    /// The bench's own connection, connected again (from `runtime`'s
    /// thread) if it was closed.
    pub fn link(&self, runtime: &Runtime) -> Link {
        let mut link = self.link.lock().unwrap();
        if !link.usable() {
            eprintln!(
                "amqp bench: the bench's own connection to {} was closed; connecting again",
                redacted(&self.url)
            );
            *link = runtime
                .block_on(Link::connect(&self.url))
                .unwrap_or_else(|e| panic!("cannot connect to {} again: {e}", redacted(&self.url)));
        }
        link.clone()
    }
}

/// The three-node cluster of the `cluster-…` scenarios: the bench's node
/// (node 1) and the guard that stops the cluster when dropped (after the
/// node's connection, declared first).
pub struct Cluster {
    pub node: Node,
    _guard: RabbitCluster,
}

impl Cluster {
    /// Starts a three-node cluster with `scripts/local-cluster.sh` (about
    /// 25 s) and connects to node 1; `None` after a loud skip when RabbitMQ
    /// is not installed.
    pub fn start(control: &Runtime) -> Option<Cluster> {
        eprintln!("amqp bench: starting a three-node RabbitMQ cluster (about 25 s)");
        let guard = RabbitCluster::start("amqp bench, cluster scenarios")?;
        let broker = (1..=3)
            .filter_map(|n| pid_file(&guard.dir().join(format!("r{n}")).join("pid")))
            .collect();
        let node = Node::connect(control, &guard.urls[0], &guard.urls.join(","), broker)
            .unwrap_or_else(|e| panic!("cannot connect to node 1 of the cluster: {e}"));
        eprintln!(
            "amqp bench: cluster up: {}",
            guard
                .urls
                .iter()
                .map(|u| redacted(u))
                .collect::<Vec<_>>()
                .join(",")
        );
        Some(Cluster { node, _guard: guard })
    }
}

/// The bench.
pub struct Bench {
    pub config: Config,
    /// The measured runtime: consumers, wharf apps, request/reply.
    pub runtime: Runtime,
    /// The bench's own connections' runtime (one worker), so that they do
    /// not share the measured runtime.
    pub control: Runtime,
    /// The shared node (`WHARF_TEST_AMQP_URL`).
    pub shared: Node,
    /// The cluster, when a selected scenario runs on it.
    pub cluster: Option<Cluster>,
    run_id: String,
    next_queue: AtomicU64,
}

impl Bench {
    /// Connects to the shared node; `Err` if RabbitMQ is unreachable.
    pub fn new(config: Config) -> Result<Self, String> {
        let runtime = new_runtime(config.workers, WORKER_THREAD);
        let control = new_runtime(1, "bench-control");
        let broker = local_port(&config.url, 5672)
            .and_then(listening_pid)
            .into_iter()
            .collect();
        let shared = Node::connect(&control, &config.url, &config.url, broker)?;
        Ok(Bench {
            config,
            runtime,
            control,
            shared,
            cluster: None,
            run_id: run_id(),
            next_queue: AtomicU64::new(0),
        })
    }

    /// The node `scenario` runs on.
    pub fn node(&self, scenario: Scenario) -> &Node {
        if scenario.on_cluster() {
            &self
                .cluster
                .as_ref()
                .expect("the cluster is up for its scenarios")
                .node
        } else {
            &self.shared
        }
    }

    /// A fresh queue name for `scenario` (deleted after the round).
    pub fn queue(&self, scenario: Scenario) -> String {
        let n = self.next_queue.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "wharf-test.bench.{}.{}.{n}",
            self.run_id,
            scenario.name().replace('/', ".")
        );
        self.node(scenario).queues.lock().unwrap().push(name.clone());
        name
    }

    /// Declares `queue` on `node` as wharf declares a work queue of
    /// `queue_type` (so that wharf's own declaration agrees with it).
    pub fn declare(&self, node: &Node, queue: &str, queue_type: QueueType) {
        let link = node.link(&self.control);
        self.control.block_on(async {
            link.publisher
                .queue_declare(queue.into(), durable(), work_queue_arguments(queue_type))
                .await
                .unwrap_or_else(|e| panic!("declare {queue}: {e}"));
        });
    }

    /// Ready messages and consumers of `queue` (a passive declare, on a
    /// channel of its own: it would close the channel of a missing queue).
    pub fn depth(&self, node: &Node, queue: &str) -> (u32, u32) {
        let link = node.link(&self.control);
        self.control.block_on(async {
            let channel = link.connection.create_channel().await.expect("channel");
            let options = QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            };
            let declared = channel
                .queue_declare(queue.into(), options, FieldTable::default())
                .await
                .unwrap_or_else(|e| panic!("queue {queue} is gone: {e}"));
            let _ = channel.close(200, "bench: done".into()).await;
            (declared.message_count(), declared.consumer_count())
        })
    }

    /// Waits until `queue` has a consumer (so a paced publisher does not
    /// measure the consumer's start).
    pub fn wait_for_consumer(&self, node: &Node, queue: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.depth(node, queue).1 == 0 {
            assert!(Instant::now() < deadline, "no consumer on {queue} after 10 s");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Panics unless `queue` is empty once its consumers' connections are
    /// closed: anything delivered but not acked would be back.
    pub fn assert_empty(&self, node: &Node, queue: &str, scenario: &str) {
        std::thread::sleep(Duration::from_millis(100));
        let (ready, consumers) = self.depth(node, queue);
        assert_eq!(
            (ready, consumers),
            (0, 0),
            "{scenario}: messages left in {queue} (or consumers still on it)"
        );
    }

    /// Deletes the queues made so far, and their dead-letter queues.
    pub fn delete_all(&self) {
        let cluster = self.cluster.as_ref().map(|c| &c.node);
        for node in std::iter::once(&self.shared).chain(cluster) {
            let queues = std::mem::take(&mut *node.queues.lock().unwrap());
            if queues.is_empty() {
                continue;
            }
            let link = node.link(&self.control);
            self.control.block_on(async {
                for queue in queues {
                    for name in [queue.clone(), format!("{queue}.dlq")] {
                        let Ok(channel) = link.connection.create_channel().await else {
                            eprintln!("could not delete {name}: no channel");
                            continue;
                        };
                        let _ = channel
                            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                            .await;
                        let _ = channel.close(200, "bench: done".into()).await;
                    }
                }
            });
        }
    }

    /// Declares `queue` on `node` as a work queue of `queue_type` and
    /// publishes `count` persistent orders to it, with confirms awaited per
    /// 1,000; how long publishing took.
    pub fn prefill(&self, node: &Node, queue: &str, queue_type: QueueType, count: u64) -> Fill {
        self.declare(node, queue, queue_type);
        let publisher = &node.link(&self.control).publisher;
        let started = Instant::now();
        self.control.block_on(async {
            let mut id = 0;
            while id < count {
                let end = (id + PREFILL_WINDOW).min(count);
                let mut confirms = Vec::with_capacity((end - id) as usize);
                for id in id..end {
                    let body = order_json(id, now_ns());
                    let confirm = publisher
                        .basic_publish(
                            "".into(),
                            queue.into(),
                            BasicPublishOptions {
                                mandatory: true,
                                ..BasicPublishOptions::default()
                            },
                            &body,
                            persistent_json(),
                        )
                        .await
                        .expect("publish");
                    confirms.push(confirm);
                }
                check_confirms(confirms, queue).await;
                id = end;
            }
        });
        let took = started.elapsed();
        let (ready, _) = self.depth(node, queue);
        assert_eq!(u64::from(ready), count, "pre-filled {queue}");
        Fill {
            messages: count,
            took,
        }
    }

    /// Publishes `count` orders to `queue` on the shared node at the
    /// configured rate, from the control runtime; each carries its publish
    /// time.
    pub fn publish_paced(&self, queue: &str, count: u64) -> tokio::task::JoinHandle<()> {
        let publisher = self.shared.link(&self.control).publisher;
        let queue = queue.to_owned();
        let interval = Duration::from_secs_f64(1.0 / self.config.rate as f64);
        self.control.spawn(async move {
            let start = tokio::time::Instant::now();
            let mut confirms = Vec::with_capacity(count as usize);
            for id in 0..count {
                tokio::time::sleep_until(start + interval.mul_f64(id as f64)).await;
                let body = order_json(id, now_ns());
                let confirm = publisher
                    .basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..BasicPublishOptions::default()
                        },
                        &body,
                        persistent_json(),
                    )
                    .await
                    .expect("publish");
                confirms.push(confirm);
            }
            check_confirms(confirms, &queue).await;
        })
    }

    /// One run of `scenario`; the clock reads the CPU time of the node(s)
    /// it runs on.
    pub fn run(&self, scenario: Scenario, sizes: Sizes) -> Measured {
        broker_cpu::measure(&self.node(scenario).broker);
        match scenario {
            Scenario::Consume(consumer, layout) => {
                self.consume(scenario, consumer, layout, sizes.messages, false)
            }
            Scenario::Paced(consumer) => {
                self.consume(scenario, consumer, Layout::Classic, sizes.paced_messages, true)
            }
            Scenario::Rpc(client, server, queue_type) => {
                self.request_reply(scenario, client, server, queue_type, sizes)
            }
        }
    }
}

/// The arguments wharf declares a work queue of `queue_type` with, without
/// priority (`src/transport/amqp/topology.rs`): `x-queue-type`, and for a
/// quorum queue the delivery limit that leaves retries to wharf.
fn work_queue_arguments(queue_type: QueueType) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from(queue_type.as_str())),
    );
    if queue_type == QueueType::Quorum {
        arguments.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(QUORUM_DELIVERY_LIMIT),
        );
    }
    arguments
}
