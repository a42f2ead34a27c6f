//! The brokers the scenarios run on: the bench's own wharf connection to
//! RabbitMQ and to NATS (on a runtime of its own, unmeasured) for declaring
//! each run's fresh queue, pre-filling it through wharf's client, checking
//! that it is empty afterwards and deleting it; and the broker a run's app
//! consumes from.

use crate::common::setup::new_runtime;
use crate::scenario::{Scenario, Transport};
use futures_util::StreamExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use wharf::transport::QueueSpec;
use wharf::{Broker, Message};

/// Sends in flight while pre-filling (each waits for its confirm or
/// publish ack).
const PREFILL_IN_FLIGHT: usize = 512;

/// The bench's control connections, one per reachable broker.
pub struct Brokers {
    runtime: Runtime,
    amqp: Option<(String, Broker)>,
    nats: Option<(String, Broker)>,
    /// Prefix of this bench's queue names.
    prefix: String,
    next: AtomicU64,
    /// Queues made and not yet deleted (a run that panicked).
    queues: Mutex<Vec<(Transport, String)>>,
}

impl Brokers {
    /// Connects to the brokers of `transports` (RabbitMQ at `amqp_url`,
    /// NATS at `nats_url`); one not answering within 5 s is left out.
    pub fn connect(transports: &[Transport], amqp_url: &str, nats_url: &str, run_id: &str) -> Self {
        let runtime = new_runtime(1, "store-bench-ctl");
        let connect = |transport: Transport, url: &str| {
            if !transports.contains(&transport) {
                return None;
            }
            let broker = runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(5), Broker::connect(url)).await });
            match broker {
                Ok(Ok(broker)) => Some((url.to_owned(), broker)),
                Ok(Err(e)) => {
                    eprintln!("{}: {e}", transport.name());
                    None
                }
                Err(_) => {
                    eprintln!("{}: no answer within 5 s", transport.name());
                    None
                }
            }
        };
        let amqp = connect(Transport::Amqp, amqp_url);
        let nats = connect(Transport::Nats, nats_url);
        Brokers {
            runtime,
            amqp,
            nats,
            prefix: format!("wharf-test.bench.{run_id}.stores"),
            next: AtomicU64::new(0),
            queues: Mutex::new(Vec::new()),
        }
    }

    fn control(&self, transport: Transport) -> Option<&(String, Broker)> {
        match transport {
            Transport::Memory => None,
            Transport::Amqp => self.amqp.as_ref(),
            Transport::Nats => self.nats.as_ref(),
        }
    }

    /// Whether the transport's broker is reachable.
    pub fn has(&self, transport: Transport) -> bool {
        transport == Transport::Memory || self.control(transport).is_some()
    }

    /// A fresh queue name for a run of `scenario` (kept for [`Brokers::clear`]).
    pub fn queue(&self, scenario: Scenario) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}.{}.{n}", self.prefix, scenario.name().replace('/', "."));
        self.queues
            .lock()
            .unwrap()
            .push((scenario.transport, name.clone()));
        name
    }

    /// A new connection of wharf's to the transport's broker, for a run's
    /// app (on the calling runtime: the measured one).
    pub async fn app_broker(&self, transport: Transport) -> Broker {
        match self.control(transport) {
            None => Broker::memory(),
            Some((url, _)) => Broker::connect(url).await.expect("wharf connects"),
        }
    }

    /// Declares `queue` as its route will and sends it `count` messages
    /// (`message(index)`) through wharf's client, `PREFILL_IN_FLIGHT` at a
    /// time, each confirmed by the broker; checks the queue's depth.
    pub fn prefill(&self, transport: Transport, queue: &str, count: u64, message: impl Fn(u64) -> Message) {
        let (_, broker) = self.control(transport).expect("a broker transport");
        self.runtime.block_on(async {
            broker
                .declare(&QueueSpec::new(queue))
                .await
                .unwrap_or_else(|e| panic!("declare {queue}: {e}"));
            let client = broker.client();
            let client = &client;
            let sends = futures_util::stream::iter(0..count)
                .map(|index| {
                    let message = message(index);
                    async move { client.send(queue, message).await }
                })
                .buffer_unordered(PREFILL_IN_FLIGHT);
            futures_util::pin_mut!(sends);
            while let Some(sent) = sends.next().await {
                sent.unwrap_or_else(|e| panic!("pre-fill {queue}: {e}"));
            }
        });
        let depth = self.depth(transport, queue);
        assert_eq!(depth, count, "pre-filled {queue}");
    }

    fn depth(&self, transport: Transport, queue: &str) -> u64 {
        let (_, broker) = self.control(transport).expect("a broker transport");
        self.runtime
            .block_on(broker.queue_depth(queue))
            .unwrap_or_else(|e| panic!("depth of {queue}: {e}"))
    }

    /// Panics unless `queue` is empty within 5 s (NATS: acks are not
    /// confirmed, the last ones may still be on their way).
    pub fn assert_empty(&self, transport: Transport, queue: &str, scenario: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = self.depth(transport, queue);
            if left == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{scenario}: {left} messages left in {queue}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Deletes `queue` and what wharf declared for it (dead-letter and delay
    /// queues; on NATS their streams).
    pub fn delete(&self, transport: Transport, queue: &str) {
        let Some((_, broker)) = self.control(transport) else {
            return;
        };
        if let Err(e) = self.runtime.block_on(broker.delete_queue(queue)) {
            eprintln!("could not delete {queue}: {e}");
        }
        self.queues.lock().unwrap().retain(|(_, q)| q != queue);
    }

    /// Deletes the queues of runs that did not delete their own.
    pub fn clear(&self) {
        let queues = std::mem::take(&mut *self.queues.lock().unwrap());
        for (transport, queue) in queues {
            self.delete(transport, &queue);
        }
    }
}
