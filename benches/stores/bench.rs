//! One run of a scenario: a fresh queue on its transport, filled before the
//! clock starts, a fresh store, the app started on the clock and stopped
//! after the last ack; and the cleaning up of the queues, the stores' keys
//! and buckets.

use crate::common::broker_cpu::{self, listening_pid, local_port};
use crate::common::clock::{Accounting, Clock};
use crate::common::completion::Completion;
use crate::common::measured::Measured;
use crate::common::payload::{Order, order_json};
use crate::common::route::wait_until_acked;
use crate::common::setup::{new_runtime, run_id};
use crate::kv::Kv;
use crate::kv_stats::{KvBefore, KvStats};
use crate::redis_stats::{Redis, RedisStats};
use crate::scenario::{Scenario, StoreKind, Transport};
use crate::transport::Brokers;
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::runtime::Runtime;
use wharf::store::{MemoryStore, NatsKvStore, RedisStore};
use wharf::{App, Broker};

/// The queue of the in-memory transport's runs (a fresh broker each).
const MEMORY_QUEUE: &str = "bench.stores";
/// Name of the measured runtime's worker threads.
const WORKERS: &str = "store-bench";
/// Name of lapin's I/O threads (one per RabbitMQ connection).
const LAPIN_THREAD: &str = "lapin-io-loop";

/// The clock accounts the measured runtime's workers, lapin's I/O threads
/// (RabbitMQ: the app's connection; the bench's own is idle meanwhile) and
/// the nats-server listening on the NATS URL's port, when it runs here.
static ACCOUNTING: Accounting = Accounting {
    threads: [WORKERS, LAPIN_THREAD],
    broker: broker_cpu::cpu_time,
};

static HANDLED: AtomicU64 = AtomicU64::new(0);

fn completion() -> &'static Completion {
    static COMPLETION: OnceLock<Completion> = OnceLock::new();
    COMPLETION.get_or_init(Completion::new)
}

/// The handler: nothing but counting, so the main thread knows when the
/// last message is handled.
async fn noop(_order: Order) {
    completion().handled(HANDLED.fetch_add(1, Ordering::Relaxed) + 1);
}

/// What a run measured beyond [`Measured`]: the store's figures.
#[derive(Clone, Copy, Debug, Default)]
pub struct StoreFigures {
    /// Redis: the server's statistics over the run.
    pub redis: Option<RedisStats>,
    /// NATS KV: the store connection's and the server's over the run.
    pub kv: Option<KvStats>,
    /// Deliveries deferred (sessions' turn not come).
    pub deferred: u64,
}

/// A run's store, connected before the clock starts, and its counters then.
enum Before {
    None,
    Redis(RedisStats),
    Kv { prefix: String, before: KvBefore },
}

pub struct Bench {
    runtime: Runtime,
    body: Bytes,
    messages: u64,
    run_id: String,
    runs: Cell<u64>,
    pub brokers: Brokers,
    redis: Option<Redis>,
    kv: Option<Kv>,
    nats_url: String,
    /// The figures of each measured run, by scenario name, in run order.
    pub figures: RefCell<Vec<(String, StoreFigures)>>,
}

impl Bench {
    pub fn new(messages: u64, transports: &[Transport], urls: &crate::Urls) -> Self {
        let runtime = new_runtime(2, WORKERS);
        let redis = runtime.block_on(Redis::connect(&urls.redis));
        let kv = runtime.block_on(Kv::connect(&urls.nats));
        let run_id = run_id();
        let brokers = Brokers::connect(transports, &urls.amqp, &urls.nats, &run_id);
        let nats_server: Vec<u32> = local_port(&urls.nats, 4222)
            .and_then(listening_pid)
            .into_iter()
            .collect();
        broker_cpu::measure(&nats_server);
        Bench {
            runtime,
            body: Bytes::from(order_json(1, 0)),
            messages,
            run_id: run_id.replace('.', "_"),
            runs: Cell::new(0),
            brokers,
            redis,
            kv,
            nats_url: urls.nats.clone(),
            figures: RefCell::new(Vec::new()),
        }
    }

    /// Whether the store's server is reachable.
    pub fn has(&self, kind: StoreKind) -> bool {
        match kind {
            StoreKind::Memory => true,
            StoreKind::Redis => self.redis.is_some(),
            StoreKind::NatsKv => self.kv.is_some(),
        }
    }

    /// A measured run of `self.messages` messages; its store figures are
    /// kept in [`Bench::figures`].
    pub fn measure(&self, scenario: Scenario) -> Measured {
        let (measured, figures) = self.run(scenario, self.messages);
        self.figures.borrow_mut().push((scenario.name(), figures));
        measured
    }

