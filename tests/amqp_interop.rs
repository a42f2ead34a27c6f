//! Interop from another language: a plain pika program
//! (`tests/interop/amqp_client.py`, no wharf code) publishes JSON and
//! MessagePack orders with priority, idempotency key, session id and
//! sequence headers, and makes requests through RabbitMQ's direct reply-to;
//! the wharf handlers here record what arrived and answer. Both sides are
//! checked against `docs/wire-format.md`.
//!
//! Needs RabbitMQ on 127.0.0.1:5672 and the Python environment of
//! `scripts/python-env.sh` (`.venv`), which the test sets up on first use
//! (`tests/support/provision.rs`); when either is missing the test says so
//! loudly and passes, except with `CI=true`, where it fails.

#![cfg(feature = "amqp")]

mod support;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::{dead_letters, eventually, skip};
use wharf::{App, Broker, Meta, RouteOptions};

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// How long the test waits for something that should happen.
const PATIENCE: Duration = Duration::from_secs(15);

/// How long the Python program may run: four replies at 10 s each at most,
/// plus connecting.
const SCRIPT_LIMIT: Duration = Duration::from_secs(60);

#[derive(Deserialize, Debug, Clone, PartialEq)]
struct Order {
    id: u64,
    item: String,
    quantity: u32,
}

#[derive(Deserialize, Debug)]
struct QuoteRequest {
    item: String,
    quantity: u32,
}

#[derive(Serialize, Debug)]
struct Quote {
    item: String,
    quantity: u32,
    unit_cents: u64,
    total_cents: u64,
}

/// What the order handler saw of one message.
#[derive(Debug, Clone, PartialEq)]
struct Arrival {
    order: Order,
    content_type: Option<String>,
    message_id: Option<String>,
    priority: Option<u8>,
    idempotency_key: Option<String>,
    session_id: Option<String>,
    sequence: Option<u64>,
    /// The `sequence` header as wharf read it off the wire, before validation.
    sequence_header: Option<String>,
    attempt: u32,
}

/// What the quote handler saw of one request.
#[derive(Debug, Clone)]
struct Request {
    item: String,
    content_type: Option<String>,
    correlation_id: Option<String>,
    reply_to: Option<String>,
}

#[derive(Clone)]
struct Log<T>(Arc<Mutex<Vec<T>>>);

impl<T: Clone> Log<T> {
    fn new() -> Self {
        Log(Arc::new(Mutex::new(Vec::new())))
    }

    fn push(&self, value: T) {
        self.0.lock().unwrap().push(value);
    }

    fn all(&self) -> Vec<T> {
        self.0.lock().unwrap().clone()
    }
}

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The program's exit status and output.
struct ScriptRun {
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
}

