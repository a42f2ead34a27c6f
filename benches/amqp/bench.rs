//! The RabbitMQ bench's own connection, its queues, pre-filling and paced
//! publishing, and the dispatch of a run to its scenario.

use crate::common::clock::{Accounting, Clock};
use crate::common::measured::Measured;
use crate::common::payload::{now_ns, order_json};
use crate::common::setup::{new_runtime, run_id};
use crate::config::{Config, Sizes};
use crate::scenario::Scenario;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, PublisherConfirm};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

pub const JSON: &str = "application/json";
const PERSISTENT: u8 = 2;
/// Messages published before waiting for their confirms when pre-filling.
const PREFILL_WINDOW: u64 = 1_000;
/// Name of the measured runtime's worker threads.
const WORKER_THREAD: &str = "bench-worker";
/// Name of lapin's I/O threads (one per connection).
const LAPIN_THREAD: &str = "lapin-io-loop";

/// The clock accounts the measured runtime's workers and lapin's I/O
/// threads apart (RabbitMQ's own process is not measured).
static ACCOUNTING: Accounting = Accounting {
    threads: [WORKER_THREAD, LAPIN_THREAD],
    broker: || None,
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

/// The bench's own connection for pre-filling, paced publishing and
/// queue administration, on a runtime of its own (one worker), so that it
/// does not share the measured runtime.
pub struct Control {
    pub runtime: Runtime,
    connection: Connection,
    pub publisher: Channel,
}

/// The bench.
pub struct Bench {
    pub config: Config,
    /// The measured runtime: consumers, wharf apps, request/reply.
    pub runtime: Runtime,
    pub control: Control,
    run_id: String,
    queues: Mutex<Vec<String>>,
    next_queue: AtomicU64,
}

impl Bench {
    /// Connects the control connection; `Err` if RabbitMQ is unreachable.
    pub fn new(config: Config) -> Result<Self, String> {
        let runtime = new_runtime(config.workers, WORKER_THREAD);
        let control_runtime = new_runtime(1, "bench-control");
        let (connection, publisher) = control_runtime.block_on(async {
            let connect = Connection::connect(&config.url, ConnectionProperties::default());
            let connection = tokio::time::timeout(Duration::from_secs(5), connect)
                .await
                .map_err(|_| "no answer within 5 s".to_owned())?
                .map_err(|e| e.to_string())?;
            let publisher = connection.create_channel().await.map_err(|e| e.to_string())?;
            publisher
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((connection, publisher))
        })?;
        Ok(Bench {
            config,
            runtime,
            control: Control {
                runtime: control_runtime,
                connection,
                publisher,
            },
            run_id: run_id(),
            queues: Mutex::new(Vec::new()),
            next_queue: AtomicU64::new(0),
        })
    }

    /// A fresh queue name (deleted at the end).
    pub fn queue(&self, scenario: Scenario) -> String {
        let n = self.next_queue.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "wharf-test.bench.{}.{}.{n}",
            self.run_id,
            scenario.name().replace('/', ".")
        );
        self.queues.lock().unwrap().push(name.clone());
        name
    }

    pub fn declare(&self, queue: &str) {
        self.control.runtime.block_on(async {
            self.control
                .publisher
                .queue_declare(queue.into(), durable(), FieldTable::default())
                .await
                .unwrap_or_else(|e| panic!("declare {queue}: {e}"));
        });
    }

    /// Ready messages and consumers of `queue` (a passive declare, on a
    /// channel of its own: it would close the channel of a missing queue).
    pub fn depth(&self, queue: &str) -> (u32, u32) {
        self.control.runtime.block_on(async {
            let channel = self.control.connection.create_channel().await.expect("channel");
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
    pub fn wait_for_consumer(&self, queue: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.depth(queue).1 == 0 {
            assert!(Instant::now() < deadline, "no consumer on {queue} after 10 s");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Panics unless `queue` is empty once its consumers' connections are
    /// closed: anything delivered but not acked would be back.
    pub fn assert_empty(&self, queue: &str, scenario: &str) {
        std::thread::sleep(Duration::from_millis(100));
        let (ready, consumers) = self.depth(queue);
        assert_eq!(
            (ready, consumers),
            (0, 0),
            "{scenario}: messages left in {queue} (or consumers still on it)"
        );
    }

    pub fn delete_all(&self) {
        let queues = std::mem::take(&mut *self.queues.lock().unwrap());
        self.control.runtime.block_on(async {
            for queue in queues {
                for name in [queue.clone(), format!("{queue}.dlq")] {
                    let Ok(channel) = self.control.connection.create_channel().await else {
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

    /// Declares `queue` and publishes `count` persistent orders to it, with
    /// confirms.
    pub fn prefill(&self, queue: &str, count: u64) {
        self.declare(queue);
        let publisher = &self.control.publisher;
        self.control.runtime.block_on(async {
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
        let (ready, _) = self.depth(queue);
        assert_eq!(u64::from(ready), count, "pre-filled {queue}");
    }

    /// Publishes `count` orders to `queue` at the configured rate, from the
    /// control runtime; each carries its publish time.
    pub fn publish_paced(&self, queue: &str, count: u64) -> tokio::task::JoinHandle<()> {
        let publisher = self.control.publisher.clone();
        let queue = queue.to_owned();
        let interval = Duration::from_secs_f64(1.0 / self.config.rate as f64);
        self.control.runtime.spawn(async move {
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

    pub fn run(&self, scenario: Scenario, sizes: Sizes) -> Measured {
        match scenario {
            Scenario::Consume(consumer) => self.consume(scenario, consumer, sizes.messages, false),
            Scenario::Paced(consumer) => self.consume(scenario, consumer, sizes.paced_messages, true),
            Scenario::Rpc(client, server) => self.request_reply(scenario, client, server, sizes),
        }
    }
}
