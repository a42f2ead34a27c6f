//! The request/reply scenarios: every pairing of a raw lapin or wharf
//! client with a raw lapin or wharf server, sequential requests, on a
//! classic request queue (and two pairings on a quorum one).

use crate::PREFETCH;
use crate::bench::{Bench, JSON, connect, persistent_json, start_clock};
use crate::common::clock::Spent;
use crate::common::measured::Measured;
use crate::common::payload::{Answer, Order, answer, order};
use crate::common::rounds::Side;
use crate::common::route::{RUN_DEADLINE, check_stats};
use crate::config::Sizes;
use crate::scenario::Scenario;
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use wharf::{App, Broker, QueueType, RouteOptions, Running};

const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

impl Bench {
    pub fn request_reply(
        &self,
        scenario: Scenario,
        client: Side,
        server: Side,
        queue_type: QueueType,
        sizes: Sizes,
    ) -> Measured {
        let name = scenario.name();
        let queue = self.queue(scenario);
        let warmup = sizes.warmup_requests();
        let requests = sizes.requests;
        // The server, on a connection of its own.
        enum Server {
            Raw {
                connection: Connection,
                stop: CancellationToken,
                task: tokio::task::JoinHandle<Result<u64, lapin::Error>>,
            },
            Wharf {
                broker: Broker,
                running: Running,
            },
        }
        let server = match server {
            Side::Raw => {
                self.declare(&self.shared, &queue, queue_type);
                let connection = self.runtime.block_on(connect(&self.config.url));
                let channel = self
                    .runtime
                    .block_on(connection.create_channel())
                    .expect("channel");
                let stop = CancellationToken::new();
                let task = self
                    .runtime
                    .spawn(raw_server(channel, queue.clone(), stop.clone()));
                Server::Raw {
                    connection,
                    stop,
                    task,
                }
            }
            Side::Wharf => {
                let broker = self
                    .runtime
                    .block_on(Broker::connect(&self.config.url))
                    .expect("wharf connects");
                let running = self
                    .runtime
                    .block_on(
                        App::new(broker.clone())
                            .route_with(&queue, answer, RouteOptions::new().queue_type(queue_type))
                            .start(),
                    )
                    .expect("wharf app starts");
                Server::Wharf { broker, running }
            }
        };
        self.wait_for_consumer(&self.shared, &queue);

        let outcome = match client {
            Side::Raw => {
                let connection = self.runtime.block_on(connect(&self.config.url));
                let channel = self
                    .runtime
                    .block_on(connection.create_channel())
                    .expect("channel");
                let task = self
                    .runtime
                    .spawn(raw_client(channel, queue.clone(), warmup, requests));
                let outcome = self
                    .runtime
                    .block_on(async { tokio::time::timeout(RUN_DEADLINE, task).await })
                    .unwrap_or_else(|_| panic!("{name}: not done after {RUN_DEADLINE:?}"))
                    .expect("client task")
                    .unwrap_or_else(|e| panic!("{name}: lapin failed: {e}"));
                self.runtime.block_on(async {
                    let _ = connection.close(200, "bench: done".into()).await;
                });
                outcome
            }
            Side::Wharf => {
                let broker = self
                    .runtime
                    .block_on(Broker::connect(&self.config.url))
                    .expect("wharf connects");
                let task = self
                    .runtime
                    .spawn(wharf_client(broker.clone(), queue.clone(), warmup, requests));
                let outcome = self
                    .runtime
                    .block_on(async { tokio::time::timeout(RUN_DEADLINE, task).await })
                    .unwrap_or_else(|_| panic!("{name}: not done after {RUN_DEADLINE:?}"))
                    .expect("client task");
                self.runtime.block_on(broker.close());
                outcome
            }
        };

        let total = warmup + requests;
        match server {
            Server::Raw {
                connection,
                stop,
                task,
            } => {
                stop.cancel();
                let served = self
                    .runtime
                    .block_on(task)
                    .expect("server task")
                    .unwrap_or_else(|e| panic!("{name}: raw server failed: {e}"));
                assert_eq!(served, total, "{name}: requests served");
                self.runtime.block_on(async {
                    let _ = connection.close(200, "bench: done".into()).await;
                });
            }
            Server::Wharf { broker, running } => {
                let report = self.runtime.block_on(running.shutdown());
                assert!(report.drained, "{name}: shutdown did not drain");
                let stats = report.stats(&queue);
                check_stats(&stats, total, total, &name);
                self.runtime.block_on(broker.close());
            }
        }
        self.assert_empty(&self.shared, &queue, &name);
        let (spent, mut latencies) = outcome;
        latencies.sort_unstable();
        Measured {
            count: requests,
            spent,
            latencies,
            startup: None,
            fill: None,
        }
    }
}