    /// The run's app with its store, and the store's counters before.
    async fn app(&self, scenario: Scenario, broker: &Broker, queue: &str, run: u64) -> (App, Before) {
        let app = App::new(broker.clone()).route_with(queue, noop, scenario.options());
        match scenario.store {
            StoreKind::Memory => (app.store(MemoryStore::new()), Before::None),
            StoreKind::Redis => {
                let redis = self.redis.as_ref().expect("redis");
                let prefix = redis.new_prefix(&self.run_id, run);
                let store = RedisStore::connect(redis.url())
                    .await
                    .expect("connect the Redis store")
                    .with_prefix(prefix);
                (app.store(store), Before::Redis(redis.stats().await))
            }
            StoreKind::NatsKv => {
                let kv = self.kv.as_ref().expect("nats");
                let prefix = kv.new_prefix(&self.run_id, run);
                // The store's own connection, as `NatsKvStore::connect`
                // makes it, so that its statistics can be read.
                let client = async_nats::ConnectOptions::new()
                    .name("wharf-store")
                    .connection_timeout(Duration::from_secs(5))
                    .connect(&self.nats_url)
                    .await
                    .expect("connect the NATS KV store");
                let statistics = client.statistics();
                let store = NatsKvStore::new(client).with_bucket_prefix(prefix.clone());
                store.ensure_buckets().await.expect("create the KV buckets");
                let before = KvBefore::take(statistics, kv.stats(&prefix).await);
                (app.store(store), Before::Kv { prefix, before })
            }
        }
    }

    /// One run of `count` messages.
    pub fn run(&self, scenario: Scenario, count: u64) -> (Measured, StoreFigures) {
        let name = scenario.name();
        let transport = scenario.transport;
        let run = self.runs.get() + 1;
        self.runs.set(run);
        let (broker, queue) = if transport == Transport::Memory {
            let broker = Broker::memory();
            let client = broker.client();
            self.runtime.block_on(async {
                for index in 0..count {
                    client
                        .send(MEMORY_QUEUE, scenario.message(&self.body, index))
                        .await
                        .expect("publish");
                }
            });
            (broker, MEMORY_QUEUE.to_owned())
        } else {
            let queue = self.brokers.queue(scenario);
            self.brokers.prefill(transport, &queue, count, |index| {
                scenario.message(&self.body, index)
            });
            (self.runtime.block_on(self.brokers.app_broker(transport)), queue)
        };
        let (app, before) = self.runtime.block_on(self.app(scenario, &broker, &queue, run));
        HANDLED.store(0, Ordering::Relaxed);
        completion().reset(count);

        let clock = Clock::start(&ACCOUNTING);
        let running = self.runtime.block_on(app.start()).expect("start the app");
        wait_until_acked(&running, &queue, count, &name, |timeout| {
            completion().wait(timeout)
        });
        // The last acks sent (RabbitMQ: held back and coalesced).
        self.runtime.block_on(broker.transport().flush());
        let spent = clock.stop();

        let mut figures = StoreFigures::default();
        match (before, &self.redis, &self.kv) {
            (Before::Redis(before), Some(redis), _) => {
                figures.redis = Some(self.runtime.block_on(redis.stats()).since(&before));
            }
            (Before::Kv { prefix, before }, _, Some(kv)) => {
                figures.kv = Some(before.since(self.runtime.block_on(kv.stats(&prefix))));
            }
            _ => {}
        }
        let stats = running.stats(&queue);
        figures.deferred = stats.deferred;
        let report = self.runtime.block_on(running.shutdown());
        assert!(report.drained, "{name}: shutdown did not drain");
        assert_eq!(
            (stats.acked, stats.in_flight, HANDLED.load(Ordering::Relaxed)),
            (count, 0, count),
            "{name}: not every message handled and acked once: {stats:?}"
        );
        if transport == Transport::Memory {
            let left = self
                .runtime
                .block_on(broker.queue_depth(&queue))
                .expect("queue depth");
            assert_eq!(left, 0, "{name}: messages left in the queue");
        } else {
            self.runtime.block_on(broker.close());
            self.brokers.assert_empty(transport, &queue, &name);
            self.brokers.delete(transport, &queue);
        }
        let measured = Measured {
            count,
            spent,
            latencies: Vec::new(),
            startup: None,
            fill: None,
        };
        (measured, figures)
    }

    /// Deletes the queues left, and the Redis keys and KV buckets of the
    /// runs so far.
    pub fn clear(&self) {
        self.brokers.clear();
        self.runtime.block_on(async {
            if let Some(redis) = &self.redis {
                redis.clear().await;
            }
            if let Some(kv) = &self.kv {
                kv.clear().await;
            }
        });
        // Let the stores' connections of finished runs close.
        std::thread::sleep(Duration::from_millis(20));
    }
}
