//! Secrets are never printed: the worker (`examples/worker.rs`) runs at
//! `RUST_LOG=trace` with a password or token in every URL it takes, and
//! nothing it writes (stdout and stderr, logs and errors) nor its
//! `/metrics` contains one.
//!
//! It runs against servers with authorization that the test starts itself
//! on free loopback ports (nats-server with a user and password or a
//! token, redis-server with `--requirepass`) and against the shared
//! RabbitMQ, whose `guest` password cannot be changed: there the test
//! checks the redacted form, and a wrong, distinctive password's error.
//! Missing servers skip loudly (and fail under `CI=true`).
//!
//! The worker is built first (`cargo build --example worker --features
//! amqp,nats,redis`, a no-op when it is up to date).

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::local_server::LocalServer;
use support::{skip, unique_queue};

/// Each secret carries a distinctive core that survives percent-encoding,
/// so a search for the core finds it in either form.
const NATS_USER: &str = "wharf-user";
const NATS_PASSWORD: &str = "xN4tsPw@9:q";
const NATS_PASSWORD_ENCODED: &str = "xN4tsPw%409%3Aq";
const NATS_TOKEN: &str = "xN4tsT0k3n";
const REDIS_PASSWORD: &str = "xR3disPw";
const AMQP_WRONG_PASSWORD: &str = "xAmqpWr0ng";
const POSTGRES_PASSWORD: &str = "xPgS3cret";
/// What must never appear.
const SECRETS: [&str; 6] = [
    "xN4tsPw",
    "xN4tsT0k3n",
    "xR3disPw",
    "xAmqpWr0ng",
    "xPgS3cret",
    "guest:guest",
];

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The worker example, built now with every transport and store.
fn worker() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let mut build = Command::new(cargo);
            build
                .args([
                    "build",
                    "--quiet",
                    "--example",
                    "worker",
                    "--features",
                    "amqp,nats,redis",
                ])
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            // What cargo sets for a test run and not for a build from the
            // shell: build scripts that watch these (ring's watches
            // CARGO_MANIFEST_DIR) would make this build and the next
            // ordinary one each rebuild half the dependencies.
            for (name, _) in std::env::vars_os() {
                let name = name.to_string_lossy();
                if ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_CRATE_", "CARGO_BIN_"]
                    .iter()
                    .any(|prefix| name.starts_with(prefix))
                    || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"].contains(&name.as_ref())
                {
                    build.env_remove(name.as_ref());
                }
            }
            let status = build.status().expect("running cargo build");
            assert!(status.success(), "building examples/worker.rs failed");
            // target/debug/deps/secrets-… → target/debug/examples/worker
            let deps = std::env::current_exe().unwrap().parent().unwrap().to_owned();
            let worker = deps.parent().unwrap().join("examples").join("worker");
            assert!(worker.exists(), "{} not built", worker.display());
            worker
        })
        .clone()
}