impl ScriptRun {
    fn describe(&self) -> String {
        format!(
            "status: {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs the Python program, killing it if it outlives [`SCRIPT_LIMIT`].
async fn run_script(python: &Path, prefix: &str) -> ScriptRun {
    let mut child = Command::new(python)
        .arg(manifest_dir().join("tests/interop/amqp_client.py"))
        .arg(prefix)
        .arg(URL)
        .current_dir(manifest_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.display()));
    let reader = |mut pipe: Box<dyn Read + Send>| {
        tokio::task::spawn_blocking(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = reader(Box::new(child.stdout.take().unwrap()));
    let stderr = reader(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + SCRIPT_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the Python program") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    ScriptRun {
        status,
        stdout: stdout.await.unwrap(),
        stderr: stderr.await.unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_pika_client_publishes_and_requests() {
    let python = match support::provision::python() {
        Ok(python) => python,
        Err(why) => return skip("amqp_interop", &format!("no Python environment: {why}")),
    };
    if let Err(why) = support::broker_reachable(URL) {
        return skip("amqp_interop", &format!("RabbitMQ is not reachable: {why}"));
    }
    let broker = match Broker::connect(URL).await {
        Ok(broker) => broker,
        Err(error) => {
            return skip(
                "amqp_interop",
                &format!("RabbitMQ answers but is not usable ({error}); scripts/brokers.sh says why"),
            );
        }
    };

    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    // Must start with `wharf-test.` for scripts/sweep-test-queues.sh.
    let prefix = format!("wharf-test.interop.{}.{nanos:x}", std::process::id());
    let orders = format!("{prefix}.orders");
    let quotes = format!("{prefix}.quote");

    let arrivals = Log::<Arrival>::new();
    let requests = Log::<Request>::new();
    let record_order = {
        let arrivals = arrivals.clone();
        move |meta: Meta, order: Order| {
            let arrivals = arrivals.clone();
            async move {
                arrivals.push(Arrival {
                    order,
                    content_type: meta.message().content_type.clone(),
                    message_id: meta.message_id().map(str::to_owned),
                    priority: meta.priority(),
                    idempotency_key: meta.idempotency_key().map(str::to_owned),
                    session_id: meta.session_id().map(str::to_owned),
                    sequence: meta.sequence(),
                    sequence_header: meta.header("sequence").map(str::to_owned),
                    attempt: meta.attempt(),
                });
            }
        }
    };
    let quote = {
        let requests = requests.clone();
        move |meta: Meta, request: QuoteRequest| {
            let requests = requests.clone();
            async move {
                requests.push(Request {
                    item: request.item.clone(),
                    content_type: meta.message().content_type.clone(),
                    correlation_id: meta.correlation_id().map(str::to_owned),
                    reply_to: meta.reply_to().map(str::to_owned),
                });
                if request.item == "unobtainium" {
                    return Err(wharf::Error::permanent("not enough unobtainium")
                        .with_kind("out-of-stock")
                        .with_details(&json!({"item": request.item, "missing": request.quantity})));
                }
                let unit_cents = 250;
                Ok(Quote {
                    total_cents: unit_cents * u64::from(request.quantity),
                    item: request.item,
                    quantity: request.quantity,
                    unit_cents,
                })
            }
        }
    };
    let running = App::new(broker.clone())
        .shutdown_grace(Duration::from_secs(5))
        .route_with(
            &orders,
            record_order,
            RouteOptions::new().priority(true).name("interop-orders"),
        )
        .route_with(
            &quotes,
            quote,
            RouteOptions::new().max_attempts(1).name("interop-quote"),
        )
        .start()
        .await
        .expect("the app starts and declares its queues");

    // Everything is gathered first and asserted after the queues are gone,
    // so a failed assertion leaves nothing behind on the broker.
    let run = run_script(&python, &prefix).await;
    let all_orders = eventually(PATIENCE, || arrivals.all().len() >= 2).await;
    let orders_settled = eventually(PATIENCE, || running.stats(&orders).acked >= 2).await;
    let letters = dead_letters(&broker, &quotes, 1, PATIENCE).await;
    let order_stats = running.stats(&orders);
    let quote_stats = running.stats(&quotes);
    running.shutdown().await;
    for queue in [&orders, &quotes] {
        if let Err(error) = broker.delete_queue(queue).await {
            eprintln!("could not delete test queue {queue}: {error}");
        }
    }
    broker.close().await;

    // Shown with `--nocapture`.
    eprintln!("the Python program's output:\n{}", run.describe());

    // The Python side: it ran to the end and got the replies it expected.
    assert!(
        run.status.is_some_and(|s| s.success()),
        "the Python program failed or timed out\n{}",
        run.describe()
    );
    let lines: Vec<Value> = run
        .stdout
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}\n{}", run.describe()))
        })
        .collect();
    let published: Vec<&Value> = lines.iter().filter(|l| l.get("published").is_some()).collect();
    assert_eq!(published.len(), 2, "two orders published\n{}", run.describe());
    let reply = |name: &str| -> &Value {
        lines
            .iter()
            .find(|l| l["request"] == name)
            .unwrap_or_else(|| panic!("no reply line for request {name:?}\n{}", run.describe()))
    };

    let typed = reply("json");
    assert_eq!(typed["status"], "ok", "{typed}");
    assert_eq!(typed["error_kind"], Value::Null, "{typed}");
    assert_eq!(typed["content_type"], "application/json", "{typed}");
    assert_eq!(typed["correlation_id_matches"], true, "{typed}");
    assert_eq!(
        typed["reply"],
        json!({"item": "teapot", "quantity": 3, "unit_cents": 250, "total_cents": 750})
    );

    let packed = reply("msgpack");
    assert_eq!(packed["status"], "ok", "{packed}");
    assert_eq!(
        packed["content_type"], "application/msgpack",
        "a MessagePack request gets a MessagePack reply: {packed}"
    );
    assert_eq!(packed["correlation_id_matches"], true, "{packed}");
    assert_eq!(
        packed["reply"],
        json!({"item": "kettle", "quantity": 2, "unit_cents": 250, "total_cents": 500}),
        "the MessagePack reply decodes (msgpack.unpackb) to a map with field names"
    );

    let alias = reply("x-msgpack");
    assert_eq!(alias["status"], "ok", "{alias}");
    assert_eq!(
        alias["content_type"], "application/msgpack",
        "the reply names the request's codec canonically: {alias}"
    );
    assert_eq!(alias["correlation_id_matches"], true, "{alias}");
    assert_eq!(
        alias["reply"],
        json!({"item": "mug", "quantity": 4, "unit_cents": 250, "total_cents": 1000})
    );

    let error = reply("out-of-stock");
    assert_eq!(error["status"], "error", "{error}");
    assert_eq!(error["error_kind"], "out-of-stock", "{error}");
    assert_eq!(error["content_type"], "application/json", "{error}");
    assert_eq!(error["correlation_id_matches"], true, "{error}");
    assert_eq!(
        error["reply"],
        json!({
            "kind": "out-of-stock",
            "message": "not enough unobtainium",
            "details": {"item": "unobtainium", "missing": 5},
        })
    );

    // The Rust side: both orders arrived with exactly what was published,
    // in session order, once each.
    assert!(
        all_orders && orders_settled,
        "timed out waiting for the two orders: arrivals {:?}, stats {order_stats:?}\n{}",
        arrivals.all(),
        run.describe()
    );
    let session = format!("py-session-{prefix}");
    assert_eq!(
        arrivals.all(),
        vec![
            Arrival {
                order: Order {
                    id: 1,
                    item: "teapot".into(),
                    quantity: 2
                },
                content_type: Some("application/json".into()),
                message_id: Some("py-order-json-1".into()),
                priority: Some(7),
                idempotency_key: Some(format!("order-1-{prefix}")),
                session_id: Some(session.clone()),
                sequence: Some(1),
                sequence_header: Some("1".into()),
                attempt: 1,
            },
            Arrival {
                order: Order {
                    id: 2,
                    item: "kettle".into(),
                    quantity: 1
                },
                content_type: Some("application/msgpack".into()),
                message_id: Some("py-order-msgpack-2".into()),
                priority: Some(3),
                idempotency_key: Some(format!("order-2-{prefix}")),
                session_id: Some(session),
                sequence: Some(2),
                sequence_header: Some("2".into()),
                attempt: 1,
            },
        ],
        "orders as the handler saw them"
    );
    assert_eq!(order_stats.acked, 2, "{order_stats:?}");
    assert_eq!(order_stats.rejected, 0, "{order_stats:?}");
    assert_eq!(order_stats.duplicates, 0, "{order_stats:?}");

    // Requests arrived with the caller's correlation id and a direct
    // reply-to address (RabbitMQ rewrites the pseudo-queue's name).
    let seen = requests.all();
    let mut items: Vec<&str> = seen.iter().map(|r| r.item.as_str()).collect();
    items.sort_unstable();
    assert_eq!(items, ["kettle", "mug", "teapot", "unobtainium"], "{seen:?}");
    for request in &seen {
        assert!(
            request
                .reply_to
                .as_deref()
                .is_some_and(|r| r.starts_with("amq.rabbitmq.reply-to.")),
            "reply address of {request:?}"
        );
        assert!(request.correlation_id.is_some(), "correlation id of {request:?}");
        let expected = if request.item == "mug" {
            "application/x-msgpack"
        } else if request.item == "kettle" {
            "application/msgpack"
        } else {
            "application/json"
        };
        assert_eq!(request.content_type.as_deref(), Some(expected), "{request:?}");
    }
    assert_eq!(quote_stats.replies, 3, "{quote_stats:?}");
    assert_eq!(quote_stats.error_replies, 1, "{quote_stats:?}");

    // The failed request is a dead letter: the Python bytes as sent, plus why.
    assert_eq!(letters.len(), 1, "one dead letter in {quotes}.dlq");
    let letter = &letters[0];
    assert_eq!(letter.error_kind(), Some("out-of-stock"));
    assert_eq!(
        letter.reason().map(|r| r.as_str()),
        Some("permanent"),
        "{letter:?}"
    );
    assert_eq!(letter.origin_queue(), Some(quotes.as_str()));
    assert_eq!(
        &letter.message.body[..],
        br#"{"item": "unobtainium", "quantity": 5}"#,
        "dead letters keep the body byte for byte"
    );
}
