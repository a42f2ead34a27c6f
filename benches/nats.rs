//! wharf on NATS against raw `async-nats`: same run, same server, same
//! 256-byte JSON payload.
//!
//! **Consume** (each run on a fresh stream, pre-filled with
//! `WHARF_BENCH_MESSAGES` messages, 200,000 by default: about 1.3 s of
//! consuming; at 50,000, 0.3 s, the ratio's 11-run medians ranged from
//! 0.83 to 0.98 over one morning. Published with JetStream publish acks to `wharf.p0.<queue>` before the consumer starts):
//!
//! - `consume/raw`: a stream made the way wharf makes one (`WHARF_<queue>`,
//!   subjects `wharf.p0.<queue>` … `wharf.p9.<queue>`, WorkQueue retention,
//!   file storage), a durable pull consumer `wharf` (explicit ack, ack wait
//!   30 s), `consumer.stream().max_messages_per_batch(256)`; each message is
//!   decoded with `serde_json` and acked (`message.ack().await`); at the end
//!   `client.flush()`, so the last ack has reached the server;
//! - `consume/wharf`: `Broker::declare`, the same pre-fill, then
//!   `App::route_with(queue, handler, prefetch 256, concurrency 256)` with a
//!   typed handler `async fn(Order)`: wharf decodes, runs the handler and
//!   acks; at the end `Transport::flush`.
//!
//! The clock runs from the first message handled to the last ack sent (and
//! flushed), so the consumer's start-up (JetStream API calls to look up or
//! create the stream and consumer, which wharf makes more of) is not in the
//! throughput; it is shown apart, as `start ms`: from starting the consumer
//! to the first message.
//!
//! **Request/reply** (`rr/<client>-<server>`: `WHARF_BENCH_REQUESTS`, 5,000,
//! sequential requests, one at a time, after a warm-up; `rr64/…`:
//! `WHARF_BENCH_INFLIGHT_REQUESTS`, 50,000, from 64 tasks that each keep one
//! request in flight), every pairing of a raw or wharf client and a raw or
//! wharf server, each on its own connection, all on core NATS (no
//! JetStream):
//!
//! - raw server: `queue_subscribe("wharf.*.<queue>", "wharf")`; decodes the
//!   order, encodes the answer and publishes it to the request's reply
//!   subject (with `correlation-id` and `wharf-status: ok` headers when the
//!   request carries a `correlation-id`, as a wharf client expects);
//! - raw client: `client.request("wharf.p0.<queue>", body)` (async-nats'
//!   shared inbox subscription);
//! - wharf server: a route with `RouteOptions::persistent(false)` (a core
//!   NATS service) returning `Reply<Answer>`, concurrency 64;
//! - wharf client: `Broker::client().request(queue, &order)`.
//!
//! Servers run on a runtime of their own (threads `bench-server`, with
//! their own NATS connection), clients on the measured runtime (threads
//! `bench-worker`), so CPU time splits into client and server; the
//! nats-server process's CPU time (from `/proc`, when it runs on this
//! machine) is shown too.
//!
//! Figures: messages (requests)/s; p50/p99 round trips; CPU µs per message
//! of the client side (the measured runtime's worker threads: the consumer
//! or the requesting client, with its NATS connection task), of the server
//! side (rr), of the whole process (kernel share apart), and of nats-server;
//! context switches per message (process, `getrusage`).
//!
//! Every scenario runs `WHARF_BENCH_RUNS` (5) times, interleaved (each round
//! in an order of its own, shuffled from `WHARF_BENCH_SEED`, 1 unless set),
//! after one smaller unmeasured round, and the
//! table shows medians (min–max for throughput and p50), then the ratios
//! the project aims for: wharf consume
//! ≥ 0.9× raw, wharf → wharf request/reply p50 ≤ 1.1× raw → raw, and with
//! 64 in flight ≥ 0.9× raw throughput. It is a report and never fails
//! because of a goal; it panics if a message is lost, handled twice,
//! retried, dead-lettered or left in its stream, or a request fails.
//!
//! ```text
//! cargo bench --features nats --bench nats              # full run, about 2 minutes
//! cargo bench --features nats --bench nats -- --test    # smoke run (or WHARF_BENCH_QUICK=1)
//! ```
//!
//! NATS (with JetStream, `nats-server -js`) at `WHARF_TEST_NATS_URL`
//! (default `nats://127.0.0.1:4222`); if it is unreachable the bench prints
//! `SKIPPED` and exits 0, or fails with `CI=true`. Queues are named
//! `wharf-test.bench.*`; every stream whose name holds this run's queue
//! prefix (`WHARF_wharf-test_2Ebench_2E<run>…`, and wharf's dead-letter and
//! delay streams) is deleted after each round and at the end.
//!
//! `WHARF_BENCH_ONLY=<items>` (comma-separated) runs only the scenarios
//! whose name is an item, starts with `<item>/`, or ends with `/<item>`:
//! `consume` = both consumers; `rr64` = all request/reply with 64 in
//! flight. `WHARF_BENCH_WORKERS` changes the number of tokio workers of the
//! measured runtime (2), `WHARF_BENCH_SERVER_WORKERS` those of the servers'
//! runtime (2), `WHARF_BENCH_IN_FLIGHT` the requests in flight (64).