/// Raw lapin request server: decode, reply to `reply_to` with the
/// correlation id through the default exchange, ack. Returns requests served.
async fn raw_server(channel: Channel, queue: String, stop: CancellationToken) -> Result<u64, lapin::Error> {
    channel.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut served = 0;
    loop {
        let delivery = tokio::select! {
            () = stop.cancelled() => break,
            next = consumer.next() => match next {
                Some(delivery) => delivery?,
                None => break,
            },
        };
        let order: Order = serde_json::from_slice(&delivery.data).expect("request decodes");
        let body = serde_json::to_vec(&Answer {
            id: order.id,
            accepted: true,
        })
        .expect("encode answer");
        let reply_to = delivery
            .properties
            .reply_to()
            .clone()
            .expect("request has reply_to");
        let mut properties = BasicProperties::default().with_content_type(JSON.into());
        if let Some(correlation) = delivery.properties.correlation_id().clone() {
            properties = properties.with_correlation_id(correlation);
        }
        channel
            .basic_publish(
                "".into(),
                reply_to,
                BasicPublishOptions::default(),
                &body,
                properties,
            )
            .await?;
        delivery.ack(BasicAckOptions::default()).await?;
        served += 1;
    }
    let _ = channel.close(200, "bench: done".into()).await;
    Ok(served)
}

/// What the measured requests cost, and their round trips in ns.
type RpcOutcome = (Spent, Vec<u64>);

/// Raw lapin direct reply-to client: `warmup` then `requests` sequential
/// requests; wall, CPU, kernel time and round trips of the measured ones.
async fn raw_client(
    channel: Channel,
    queue: String,
    warmup: u64,
    requests: u64,
) -> Result<RpcOutcome, lapin::Error> {
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    };
    let mut replies = channel
        .basic_consume(DIRECT_REPLY_TO.into(), "".into(), no_ack, FieldTable::default())
        .await?;
    let mut latencies = Vec::with_capacity(requests as usize);
    let mut clock = None;
    for id in 0..warmup + requests {
        if id == warmup {
            clock = Some(start_clock());
        }
        let request = order(id, 0);
        let started = Instant::now();
        let body = serde_json::to_vec(&request).expect("encode order");
        let properties = persistent_json()
            .with_reply_to(DIRECT_REPLY_TO.into())
            .with_correlation_id(id.to_string().into());
        channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                properties,
            )
            .await?;
        let reply = replies.next().await.expect("reply consumer ended")?;
        let correlation = reply.properties.correlation_id().as_ref().map(|c| c.as_str());
        assert_eq!(correlation, Some(id.to_string().as_str()), "reply correlation");
        let answer: Answer = serde_json::from_slice(&reply.data).expect("answer decodes");
        assert!(answer.id == id && answer.accepted, "answer to {id}: {answer:?}");
        if id >= warmup {
            latencies.push(started.elapsed().as_nanos() as u64);
        }
    }
    let spent = clock.expect("measured requests").stop();
    let _ = channel.close(200, "bench: done".into()).await;
    Ok((spent, latencies))
}

/// wharf client: `warmup` then `requests` sequential `Client::request`s.
async fn wharf_client(broker: Broker, queue: String, warmup: u64, requests: u64) -> RpcOutcome {
    let client = broker.client();
    let mut latencies = Vec::with_capacity(requests as usize);
    let mut clock = None;
    for id in 0..warmup + requests {
        if id == warmup {
            clock = Some(start_clock());
        }
        let request = order(id, 0);
        let started = Instant::now();
        let answer: Answer = client
            .request(&queue, &request)
            .await
            .unwrap_or_else(|e| panic!("request {id} failed: {e}"));
        assert!(answer.id == id && answer.accepted, "answer to {id}: {answer:?}");
        if id >= warmup {
            latencies.push(started.elapsed().as_nanos() as u64);
        }
    }
    let spent = clock.expect("measured requests").stop();
    (spent, latencies)
}
