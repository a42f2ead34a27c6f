//! wharf on RabbitMQ against raw `lapin`: same run, same broker, same
//! 256-byte JSON payload, prefetch 256.
//!
//! **Consume** (each run on a fresh durable queue, pre-filled with
//! `WHARF_BENCH_MESSAGES` persistent messages, 20,000 by default, published
//! with confirms before the clock starts):
//!
//! - `consume/raw-ack-each`: `basic_qos(256)`, `basic_consume`, decode each
//!   delivery with `serde_json`, then `delivery.ack(..).await`: one awaited
//!   ack per message;
//! - `consume/raw-ack-64`: the same, but one awaited `multiple` ack every 64
//!   deliveries (and one for the rest at the end);
//! - `consume/wharf`: `App::route_with(queue, handler, prefetch 256,
//!   concurrency 256)` with a typed handler `async fn(Order)`: wharf decodes,
//!   runs the handler and acks (coalesced, see `src/transport/amqp/acks.rs`).
//!
//! The clock runs from starting the consumer to the last ack: for raw lapin
//! the last awaited ack; for wharf, the route's `acked` counter reaching the
//! message count and the held-back acks being flushed (`Transport::flush`).
//! The main thread waits for that outside the runtime: it sleeps on a
//! condition variable that the handler signals at the last message, then
//! polls the counters for the few microseconds the last acks take (polling
//! all along, a sleep and wake-up every 250 µs, cost this process about
//! 1 µs per message and made wharf look 10 % dearer than it is).
//!
//! Figures: messages/s and CPU time of the whole process per message
//! (`CLOCK_PROCESS_CPUTIME_ID`; the bench's idle publisher included), with
//! the kernel's share, the share of the measured runtime's worker threads
//! (`tokio`) and of lapin's I/O threads (`lapin`, from
//! `/proc/self/task/*/schedstat`), and context switches per message (all
//! threads, `getrusage`): a thread that sleeps until another wakes it
//! switches once.
//!
//! **Paced** (`paced/…`): the same three consumers on an empty queue while
//! a publisher (own connection, own runtime thread) publishes
//! `WHARF_BENCH_PACED_MESSAGES` (4,000) at `WHARF_BENCH_RATE` (2,000) msg/s;
//! p50/p99 latency from publish (a timestamp in the payload) to the handler.
//! (Pre-filled queues would only measure queueing.) CPU figures include the
//! publisher here.
//!
//! **Request/reply** (`rr/<client>-<server>`): `WHARF_BENCH_REQUESTS`
//! (2,000) sequential requests, one at a time, after a warm-up, with every
//! pairing of a raw or wharf client and a raw or wharf server (each on its
//! own connection). The raw server consumes the request queue, replies to
//! `reply_to` with the `correlation_id` through the default exchange and
//! acks; the raw client uses direct reply-to (`amq.rabbitmq.reply-to`,
//! `no_ack`, requests published on the same channel). The wharf client is
//! `Client::request`, the wharf server a route returning a value. CPU per
//! request covers client *and* server (one process).
//!
//! Every scenario runs `WHARF_BENCH_RUNS` (5) times, interleaved, after one
//! smaller unmeasured round, and the table shows medians (min–max for
//! throughput and request/reply p50), then the ratios the
//! project aims for: wharf consume ≥ 0.95× raw `multiple` ack, wharf
//! request/reply p50 ≤ 1.1× raw. It is a report and never fails because of
//! a goal; it panics if a message is lost, handled twice, retried,
//! dead-lettered or left in its queue.
//!
//! ```text
//! cargo bench --features amqp --bench amqp              # full run, about 2 minutes
//! cargo bench --features amqp --bench amqp -- --test    # smoke run (or WHARF_BENCH_QUICK=1)
//! ```
//!
//! RabbitMQ at `WHARF_TEST_AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`);
//! if it is unreachable the bench prints `SKIPPED` and exits 0, or fails
//! with `CI=true`. Queues are named `wharf-test.bench.*` and deleted
//! afterwards (`scripts/sweep-test-queues.sh` removes leftovers).
//!
//! `WHARF_BENCH_ONLY=<items>` (comma-separated) runs only the scenarios
//! whose name is an item, starts with `<item>/`, or ends with `/<item>`:
//! `wharf` = `consume/wharf` and `paced/wharf`; `rr` = all request/reply.
//! `WHARF_BENCH_WORKERS` changes the number of tokio workers (2).
//!
//! RabbitMQ's own speed varies from run to run on a busy machine (the same
//! raw consumer ranges from 38,000 to 75,000 msg/s on a shared 2-core VM):
//! compare CPU per message and medians of several runs, and instruction
//! counts (callgrind) for changes to wharf's own code.
//!
//! Profiling (the measured part lies between `wharf_bench_measure_begin`
//! and `wharf_bench_measure_end`; read `callgrind.out.<pid>.2`):
//!
//! ```text
//! WHARF_BENCH_QUICK=1 WHARF_BENCH_ONLY=consume/wharf WHARF_BENCH_MESSAGES=5000 \
//!   valgrind --tool=callgrind --dump-before=wharf_bench_measure_begin \
//!   --dump-before=wharf_bench_measure_end target/release/deps/amqp-<hash>
//! ```

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, PublisherConfirm};
use serde::{Deserialize, Serialize};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;
use wharf::{App, Broker, Reply, RouteOptions, RouteStats, Running};