use async_nats::jetstream;
use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::stream::{RetentionPolicy, StorageType};
use async_nats::{HeaderMap, RequestErrorKind};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::hint::black_box;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;
use wharf::transport::QueueSpec;
use wharf::{App, Broker, Reply, RouteOptions, RouteStats, Running};

const DEFAULT_URL: &str = "nats://127.0.0.1:4222";
const PAYLOAD_BYTES: usize = 256;
/// Pull batch of the raw consumer; prefetch and concurrency of wharf's.
const BATCH: usize = 256;
/// The durable consumer wharf uses on a queue without priority.
const CONSUMER: &str = "wharf";
/// Core NATS queue group of services (raw and wharf).
const QUEUE_GROUP: &str = "wharf";
/// Handlers at once on the wharf request/reply route.
const SERVER_CONCURRENCY: usize = 64;
/// How often the main thread looks at wharf's counters once the handler
/// has seen every message (a plain thread sleep: it does not wake the
/// runtime).
const POLL: Duration = Duration::from_micros(50);
/// How often it looks for failures before that.
const LOOK_EVERY: Duration = Duration::from_millis(50);
/// A run that has not finished by then is stuck.
const RUN_DEADLINE: Duration = Duration::from_secs(120);
/// How long the first request of a run may find no responder (the
/// server's subscription is not at the NATS server yet).
const RESPONDER_DEADLINE: Duration = Duration::from_secs(5);
/// Messages published before waiting for their publish acks when
/// pre-filling.
const PREFILL_WINDOW: u64 = 1_000;

/// The payload: its JSON encoding is exactly [`PAYLOAD_BYTES`] long (the
/// note pads it).
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

