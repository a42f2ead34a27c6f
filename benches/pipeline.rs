//! Throughput and CPU cost of the message pipeline on the in-memory transport.
//!
//! A no-op handler takes a 256-byte JSON payload (decoded by wharf, which is
//! part of the measured cost), once with the idempotency and session steps
//! off ("plain"), once with both on, and as "plain" behind one pass-through
//! middleware ("plain+middleware": the hook's cost when it is used) and
//! behind the same pass-through as a `tower::Layer` ("plain+tower": the
//! figure behind not building the hook on tower). With both steps on, every
//! message has its own idempotency key and belongs to one of 64 sessions,
//! published round robin in sequence order, with the route's default
//! concurrency (32) and prefetch (288), so several messages of a session
//! are in the worker at once and wait for their turn.
//!
//! The bench fails if any message is deferred: with in-order sessions a
//! deferral means the session step lost track of order (an earlier version
//! fell into a defer loop with 64 sessions; the behaviour case
//! `busy_sessions_published_in_order_flow_without_waiting` pins the fix).
//!
//! Each measurement publishes `iters` messages to a fresh in-memory broker
//! *before* the clock starts, then starts the app and stops the clock once
//! the route has acked them all. Two figures per variant:
//!
//! - `wall/<variant>`: wall time per message (criterion prints messages/s);
//! - `cpu/<variant>`: CPU time of the whole process per message (all tokio
//!   workers), from `CLOCK_PROCESS_CPUTIME_ID`: what the framework costs.
//!
//! `cpu/decode-only` is the cost of `serde_json::from_slice` of the payload
//! alone, for reference. After criterion, a summary compares each variant
//! with the goal (1 µs per message plain, 3 µs with both steps); it is a
//! report and never fails because of the goal, but any message that is not
//! acked, or is retried, duplicated, returned or dead-lettered, panics.
//! Deferred messages (session buffer full) are acked later and only reported.
//!
//! ```text
//! cargo bench --bench pipeline              # full run, ~1 minute
//! cargo bench --bench pipeline -- --test    # quick smoke test (CI)
//! ```
//!
//! Profiling: `WHARF_BENCH_PROFILE=<messages>` (and optionally
//! `WHARF_BENCH_VARIANT=plain|idempotency+sessions|plain+middleware|plain+tower`) runs that many messages
//! once, prints its figures (with the kernel's share of the CPU time) and
//! exits, without criterion. The measured part lies between calls to
//! `wharf_bench_measure_begin` and `wharf_bench_measure_end`; with callgrind,
//! dump at both and read part 2 (`callgrind.out.<pid>.2`):
//!
//! ```text
//! WHARF_BENCH_PROFILE=20000 valgrind --tool=callgrind \
//!     --dump-before=wharf_bench_measure_begin --dump-before=wharf_bench_measure_end \
//!     target/release/deps/pipeline-<hash>
//! ```
//!
//! For comparisons only: `WHARF_BENCH_WORKERS=<n>` changes the number of
//! tokio workers (2 by default) and `WHARF_BENCH_SESSIONS=<n>` the number of
//! sessions.

use bytes::Bytes;
use criterion::{Criterion, SamplingMode, Throughput};
use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use std::hint::black_box;
use std::time::{Duration, Instant};
use tower::ServiceExt;
use wharf::middleware::{self, Next, Request};
use wharf::{App, Broker, Message, RouteOptions, RouteStats, Running};

const QUEUE: &str = "bench.orders";
const PAYLOAD_BYTES: usize = 256;
/// Sessions of the idempotency+sessions variant (`WHARF_BENCH_SESSIONS`
/// overrides it): fewer than the route's concurrency and prefetch, so
/// messages of one session meet in the worker.
const DEFAULT_SESSIONS: u64 = 64;
/// Messages per run of the summary's timed runs.
const SUMMARY_MESSAGES: u64 = 200_000;
const SUMMARY_RUNS: usize = 3;
/// How often the measuring thread looks at the route's counters. It polls
/// from outside the runtime with a plain thread sleep, so polling does not
/// wake the tokio workers and costs about 1 µs of CPU per look.
const POLL: Duration = Duration::from_micros(200);
/// A run that has not acked everything by then is stuck.
const RUN_DEADLINE: Duration = Duration::from_secs(120);

