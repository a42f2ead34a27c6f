//! The NATS bench's own connection, its streams, pre-filling, and the
//! dispatch of a run to its scenario.

use crate::common::clock::{Accounting, Clock};
use crate::common::measured::Measured;
use crate::common::payload::order_json;
use crate::common::setup::{new_runtime, run_id};
use crate::config::{Config, Sizes};
use crate::nats_server;
use crate::scenario::Scenario;
use crate::streams::{CONSUMER, enc, stream_name, subject};
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
/// servers' runtime's and the local nats-server process apart.
static ACCOUNTING: Accounting = Accounting {
    threads: [WORKER_THREAD, SERVER_THREAD],
    broker: nats_server::cpu_time,
};

/// Starts measuring: see [`Clock::start`].
pub fn start_clock() -> Clock {
    Clock::start(&ACCOUNTING)
}

/// Order `id` as the body of a NATS message.
pub fn order_body(id: u64) -> Bytes {
    Bytes::from(order_json(id, 0))
}

pub async fn connect(url: &str) -> async_nats::Client {
    async_nats::connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to NATS: {e}"))
}

/// The bench's own connection for pre-filling and stream administration,
/// on a runtime of its own (one worker), so that it does not share the
/// measured runtime.
pub struct Control {
    pub runtime: Runtime,
    pub js: jetstream::Context,
}

/// The bench.
pub struct Bench {
    pub config: Config,
    /// The measured runtime: consumers and clients.
    pub runtime: Runtime,
    /// Request/reply servers, raw and wharf.
    pub servers: Runtime,
    pub control: Control,
    run_id: String,
    next_queue: AtomicU64,
}

impl Bench {
    /// Connects the control connection; `Err` if NATS with JetStream is not
    /// reachable.
    pub fn new(config: Config) -> Result<Self, String> {
        let runtime = new_runtime(config.workers, WORKER_THREAD);
        let servers = new_runtime(config.server_workers, SERVER_THREAD);
        let control_runtime = new_runtime(1, "bench-control");
        let js = control_runtime.block_on(async {
            let connect = async_nats::connect(&config.url);
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
        Ok(Bench {
            config,
            runtime,
            servers,
            control: Control {
                runtime: control_runtime,
                js,
            },
            run_id: run_id(),
            next_queue: AtomicU64::new(0),
        })
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
    /// the bench's own and whatever wharf made for its queues.
    pub fn delete_all(&self) {
        let marker = enc(&self.queue_prefix());
        self.delete_streams(|name| name.contains(&marker));
    }

    /// Deletes the streams earlier bench processes that are gone left
    /// behind (a run that panicked while NATS was away, or was killed).
    pub fn sweep_leftovers(&self) {
        let bench_queues = enc("wharf-test.bench.");
        let separator = enc(".");
        self.delete_streams(|name| {
            let Some((_, rest)) = name.split_once(&bench_queues) else {
                return false;
            };
            let pid = rest.split(&separator).next().unwrap_or_default();
            u32::from_str_radix(pid, 16)
                .is_ok_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
        });
    }

    /// Deletes the streams whose name `doomed` selects; tries for 10 s
    /// while NATS does not answer (a server restarting).
    fn delete_streams(&self, doomed: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        self.control.runtime.block_on(async {
            loop {
                let mut failed = None;
                let mut names = self.control.js.stream_names();
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
                    if let Err(e) = self.control.js.delete_stream(&name).await {
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

    /// Messages in `queue`'s stream.
    fn stream_messages(&self, queue: &str) -> u64 {
        self.control.runtime.block_on(async {
            let stream = self
                .control
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
    pub fn assert_empty(&self, queue: &str, scenario: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = self.stream_messages(queue);
            if left == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{scenario}: {left} messages left in the stream of {queue}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let consumer = self.control.runtime.block_on(async {
            let stream = self.control.js.get_stream(stream_name(queue)).await.ok()?;
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

    /// Publishes `count` orders to `queue`'s priority-0 subject with
    /// JetStream publish acks; its stream must exist.
    pub fn prefill(&self, queue: &str, count: u64) {
        let subject = subject(queue);
        let js = &self.control.js;
        self.control.runtime.block_on(async {
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
        assert_eq!(self.stream_messages(queue), count, "pre-filled {queue}");
    }

    pub fn run(&self, scenario: Scenario, sizes: Sizes) -> Measured {
        match scenario {
            Scenario::Consume(side) => self.consume(scenario, side, sizes.messages),
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