/// A worker process and everything it has written so far.
struct Worker {
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Worker {
    /// Starts the worker with `env` (and `RUST_LOG=trace`, plain text, a
    /// short drain, the operations listener on a free port).
    fn start(env: &[(&str, &str)]) -> Worker {
        let mut command = Command::new(worker());
        command
            .env_remove("WHARF_BROKER_URL")
            .env_remove("WHARF_STORE_URL")
            .env("RUST_LOG", "trace")
            .env("NO_COLOR", "1")
            .env("WHARF_LOG_FORMAT", "text")
            .env("WHARF_HTTP_ADDR", "127.0.0.1:0")
            .env("WHARF_SHUTDOWN_GRACE_SECONDS", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("starting the worker");
        let output = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        collect(stdout, output.clone());
        collect(stderr, output.clone());
        Worker { child, output }
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// The operations listener's address, once the worker has logged it.
    fn http_addr(&mut self) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let output = self.output();
            if let Some(addr) = output
                .lines()
                .find(|line| line.contains("serving /healthz"))
                .and_then(|line| line.split("addr=").nth(1))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|addr| addr.parse().ok())
            {
                return addr;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the worker exited ({status}) before serving HTTP:\n{output}");
            }
            assert!(Instant::now() < deadline, "no HTTP listener logged:\n{output}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `/readyz` answers 200 (connected with the credentials).
    fn wait_ready(&mut self, addr: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if http_get(addr, "/readyz").starts_with("HTTP/1.1 200") {
                return;
            }
            assert!(Instant::now() < deadline, "never ready:\n{}", self.output());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then everything it wrote once it has exited.
    fn stop(self) -> (ExitStatus, String) {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: signals the worker this test started, by its pid.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        self.wait()
    }

    /// Everything it wrote once it has exited by itself (killed after 30 s).
    fn wait(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the worker did not exit:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // The pipes close with the process; give the readers a moment.
        std::thread::sleep(Duration::from_millis(200));
        (status, self.output())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn collect(pipe: impl Read + Send + 'static, into: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let mut output = into.lock().unwrap();
            output.push_str(&line);
            output.push('\n');
        }
    });
}

/// The whole response (status line, head and body) to `GET path`.
fn http_get(addr: SocketAddr, path: &str) -> String {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return String::new();
    };
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: worker\r\nconnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return String::new();
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

/// `text` with none of the secrets in it.
fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(
            !text.contains(secret),
            "{what} shows the secret {secret:?}:\n{text}"
        );
    }
}

/// Runs a worker with `env` until ready, scrapes `/metrics`, lets it work
/// a second and stops it; everything it wrote, with the scrape appended.
fn run_worker(env: &[(&str, &str)]) -> String {
    let mut worker = Worker::start(env);
    let addr = worker.http_addr();
    worker.wait_ready(addr);
    let metrics = http_get(addr, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    std::thread::sleep(Duration::from_secs(1));
    let (status, output) = worker.stop();
    assert!(status.success(), "the worker failed ({status}):\n{output}");
    format!("{output}\n--- /metrics ---\n{metrics}")
}

/// Runs a worker with `env` that must fail to start; what it wrote.
fn failing_worker(env: &[(&str, &str)]) -> String {
    let (status, output) = Worker::start(env).wait();
    assert!(!status.success(), "the worker started:\n{output}");
    output
}

fn nats_server(test: &str, auth: &[&str]) -> Option<LocalServer> {
    LocalServer::nats(auth).map_err(|why| skip(test, &why)).ok()
}

fn redis_server(test: &str) -> Option<LocalServer> {
    LocalServer::redis(REDIS_PASSWORD)
        .map_err(|why| skip(test, &why))
        .ok()
}

#[test]
fn nats_password_and_redis_password_are_never_printed() {
    let test = "nats_password_and_redis_password_are_never_printed";
    let Some(nats) = nats_server(test, &["--user", NATS_USER, "--pass", NATS_PASSWORD]) else {
        return;
    };
    let Some(redis) = redis_server(test) else {
        return;
    };
    // Two servers, the first not there: the client tries and logs both.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let broker = format!(
        "nats://127.0.0.1:{closed},nats://{NATS_USER}:{NATS_PASSWORD_ENCODED}@127.0.0.1:{}",
        nats.port
    );
    let store = format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{}", redis.port);
    let queue = unique_queue("secrets");
    let output = run_worker(&[
        ("WHARF_BROKER_URL", &broker),
        ("WHARF_STORE_URL", &store),
        ("WHARF_QUEUE", &queue),
    ]);
    // What was looked at: async-nats's connection attempts at debug level
    // (where the password used to show) and the worker's redacted URL.
    assert!(output.contains("attempting connection"), "{output}");
    let redacted = format!(
        "nats://127.0.0.1:{closed},nats://{NATS_USER}:***@127.0.0.1:{}",
        nats.port
    );
    assert!(output.contains(&redacted), "{redacted} not in:\n{output}");
    assert_no_secret("the worker on NATS with a Redis store", &output);
}

#[test]
fn a_nats_token_is_never_printed() {
    let test = "a_nats_token_is_never_printed";
    let Some(nats) = nats_server(test, &["--auth", NATS_TOKEN]) else {
        return;
    };
    let url = format!("nats://{NATS_TOKEN}@127.0.0.1:{}", nats.port);
    let queue = unique_queue("secrets");
    let output = run_worker(&[
        ("WHARF_BROKER_URL", &url),
        ("WHARF_STORE_URL", &url),
        ("WHARF_QUEUE", &queue),
    ]);
    assert!(output.contains("attempting connection"), "{output}");
    assert!(
        output.contains(&format!("nats://***@127.0.0.1:{}", nats.port)),
        "{output}"
    );
    assert_no_secret("the worker on NATS with a NATS KV store", &output);
}

#[test]
fn a_password_file_is_never_printed_and_reaches_the_store_too() {
    let test = "a_password_file_is_never_printed_and_reaches_the_store_too";
    let Some(nats) = nats_server(test, &["--user", NATS_USER, "--pass", NATS_PASSWORD]) else {
        return;
    };
    let dir = std::env::temp_dir().join(unique_queue("secrets-files"));
    std::fs::create_dir_all(&dir).unwrap();
    let password = dir.join("password");
    std::fs::write(&password, format!("{NATS_PASSWORD}\n")).unwrap();
    // No credentials in either URL: the NATS KV store takes the broker's
    // user and password file.
    let url = format!("nats://127.0.0.1:{}", nats.port);
    let queue = unique_queue("secrets");
    let output = run_worker(&[
        ("WHARF_BROKER_URL", &url),
        ("WHARF_BROKER_USER", NATS_USER),
        ("WHARF_BROKER_PASSWORD_FILE", &password.display().to_string()),
        ("WHARF_STORE_URL", &url),
        ("WHARF_QUEUE", &queue),
    ]);
    assert!(output.contains("attempting connection"), "{output}");
    assert_no_secret("the worker on NATS with a password file", &output);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn wrong_nats_and_redis_credentials_fail_without_printing_them() {
    let test = "wrong_nats_and_redis_credentials_fail_without_printing_them";
    let Some(nats) = nats_server(test, &["--auth", "the-right-token"]) else {
        return;
    };
    let Some(redis) = redis_server(test) else {
        return;
    };
    let output = failing_worker(&[(
        "WHARF_BROKER_URL",
        &format!(
            "nats://{NATS_USER}:{NATS_PASSWORD_ENCODED}@127.0.0.1:{}",
            nats.port
        ),
    )]);
    assert!(output.contains("authorization violation"), "{output}");
    assert_no_secret("a NATS connection refused", &output);

    // Right server, wrong password (the secret sent is NATS_TOKEN).
    let output = failing_worker(&[(
        "WHARF_STORE_URL",
        &format!("redis://:{NATS_TOKEN}@127.0.0.1:{}", redis.port),
    )]);
    assert!(output.contains("cannot connect to Redis"), "{output}");
    assert_no_secret("a Redis connection refused", &output);
}

#[test]
fn amqp_credentials_are_never_printed() {
    let test = "amqp_credentials_are_never_printed";
    if let Err(why) = support::broker_reachable(AMQP_URL) {
        skip(test, &format!("RabbitMQ is not running: {why}"));
        return;
    }
    let Some(redis) = redis_server(test) else {
        return;
    };
    let queue = unique_queue("secrets");
    let store = format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{}", redis.port);
    let output = run_worker(&[
        ("WHARF_BROKER_URL", AMQP_URL),
        ("WHARF_STORE_URL", &store),
        ("WHARF_QUEUE", &queue),
    ]);
    // RabbitMQ's guest password is guest: the URL must show up masked.
    assert!(output.contains("amqp://guest:***@127.0.0.1:5672/%2f"), "{output}");
    assert_no_secret("the worker on RabbitMQ with a Redis store", &output);
    delete_queue(&queue);

    let wrong = format!("amqp://guest:{AMQP_WRONG_PASSWORD}@127.0.0.1:5672/%2f");
    let output = failing_worker(&[("WHARF_BROKER_URL", &wrong)]);
    assert!(output.contains("cannot connect to RabbitMQ"), "{output}");
    assert_no_secret("a RabbitMQ connection refused", &output);
}

#[test]
fn an_unknown_store_scheme_fails_without_printing_the_url() {
    let url = format!("postgres://app:{POSTGRES_PASSWORD}@db.example:5432/orders");
    let output = failing_worker(&[("WHARF_STORE_URL", &url)]);
    assert!(output.contains("no store for postgres:// URLs"), "{output}");
    assert_no_secret("an unknown store URL", &output);
}

/// Removes the worker's queue from the shared RabbitMQ.
fn delete_queue(queue: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        if let Ok(broker) = wharf::Broker::connect(AMQP_URL).await {
            let _ = broker.delete_queue(queue).await;
            broker.close().await;
        }
    });
}
