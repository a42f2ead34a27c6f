//! The request/reply scenarios on core NATS: every pairing of a raw
//! async-nats or wharf client with a raw or wharf server, sequential or
//! with many requests in flight.

use crate::bench::{Bench, connect, order_body, start_clock};
use crate::common::clock::Spent;
use crate::common::measured::Measured;
use crate::common::payload::{Answer, Order, answer, order};
use crate::common::rounds::Side;
use crate::common::route::RUN_DEADLINE;
use crate::scenario::Scenario;
use crate::streams::subject;
use async_nats::{HeaderMap, RequestErrorKind};
use futures_util::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use wharf::{App, Broker, RouteOptions, RouteStats, Running};

/// Core NATS queue group of services (raw and wharf).
const QUEUE_GROUP: &str = "wharf";
/// Handlers at once on the wharf request/reply route.
const SERVER_CONCURRENCY: usize = 64;
/// How long the first request of a run may find no responder (the
/// server's subscription is not at the NATS server yet).
const RESPONDER_DEADLINE: Duration = Duration::from_secs(5);

/// The wharf route of the request/reply scenarios: a core NATS service.
fn service_options() -> RouteOptions {
    RouteOptions::new()
        .persistent(false)
        .concurrency(SERVER_CONCURRENCY)
}

