//! The consume scenarios (pre-filled and paced): raw lapin, acking each
//! delivery or every 64, against a wharf route; pre-filled ones on a
//! classic or quorum queue, on the shared node or the cluster.

use crate::PREFETCH;
use crate::bench::{Bench, connect, start_clock};
use crate::common::measured::Measured;
use crate::common::payload::Order;
use crate::common::route::{RUN_DEADLINE, check_stats, wait_until_acked};
use crate::recorder::{recorder, take_order};
use crate::scenario::{Consumer, Layout, Scenario};
use futures_util::StreamExt;
use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use wharf::{App, Broker, RouteOptions};

/// Deliveries per `multiple` ack in `raw-ack-64`.
const ACK_EVERY: u64 = 64;

impl Bench {
    /// A consume scenario, pre-filled or paced, of `count` messages, on a
    /// queue of `layout` (paced: always [`Layout::Classic`]).
    pub fn consume(
        &self,
        scenario: Scenario,
        consumer: Consumer,
        layout: Layout,
        count: u64,
        paced: bool,
    ) -> Measured {
        let name = scenario.name();
        let queue = self.queue(scenario);
        let node = self.node(scenario);
        let queue_type = layout.queue_type();
        recorder().reset(count);
        let fill = if paced {
            self.declare(node, &queue, queue_type);
            None
        } else {
            Some(self.prefill(node, &queue, queue_type, count))
        };
        let spent = match consumer {
            Consumer::RawAckEach | Consumer::RawAck64 => {
                let ack_every = if consumer == Consumer::RawAck64 {
                    ACK_EVERY
                } else {
                    1
                };
                let connection = self.runtime.block_on(connect(&node.url));
                let channel = self
                    .runtime
                    .block_on(connection.create_channel())
                    .expect("channel");
                let clock = start_clock();
                let task = self
                    .runtime
                    .spawn(raw_consume(channel.clone(), queue.clone(), count, ack_every));
                let publishing = paced.then(|| {
                    self.wait_for_consumer(node, &queue);
                    self.publish_paced(&queue, count)
                });
                self.runtime
                    .block_on(async { tokio::time::timeout(RUN_DEADLINE, task).await })
                    .unwrap_or_else(|_| panic!("{name}: not done after {RUN_DEADLINE:?}"))
                    .expect("consumer task")
                    .unwrap_or_else(|e| panic!("{name}: lapin failed: {e}"));
                let measured = clock.stop();
                if let Some(publishing) = publishing {
                    self.control.block_on(publishing).expect("publisher");
                }
                self.runtime.block_on(async {
                    let _ = channel.close(200, "bench: done".into()).await;
                    let _ = connection.close(200, "bench: done".into()).await;
                });
                measured
            }
            Consumer::Wharf => {
                let broker = self
                    .runtime
                    .block_on(Broker::connect(&node.wharf_url))
                    .expect("wharf connects");
                let options = RouteOptions::new()
                    .prefetch(usize::from(PREFETCH))
                    .concurrency(usize::from(PREFETCH))
                    .queue_type(queue_type);
                let clock = start_clock();
                let running = self
                    .runtime
                    .block_on(
                        App::new(broker.clone())
                            .route_with(&queue, take_order, options)
                            .start(),
                    )
                    .expect("wharf app starts");
                let publishing = paced.then(|| {
                    self.wait_for_consumer(node, &queue);
                    self.publish_paced(&queue, count)
                });
                wait_until_acked(&running, &queue, count, &name, |t| recorder().wait(t));
                // Raw lapin's clock includes its last ack: so does wharf's.
                self.runtime.block_on(broker.transport().flush());
                let measured = clock.stop();
                if let Some(publishing) = publishing {
                    self.control.block_on(publishing).expect("publisher");
                }
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
                measured
            }
        };
        let mut latencies = recorder().check(count, &name);
        self.assert_empty(node, &queue, &name);
        latencies.sort_unstable();
        Measured {
            count,
            spent,
            latencies: if paced { latencies } else { Vec::new() },
            startup: None,
            fill,
        }
    }
}

/// Raw lapin consumer: decode, record, ack (awaited) every `ack_every`
/// deliveries with `multiple` (or each one alone).
async fn raw_consume(
    channel: Channel,
    queue: String,
    count: u64,
    ack_every: u64,
) -> Result<(), lapin::Error> {
    channel.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let recorder = recorder();
    let multiple = BasicAckOptions { multiple: true };
    let mut handled = 0;
    let mut unacked = 0;
    while handled < count {
        let delivery = consumer.next().await.expect("consumer ended early")?;
        let order: Order = serde_json::from_slice(&delivery.data).expect("order decodes");
        recorder.record(&order);
        handled += 1;
        if ack_every == 1 {
            delivery.ack(BasicAckOptions::default()).await?;
        } else {
            unacked += 1;
            if unacked == ack_every || handled == count {
                delivery.ack(multiple).await?;
                unacked = 0;
            }
        }
    }
    Ok(())
}
