//! One run of a scenario: a fresh in-memory broker filled before the clock
//! starts, a fresh store, the app started on the clock and stopped after
//! the last ack; and the cleaning up of the stores' keys and buckets.

use crate::common::clock::{Accounting, Clock};
use crate::common::completion::Completion;
use crate::common::measured::Measured;
use crate::common::payload::{Order, order_json};
use crate::common::route::wait_until_acked;
use crate::common::setup::{new_runtime, run_id};
use crate::kv::Kv;
use crate::redis_stats::{Redis, RedisStats};
use crate::scenario::{Scenario, StoreKind};
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::runtime::Runtime;
use wharf::store::{MemoryStore, NatsKvStore, RedisStore};
use wharf::{App, Broker};

const QUEUE: &str = "bench.stores";
/// Name of the measured runtime's worker threads.
const WORKERS: &str = "store-bench";

static ACCOUNTING: Accounting = Accounting {
    threads: [WORKERS, "store-bench-none"],
    broker: crate::nats_server::cpu_time,
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

/// What a run measured beyond [`Measured`]: the store server's figures.
#[derive(Clone, Copy, Debug, Default)]
pub struct StoreFigures {
    /// Redis: the server's statistics over the run.
    pub redis: Option<RedisStats>,
    /// Deliveries deferred (sessions' turn not come).
    pub deferred: u64,
}

pub struct Bench {
    runtime: Runtime,
    body: Bytes,
    messages: u64,
    run_id: String,
    runs: Cell<u64>,
    redis: Option<Redis>,
    kv: Option<Kv>,
    nats_url: String,
    /// The figures of each measured run, by scenario name, in run order.
    pub figures: RefCell<Vec<(String, StoreFigures)>>,
}

impl Bench {
    pub fn new(messages: u64, redis_url: &str, nats_url: &str) -> Self {
        let runtime = new_runtime(2, WORKERS);
        let redis = runtime.block_on(Redis::connect(redis_url));
        let kv = runtime.block_on(Kv::connect(nats_url));
        Bench {
            runtime,
            body: Bytes::from(order_json(1, 0)),
            messages,
            run_id: run_id().replace('.', "_"),
            runs: Cell::new(0),
            redis,
            kv,
            nats_url: nats_url.to_owned(),
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

    /// One run of `count` messages.
    pub fn run(&self, scenario: Scenario, count: u64) -> (Measured, StoreFigures) {
        let name = scenario.name();
        let broker = Broker::memory();
        let client = broker.client();
        let run = self.runs.get() + 1;
        self.runs.set(run);
        let app = self.runtime.block_on(async {
            for index in 0..count {
                client
                    .send(QUEUE, scenario.message(&self.body, index))
                    .await
                    .expect("publish");
            }
            let app = App::new(broker.clone()).route_with(QUEUE, noop, scenario.options());
            match scenario.store {
                StoreKind::Memory => app.store(MemoryStore::new()),
                StoreKind::Redis => {
                    let redis = self.redis.as_ref().expect("redis");
                    let prefix = redis.new_prefix(&self.run_id, run);
                    let store = RedisStore::connect(redis.url())
                        .await
                        .expect("connect the Redis store")
                        .with_prefix(prefix);
                    app.store(store)
                }
                StoreKind::NatsKv => {
                    let kv = self.kv.as_ref().expect("nats");
                    let prefix = kv.new_prefix(&self.run_id, run);
                    let store = NatsKvStore::connect(&self.nats_url)
                        .await
                        .expect("connect the NATS KV store")
                        .with_bucket_prefix(prefix);
                    store.ensure_buckets().await.expect("create the KV buckets");
                    app.store(store)
                }
            }
        });
        HANDLED.store(0, Ordering::Relaxed);
        completion().reset(count);
        let redis_before = match (scenario.store, &self.redis) {
            (StoreKind::Redis, Some(redis)) => Some(self.runtime.block_on(redis.stats())),
            _ => None,
        };

        let clock = Clock::start(&ACCOUNTING);
        let running = self.runtime.block_on(app.start()).expect("start the app");
        wait_until_acked(&running, QUEUE, count, &name, |timeout| {
            completion().wait(timeout)
        });
        let spent = clock.stop();

        let redis = match (redis_before, &self.redis) {
            (Some(before), Some(redis)) => Some(self.runtime.block_on(redis.stats()).since(&before)),
            _ => None,
        };
        let stats = running.stats(QUEUE);
        let report = self.runtime.block_on(running.shutdown());
        assert!(report.drained, "{name}: shutdown did not drain");
        assert_eq!(
            (stats.acked, stats.in_flight, HANDLED.load(Ordering::Relaxed)),
            (count, 0, count),
            "{name}: not every message handled and acked once: {stats:?}"
        );
        let left = self
            .runtime
            .block_on(broker.queue_depth(QUEUE))
            .expect("queue depth");
        assert_eq!(left, 0, "{name}: messages left in the queue");
        let measured = Measured {
            count,
            spent,
            latencies: Vec::new(),
            startup: None,
        };
        (
            measured,
            StoreFigures {
                redis,
                deferred: stats.deferred,
            },
        )
    }

    /// Deletes the Redis keys and KV buckets of the runs so far.
    pub fn clear(&self) {
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