const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const PAYLOAD_BYTES: usize = 256;
const PREFETCH: u16 = 256;
/// Deliveries per `multiple` ack in `raw-ack-64`.
const ACK_EVERY: u64 = 64;
const JSON: &str = "application/json";
const PERSISTENT: u8 = 2;
const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";
/// How often the main thread looks at wharf's counters once the handler
/// has seen every message (a plain thread sleep: it does not wake the
/// runtime).
const POLL: Duration = Duration::from_micros(50);
/// How often it looks for failures before that.
const LOOK_EVERY: Duration = Duration::from_millis(50);
/// A run that has not finished by then is stuck.
const RUN_DEADLINE: Duration = Duration::from_secs(120);
/// Messages published before waiting for their confirms when pre-filling.
const PREFILL_WINDOW: u64 = 1_000;

/// The payload: its JSON encoding is exactly [`PAYLOAD_BYTES`] long (the
/// note pads it). `sent_ns` is when it was published, on [`now_ns`]'s clock.
#[derive(Debug, Serialize, Deserialize)]
struct Order {
    id: u64,
    sent_ns: u64,
    customer: String,
    sku: String,
    quantity: u32,
    unit_price_cents: u64,
    currency: String,
    express: bool,
    note: String,
}

/// The reply of the request/reply scenarios.
#[derive(Debug, Serialize, Deserialize)]
struct Answer {
    id: u64,
    accepted: bool,
}

fn order(id: u64, sent_ns: u64) -> Order {
    let mut order = Order {
        id,
        sent_ns,
        customer: "customer-00042".to_owned(),
        sku: "SKU-TEAPOT-0815-BLUE".to_owned(),
        quantity: 3,
        unit_price_cents: 2_499,
        currency: "EUR".to_owned(),
        express: false,
        note: String::new(),
    };
    let unpadded = serde_json::to_vec(&order).expect("encode order").len();
    assert!(
        unpadded <= PAYLOAD_BYTES,
        "payload without note is {unpadded} bytes"
    );
    order.note = "x".repeat(PAYLOAD_BYTES - unpadded);
    order
}

fn order_json(id: u64, sent_ns: u64) -> Vec<u8> {
    let body = serde_json::to_vec(&order(id, sent_ns)).expect("encode order");
    assert_eq!(body.len(), PAYLOAD_BYTES, "payload size");
    body
}

/// Nanoseconds on one monotonic clock shared by publishers and handlers.
fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Which orders were handled, how long after publishing, and whether any
/// twice. Shared by the raw consumers and the wharf handler (a global, as
/// the handler is a plain `async fn`), so both do the same work per message.
struct Recorder {
    /// Latency + 1 in ns by order id; 0 = not handled.
    slots: Vec<AtomicU64>,
    handled: AtomicU64,
    duplicates: AtomicU64,
    strangers: AtomicU64,
    /// Handled messages that complete the run.
    expected: AtomicU64,
    /// Set (and signalled) when `expected` messages are handled: the
    /// measuring thread sleeps on it instead of polling, which would cost
    /// this process CPU time (a sleep and wake-up every poll).
    all_handled: Mutex<bool>,
    done: Condvar,
}

static RECORDER: OnceLock<Recorder> = OnceLock::new();

fn recorder() -> &'static Recorder {
    RECORDER.get().expect("recorder set up")
}

impl Recorder {
    fn install(capacity: u64) {
        let slots = (0..capacity).map(|_| AtomicU64::new(0)).collect();
        let recorder = Recorder {
            slots,
            handled: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            strangers: AtomicU64::new(0),
            expected: AtomicU64::new(u64::MAX),
            all_handled: Mutex::new(false),
            done: Condvar::new(),
        };
        assert!(RECORDER.set(recorder).is_ok(), "recorder installed twice");
    }

    fn reset(&self, count: u64) {
        assert!(
            count as usize <= self.slots.len(),
            "recorder too small for {count} messages"
        );
        for slot in &self.slots[..count as usize] {
            slot.store(0, Ordering::Relaxed);
        }
        self.handled.store(0, Ordering::Relaxed);
        self.duplicates.store(0, Ordering::Relaxed);
        self.strangers.store(0, Ordering::Relaxed);
        self.expected.store(count, Ordering::Relaxed);
        *self.all_handled.lock().unwrap() = false;
    }

    /// Waits until the expected messages are handled, or `timeout`;
    /// whether they are.
    fn wait(&self, timeout: Duration) -> bool {
        let done = self.all_handled.lock().unwrap();
        let (done, _) = self.done.wait_timeout_while(done, timeout, |d| !*d).unwrap();
        *done
    }