/// The payload: its JSON encoding is exactly [`PAYLOAD_BYTES`] long.
#[derive(Debug, Serialize, Deserialize)]
struct Order {
    id: u64,
    customer: String,
    sku: String,
    quantity: u32,
    unit_price_cents: u64,
    currency: String,
    express: bool,
    note: String,
}

/// The handler under test: does nothing with the decoded order.
async fn noop(_order: Order) {}

/// The JSON payload, padded to exactly [`PAYLOAD_BYTES`] with the note.
fn payload() -> Bytes {
    let mut order = Order {
        id: 1_234_567,
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
    let body = serde_json::to_vec(&order).expect("encode order");
    assert_eq!(body.len(), PAYLOAD_BYTES, "payload size");
    serde_json::from_slice::<Order>(&body).expect("payload decodes");
    body.into()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    /// Idempotency and session steps off, messages without those headers.
    Plain,
    /// Both steps on (the route defaults), every message with a unique
    /// idempotency key and a place in one of `sessions` sessions.
    IdempotencySessions,
    /// As `Plain`, behind one pass-through middleware that reads a header
    /// (docs/middleware.md): what the hook costs when it is used.
    PlainMiddleware,
    /// As `PlainMiddleware`, with the pass-through done by a `tower::Layer`
    /// instead: the stack built and called with `oneshot` per message, as a
    /// `Service` (`call(&mut self)`) shared by concurrent messages must be.
    PlainTower,
}

impl Variant {
    const ALL: [Variant; 4] = [
        Variant::Plain,
        Variant::IdempotencySessions,
        Variant::PlainMiddleware,
        Variant::PlainTower,
    ];

    fn name(self) -> &'static str {
        match self {
            Variant::Plain => "plain",
            Variant::IdempotencySessions => "idempotency+sessions",
            Variant::PlainMiddleware => "plain+middleware",
            Variant::PlainTower => "plain+tower",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Variant::ALL.into_iter().find(|v| v.name() == name)
    }

    /// CPU time per message the project aims for.
    fn goal(self) -> Duration {
        match self {
            Variant::Plain | Variant::PlainMiddleware | Variant::PlainTower => Duration::from_micros(1),
            Variant::IdempotencySessions => Duration::from_micros(3),
        }
    }

    fn options(self) -> RouteOptions {
        match self {
            Variant::Plain => RouteOptions::new().idempotency(false).sessions(false),
            Variant::IdempotencySessions => RouteOptions::new(),
            Variant::PlainTower => {
                Variant::Plain
                    .options()
                    .middleware(middleware::from_fn(|request: Request, next: Next| {
                        // `oneshot` calls it once; a `Service` is `FnMut`.
                        let mut next = Some(next);
                        let rest = tower::service_fn(move |request: Request| {
                            let next = next.take().expect("oneshot calls the service once");
                            next.run(request).map(Ok::<_, std::convert::Infallible>)
                        });
                        let stack = tower::ServiceBuilder::new()
                            .layer(tower::layer::layer_fn(ReadsHeader))
                            .service(rest);
                        stack.oneshot(request).map(|outcome| match outcome {
                            Ok(outcome) => outcome,
                            Err(never) => match never {},
                        })
                    }))
            }
            Variant::PlainMiddleware => Variant::Plain.options().middleware(middleware::from_fn(
                |request: Request, next: Next| async move {
                    black_box(request.header("x-tenant"));
                    next.run(request).await
                },
            )),
        }
    }

    /// The `index`-th message of a run (0-based); session variants spread
    /// messages round robin over `sessions` sessions.
    fn message(self, payload: &Bytes, sessions: u64, index: u64) -> Message {
        let message = Message::new(payload.clone()).with_content_type(wharf::codec::JSON);
        match self {
            Variant::Plain | Variant::PlainMiddleware | Variant::PlainTower => message,
            Variant::IdempotencySessions => message
                .with_idempotency_key(format!("order-{index:010}"))
                .with_session(format!("customer-{:04}", index % sessions), index / sessions + 1),
        }
    }
}

/// The `plain+tower` variant's layer: reads a header, passes the request on.
#[derive(Clone)]
struct ReadsHeader<S>(S);

impl<S: tower::Service<Request>> tower::Service<Request> for ReadsHeader<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> S::Future {
        black_box(request.header("x-tenant"));
        self.0.call(request)
    }
}

