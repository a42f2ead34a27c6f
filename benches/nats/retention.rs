//! The retention study (`retention/<policy>`): raw async-nats only, the
//! same consume as `consume/raw` on a stream made as wharf makes its work
//! stream but for its retention policy, WorkQueue (wharf's), Interest or
//! Limits; and what each leaves in its stream.
//!
//! Each run: a fresh stream (wharf's subjects, file storage, duplicate
//! window, the policy under study), its durable pull consumer `wharf`
//! created at once, with the raw consumer's settings
//! ([`consumer_config`]: explicit ack, ack wait 30 s, the server's default
//! max ack pending), before the pre-fill (an Interest stream stores nothing
//! published while no consumer is there); the pre-fill; then, on the clock,
//! the raw consumer of `consume/raw` (batches of 256, decode, ack each,
//! flush). After the clock, the run waits until the server has settled
//! (nothing unacked or pending, and the stream down to what it keeps: none
//! for WorkQueue and Interest, all for Limits), timing it and the
//! nats-server CPU it takes, then records the stream's messages and bytes.
//!
//! Measured (nats-server 2.9.10, 100,000 messages, 14 interleaved rounds
//! over four invocations on a 2-core machine at load 6–12): per round,
//! against WorkQueue, Interest had a median 0.91× the msg/s (0.60–1.37)
//! and 1.08× the nats-server CPU per message; Limits 1.16× the msg/s
//! (0.70–2.00) and 0.85× the CPU (0.67–1.28), a fourth of its rounds
//! slower. Settling after the last ack took no measurable server work on
//! any policy (under 0.05 µs per message): the deletes are done inline
//! with the acks. Limits left all 100,000 messages (35.2 MB) behind.

use crate::bench::Bench;
use crate::common::broker_cpu;
use crate::common::measured::Measured;
use crate::recorder::recorder;
use crate::scenario::Scenario;
use crate::streams::{CONSUMER, consumer_config, stream_config, stream_name};
use async_nats::jetstream::stream::RetentionPolicy;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the settling server is looked at.
const SETTLE_POLL: Duration = Duration::from_millis(2);
/// A server not settled by then is stuck.
const SETTLE_DEADLINE: Duration = Duration::from_secs(10);

/// The retention policies under study.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retention {
    /// wharf's: a message goes when acked; one consumer per subject.
    WorkQueue,
    /// A message goes once every consumer has acked it.
    Interest,
    /// A message stays until the stream's limits push it out.
    Limits,
}

impl Retention {
    pub const ALL: [Retention; 3] = [Retention::WorkQueue, Retention::Interest, Retention::Limits];

    pub fn name(self) -> &'static str {
        match self {
            Retention::WorkQueue => "workqueue",
            Retention::Interest => "interest",
            Retention::Limits => "limits",
        }
    }

    fn policy(self) -> RetentionPolicy {
        match self {
            Retention::WorkQueue => RetentionPolicy::WorkQueue,
            Retention::Interest => RetentionPolicy::Interest,
            Retention::Limits => RetentionPolicy::Limits,
        }
    }

    /// Whether an acked message stays in the stream.
    fn keeps_acked(self) -> bool {
        self == Retention::Limits
    }
}

/// What a run left behind, after the clock.
#[derive(Clone, Copy, Debug)]
pub struct Leftover {
    /// Messages and bytes still in the stream once settled.
    pub messages: u64,
    pub bytes: u64,
    /// From the clock's stop until the server has settled.
    pub settle: Duration,
    /// nats-server CPU time over `settle`, if it runs here.
    pub settle_broker: Option<Duration>,
    /// The consumer's max ack pending, as the server has it.
    pub max_ack_pending: i64,
}

/// The measured runs' leftovers, in the order of the runs.
static LEFTOVERS: Mutex<Vec<(Retention, Leftover)>> = Mutex::new(Vec::new());

/// The leftovers of `retention`'s measured runs.
pub fn leftovers(retention: Retention) -> Vec<Leftover> {
    let all = LEFTOVERS.lock().unwrap();
    all.iter()
        .filter(|(r, _)| *r == retention)
        .map(|(_, l)| *l)
        .collect()
}

/// Forgets the leftovers so far (those of the warm-up round).
pub fn forget_leftovers() {
    LEFTOVERS.lock().unwrap().clear();
}

impl Bench {
    /// One run of `retention/<policy>`: `count` messages pre-filled.
    pub fn retention(&self, scenario: Scenario, retention: Retention, count: u64) -> Measured {
        let name = scenario.name();
        let queue = self.queue(scenario);
        let js = &self.shared.js;
        self.control.block_on(async {
            let mut config = stream_config(&queue);
            config.retention = retention.policy();
            let stream = js
                .create_stream(config)
                .await
                .unwrap_or_else(|e| panic!("{name}: create stream for {queue}: {e}"));
            stream
                .create_consumer(consumer_config())
                .await
                .unwrap_or_else(|e| panic!("{name}: create consumer of {queue}: {e}"));
        });
        let fill = self.prefill(&self.shared, &queue, count);
        recorder().reset(count);
        let (spent, startup) = self.raw_consume_measured(&self.shared.url, &name, &queue, count);
        recorder().check(count, &name);
        let leftover = self.settle(&name, &queue, retention, count);
        if retention.keeps_acked() {
            assert_eq!(leftover.messages, count, "{name}: messages kept in {queue}");
        } else {
            assert_eq!(leftover.messages, 0, "{name}: messages left in {queue}");
        }
        LEFTOVERS.lock().unwrap().push((retention, leftover));
        Measured {
            // The clock starts at the first message.
            count: count - 1,
            spent,
            latencies: Vec::new(),
            startup: Some(startup),
            fill: Some(fill),
        }
    }

    /// Waits until `queue`'s consumer has nothing unacked or pending and
    /// its stream holds what `retention` keeps of `count` consumed
    /// messages; panics on a redelivery or after [`SETTLE_DEADLINE`].
    fn settle(&self, name: &str, queue: &str, retention: Retention, count: u64) -> Leftover {
        let kept = if retention.keeps_acked() { count } else { 0 };
        let started = Instant::now();
        let broker_before = broker_cpu::cpu_time();
        let (state, max_ack_pending) = self.control.block_on(async {
            let mut stream = self
                .shared
                .js
                .get_stream(stream_name(queue))
                .await
                .unwrap_or_else(|e| panic!("{name}: stream of {queue}: {e}"));
            loop {
                let consumer = stream
                    .consumer_info(CONSUMER)
                    .await
                    .unwrap_or_else(|e| panic!("{name}: consumer of {queue}: {e}"));
                assert_eq!(consumer.num_redelivered, 0, "{name}: redeliveries");
                let state = stream.info().await.expect("stream info").state.clone();
                if consumer.num_ack_pending == 0 && consumer.num_pending == 0 && state.messages == kept {
                    return (state, consumer.config.max_ack_pending);
                }
                assert!(
                    started.elapsed() < SETTLE_DEADLINE,
                    "{name}: not settled after {SETTLE_DEADLINE:?}: {} unacked, {} pending, \
                     {} messages in the stream",
                    consumer.num_ack_pending,
                    consumer.num_pending,
                    state.messages
                );
                tokio::time::sleep(SETTLE_POLL).await;
            }
        });
        let settle = started.elapsed();
        let settle_broker = broker_cpu::cpu_time()
            .zip(broker_before)
            .map(|(now, then)| now.saturating_sub(then));
        Leftover {
            messages: state.messages,
            bytes: state.bytes,
            settle,
            settle_broker,
            max_ack_pending,
        }
    }
}