fn order(id: u64) -> Order {
    let mut order = Order {
        id,
        sent_ns: 0,
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

fn order_json(id: u64) -> Bytes {
    let body = serde_json::to_vec(&order(id)).expect("encode order");
    assert_eq!(body.len(), PAYLOAD_BYTES, "payload size");
    Bytes::from(body)
}

/// Which orders were handled and whether any twice, and when the first one
/// was. Shared by the raw consumer and the wharf handler (a global, as the
/// handler is a plain `async fn`), so both do the same work per message.
struct Recorder {
    /// Times handled, by order id.
    slots: Vec<AtomicU8>,
    handled: AtomicU64,
    duplicates: AtomicU64,
    strangers: AtomicU64,
    /// Handled messages that complete the run.
    expected: AtomicU64,
    /// The clock, started by the first message handled.
    first: Mutex<Option<Clock>>,
    /// Set (and signalled) when `expected` messages are handled: the
    /// measuring thread sleeps on it instead of polling.
    all_handled: Mutex<bool>,
    done: Condvar,
}

static RECORDER: OnceLock<Recorder> = OnceLock::new();

fn recorder() -> &'static Recorder {
    RECORDER.get().expect("recorder set up")
}

impl Recorder {
    fn install(capacity: u64) {
        let slots = (0..capacity).map(|_| AtomicU8::new(0)).collect();
        let recorder = Recorder {
            slots,
            handled: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            strangers: AtomicU64::new(0),
            expected: AtomicU64::new(u64::MAX),
            first: Mutex::new(None),
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
        *self.first.lock().unwrap() = None;
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
        match self.slots.get(order.id as usize) {
            Some(slot) => {
                if slot.fetch_add(1, Ordering::Relaxed) != 0 {
                    self.duplicates.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                self.strangers.fetch_add(1, Ordering::Relaxed);
            }
        }
        let handled = self.handled.fetch_add(1, Ordering::AcqRel) + 1;
        if handled == 1 {
            *self.first.lock().unwrap() = Some(Clock::start());
        }
        if handled == self.expected.load(Ordering::Relaxed) {
            *self.all_handled.lock().unwrap() = true;
            self.done.notify_all();
        }
    }

    /// The clock the first message started.
    fn take_clock(&self) -> Clock {
        self.first.lock().unwrap().take().expect("a first message")
    }

    /// Panics unless orders `0..count` were each handled exactly once.
    fn check(&self, count: u64, scenario: &str) {
        let duplicates = self.duplicates.load(Ordering::Relaxed);
        let strangers = self.strangers.load(Ordering::Relaxed);
        let handled = self.slots[..count as usize]
            .iter()
            .filter(|s| s.load(Ordering::Relaxed) != 0)
            .count() as u64;
        let lost = count - handled;
        assert!(
            duplicates == 0 && strangers == 0 && lost == 0,
            "{scenario}: {lost} of {count} messages lost, {duplicates} handled twice, \
             {strangers} unexpected"
        );
    }
}

/// The wharf handler of the consume scenario: decoded by wharf, recorded.
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
/// threads' context switches (voluntary and not).
fn process_sys_time_and_switches() -> (Duration, u64) {
    // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage for the duration of the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage failed");
    let sys = Duration::new(usage.ru_stime.tv_sec as u64, usage.ru_stime.tv_usec as u32 * 1000);
    (sys, (usage.ru_nvcsw + usage.ru_nivcsw) as u64)
}

/// Name of the measured runtime's worker threads (consumers, clients).
const WORKER_THREAD: &str = "bench-worker";
/// Name of the servers' runtime's worker threads.
const SERVER_THREAD: &str = "bench-server";

/// Run time in ns of a task directory's `schedstat` (0 if unreadable).
fn schedstat_ns(task: &std::path::Path) -> u64 {
    std::fs::read_to_string(task.join("schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU time so far of this process's live threads named `WORKER_THREAD`
/// and `SERVER_THREAD` (from `/proc/self/task/*/schedstat`; zero where
/// that is not available).
fn thread_cpu_time() -> (Duration, Duration) {
    let (mut workers, mut servers) = (0u64, 0u64);
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return (Duration::ZERO, Duration::ZERO);
    };
    for task in tasks.flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let target = match comm.trim() {
            WORKER_THREAD => &mut workers,
            SERVER_THREAD => &mut servers,
            _ => continue,
        };
        *target += schedstat_ns(&path);
    }
    (Duration::from_nanos(workers), Duration::from_nanos(servers))
}

/// Processes named `nats-server` on this machine (looked up once).
fn nats_server_pids() -> &'static [u32] {
    static PIDS: OnceLock<Vec<u32>> = OnceLock::new();
    PIDS.get_or_init(|| {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| {
                let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
                let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
                (comm.trim() == "nats-server").then_some(pid)
            })
            .collect()
    })
}

/// CPU time so far of the local nats-server process(es), all threads;
/// `None` if there is none or it cannot be read.
fn nats_server_cpu_time() -> Option<Duration> {
    let pids = nats_server_pids();
    if pids.is_empty() {
        return None;
    }
    let mut ns = 0;
    for pid in pids {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
        for task in tasks.flatten() {
            ns += schedstat_ns(&task.path());
        }
    }
    (ns > 0).then(|| Duration::from_nanos(ns))
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

/// What the measured part cost.
#[derive(Clone, Copy, Debug)]
struct Spent {
    wall: Duration,
    /// CPU time of all threads of this process.
    cpu: Duration,
    /// Of `cpu`, in the kernel.
    sys: Duration,
    /// Context switches of all threads.
    switches: u64,
    /// Of `cpu`, the measured runtime's workers (the client side).
    workers: Duration,
    /// Of `cpu`, the servers' runtime's workers.
    servers: Duration,
    /// CPU time of nats-server, if it runs here.
    nats_server: Option<Duration>,
}

/// Starts measuring at [`Clock::start`].
#[derive(Debug)]
struct Clock {
    wall: Instant,
    cpu: Duration,
    sys: Duration,
    switches: u64,
    threads: (Duration, Duration),
    nats_server: Option<Duration>,
}

impl Clock {
    /// The process's figures are taken outermost, so that they include
    /// the cost of reading the others from `/proc`.
    fn start() -> Self {
        let cpu = process_cpu_time();
        let (sys, switches) = process_sys_time_and_switches();
        let nats_server = nats_server_cpu_time();
        let threads = thread_cpu_time();
        wharf_bench_measure_begin();
        Clock {
            wall: Instant::now(),
            cpu,
            sys,
            switches,
            threads,
            nats_server,
        }
    }

    fn stop(self) -> Spent {
        let wall = self.wall.elapsed();
        wharf_bench_measure_end();
        let (workers, servers) = thread_cpu_time();
        let nats_server = nats_server_cpu_time()
            .zip(self.nats_server)
            .map(|(now, then)| now.saturating_sub(then));
        let (sys, switches) = process_sys_time_and_switches();
        let cpu = process_cpu_time().saturating_sub(self.cpu);
        Spent {
            wall,
            cpu,
            sys: sys.saturating_sub(self.sys),
            switches: switches.saturating_sub(self.switches),
            workers: workers.saturating_sub(self.threads.0),
            servers: servers.saturating_sub(self.threads.1),
            nats_server,
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

const PAIRS: [(Side, Side); 4] = [
    (Side::Raw, Side::Raw),
    (Side::Wharf, Side::Raw),
    (Side::Raw, Side::Wharf),
    (Side::Wharf, Side::Wharf),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    /// A pre-filled stream, as fast as it goes.
    Consume(Side),
    /// Sequential requests: client, server.
    Rpc(Side, Side),
    /// Requests with many in flight: client, server.
    RpcInFlight(Side, Side),
}

impl Scenario {
    fn all() -> Vec<Scenario> {
        let mut all = vec![Scenario::Consume(Side::Raw), Scenario::Consume(Side::Wharf)];
        all.extend(PAIRS.into_iter().map(|(c, s)| Scenario::Rpc(c, s)));
        all.extend(PAIRS.into_iter().map(|(c, s)| Scenario::RpcInFlight(c, s)));
        all
    }

    fn name(self) -> String {
        match self {
            Scenario::Consume(side) => format!("consume/{}", side.name()),
            Scenario::Rpc(client, server) => format!("rr/{}-{}", client.name(), server.name()),
            Scenario::RpcInFlight(client, server) => {
                format!("rr64/{}-{}", client.name(), server.name())
            }
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
    /// Sorted round trips (request/reply), in ns.
    latencies: Vec<u64>,
    /// Consume: from starting the consumer to the first message.
    startup: Option<Duration>,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.count as f64 / self.spent.wall.as_secs_f64()
    }

    fn per(&self, time: Duration) -> f64 {
        time.as_secs_f64() * 1e6 / self.count as f64
    }

    /// CPU µs per message or request, whole process.
    fn cpu_per(&self) -> f64 {
        self.per(self.spent.cpu)
    }

    /// Kernel CPU µs per message or request.
    fn sys_per(&self) -> f64 {
        self.per(self.spent.sys)
    }

    /// CPU µs of the client side (measured runtime) per message or request.
    fn client_per(&self) -> f64 {
        self.per(self.spent.workers)
    }

    /// CPU µs of the servers' runtime per request.
    fn server_per(&self) -> f64 {
        self.per(self.spent.servers)
    }

    /// CPU µs of nats-server per message or request (NaN if unknown).
    fn nats_server_per(&self) -> f64 {
        self.spent.nats_server.map_or(f64::NAN, |t| self.per(t))
    }

    /// Context switches per message or request.
    fn switches_per(&self) -> f64 {
        self.spent.switches as f64 / self.count as f64
    }

    fn startup_ms(&self) -> f64 {
        self.startup.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
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

/// A round's order of the scenarios: Fisher–Yates with SplitMix64, so a
/// seed gives the same orders on every machine (no dependency for ten
/// lines).
struct Shuffle(u64);

impl Shuffle {
    fn new(seed: u64) -> Self {
        Shuffle(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// `0..count` in a new order.
    fn permutation(&mut self, count: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..count).collect();
        for i in (1..count).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        order
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
    requests: u64,
    in_flight_requests: u64,
    in_flight: u64,
    runs: usize,
    workers: usize,
    server_workers: usize,
    /// Seeds the order of the scenarios in each round.
    seed: u64,
    only: Vec<String>,
}

impl Config {
    fn from_env() -> Self {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let has = |flag: &str| args.iter().any(|a| a == flag);
        // Like criterion: `cargo bench` passes `--bench`; without it (cargo
        // test --benches) or with `--test`, a quick smoke run.
        let quick = env_flag("WHARF_BENCH_QUICK") || has("--test") || !has("--bench");
        let (messages, requests, in_flight_requests, runs) = if quick {
            (1_000, 200, 1_000, 1)
        } else {
            (200_000, 5_000, 50_000, 5)
        };
        let only = std::env::var("WHARF_BENCH_ONLY")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let workers = env_number("WHARF_BENCH_WORKERS", 2) as usize;
        Config {
            quick,
            url: std::env::var("WHARF_TEST_NATS_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned()),
            messages: env_number("WHARF_BENCH_MESSAGES", messages),
            requests: env_number("WHARF_BENCH_REQUESTS", requests),
            in_flight_requests: env_number("WHARF_BENCH_INFLIGHT_REQUESTS", in_flight_requests),
            in_flight: env_number("WHARF_BENCH_IN_FLIGHT", 64),
            runs: env_number("WHARF_BENCH_RUNS", runs) as usize,
            workers,
            server_workers: env_number("WHARF_BENCH_SERVER_WORKERS", 2) as usize,
            seed: env_number("WHARF_BENCH_SEED", 1),
            only,
        }
    }

    fn sizes(&self) -> Sizes {
        Sizes {
            messages: self.messages,
            requests: self.requests,
            in_flight_requests: self.in_flight_requests,
        }
    }

    /// Sizes of the unmeasured warm-up round.
    fn warm_up_sizes(&self) -> Sizes {
        Sizes {
            messages: (self.messages / 10).max(100),
            requests: (self.requests / 10).max(20),
            in_flight_requests: (self.in_flight_requests / 10).max(200),
        }
    }
}

/// How much one run of each scenario handles.
#[derive(Clone, Copy)]
struct Sizes {
    messages: u64,
    requests: u64,
    in_flight_requests: u64,
}

impl Sizes {
    /// Unmeasured sequential requests before the measured ones.
    fn warmup_requests(&self) -> u64 {
        (self.requests / 10).clamp(10, 200)
    }
}

/// `enc` of the NATS mapping: keeps `[A-Za-z0-9-]`, writes every other
/// byte as `_XX`.
fn enc(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("_{byte:02X}"));
        }
    }
    out
}

/// The stream holding `queue`.
fn stream_name(queue: &str) -> String {
    format!("WHARF_{}", enc(queue))
}

/// The subject of `queue` at priority 0.
fn subject(queue: &str) -> String {
    format!("wharf.p0.{queue}")
}

/// The stream wharf makes for a queue without priority, made by hand.
fn stream_config(queue: &str) -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: stream_name(queue),
        subjects: (0..=9).map(|p| format!("wharf.p{p}.{queue}")).collect(),
        retention: RetentionPolicy::WorkQueue,
        storage: StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

/// The durable pull consumer wharf makes, made by hand.
fn consumer_config() -> pull::Config {
    pull::Config {
        durable_name: Some(CONSUMER.to_owned()),
        ack_policy: AckPolicy::Explicit,
        ack_wait: Duration::from_secs(30),
        max_deliver: -1,
        ..Default::default()
    }
}

/// The wharf route of the request/reply scenarios: a core NATS service.
fn service_options() -> RouteOptions {
    RouteOptions::new()
        .persistent(false)
        .concurrency(SERVER_CONCURRENCY)
}

async fn connect(url: &str) -> async_nats::Client {
    async_nats::connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to NATS: {e}"))
}

/// The bench's own connection for pre-filling and stream administration,
/// on a runtime of its own (one worker), so that it does not share the
/// measured runtime.
struct Control {
    runtime: Runtime,
    js: jetstream::Context,
}

/// The bench.
struct Bench {
    config: Config,
    /// The measured runtime: consumers and clients.
    runtime: Runtime,
    /// Request/reply servers, raw and wharf.
    servers: Runtime,
    control: Control,
    run_id: String,
    next_queue: AtomicU64,
}

impl Bench {
    /// Connects the control connection; `Err` if NATS with JetStream is not
    /// reachable.
    fn new(config: Config) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.workers)
            .thread_name(WORKER_THREAD)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let servers = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.server_workers)
            .thread_name(SERVER_THREAD)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let control_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bench-control")
            .enable_all()
            .build()
            .expect("tokio runtime");
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
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        Ok(Bench {
            config,
            runtime,
            servers,
            control: Control {
                runtime: control_runtime,
                js,
            },
            run_id: format!("{:x}.{:x}", std::process::id(), nanos),
            next_queue: AtomicU64::new(0),
        })
    }

    /// The prefix of this run's queue names.
    fn queue_prefix(&self) -> String {
        format!("wharf-test.bench.{}.", self.run_id)
    }

    /// A fresh queue name (its streams are deleted at the end).
    fn queue(&self, scenario: Scenario) -> String {
        let n = self.next_queue.fetch_add(1, Ordering::Relaxed);
        format!("{}{}.{n}", self.queue_prefix(), scenario.name().replace('/', "."))
    }

    /// Deletes every stream whose name holds this run's queue prefix:
    /// the bench's own and whatever wharf made for its queues.
    fn delete_all(&self) {
        let marker = enc(&self.queue_prefix());
        self.delete_streams(|name| name.contains(&marker));
    }

    /// Deletes the streams earlier bench processes that are gone left
    /// behind (a run that panicked while NATS was away, or was killed).
    fn sweep_leftovers(&self) {
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
    fn assert_empty(&self, queue: &str, scenario: &str) {
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
    fn prefill(&self, queue: &str, count: u64) {
        let subject = subject(queue);
        let js = &self.control.js;
        self.control.runtime.block_on(async {
            let mut id = 0;
            while id < count {
                let end = (id + PREFILL_WINDOW).min(count);
                let mut acks = Vec::with_capacity((end - id) as usize);
                for id in id..end {
                    let ack = js
                        .publish(subject.clone(), order_json(id))
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

    fn run(&self, scenario: Scenario, sizes: Sizes) -> Measured {
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
        }
    }

    /// The consume scenario: `count` messages pre-filled.
    fn consume(&self, scenario: Scenario, side: Side, count: u64) -> Measured {
        let name = scenario.name();
        let queue = self.queue(scenario);
        recorder().reset(count);
        let (spent, startup) = match side {
            Side::Raw => {
                self.control.runtime.block_on(async {
                    self.control
                        .js
                        .create_stream(stream_config(&queue))
                        .await
                        .unwrap_or_else(|e| panic!("create stream for {queue}: {e}"));
                });
                self.prefill(&queue, count);
                let client = self.runtime.block_on(connect(&self.config.url));
                let started = Instant::now();
                let task = self
                    .runtime
                    .spawn(raw_consume(client.clone(), stream_name(&queue), count));
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
            Side::Wharf => {
                let broker = self
                    .runtime
                    .block_on(Broker::connect(&self.config.url))
                    .expect("wharf connects");
                self.runtime
                    .block_on(broker.declare(&QueueSpec::new(&queue)))
                    .unwrap_or_else(|e| panic!("{name}: Broker::declare({queue}): {e}"));
                self.prefill(&queue, count);
                let options = RouteOptions::new().prefetch(BATCH).concurrency(BATCH);
                let started = Instant::now();
                let running = self
                    .runtime
                    .block_on(
                        App::new(broker.clone())
                            .route_with(&queue, take_order, options)
                            .start(),
                    )
                    .expect("wharf app starts");
                wait_until_acked(&running, &queue, count, &name);
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
                (measured, startup)
            }
        };
        recorder().check(count, &name);
        self.assert_empty(&queue, &name);
        Measured {
            // The clock starts at the first message.
            count: count - 1,
            spent,
            latencies: Vec::new(),
            startup: Some(startup),
        }
    }

    /// A request/reply scenario: `warmup` sequential requests, then
    /// `requests` measured ones, `in_flight` at a time.
    fn request_reply(
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
        }
    }
}

/// Waits, from this (non-runtime) thread, until the route has acked
/// `count` messages; panics early on anything but a clean ack. It sleeps
/// until the handler has seen them all (looking at the counters now and
/// then), then polls the counters briefly.
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
                    .request(subject.clone(), order_json(id))
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
                .request(queue, &order(id))
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
        let clock = Clock::start();
        for id in warmup..total {
            let started = Instant::now();
            caller.call(id).await?;
            latencies.push(started.elapsed().as_nanos() as u64);
        }
        return Ok((clock.stop(), latencies));
    }
    let next = Arc::new(AtomicU64::new(warmup));
    let clock = Clock::start();
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
    if !value.is_finite() {
        return "-".to_owned();
    }
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
        "wharf vs raw async-nats on NATS ({}): {PAYLOAD_BYTES}-byte JSON, {} + {} tokio workers \
         (client + server); median of {} run(s), order seed {}",
        wharf_redacted(&config.url),
        config.workers,
        config.server_workers,
        config.runs,
        config.seed
    );
    if config.quick {
        println!("(quick smoke run: too few messages for meaningful figures)");
    }

    let consume: Vec<_> = [Side::Raw, Side::Wharf]
        .into_iter()
        .filter_map(|side| find(Scenario::Consume(side)).map(|runs| (side, runs)))
        .collect();
    if !consume.is_empty() {
        println!();
        println!(
            "consume, JetStream stream pre-filled with {} messages, pull batch / prefetch {BATCH}",
            thousands(config.messages as f64)
        );
        println!(
            "  {:<34} {:>8} {:>17} {:>11} {:>9} {:>9} {:>10} {:>10} {:>9}",
            "consumer",
            "msg/s",
            "(min-max)",
            "client µs",
            "process",
            "(kernel)",
            "nats-srv",
            "cswch/msg",
            "start ms"
        );
        for (side, runs) in &consume {
            let (rate, low, high) = spread(runs, Measured::rate);
            let label = match side {
                Side::Raw => "raw async-nats pull + ack each",
                Side::Wharf => "wharf handler (decode + ack)",
            };
            println!(
                "  {:<34} {:>8} {:>17} {:>11.2} {:>9.2} {:>9.2} {:>10.2} {:>10.2} {:>9.1}",
                label,
                thousands(rate),
                format!("({}-{})", thousands(low), thousands(high)),
                spread(runs, Measured::client_per).0,
                spread(runs, Measured::cpu_per).0,
                spread(runs, Measured::sys_per).0,
                spread(runs, Measured::nats_server_per).0,
                spread(runs, Measured::switches_per).0,
                spread(runs, Measured::startup_ms).0,
            );
        }
        println!(
            "  (CPU µs per message: client = the measured runtime's threads; process = all threads, \
             of it the kernel's share;"
        );
        println!(
            "   nats-srv = the nats-server process; clock from the first message to the last ack flushed)"
        );
    }

    for (in_flight, title) in [
        (
            false,
            format!(
                "request/reply, core NATS: {} sequential requests (after {} warm-up)",
                thousands(config.requests as f64),
                config.sizes().warmup_requests()
            ),
        ),
        (
            true,
            format!(
                "request/reply, core NATS: {} requests, {} in flight",
                thousands(config.in_flight_requests as f64),
                config.in_flight
            ),
        ),
    ] {
        let rows: Vec<_> = PAIRS
            .into_iter()
            .filter_map(|(c, s)| {
                let scenario = if in_flight {
                    Scenario::RpcInFlight(c, s)
                } else {
                    Scenario::Rpc(c, s)
                };
                find(scenario).map(|runs| ((c, s), runs))
            })
            .collect();
        if rows.is_empty() {
            continue;
        }
        println!();
        println!("{title}");
        println!(
            "  {:<16} {:>8} {:>17} {:>8} {:>13} {:>8} {:>10} {:>10} {:>9} {:>10} {:>10}",
            "client -> server",
            "req/s",
            "(min-max)",
            "p50 µs",
            "(min-max)",
            "p99 µs",
            "client µs",
            "server µs",
            "process",
            "nats-srv",
            "cswch/req"
        );
        for ((client, server), runs) in &rows {
            let (rate, rate_low, rate_high) = spread(runs, Measured::rate);
            let (p50, low, high) = spread(runs, |m| m.percentile(50.0));
            println!(
                "  {:<16} {:>8} {:>17} {:>8.0} {:>13} {:>8.0} {:>10.2} {:>10.2} {:>9.2} {:>10.2} {:>10.2}",
                format!("{} -> {}", client.name(), server.name()),
                thousands(rate),
                format!("({}-{})", thousands(rate_low), thousands(rate_high)),
                p50,
                format!("({low:.0}-{high:.0})"),
                spread(runs, |m| m.percentile(99.0)).0,
                spread(runs, Measured::client_per).0,
                spread(runs, Measured::server_per).0,
                spread(runs, Measured::cpu_per).0,
                spread(runs, Measured::nats_server_per).0,
                spread(runs, Measured::switches_per).0,
            );
        }
    }
    if results
        .iter()
        .any(|(s, _)| matches!(s, Scenario::Rpc(..) | Scenario::RpcInFlight(..)))
    {
        println!(
            "  (CPU µs per request: client = the measured runtime's threads, server = the servers' \
             runtime's, process = both and the rest; nats-srv = the nats-server process)"
        );
    }

    // Ratios: each from the medians above.
    let median_of = |scenario: Scenario, metric: &dyn Fn(&Measured) -> f64| {
        find(scenario).map(|runs| spread(runs, metric).0)
    };
    let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
    let consume = |side, metric: &dyn Fn(&Measured) -> f64| median_of(Scenario::Consume(side), metric);
    let rr = |c, s, metric: &dyn Fn(&Measured) -> f64| median_of(Scenario::Rpc(c, s), metric);
    let rr64 = |c, s, metric: &dyn Fn(&Measured) -> f64| median_of(Scenario::RpcInFlight(c, s), metric);
    let p50 = |m: &Measured| m.percentile(50.0);
    let (w, r) = (Side::Wharf, Side::Raw);
    let lines: [(&str, Option<f64>, Option<Goal>); 9] = [
        (
            "wharf / raw consume (msg/s)",
            ratio(consume(w, &Measured::rate), consume(r, &Measured::rate)),
            Some(Goal::AtLeast(0.9)),
        ),
        (
            "wharf / raw consume (client CPU per message)",
            ratio(
                consume(w, &Measured::client_per),
                consume(r, &Measured::client_per),
            ),
            None,
        ),
        (
            "wharf -> wharf / raw -> raw (rr p50)",
            ratio(rr(w, w, &p50), rr(r, r, &p50)),
            Some(Goal::AtMost(1.1)),
        ),
        (
            "wharf client / raw client, raw server (rr p50)",
            ratio(rr(w, r, &p50), rr(r, r, &p50)),
            None,
        ),
        (
            "wharf server / raw server, raw client (rr p50)",
            ratio(rr(r, w, &p50), rr(r, r, &p50)),
            None,
        ),
        (
            "wharf -> wharf / raw -> raw (rr64 req/s)",
            ratio(rr64(w, w, &Measured::rate), rr64(r, r, &Measured::rate)),
            Some(Goal::AtLeast(0.9)),
        ),
        (
            "wharf -> wharf / raw -> raw (rr64 p50)",
            ratio(rr64(w, w, &p50), rr64(r, r, &p50)),
            Some(Goal::AtMost(1.1)),
        ),
        (
            "wharf client / raw client, raw server (rr64 req/s)",
            ratio(rr64(w, r, &Measured::rate), rr64(r, r, &Measured::rate)),
            None,
        ),
        (
            "wharf server / raw server, raw client (rr64 req/s)",
            ratio(rr64(r, w, &Measured::rate), rr64(r, r, &Measured::rate)),
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
            println!("  {label:<52} {value:>6.2}  {verdict}");
        }
    }
}

/// The URL without its password or token, for printing.
fn wharf_redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => format!("{}***{}", &url[..scheme + 3], &url[at..]),
            }
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
                eprintln!("CI=true and NATS at {url} is not usable: {error}");
                std::process::exit(1);
            }
            println!(
                "\n!!! SKIPPED: the nats bench needs NATS with JetStream at {url}, which is not usable \
                 ({error}); run scripts/brokers.sh to start it. With CI=true this fails.\n"
            );
            return;
        }
    };
    bench.sweep_leftovers();
    Recorder::install(bench.config.messages.max(bench.config.warm_up_sizes().messages));
    let config = &bench.config;
    eprintln!(
        "nats bench: {} scenario(s), {} run(s) each{}",
        scenarios.len(),
        config.runs,
        if config.quick { " (quick)" } else { "" }
    );

    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if !config.quick {
            // One smaller, unmeasured run of each: connections, allocator
            // and server warm, so the first measured round is not an outlier.
            let sizes = config.warm_up_sizes();
            for scenario in &scenarios {
                bench.run(*scenario, sizes);
            }
            bench.delete_all();
            eprintln!("  warmed up");
        }
        let mut results: Vec<(Scenario, Vec<Measured>)> =
            scenarios.iter().map(|s| (*s, Vec::new())).collect();
        // Runs interleaved, so the machine's drift spreads over every
        // scenario, each round in an order of its own (shuffled, from
        // `WHARF_BENCH_SEED`), so that no scenario always follows the same
        // one: what ran just before changes a run's figures (nats-server
        // still clearing a consumed stream; threads left awake or asleep),
        // and with the rounds merely rotated, each scenario but the round's
        // first had the same predecessor every time (measured: raw → raw
        // request/reply, always right after wharf's consume run, had a p50
        // 10 µs lower than in runs of its own).
        let scenario_count = results.len();
        let mut order = Shuffle::new(config.seed);
        for round in 0..config.runs {
            for index in order.permutation(scenario_count) {
                let (scenario, runs) = &mut results[index];
                let measured = bench.run(*scenario, config.sizes());
                let latency = if measured.latencies.is_empty() {
                    format!("  start {:>5.1} ms", measured.startup_ms())
                } else {
                    format!(
                        "  p50 {:>5.0} µs  p99 {:>5.0} µs",
                        measured.percentile(50.0),
                        measured.percentile(99.0)
                    )
                };
                eprintln!(
                    "  run {}/{} {:<18} {:>8} /s  CPU µs: client {:>5.2} server {:>5.2} process {:>5.2} \
                     nats-server {:>5.2}{latency}",
                    round + 1,
                    config.runs,
                    scenario.name(),
                    thousands(measured.rate()),
                    measured.client_per(),
                    measured.server_per(),
                    measured.cpu_per(),
                    measured.nats_server_per(),
                );
                runs.push(measured);
            }
            // The streams of a round go at once.
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