/// What one run measured.
#[derive(Clone, Copy, Debug)]
struct Measured {
    wall: Duration,
    cpu: Duration,
    /// Most early session arrivals seen waiting at once while polling.
    max_buffered: u64,
    /// Deliveries sent back for later (session buffer full).
    deferred: u64,
    /// Of `cpu`, time spent in the kernel.
    sys: Duration,
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

/// Kernel (system) CPU time consumed so far by this process.
fn process_sys_time() -> Duration {
    // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage for the duration of the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage failed");
    Duration::new(usage.ru_stime.tv_sec as u64, usage.ru_stime.tv_usec as u32 * 1000)
}

/// Marks the start of the measured part, for profilers
/// (`callgrind --zero-before=wharf_bench_measure_begin`).
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

struct Bench {
    runtime: tokio::runtime::Runtime,
    workers: usize,
    payload: Bytes,
    sessions: u64,
}

impl Bench {
    fn new() -> Self {
        // Two workers, as the machine the goal is set for has two cores;
        // `WHARF_BENCH_WORKERS` is for comparisons only.
        let workers = std::env::var("WHARF_BENCH_WORKERS")
            .ok()
            .and_then(|raw| raw.trim().parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or(2);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let sessions = match std::env::var("WHARF_BENCH_SESSIONS") {
            Ok(raw) => raw
                .trim()
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .unwrap_or_else(|| panic!("WHARF_BENCH_SESSIONS must be a positive count, not {raw:?}")),
            Err(_) => DEFAULT_SESSIONS,
        };
        Bench {
            runtime,
            workers,
            payload: payload(),
            sessions,
        }
    }

    /// Publishes `messages` messages, then measures how long a freshly
    /// started app takes to handle and ack them all.
    fn run(&self, variant: Variant, messages: u64) -> Measured {
        let broker = Broker::memory();
        let client = broker.client();
        self.runtime.block_on(async {
            for index in 0..messages {
                client
                    .send(QUEUE, variant.message(&self.payload, self.sessions, index))
                    .await
                    .expect("publish");
            }
        });

        let sys_start = process_sys_time();
        let cpu_start = process_cpu_time();
        let wall_start = Instant::now();
        wharf_bench_measure_begin();
        let running = self
            .runtime
            .block_on(
                App::new(broker.clone())
                    .route_with(QUEUE, noop, variant.options())
                    .start(),
            )
            .expect("start the app");
        let max_buffered = wait_until_acked(&running, messages);
        wharf_bench_measure_end();
        let wall = wall_start.elapsed();
        let cpu = process_cpu_time().saturating_sub(cpu_start);
        let sys = process_sys_time().saturating_sub(sys_start);

        let stats = running.stats(QUEUE);
        let report = self.runtime.block_on(running.shutdown());
        check(variant, messages, &stats);
        assert!(report.drained, "{}: shutdown did not drain", variant.name());
        let (waiting, dead) = self.runtime.block_on(async {
            let waiting = broker.queue_depth(QUEUE).await.expect("queue depth");
            let dead = broker
                .queue_depth(&format!("{QUEUE}.dlq"))
                .await
                .expect("dead-letter queue depth");
            (waiting, dead)
        });
        assert_eq!(
            (waiting, dead),
            (0, 0),
            "{}: messages left in the queue / dead-letter queue",
            variant.name()
        );
        drop(broker);
        Measured {
            wall,
            cpu,
            max_buffered,
            deferred: stats.deferred,
            sys,
        }
    }
}

/// Polls the route's counters until `messages` are acked; panics early on
/// anything but a clean ack.
fn wait_until_acked(running: &Running, messages: u64) -> u64 {
    let deadline = Instant::now() + RUN_DEADLINE;
    let mut max_buffered = 0;
    loop {
        let stats = running.stats(QUEUE);
        max_buffered = max_buffered.max(stats.session_buffered);
        let failed = stats.retried + stats.dead_lettered + stats.rejected + stats.returned + stats.duplicates;
        assert!(failed == 0, "messages failed during the run: {stats:?}");
        if stats.acked >= messages {
            return max_buffered;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {messages} messages acked after {RUN_DEADLINE:?}: {stats:?}",
            stats.acked
        );
        std::thread::sleep(POLL);
    }
}

/// Every message acked once, nothing failed, nothing deferred (in-order
/// sessions never need to go back to the broker).
fn check(variant: Variant, messages: u64, stats: &RouteStats) {
    assert_eq!(
        stats.deferred,
        0,
        "{}: deliveries were deferred: {stats:?}",
        variant.name()
    );
    let expected = (messages, messages, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    let got = (
        stats.received,
        stats.acked,
        stats.retried,
        stats.dead_lettered,
        stats.rejected,
        stats.duplicates,
        stats.stale,
        stats.returned,
        stats.panics,
        stats.timeouts,
        stats.in_flight,
    );
    assert_eq!(
        got,
        expected,
        "{}: not every message was acked exactly once without failures: {stats:?}",
        variant.name()
    );
}

/// CPU time of decoding the payload `times` times on this thread.
fn decode_only(payload: &[u8], times: u64) -> Duration {
    let start = process_cpu_time();
    for _ in 0..times {
        let order: Order = serde_json::from_slice(black_box(payload)).expect("decode");
        black_box(order);
    }
    process_cpu_time().saturating_sub(start)
}

fn benches(criterion: &mut Criterion, bench: &Bench) {
    let mut wall = criterion.benchmark_group("wall");
    wall.throughput(Throughput::Elements(1))
        .sampling_mode(SamplingMode::Linear);
    for variant in Variant::ALL {
        wall.bench_function(variant.name(), |b| {
            b.iter_custom(|messages| bench.run(variant, messages).wall)
        });
    }
    wall.finish();

    let mut cpu = criterion.benchmark_group("cpu");
    cpu.sampling_mode(SamplingMode::Linear);
    for variant in Variant::ALL {
        cpu.bench_function(variant.name(), |b| {
            b.iter_custom(|messages| bench.run(variant, messages).cpu)
        });
    }
    cpu.bench_function("decode-only", |b| {
        b.iter_custom(|times| decode_only(&bench.payload, times))
    });
    cpu.finish();
}

/// How criterion was asked to run (mirrors its own argument handling).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `cargo bench`: full measurements and the summary.
    Bench,
    /// `--test` or `cargo test --benches`: one quick pass of everything.
    Test,
    /// `--list`: names only.
    List,
}

impl Mode {
    fn from_args() -> Self {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let has = |flag: &str| args.iter().any(|a| a == flag);
        if has("--list") {
            Mode::List
        } else if has("--test") || !has("--bench") {
            Mode::Test
        } else {
            Mode::Bench
        }
    }
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn per_message(total: Duration, messages: u64) -> Duration {
    total.div_f64(messages.max(1) as f64)
}

/// Timed runs outside criterion, compared with the goals.
fn summary(bench: &Bench, mode: Mode) {
    let (messages, runs) = match mode {
        Mode::Bench => (SUMMARY_MESSAGES, SUMMARY_RUNS),
        _ => (2_000, 1),
    };
    // One unmeasured run first, so the allocator and caches are warm.
    bench.run(Variant::Plain, messages.min(20_000));
    println!();
    println!(
        "wharf pipeline summary: in-memory transport, no-op handler, {PAYLOAD_BYTES}-byte JSON payload, \
         {} tokio workers, {} sessions; median of {runs} run(s) of {messages} messages",
        bench.workers, bench.sessions
    );
    if mode != Mode::Bench {
        println!("(quick test mode: too few messages for meaningful figures)");
    }
    println!(
        "{:<24} {:>12} {:>11} {:>15} {:>8}  verdict",
        "variant", "messages/s", "CPU µs/msg", "(min-max)", "goal"
    );
    for variant in Variant::ALL {
        let measured: Vec<Measured> = (0..runs).map(|_| bench.run(variant, messages)).collect();
        let wall = median(measured.iter().map(|m| m.wall).collect());
        let cpus: Vec<Duration> = measured.iter().map(|m| per_message(m.cpu, messages)).collect();
        let micros = |d: &Duration| d.as_secs_f64() * 1e6;
        let lowest = cpus.iter().min().map(micros).unwrap_or_default();
        let highest = cpus.iter().max().map(micros).unwrap_or_default();
        let cpu = median(cpus);
        let verdict = if cpu <= variant.goal() {
            "PASS"
        } else {
            "ABOVE GOAL"
        };
        println!(
            "{:<24} {:>12.0} {:>11.3} {:>15} {:>5} µs  {verdict}",
            variant.name(),
            messages as f64 / wall.as_secs_f64(),
            micros(&cpu),
            format!("({lowest:.2}-{highest:.2})"),
            variant.goal().as_micros(),
        );
        let waited = measured.iter().map(|m| m.max_buffered).max().unwrap_or(0);
        if waited > 0 {
            println!("  up to {waited} session messages were seen waiting for their turn");
        }
        let deferred: u64 = measured.iter().map(|m| m.deferred).sum();
        if deferred > 0 {
            println!("  {deferred} deliveries were deferred (session buffer full): not the fast path");
        }
    }
    let decodes = messages * 5;
    let decode = per_message(decode_only(&bench.payload, decodes), decodes);
    println!(
        "{:<24} {:>12} {:>11.3} {:>15} {:>8}  (reference: serde_json::from_slice of the payload alone)",
        "decode-only",
        "-",
        decode.as_secs_f64() * 1e6,
        "",
        "-"
    );
}

/// `WHARF_BENCH_PROFILE=<messages>`: one run for a profiler, then exit.
fn profile(bench: &Bench, messages: u64) {
    let variant = match std::env::var("WHARF_BENCH_VARIANT") {
        Ok(name) => Variant::from_name(&name).unwrap_or_else(|| {
            panic!(
                "WHARF_BENCH_VARIANT must be plain, idempotency+sessions or plain+middleware, not {name:?}"
            )
        }),
        Err(_) => Variant::Plain,
    };
    let measured = bench.run(variant, messages);
    println!(
        "{}: {messages} messages, {:.0} messages/s, {:.3} CPU µs/message ({:.3} of it in the kernel), \
         up to {} seen waiting for their session turn, {} deferred",
        variant.name(),
        messages as f64 / measured.wall.as_secs_f64(),
        per_message(measured.cpu, messages).as_secs_f64() * 1e6,
        per_message(measured.sys, messages).as_secs_f64() * 1e6,
        measured.max_buffered,
        measured.deferred
    );
}

fn main() {
    let bench = Bench::new();
    if let Ok(raw) = std::env::var("WHARF_BENCH_PROFILE") {
        let messages = raw
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("WHARF_BENCH_PROFILE must be a message count, not {raw:?}"));
        profile(&bench, messages);
        return;
    }
    let mode = Mode::from_args();
    let mut criterion = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    benches(&mut criterion, &bench);
    criterion.final_summary();
    if mode != Mode::List {
        summary(&bench, mode);
    }
}