    fn record(&self, order: &Order) {
        let latency = now_ns().saturating_sub(order.sent_ns);
        match self.slots.get(order.id as usize) {
            Some(slot) => {
                if slot.swap(latency + 1, Ordering::Relaxed) != 0 {
                    self.duplicates.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                self.strangers.fetch_add(1, Ordering::Relaxed);
            }
        }
        let handled = self.handled.fetch_add(1, Ordering::AcqRel) + 1;
        if handled == self.expected.load(Ordering::Relaxed) {
            *self.all_handled.lock().unwrap() = true;
            self.done.notify_all();
        }
    }

    /// Panics unless orders `0..count` were each handled exactly once;
    /// returns their latencies.
    fn check(&self, count: u64, scenario: &str) -> Vec<u64> {
        let duplicates = self.duplicates.load(Ordering::Relaxed);
        let strangers = self.strangers.load(Ordering::Relaxed);
        let latencies: Vec<u64> = self.slots[..count as usize]
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .filter(|l| *l != 0)
            .map(|l| l - 1)
            .collect();
        let lost = count - latencies.len() as u64;
        assert!(
            duplicates == 0 && strangers == 0 && lost == 0,
            "{scenario}: {lost} of {count} messages lost, {duplicates} handled twice, \
             {strangers} unexpected"
        );
        latencies
    }
}

/// The wharf handler of the consume scenarios: decoded by wharf, recorded.
async fn take_order(order: Order) {
    recorder().record(&order);
}

/// The wharf handler of the request/reply scenarios.
async fn answer(order: Order) -> Reply<Answer> {
    Reply(Answer {
        id: order.id,
        accepted: true,
    })
}

/// CPU time consumed so far by all threads of this process.
fn process_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID) failed");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Kernel (system) CPU time consumed so far by this process, and its
/// threads' context switches (voluntary and not): a thread that waits for
/// another one's wake-up switches once per wait.
fn process_sys_time_and_switches() -> (Duration, u64) {
    // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage for the duration of the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage failed");
    let sys = Duration::new(usage.ru_stime.tv_sec as u64, usage.ru_stime.tv_usec as u32 * 1000);
    (sys, (usage.ru_nvcsw + usage.ru_nivcsw) as u64)
}

/// Name of the measured runtime's worker threads.
const WORKER_THREAD: &str = "bench-worker";
/// Name of lapin's I/O threads (one per connection).
const LAPIN_THREAD: &str = "lapin-io-loop";

/// CPU time so far of this process's live threads named `WORKER_THREAD`
/// and `LAPIN_THREAD` (from `/proc/self/task/*/schedstat`, in ns; zero
/// where that is not available).
fn thread_cpu_time() -> (Duration, Duration) {
    let (mut workers, mut lapin) = (0u64, 0u64);
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return (Duration::ZERO, Duration::ZERO);
    };
    for task in tasks.flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let target = match comm.trim() {
            WORKER_THREAD => &mut workers,
            LAPIN_THREAD => &mut lapin,
            _ => continue,
        };
        let ns: u64 = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        *target += ns;
    }
    (Duration::from_nanos(workers), Duration::from_nanos(lapin))
}

/// Marks the start of the measured part, for profilers
/// (`callgrind --dump-before=wharf_bench_measure_begin`).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn wharf_bench_measure_begin() {
    black_box(1u8);
}

/// Marks the end of the measured part, for profilers
/// (`callgrind --dump-before=wharf_bench_measure_end`).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn wharf_bench_measure_end() {
    black_box(2u8);
}

/// What the measured part cost the process.
#[derive(Clone, Copy, Debug)]
struct Spent {
    wall: Duration,
    /// CPU time of all threads.
    cpu: Duration,
    /// Of `cpu`, in the kernel.
    sys: Duration,
    /// Context switches of all threads.
    switches: u64,
    /// Of `cpu`, the measured runtime's workers.
    workers: Duration,
    /// Of `cpu`, lapin's I/O threads.
    lapin: Duration,
}

/// Starts measuring at [`Clock::start`].
struct Clock {
    wall: Instant,
    cpu: Duration,
    sys: Duration,
    switches: u64,
    threads: (Duration, Duration),
}

impl Clock {
    fn start() -> Self {
        let threads = thread_cpu_time();
        let (sys, switches) = process_sys_time_and_switches();
        let cpu = process_cpu_time();
        wharf_bench_measure_begin();
        Clock {
            wall: Instant::now(),
            cpu,
            sys,
            switches,
            threads,
        }
    }