impl Bench {
    /// A request/reply scenario: `warmup` sequential requests, then
    /// `requests` measured ones, `in_flight` at a time.
    pub fn request_reply(
        &self,
        scenario: Scenario,
        client: Side,
        server: Side,
        warmup: u64,
        requests: u64,
        in_flight: u64,
    ) -> Measured {
        let name = scenario.name();
        let queue = self.queue(scenario);
        // The server, on the servers' runtime, with a connection of its own.
        enum Server {
            Raw {
                client: async_nats::Client,
                stop: CancellationToken,
                task: tokio::task::JoinHandle<Result<u64, async_nats::Error>>,
            },
            Wharf {
                broker: Broker,
                running: Running,
            },
        }
        let server = match server {
            Side::Raw => {
                let (client, stop, task) = self.servers.block_on(async {
                    let client = connect(&self.config.url).await;
                    let subscriber = client
                        .queue_subscribe(format!("wharf.*.{queue}"), QUEUE_GROUP.to_owned())
                        .await
                        .expect("subscribe");
                    client.flush().await.expect("flush");
                    let stop = CancellationToken::new();
                    let task = tokio::spawn(raw_server(client.clone(), subscriber, stop.clone()));
                    (client, stop, task)
                });
                Server::Raw { client, stop, task }
            }
            Side::Wharf => {
                let (broker, running) = self.servers.block_on(async {
                    let broker = Broker::connect(&self.config.url).await.expect("wharf connects");
                    let running = App::new(broker.clone())
                        .route_with(&queue, answer, service_options())
                        .start()
                        .await
                        .expect("wharf app starts");
                    (broker, running)
                });
                Server::Wharf { broker, running }
            }
        };

        let (caller, closer) = match client {
            Side::Raw => {
                let client = self.runtime.block_on(connect(&self.config.url));
                (
                    Caller::Raw {
                        client: client.clone(),
                        subject: subject(&queue),
                    },
                    Closer::Raw(client),
                )
            }
            Side::Wharf => {
                let broker = self
                    .runtime
                    .block_on(Broker::connect(&self.config.url))
                    .expect("wharf connects");
                (
                    Caller::Wharf {
                        client: broker.client(),
                        queue: queue.clone(),
                    },
                    Closer::Wharf(broker),
                )
            }
        };
        let task = self.runtime.spawn(call_all(caller, warmup, requests, in_flight));
        let (spent, mut latencies) = self
            .runtime
            .block_on(async { tokio::time::timeout(RUN_DEADLINE, task).await })
            .unwrap_or_else(|_| panic!("{name}: not done after {RUN_DEADLINE:?}"))
            .expect("client task")
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        match closer {
            Closer::Raw(client) => self.runtime.block_on(async {
                let _ = client.drain().await;
            }),
            Closer::Wharf(broker) => self.runtime.block_on(broker.close()),
        }

        let total = warmup + requests;
        match server {
            Server::Raw { client, stop, task } => {
                stop.cancel();
                let served = self
                    .servers
                    .block_on(task)
                    .expect("server task")
                    .unwrap_or_else(|e| panic!("{name}: raw server failed: {e}"));
                assert_eq!(served, total, "{name}: requests served");
                self.servers.block_on(async {
                    let _ = client.drain().await;
                });
            }
            Server::Wharf { broker, running } => {
                let report = self.servers.block_on(running.shutdown());
                assert!(report.drained, "{name}: shutdown did not drain");
                let stats = report.stats(&queue);
                check_service_stats(&stats, total, &name);
                self.servers.block_on(broker.close());
            }
        }
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

/// Every request received and answered exactly once, nothing else (a core
/// NATS service has nothing to ack, so `acked` is not looked at).
fn check_service_stats(stats: &RouteStats, count: u64, scenario: &str) {
    let got = [
        stats.received,
        stats.replies,
        stats.retried,
        stats.dead_lettered,
        stats.rejected,
        stats.duplicates,
        stats.deferred,
        stats.returned,
        stats.panics,
        stats.timeouts,
        stats.error_replies,
        stats.in_flight,
    ];
    assert_eq!(
        got,
        [count, count, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        "{scenario}: not every request was received and answered exactly once: {stats:?}"
    );
}

/// Raw core NATS service: decode, answer to the reply subject (echoing a
/// `correlation-id` with `wharf-status: ok`). Returns requests served.
async fn raw_server(
    client: async_nats::Client,
    mut subscriber: async_nats::Subscriber,
    stop: CancellationToken,
) -> Result<u64, async_nats::Error> {
    let mut served = 0;
    loop {
        let request = tokio::select! {
            () = stop.cancelled() => break,
            next = subscriber.next() => match next {
                Some(request) => request,
                None => break,
            },
        };
        let order: Order = serde_json::from_slice(&request.payload).expect("request decodes");
        let body = serde_json::to_vec(&Answer {
            id: order.id,
            accepted: true,
        })
        .expect("encode answer");
        let reply = request.reply.clone().expect("request has a reply subject");
        let correlation = request
            .headers
            .as_ref()
            .and_then(|h| h.get("correlation-id"))
            .map(|v| v.as_str().to_owned());
        match correlation {
            Some(correlation) => {
                let mut headers = HeaderMap::new();
                headers.insert("correlation-id", correlation.as_str());
                headers.insert("wharf-status", "ok");
                client.publish_with_headers(reply, headers, body.into()).await?;
            }
            None => client.publish(reply, body.into()).await?,
        }
        served += 1;
    }
    let _ = subscriber.unsubscribe().await;
    Ok(served)
}

/// A requesting client.
#[derive(Clone)]
enum Caller {
    Raw {
        client: async_nats::Client,
        subject: String,
    },
    Wharf {
        client: wharf::Client,
        queue: String,
    },
}

/// Closes a client's connection at the end of a run.
enum Closer {
    Raw(async_nats::Client),
    Wharf(Broker),
}

impl Caller {
    /// One request for order `id`; its answer is checked.
    async fn call(&self, id: u64) -> Result<(), String> {
        let answer: Answer = match self {
            Caller::Raw { client, subject } => {
                let reply = client
                    .request(subject.clone(), order_body(id))
                    .await
                    .map_err(|e| {
                        if e.kind() == RequestErrorKind::NoResponders {
                            "no responders".to_owned()
                        } else {
                            format!("raw request {id}: {e}")
                        }
                    })?;
                serde_json::from_slice(&reply.payload).map_err(|e| format!("answer to {id}: {e}"))?
            }
            Caller::Wharf { client, queue } => client
                .request(queue, &order(id, 0))
                .await
                .map_err(|e| format!("wharf request {id}: {e}"))?,
        };
        if answer.id == id && answer.accepted {
            Ok(())
        } else {
            Err(format!("answer to {id}: {answer:?}"))
        }
    }

    /// The first request of a run: retried while nobody answers (the
    /// server's subscription may not be at the NATS server yet).
    async fn first_call(&self) -> Result<(), String> {
        let deadline = Instant::now() + RESPONDER_DEADLINE;
        loop {
            match self.call(0).await {
                // async-nats' error, or wharf's ("not delivered: no queue
                // or service is listening").
                Err(e)
                    if (e.contains("no responders") || e.contains("not delivered"))
                        && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                other => return other,
            }
        }
    }
}

/// What the measured requests cost, and their round trips in ns.
type RpcOutcome = (Spent, Vec<u64>);

/// `warmup` sequential requests, then `requests` measured ones from
/// `in_flight` tasks (this one alone when 1), each with one request in
/// flight at a time.
async fn call_all(caller: Caller, warmup: u64, requests: u64, in_flight: u64) -> Result<RpcOutcome, String> {
    caller.first_call().await?;
    for id in 1..warmup {
        caller.call(id).await?;
    }
    let total = warmup + requests;
    if in_flight <= 1 {
        let mut latencies = Vec::with_capacity(requests as usize);
        let clock = start_clock();
        for id in warmup..total {
            let started = Instant::now();
            caller.call(id).await?;
            latencies.push(started.elapsed().as_nanos() as u64);
        }
        return Ok((clock.stop(), latencies));
    }
    let next = Arc::new(AtomicU64::new(warmup));
    let clock = start_clock();
    let tasks: Vec<_> = (0..in_flight)
        .map(|_| {
            let caller = caller.clone();
            let next = next.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity((requests / in_flight + 1) as usize);
                loop {
                    let id = next.fetch_add(1, Ordering::Relaxed);
                    if id >= total {
                        return Ok::<_, String>(latencies);
                    }
                    let started = Instant::now();
                    caller.call(id).await?;
                    latencies.push(started.elapsed().as_nanos() as u64);
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(requests as usize);
    for task in tasks {
        latencies.extend(task.await.map_err(|e| format!("request task: {e}"))??);
    }
    Ok((clock.stop(), latencies))
}
