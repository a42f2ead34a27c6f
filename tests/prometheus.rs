//! A real Prometheus scrapes real workers: `examples/worker.rs` (the program
//! the container image runs, configured only by environment variables) on
//! RabbitMQ and on NATS, and Debian's `prometheus` scraping both. The test
//! publishes orders (good ones, failing-once ones, poison ones and a
//! request), then asks Prometheus' HTTP API for the `wharf_` series and
//! checks their values; `promtool check metrics` must accept each worker's
//! exposition.
//!
//! Needs the brokers on 127.0.0.1 and the tools from
//! `scripts/prometheus-tools.sh`, which the test fetches on first use
//! (`tests/support/provision.rs`; `WHARF_PROMETHEUS_BIN` overrides where
//! they are). Skips loudly without them; fails with `CI=true`.
//! `-- --nocapture` prints what Prometheus answered.

#![cfg(all(feature = "amqp", feature = "nats"))]

mod support;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{http_get, skip, unique_queue};
use wharf::Broker;

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const NATS_URL: &str = "nats://127.0.0.1:4222";
const PATIENCE: Duration = Duration::from_secs(60);

/// Orders of each kind a worker gets.
const GOOD: u64 = 20;
const FLAKY: u64 = 2;
const POISON: u64 = 3;

/// A child process killed when dropped (a failing test leaves none behind).
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Guard {
    /// SIGTERM, then the exit status within `limit`.
    fn terminate(mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let pid = self.0.id() as libc::pid_t;
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// The example worker, built by `cargo test` next to this test binary (or
/// built now).
fn worker_binary() -> PathBuf {
    let deps = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    let built = deps.parent().unwrap().join("examples/worker");
    if built.exists() {
        return built;
    }
    let status = Command::new(env!("CARGO"))
        .args(["build", "--example", "worker", "--features", "amqp,nats,redis"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building examples/worker failed");
    built
}

/// One worker process on one broker.
struct Worker {
    name: &'static str,
    broker_url: &'static str,
    queue: String,
    http: SocketAddr,
    process: Guard,
}

fn start_worker(name: &'static str, broker_url: &'static str) -> Worker {
    let queue = unique_queue(&format!("prometheus-{name}"));
    let http = free_port();
    let child = Command::new(worker_binary())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("WHARF_BROKER_URL", broker_url)
        .env("WHARF_QUEUE", &queue)
        .env("WHARF_HTTP_ADDR", http.to_string())
        .env("WHARF_BACKOFF_MS", "50")
        .env("WHARF_SHUTDOWN_GRACE_SECONDS", "5")
        .env("WHARF_LOG_FORMAT", "json")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the worker starts");
    Worker {
        name,
        broker_url,
        queue,
        http,
        process: Guard(child),
    }
}

async fn wait_ready(worker: &Worker) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if tokio::net::TcpStream::connect(worker.http).await.is_ok()
            && http_get(worker.http, "/readyz").await.0 == 200
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} worker never became ready",
            worker.name
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn order(id: u64, item: &str, quantity: u32) -> serde_json::Value {
    serde_json::json!({"id": id, "item": item, "quantity": quantity})
}

/// Publishes every kind of order and one request; returns the acks expected.
async fn feed(worker: &Worker) -> u64 {
    let broker = Broker::connect(worker.broker_url)
        .await
        .expect("broker reachable");
    let client = broker.client();
    for id in 0..GOOD {
        client
            .publish(&worker.queue, &order(id, "teapot", 2))
            .await
            .unwrap();
    }
    for id in 0..FLAKY {
        client
            .publish(&worker.queue, &order(100 + id, "flaky", 1))
            .await
            .unwrap();
    }
    for id in 0..POISON {
        client
            .publish(&worker.queue, &order(200 + id, "nothing", 0))
            .await
            .unwrap();
    }
    let receipt: serde_json::Value = client
        .with_timeout(PATIENCE)
        .request(&worker.queue, &order(300, "cup", 4))
        .await
        .expect("a reply");
    assert_eq!(receipt["total_cents"], 1000);
    broker.close().await;
    GOOD + FLAKY + 1
}

/// The value Prometheus holds for an instant `query` (one series), once
/// it equals `expected` or [`PATIENCE`] has passed.
async fn query_until(prometheus: SocketAddr, query: &str, expected: f64) -> Option<f64> {
    let deadline = Instant::now() + PATIENCE;
    let mut last = None;
    while Instant::now() < deadline {
        let path = format!("/api/v1/query?query={}", encode(query));
        let (status, body) = http_get(prometheus, &path).await;
        if status == 200 {
            let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
            last = answer["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok());
            if last == Some(expected) {
                println!("prometheus: {query} = {expected}");
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    last
}

/// Percent-encodes a query for a URL.
fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_workers_on_both_brokers() {
    let test = "prometheus_scrapes_workers_on_both_brokers";
    let tools = match support::provision::prometheus_tools() {
        Ok(tools) => tools,
        Err(why) => return skip(test, &format!("no prometheus/promtool: {why}")),
    };
    for url in [AMQP_URL, NATS_URL] {
        if let Err(why) = support::broker_reachable(url) {
            return skip(test, &format!("broker {url} unreachable: {why}"));
        }
        if let Err(error) = Broker::connect(url).await {
            skip(test, &format!("broker {url} unreachable: {error}"));
            return;
        }
    }
    let workers = [start_worker("amqp", AMQP_URL), start_worker("nats", NATS_URL)];
    for worker in &workers {
        wait_ready(worker).await;
    }

    // Prometheus, scraping both workers every second.
    let dir = std::env::temp_dir().join(format!("wharf-prometheus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let targets: Vec<String> = workers.iter().map(|w| format!("'{}'", w.http)).collect();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: wharf\n    static_configs:\n      - targets: [{}]\n",
        targets.join(", ")
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let listen = free_port();
    let prometheus = Guard(
        Command::new(tools.join("prometheus"))
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts"),
    );

    let mut expected_acks = Vec::new();
    for worker in &workers {
        expected_acks.push(feed(worker).await);
    }

    let mut problems = Vec::new();
    for (worker, acks) in workers.iter().zip(expected_acks) {
        let up = format!(r#"up{{job="wharf",instance="{}"}}"#, worker.http);
        let on = |metric: &str, labels: &str| {
            format!(
                r#"{metric}{{queue="{}",handler="place_order"{labels}}}"#,
                worker.queue
            )
        };
        let checks = [
            (up, 1.0),
            (
                on("wharf_messages_handled_total", r#",outcome="acked""#),
                acks as f64,
            ),
            (
                on("wharf_messages_handled_total", r#",outcome="dead_lettered""#),
                POISON as f64,
            ),
            (
                on("wharf_messages_handled_total", r#",outcome="retried""#),
                FLAKY as f64,
            ),
            (on("wharf_retries_total", ""), FLAKY as f64),
            (
                on("wharf_dead_letters_total", r#",reason="permanent""#),
                POISON as f64,
            ),
            (on("wharf_replies_sent_total", r#",status="ok""#), 1.0),
            (
                on("wharf_messages_received_total", ""),
                (acks + FLAKY + POISON) as f64,
            ),
            (
                on("wharf_handler_duration_seconds_count", ""),
                (acks + FLAKY + POISON) as f64,
            ),
            (on("wharf_messages_in_flight", ""), 0.0),
            (
                format!(
                    r#"wharf_broker_connected{{broker="{}",instance="{}"}}"#,
                    worker.name, worker.http
                ),
                1.0,
            ),
            (format!(r#"wharf_ready{{instance="{}"}}"#, worker.http), 1.0),
            // Sampled at start and every 10 s; everything was consumed.
            (format!(r#"wharf_queue_depth{{queue="{}"}}"#, worker.queue), 0.0),
        ];
        for (query, expected) in checks {
            let got = query_until(listen, &query, expected).await;
            if got != Some(expected) {
                problems.push(format!("{query}: expected {expected}, Prometheus has {got:?}"));
            }
        }

        // The exposition itself passes Prometheus' own linter.
        let (_, exposition) = http_get(worker.http, "/metrics").await;
        let mut promtool = Command::new(tools.join("promtool"))
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool runs");
        use std::io::Write;
        promtool
            .stdin
            .take()
            .unwrap()
            .write_all(exposition.as_bytes())
            .unwrap();
        let output = promtool.wait_with_output().unwrap();
        if !output.status.success() {
            problems.push(format!(
                "promtool check metrics on the {} worker: {}{}",
                worker.name,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    drop(prometheus);
    let _ = std::fs::remove_dir_all(&dir);

    // The workers drain and exit cleanly on SIGTERM, as in a pod.
    for worker in workers {
        let broker = Broker::connect(worker.broker_url).await.unwrap();
        let (name, queue) = (worker.name, worker.queue.clone());
        match worker.process.terminate(Duration::from_secs(20)) {
            Some(status) if status.success() => {}
            other => problems.push(format!("{name} worker after SIGTERM: {other:?}")),
        }
        broker.delete_queue(&queue).await.ok();
        broker.close().await;
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn queries_are_encoded_for_urls() {
    assert_eq!(encode(r#"up{job="wharf"}"#), "up%7Bjob%3D%22wharf%22%7D");
}