    fn stop(self) -> Spent {
        let wall = self.wall.elapsed();
        wharf_bench_measure_end();
        let cpu = process_cpu_time().saturating_sub(self.cpu);
        let (sys, switches) = process_sys_time_and_switches();
        let (workers, lapin) = thread_cpu_time();
        Spent {
            wall,
            cpu,
            sys: sys.saturating_sub(self.sys),
            switches: switches.saturating_sub(self.switches),
            workers: workers.saturating_sub(self.threads.0),
            lapin: lapin.saturating_sub(self.threads.1),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Consumer {
    RawAckEach,
    RawAck64,
    Wharf,
}

impl Consumer {
    const ALL: [Consumer; 3] = [Consumer::RawAckEach, Consumer::RawAck64, Consumer::Wharf];

    fn name(self) -> &'static str {
        match self {
            Consumer::RawAckEach => "raw-ack-each",
            Consumer::RawAck64 => "raw-ack-64",
            Consumer::Wharf => "wharf",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Consumer::RawAckEach => "raw lapin, awaited ack per message",
            Consumer::RawAck64 => "raw lapin, multiple ack per 64",
            Consumer::Wharf => "wharf handler (decode + ack)",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Raw,
    Wharf,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Raw => "raw",
            Side::Wharf => "wharf",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    /// A pre-filled queue, as fast as it goes.
    Consume(Consumer),
    /// Published at a fixed rate while consuming.
    Paced(Consumer),
    /// Sequential requests: client, server.
    Rpc(Side, Side),
}

impl Scenario {
    fn all() -> Vec<Scenario> {
        let mut all: Vec<Scenario> = Consumer::ALL.into_iter().map(Scenario::Consume).collect();
        all.extend(Consumer::ALL.into_iter().map(Scenario::Paced));
        for (client, server) in [
            (Side::Raw, Side::Raw),
            (Side::Wharf, Side::Raw),
            (Side::Raw, Side::Wharf),
            (Side::Wharf, Side::Wharf),
        ] {
            all.push(Scenario::Rpc(client, server));
        }
        all
    }

    fn name(self) -> String {
        match self {
            Scenario::Consume(c) => format!("consume/{}", c.name()),
            Scenario::Paced(c) => format!("paced/{}", c.name()),
            Scenario::Rpc(client, server) => format!("rr/{}-{}", client.name(), server.name()),
        }
    }

    fn selected(self, only: &[String]) -> bool {
        let name = self.name();
        only.is_empty()
            || only.iter().any(|item| {
                name == *item || name.starts_with(&format!("{item}/")) || name.ends_with(&format!("/{item}"))
            })
    }
}

/// What one run of a scenario measured.
#[derive(Clone, Debug)]
struct Measured {
    /// Messages or requests measured.
    count: u64,
    spent: Spent,
    /// Sorted latencies (paced and request/reply), in ns.
    latencies: Vec<u64>,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.count as f64 / self.spent.wall.as_secs_f64()
    }

    /// CPU µs per message or request.
    fn cpu_per(&self) -> f64 {
        self.spent.cpu.as_secs_f64() * 1e6 / self.count as f64
    }

    /// Kernel CPU µs per message or request.
    fn sys_per(&self) -> f64 {
        self.spent.sys.as_secs_f64() * 1e6 / self.count as f64
    }

    /// CPU µs of the runtime's workers per message or request.
    fn workers_per(&self) -> f64 {
        self.spent.workers.as_secs_f64() * 1e6 / self.count as f64
    }

    /// CPU µs of lapin's I/O threads per message or request.
    fn lapin_per(&self) -> f64 {
        self.spent.lapin.as_secs_f64() * 1e6 / self.count as f64
    }

    /// Context switches per message or request.
    fn switches_per(&self) -> f64 {
        self.spent.switches as f64 / self.count as f64
    }

    /// Percentile `p` (0–100) of the latencies, in µs.
    fn percentile(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        let index = rank.clamp(1, self.latencies.len()) - 1;
        self.latencies[index] as f64 / 1e3
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(raw) => raw
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or_else(|| panic!("{name} must be a positive number, not {raw:?}")),
        Err(_) => default,
    }
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

struct Config {
    quick: bool,
    url: String,
    messages: u64,
    paced_messages: u64,
    rate: u64,
    requests: u64,
    runs: usize,
    workers: usize,
    only: Vec<String>,
}

impl Config {
    fn from_env() -> Self {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let has = |flag: &str| args.iter().any(|a| a == flag);
        // Like criterion: `cargo bench` passes `--bench`; without it (cargo
        // test --benches) or with `--test`, a quick smoke run.
        let quick = env_flag("WHARF_BENCH_QUICK") || has("--test") || !has("--bench");
        let (messages, paced, requests, runs) = if quick {
            (500, 200, 100, 1)
        } else {
            (20_000, 4_000, 2_000, 5)
        };
        let only = std::env::var("WHARF_BENCH_ONLY")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        Config {
            quick,
            url: std::env::var("WHARF_TEST_AMQP_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned()),
            messages: env_number("WHARF_BENCH_MESSAGES", messages),
            paced_messages: env_number("WHARF_BENCH_PACED_MESSAGES", paced),
            rate: env_number("WHARF_BENCH_RATE", 2_000),
            requests: env_number("WHARF_BENCH_REQUESTS", requests),
            runs: env_number("WHARF_BENCH_RUNS", runs) as usize,
            workers: env_number("WHARF_BENCH_WORKERS", 2) as usize,
            only,
        }
    }

    fn sizes(&self) -> Sizes {
        Sizes {
            messages: self.messages,
            paced_messages: self.paced_messages,
            requests: self.requests,
        }
    }

    /// Sizes of the unmeasured warm-up round.
    fn warm_up_sizes(&self) -> Sizes {
        Sizes {
            messages: (self.messages / 10).max(100),
            paced_messages: (self.paced_messages / 10).max(50),
            requests: (self.requests / 10).max(20),
        }
    }
}

/// How much one run of each scenario handles.
#[derive(Clone, Copy)]
struct Sizes {
    messages: u64,
    paced_messages: u64,
    requests: u64,
}

impl Sizes {
    /// Unmeasured requests before the measured ones.
    fn warmup_requests(&self) -> u64 {
        (self.requests / 10).clamp(10, 200)
    }
}

fn persistent_json() -> BasicProperties {
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

async fn connect(url: &str) -> Connection {
    Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to RabbitMQ: {e}"))
}

async fn check_confirms(confirms: Vec<PublisherConfirm>, queue: &str) {
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
struct Control {
    runtime: Runtime,
    connection: Connection,
    publisher: Channel,
}

/// The bench.
struct Bench {
    config: Config,
    /// The measured runtime: consumers, wharf apps, request/reply.
    runtime: Runtime,
    control: Control,
    run_id: String,
    queues: Mutex<Vec<String>>,
    next_queue: AtomicU64,
}

impl Bench {
    /// Connects the control connection; `Err` if RabbitMQ is unreachable.
    fn new(config: Config) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.workers)
            .thread_name(WORKER_THREAD)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let control_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bench-control")
            .enable_all()
            .build()
            .expect("tokio runtime");
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
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        Ok(Bench {
            config,
            runtime,
            control: Control {
                runtime: control_runtime,
                connection,
                publisher,
            },
            run_id: format!("{:x}.{:x}", std::process::id(), nanos),
            queues: Mutex::new(Vec::new()),
            next_queue: AtomicU64::new(0),
        })
    }

    /// A fresh queue name (deleted at the end).
    fn queue(&self, scenario: Scenario) -> String {
        let n = self.next_queue.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "wharf-test.bench.{}.{}.{n}",
            self.run_id,
            scenario.name().replace('/', ".")
        );
        self.queues.lock().unwrap().push(name.clone());
        name
    }

    fn declare(&self, queue: &str) {
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
    fn depth(&self, queue: &str) -> (u32, u32) {
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
    fn wait_for_consumer(&self, queue: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.depth(queue).1 == 0 {
            assert!(Instant::now() < deadline, "no consumer on {queue} after 10 s");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Panics unless `queue` is empty once its consumers' connections are
    /// closed: anything delivered but not acked would be back.
    fn assert_empty(&self, queue: &str, scenario: &str) {
        std::thread::sleep(Duration::from_millis(100));
        let (ready, consumers) = self.depth(queue);
        assert_eq!(
            (ready, consumers),
            (0, 0),
            "{scenario}: messages left in {queue} (or consumers still on it)"
        );
    }

    fn delete_all(&self) {
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
    fn prefill(&self, queue: &str, count: u64) {
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
    fn publish_paced(&self, queue: &str, count: u64) -> tokio::task::JoinHandle<()> {
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

    fn run(&self, scenario: Scenario, sizes: Sizes) -> Measured {
        match scenario {
            Scenario::Consume(consumer) => self.consume(scenario, consumer, sizes.messages, false),
            Scenario::Paced(consumer) => self.consume(scenario, consumer, sizes.paced_messages, true),
            Scenario::Rpc(client, server) => self.request_reply(scenario, client, server, sizes),
        }
    }

    /// A consume scenario, pre-filled or paced, of `count` messages.
    fn consume(&self, scenario: Scenario, consumer: Consumer, count: u64, paced: bool) -> Measured {
        let name = scenario.name();
        let queue = self.queue(scenario);
        recorder().reset(count);
        if paced {
            self.declare(&queue);
        } else {
            self.prefill(&queue, count);
        }
        let spent = match consumer {
            Consumer::RawAckEach | Consumer::RawAck64 => {
                let ack_every = if consumer == Consumer::RawAck64 {
                    ACK_EVERY
                } else {
                    1
                };
                let connection = self.runtime.block_on(connect(&self.config.url));
                let channel = self
                    .runtime
                    .block_on(connection.create_channel())
                    .expect("channel");
                let clock = Clock::start();
                let task = self
                    .runtime
                    .spawn(raw_consume(channel.clone(), queue.clone(), count, ack_every));
                let publishing = paced.then(|| {
                    self.wait_for_consumer(&queue);
                    self.publish_paced(&queue, count)
                });
                self.runtime
                    .block_on(async { tokio::time::timeout(RUN_DEADLINE, task).await })
                    .unwrap_or_else(|_| panic!("{name}: not done after {RUN_DEADLINE:?}"))
                    .expect("consumer task")
                    .unwrap_or_else(|e| panic!("{name}: lapin failed: {e}"));
                let measured = clock.stop();
                if let Some(publishing) = publishing {
                    self.control.runtime.block_on(publishing).expect("publisher");
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
                    .block_on(Broker::connect(&self.config.url))
                    .expect("wharf connects");
                let options = RouteOptions::new()
                    .prefetch(usize::from(PREFETCH))
                    .concurrency(usize::from(PREFETCH));
                let clock = Clock::start();
                let running = self
                    .runtime
                    .block_on(
                        App::new(broker.clone())
                            .route_with(&queue, take_order, options)
                            .start(),
                    )
                    .expect("wharf app starts");
                let publishing = paced.then(|| {
                    self.wait_for_consumer(&queue);
                    self.publish_paced(&queue, count)
                });
                wait_until_acked(&running, &queue, count, &name);
                // Raw lapin's clock includes its last ack: so does wharf's.
                self.runtime.block_on(broker.transport().flush());
                let measured = clock.stop();
                if let Some(publishing) = publishing {
                    self.control.runtime.block_on(publishing).expect("publisher");
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
        self.assert_empty(&queue, &name);
        latencies.sort_unstable();
        Measured {
            count,
            spent,
            latencies: if paced { latencies } else { Vec::new() },
        }
    }

    fn request_reply(&self, scenario: Scenario, client: Side, server: Side, sizes: Sizes) -> Measured {
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
                self.declare(&queue);
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
                    .block_on(App::new(broker.clone()).route(&queue, answer).start())
                    .expect("wharf app starts");
                Server::Wharf { broker, running }
            }
        };
        self.wait_for_consumer(&queue);

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
        self.assert_empty(&queue, &name);
        let (spent, mut latencies) = outcome;
        latencies.sort_unstable();
        Measured {
            count: requests,
            spent,
            latencies,
        }
    }
}

/// Waits, from this (non-runtime) thread, until the route has acked
/// `count` messages; panics early on anything but a clean ack. It sleeps
/// until the handler has seen them all (looking at the counters now and
/// then), then polls the counters briefly: the acks follow within
/// microseconds.
fn wait_until_acked(running: &Running, queue: &str, count: u64, scenario: &str) {
    let deadline = Instant::now() + RUN_DEADLINE;
    let check = |stats: &RouteStats| {
        let failed = stats.retried + stats.dead_lettered + stats.rejected + stats.returned + stats.duplicates;
        assert!(
            failed == 0,
            "{scenario}: messages failed during the run: {stats:?}"
        );
        assert!(
            Instant::now() < deadline,
            "{scenario}: only {} of {count} acked after {RUN_DEADLINE:?}: {stats:?}",
            stats.acked
        );
    };
    while !recorder().wait(LOOK_EVERY) {
        check(&running.stats(queue));
    }
    loop {
        let stats = running.stats(queue);
        if stats.acked >= count {
            return;
        }
        check(&stats);
        std::thread::sleep(POLL);
    }
}

/// Every delivery received and acked exactly once, nothing else.
fn check_stats(stats: &RouteStats, count: u64, replies: u64, scenario: &str) {
    let got = [
        stats.received,
        stats.acked,
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
        [count, count, replies, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        "{scenario}: not every message was received and acked exactly once: {stats:?}"
    );
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
            clock = Some(Clock::start());
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
            clock = Some(Clock::start());
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

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Median, min and max of `metric` over the runs.
fn spread(runs: &[Measured], metric: impl Fn(&Measured) -> f64) -> (f64, f64, f64) {
    let values: Vec<f64> = runs.iter().map(metric).collect();
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (median(values), min, max)
}

fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// What a ratio should be.
#[derive(Clone, Copy)]
enum Goal {
    AtLeast(f64),
    AtMost(f64),
}

fn report(bench: &Bench, results: &[(Scenario, Vec<Measured>)]) {
    let config = &bench.config;
    let find = |scenario: Scenario| {
        results
            .iter()
            .find(|(s, _)| *s == scenario)
            .map(|(_, runs)| runs.as_slice())
    };
    println!();
    println!(
        "wharf vs raw lapin on RabbitMQ ({}): {PAYLOAD_BYTES}-byte JSON, prefetch {PREFETCH}, \
         {} tokio workers; median of {} run(s)",
        wharf_redacted(&config.url),
        config.workers,
        config.runs
    );
    if config.quick {
        println!("(quick smoke run: too few messages for meaningful figures)");
    }

    let consume: Vec<_> = Consumer::ALL
        .into_iter()
        .filter_map(|c| find(Scenario::Consume(c)).map(|runs| (c, runs)))
        .collect();
    if !consume.is_empty() {
        println!();
        println!(
            "consume, queue pre-filled with {} persistent messages",
            thousands(config.messages as f64)
        );
        println!(
            "  {:<38} {:>8} {:>17} {:>11} {:>9} {:>9} {:>9} {:>10}",
            "consumer", "msg/s", "(min-max)", "CPU µs/msg", "(kernel)", "(tokio)", "(lapin)", "cswch/msg"
        );
        for (consumer, runs) in &consume {
            let (rate, low, high) = spread(runs, Measured::rate);
            let (cpu, _, _) = spread(runs, Measured::cpu_per);
            let (sys, _, _) = spread(runs, Measured::sys_per);
            let (workers, _, _) = spread(runs, Measured::workers_per);
            let (lapin, _, _) = spread(runs, Measured::lapin_per);
            let (switches, _, _) = spread(runs, Measured::switches_per);
            println!(
                "  {:<38} {:>8} {:>17} {:>11.2} {:>9.2} {:>9.2} {:>9.2} {:>10.2}",
                consumer.label(),
                thousands(rate),
                format!("({}-{})", thousands(low), thousands(high)),
                cpu,
                sys,
                workers,
                lapin,
                switches
            );
        }
        println!(
            "  (CPU of the whole process: of it the kernel's share, the tokio workers' and lapin's I/O thread's)"
        );
    }

    let paced: Vec<_> = Consumer::ALL
        .into_iter()
        .filter_map(|c| find(Scenario::Paced(c)).map(|runs| (c, runs)))
        .collect();
    if !paced.is_empty() {
        println!();
        println!(
            "paced: {} messages published at {} msg/s while consuming; publish -> handler latency",
            thousands(config.paced_messages as f64),
            thousands(config.rate as f64)
        );
        println!(
            "  {:<38} {:>8} {:>13} {:>8} {:>11} {:>10}",
            "consumer", "p50 µs", "(min-max)", "p99 µs", "CPU µs/msg", "cswch/msg"
        );
        for (consumer, runs) in &paced {
            let (p50, low, high) = spread(runs, |m| m.percentile(50.0));
            let (p99, _, _) = spread(runs, |m| m.percentile(99.0));
            let (cpu, _, _) = spread(runs, Measured::cpu_per);
            let (switches, _, _) = spread(runs, Measured::switches_per);
            println!(
                "  {:<38} {:>8.0} {:>13} {:>8.0} {:>11.2} {:>10.2}",
                consumer.label(),
                p50,
                format!("({low:.0}-{high:.0})"),
                p99,
                cpu,
                switches
            );
        }
        println!("  (CPU and context switches include the publisher: one process)");
    }

    let pairs = [
        (Side::Raw, Side::Raw),
        (Side::Wharf, Side::Raw),
        (Side::Raw, Side::Wharf),
        (Side::Wharf, Side::Wharf),
    ];
    let rpc: Vec<_> = pairs
        .into_iter()
        .filter_map(|(c, s)| find(Scenario::Rpc(c, s)).map(|runs| ((c, s), runs)))
        .collect();
    if !rpc.is_empty() {
        println!();
        println!(
            "request/reply: {} sequential requests (after {} warm-up), direct reply-to",
            thousands(config.requests as f64),
            config.sizes().warmup_requests()
        );
        println!(
            "  {:<38} {:>8} {:>8} {:>13} {:>8} {:>11} {:>10}",
            "client -> server", "req/s", "p50 µs", "(min-max)", "p99 µs", "CPU µs/req", "cswch/req"
        );
        for ((client, server), runs) in &rpc {
            let (rate, _, _) = spread(runs, Measured::rate);
            let (p50, low, high) = spread(runs, |m| m.percentile(50.0));
            let (p99, _, _) = spread(runs, |m| m.percentile(99.0));
            let (cpu, _, _) = spread(runs, Measured::cpu_per);
            let (switches, _, _) = spread(runs, Measured::switches_per);
            println!(
                "  {:<38} {:>8} {:>8.0} {:>13} {:>8.0} {:>11.2} {:>10.2}",
                format!("{} -> {}", client.name(), server.name()),
                thousands(rate),
                p50,
                format!("({low:.0}-{high:.0})"),
                p99,
                cpu,
                switches
            );
        }
        println!("  (CPU and context switches cover client and server: one process)");
    }

    // Ratios: each from the medians above.
    let median_of = |scenario: Scenario, metric: &dyn Fn(&Measured) -> f64| {
        find(scenario).map(|runs| spread(runs, metric).0)
    };
    let rate = |c| median_of(Scenario::Consume(c), &Measured::rate);
    let cpu = |c| median_of(Scenario::Consume(c), &Measured::cpu_per);
    let p50 = |c, s| median_of(Scenario::Rpc(c, s), &|m: &Measured| m.percentile(50.0));
    let paced_p50 = |c| median_of(Scenario::Paced(c), &|m: &Measured| m.percentile(50.0));
    let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
    let lines: [(&str, Option<f64>, Option<Goal>); 8] = [
        (
            "wharf consume / raw multiple-ack (msg/s)",
            ratio(rate(Consumer::Wharf), rate(Consumer::RawAck64)),
            Some(Goal::AtLeast(0.95)),
        ),
        (
            "wharf consume / raw awaited-ack (msg/s)",
            ratio(rate(Consumer::Wharf), rate(Consumer::RawAckEach)),
            None,
        ),
        (
            "wharf / raw multiple-ack (CPU per message)",
            ratio(cpu(Consumer::Wharf), cpu(Consumer::RawAck64)),
            None,
        ),
        (
            "wharf / raw multiple-ack (paced p50)",
            ratio(paced_p50(Consumer::Wharf), paced_p50(Consumer::RawAck64)),
            None,
        ),
        (
            "wharf -> wharf / raw -> raw (rr p50)",
            ratio(p50(Side::Wharf, Side::Wharf), p50(Side::Raw, Side::Raw)),
            Some(Goal::AtMost(1.1)),
        ),
        (
            "wharf client / raw client, raw server (p50)",
            ratio(p50(Side::Wharf, Side::Raw), p50(Side::Raw, Side::Raw)),
            None,
        ),
        (
            "wharf server / raw server, raw client (p50)",
            ratio(p50(Side::Raw, Side::Wharf), p50(Side::Raw, Side::Raw)),
            None,
        ),
        (
            "wharf client / raw client, wharf server (p50)",
            ratio(p50(Side::Wharf, Side::Wharf), p50(Side::Raw, Side::Wharf)),
            None,
        ),
    ];
    if lines.iter().any(|(_, value, _)| value.is_some()) {
        println!();
        println!("ratios (of the medians)");
        for (label, value, goal) in lines {
            let Some(value) = value else { continue };
            let verdict = match goal {
                Some(Goal::AtLeast(goal)) if value >= goal => format!("goal >= {goal}: MET"),
                Some(Goal::AtLeast(goal)) => format!("goal >= {goal}: MISSED"),
                Some(Goal::AtMost(goal)) if value <= goal => format!("goal <= {goal}: MET"),
                Some(Goal::AtMost(goal)) => format!("goal <= {goal}: MISSED"),
                None => String::new(),
            };
            println!("  {label:<48} {value:>6.2}  {verdict}");
        }
    }
}

/// The URL without its password, for printing.
fn wharf_redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            let user = credentials.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

fn main() {
    let config = Config::from_env();
    let scenarios: Vec<Scenario> = Scenario::all()
        .into_iter()
        .filter(|s| s.selected(&config.only))
        .collect();
    assert!(
        !scenarios.is_empty(),
        "WHARF_BENCH_ONLY={:?} selects no scenario; names: {:?}",
        config.only,
        Scenario::all().iter().map(|s| s.name()).collect::<Vec<_>>()
    );
    let url = wharf_redacted(&config.url);
    let bench = match Bench::new(config) {
        Ok(bench) => bench,
        Err(error) => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            if ci {
                eprintln!("CI=true and RabbitMQ at {url} is not usable: {error}");
                std::process::exit(1);
            }
            println!(
                "\n!!! SKIPPED: the amqp bench needs RabbitMQ at {url}, which is not reachable ({error}); \
                 run scripts/brokers.sh to start it. With CI=true this fails.\n"
            );
            return;
        }
    };
    Recorder::install(bench.config.messages.max(bench.config.paced_messages));
    let config = &bench.config;
    eprintln!(
        "amqp bench: {} scenario(s), {} run(s) each{}",
        scenarios.len(),
        config.runs,
        if config.quick { " (quick)" } else { "" }
    );

    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if !config.quick {
            // One smaller, unmeasured run of each: connections, allocator
            // and broker warm, so the first measured round is not an outlier.
            let sizes = config.warm_up_sizes();
            for scenario in &scenarios {
                bench.run(*scenario, sizes);
            }
            bench.delete_all();
            eprintln!("  warmed up");
        }
        let mut results: Vec<(Scenario, Vec<Measured>)> =
            scenarios.iter().map(|s| (*s, Vec::new())).collect();
        // Runs interleaved, so the machine's drift spreads over every scenario.
        for round in 0..config.runs {
            for (scenario, runs) in results.iter_mut() {
                let measured = bench.run(*scenario, config.sizes());
                let latency = if measured.latencies.is_empty() {
                    String::new()
                } else {
                    format!(
                        "  p50 {:>5.0} µs  p99 {:>5.0} µs",
                        measured.percentile(50.0),
                        measured.percentile(99.0)
                    )
                };
                eprintln!(
                    "  run {}/{} {:<22} {:>7} /s {:>8.2} CPU µs (tokio {:.2}, lapin {:.2}) {:>6.2} cswch each{latency}",
                    round + 1,
                    config.runs,
                    scenario.name(),
                    thousands(measured.rate()),
                    measured.cpu_per(),
                    measured.workers_per(),
                    measured.lapin_per(),
                    measured.switches_per(),
                );
                runs.push(measured);
            }
            // The queues of a round go at once: a full run holds 60,000
            // persistent messages' worth of queues otherwise.
            bench.delete_all();
        }
        results
    }));
    bench.delete_all();
    match outcome {
        Ok(results) => report(&bench, &results),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
