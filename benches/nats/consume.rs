//! The consume scenarios: a raw async-nats pull consumer against a wharf
//! route, on a pre-filled JetStream stream: on the shared server, or of
//! one or three replicas on the cluster.

use crate::BATCH;
use crate::bench::{Bench, connect};
use crate::common::clock::Spent;
use crate::common::measured::Measured;
use crate::common::payload::Order;
use crate::common::rounds::Side;
use crate::common::route::{LOOK_EVERY, RUN_DEADLINE, check_stats, wait_until_acked};
use crate::recorder::{recorder, take_order};
use crate::scenario::Scenario;
use crate::streams::{CONSUMER, consumer_config, stream_config, stream_name};
use async_nats::jetstream;
use futures_util::StreamExt;
use std::time::{Duration, Instant};
use wharf::transport::QueueSpec;
use wharf::{App, Broker, RouteOptions};

impl Bench {
    /// A consume scenario: `count` messages pre-filled in a stream of
    /// `replicas` (`None`: the server's default, one; nothing chosen, as
    /// wharf's defaults do) where `scenario` runs.
    pub fn consume(&self, scenario: Scenario, side: Side, replicas: Option<usize>, count: u64) -> Measured {
        let name = scenario.name();
        let queue = self.queue(scenario);
        let target = self.target(scenario);
        recorder().reset(count);
        let (spent, startup, fill) = match side {
            Side::Raw => {
                let mut config = stream_config(&queue);
                config.num_replicas = replicas.unwrap_or(1);
                self.control.block_on(async {
                    target
                        .js
                        .create_stream(config)
                        .await
                        .unwrap_or_else(|e| panic!("create stream for {queue}: {e}"));
                });
                let fill = self.prefill(target, &queue, count);
                let (spent, startup) = self.raw_consume_measured(&target.url, &name, &queue, count);
                (spent, startup, fill)
            }
            Side::Wharf => {
                let broker = self
                    .runtime
                    .block_on(Broker::connect(&target.url))
                    .expect("wharf connects");
                let mut spec = QueueSpec::new(&queue);
                let mut options = RouteOptions::new().prefetch(BATCH).concurrency(BATCH);
                if let Some(replicas) = replicas {
                    spec.topology = spec.topology.stream_replicas(replicas);
                    options = options.stream_replicas(replicas);
                }
                self.runtime
                    .block_on(broker.declare(&spec))
                    .unwrap_or_else(|e| panic!("{name}: Broker::declare({queue}): {e}"));
                let fill = self.prefill(target, &queue, count);
                let started = Instant::now();
                let running = self
                    .runtime
                    .block_on(
                        App::new(broker.clone())
                            .route_with(&queue, take_order, options)
                            .start(),
                    )
                    .expect("wharf app starts");
                wait_until_acked(&running, &queue, count, &name, |t| recorder().wait(t));
                // Raw async-nats' clock includes flushing its last ack: so
                // does wharf's.
                self.runtime.block_on(broker.transport().flush());
                let clock = recorder().take_clock();
                let startup = clock.wall.duration_since(started);
                let measured = clock.stop();
                let stats = running.stats(&queue);
                check_stats(&stats, count, 0, &name);
                let report = self.runtime.block_on(running.shutdown());
                assert!(report.drained, "{name}: shutdown did not drain");
                let waiting = self
                    .runtime
                    .block_on(broker.queue_depth(&queue))
                    .expect("queue depth");
                assert_eq!(waiting, 0, "{name}: messages waiting in {queue} after shutdown");
                self.runtime.block_on(broker.close());
                (measured, startup, fill)
            }
        };
        recorder().check(count, &name);
        self.assert_empty(target, &queue, &name);
        Measured {
            // The clock starts at the first message.
            count: count - 1,
            spent,
            latencies: Vec::new(),
            startup: Some(startup),
            fill: Some(fill),
        }
    }

    /// Consumes the `count` messages pre-filled in `queue`'s stream at
    /// `url` with [`raw_consume`] on the measured runtime (`recorder()`
    /// reset for them); the clock and the start-up time.
    pub fn raw_consume_measured(&self, url: &str, name: &str, queue: &str, count: u64) -> (Spent, Duration) {
        let client = self.runtime.block_on(connect(url));
        let started = Instant::now();
        let task = self
            .runtime
            .spawn(raw_consume(client.clone(), stream_name(queue), count));
        let deadline = Instant::now() + RUN_DEADLINE;
        while !recorder().wait(LOOK_EVERY) {
            if task.is_finished() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: not done after {RUN_DEADLINE:?}"
            );
        }
        self.runtime
            .block_on(async { tokio::time::timeout(RUN_DEADLINE, task).await })
            .unwrap_or_else(|_| panic!("{name}: not done after {RUN_DEADLINE:?}"))
            .expect("consumer task")
            .unwrap_or_else(|e| panic!("{name}: async-nats failed: {e}"));
        let clock = recorder().take_clock();
        let startup = clock.wall.duration_since(started);
        let measured = clock.stop();
        self.runtime.block_on(async {
            let _ = client.drain().await;
        });
        (measured, startup)
    }
}

/// Raw async-nats JetStream consumer: durable pull consumer, batches of
/// [`BATCH`], decode, record, ack each; flushes at the end.
async fn raw_consume(
    client: async_nats::Client,
    stream: String,
    count: u64,
) -> Result<(), async_nats::Error> {
    let js = jetstream::new(client.clone());
    let stream = js.get_stream(&stream).await?;
    let consumer: jetstream::consumer::PullConsumer =
        stream.get_or_create_consumer(CONSUMER, consumer_config()).await?;
    let mut messages = consumer.stream().max_messages_per_batch(BATCH).messages().await?;
    let recorder = recorder();
    for _ in 0..count {
        let message = messages.next().await.expect("consumer ended early")?;
        let order: Order = serde_json::from_slice(&message.payload).expect("order decodes");
        recorder.record(&order);
        message.ack().await?;
    }
    drop(messages);
    client.flush().await?;
    Ok(())
}
