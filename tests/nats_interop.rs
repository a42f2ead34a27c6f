//! Interop from another language: a plain nats-py program
//! (`tests/interop/nats_client.py`, no wharf code) reads the streams and
//! consumers wharf created, publishes JSON and MessagePack orders with
//! JetStream on priority lanes (subjects `wharf.p<P>.<queue>`) with
//! idempotency key, session id and sequence headers, makes durable requests
//! (JetStream publish with a `reply-to` header naming its inbox) and core
//! NATS requests (`nc.request`) to a `persistent(false)` route, and reads
//! the dead letters as stored; the wharf handlers here record what arrived
//! and answer. A second program, `tests/interop/nats_dead_letters.py`,
//! lists a queue's dead letters and replays one with the stream message API
//! (no consumer: the dead-letter stream refuses a second one) while a wharf
//! worker consumes the queue. Both sides are checked against
//! `docs/wire-format.md` (section "NATS").
//!
//! Needs NATS with JetStream on `WHARF_TEST_NATS_URL` (default
//! `nats://127.0.0.1:4222`) and the Python environment of
//! `scripts/python-env.sh` (`.venv`), which the tests set up on first use
//! (`tests/support/provision.rs`); when either is missing the tests say so
//! loudly and pass, except with `CI=true`, where they fail.

#![cfg(feature = "nats")]

mod support;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::{dead_letters, eventually, skip};
use wharf::{App, Broker, Message, Meta, RouteOptions};

const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// How long the test waits for something that should happen.
const PATIENCE: Duration = Duration::from_secs(15);

/// How long the Python program may run: seven replies and two dead letters
/// at 10 s each at most, plus connecting.
const SCRIPT_LIMIT: Duration = Duration::from_secs(120);

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

/// What a quote handler saw of one request.
#[derive(Debug, Clone)]
struct Request {
    queue: String,
    item: String,
    content_type: Option<String>,
    message_id: Option<String>,
    correlation_id: Option<String>,
    reply_to: Option<String>,
    attempt: u32,
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

fn nats_url() -> String {
    std::env::var("WHARF_TEST_NATS_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_owned())
}

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The stream of `queue`: `WHARF_` and the name with every byte but
/// `[A-Za-z0-9-]` written as `_XX` (upper-case hex).
fn stream_name(queue: &str) -> String {
    let mut name = String::from("WHARF_");
    for byte in queue.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' {
            name.push(char::from(byte));
        } else {
            name.push_str(&format!("_{byte:02X}"));
        }
    }
    name
}

/// `wharf.p0.<queue>` … `wharf.p9.<queue>`.
fn lane_subjects(queue: &str) -> Vec<String> {
    (0..10).map(|p| format!("wharf.p{p}.{queue}")).collect()
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

/// Runs the Python program `tests/interop/<script>` with `args`, killing it
/// if it outlives [`SCRIPT_LIMIT`].
async fn run_script(python: &Path, script: &str, args: &[&str]) -> ScriptRun {
    let mut child = Command::new(python)
        .arg(manifest_dir().join("tests/interop").join(script))
        .args(args)
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
async fn a_python_nats_client_publishes_and_requests() {
    let python = match support::provision::python() {
        Ok(python) => python,
        Err(why) => return skip("nats_interop", &format!("no Python environment: {why}")),
    };
    let url = nats_url();
    if let Err(why) = support::broker_reachable(&url) {
        return skip("nats_interop", &format!("NATS is not reachable: {why}"));
    }
    let broker = match Broker::connect(&url).await {
        Ok(broker) => broker,
        Err(error) => {
            return skip(
                "nats_interop",
                &format!("NATS at {url} answers but is not usable ({error}); scripts/brokers.sh says why"),
            );
        }
    };

    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    // Must start with `wharf-test.`, like every test queue.
    let prefix = format!("wharf-test.interop.{}.{nanos:x}", std::process::id());
    let orders = format!("{prefix}.orders");
    let quotes = format!("{prefix}.quote");
    let core = format!("{prefix}.quote-core");

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
    // One handler per quote route, recording which route it answered on.
    let quote = |queue: &str| {
        let requests = requests.clone();
        let queue = queue.to_owned();
        move |meta: Meta, request: QuoteRequest| {
            let requests = requests.clone();
            let queue = queue.clone();
            async move {
                requests.push(Request {
                    queue,
                    item: request.item.clone(),
                    content_type: meta.message().content_type.clone(),
                    message_id: meta.message_id().map(str::to_owned),
                    correlation_id: meta.correlation_id().map(str::to_owned),
                    reply_to: meta.reply_to().map(str::to_owned),
                    attempt: meta.attempt(),
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
            quote(&quotes),
            RouteOptions::new().max_attempts(1).name("interop-quote"),
        )
        .route_with(
            &core,
            quote(&core),
            RouteOptions::new()
                .max_attempts(1)
                .persistent(false)
                .name("interop-quote-core"),
        )
        .start()
        .await
        .expect("the app starts and creates its streams and subscriptions");

    // Everything is gathered first and asserted after the streams are gone,
    // so a failed assertion leaves nothing behind on the server.
    let run = run_script(&python, "nats_client.py", &[&prefix, &url]).await;
    let all_orders = eventually(PATIENCE, || arrivals.all().len() >= 2).await;
    let orders_settled = eventually(PATIENCE, || running.stats(&orders).acked >= 2).await;
    let letters = dead_letters(&broker, &quotes, 1, PATIENCE).await;
    let core_letters = dead_letters(&broker, &core, 1, PATIENCE).await;
    let order_stats = running.stats(&orders);
    let quote_stats = running.stats(&quotes);
    let core_stats = running.stats(&core);
    running.shutdown().await;
    for queue in [&orders, &quotes, &core] {
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
    let line = |key: &str, value: &str| -> &Value {
        lines
            .iter()
            .find(|l| l[key] == value)
            .unwrap_or_else(|| panic!("no line with {key} = {value:?}\n{}", run.describe()))
    };

    // Streams and consumers, as the JetStream API shows them to nats-py.
    let orders_stream = line("queue", &orders);
    assert_eq!(orders_stream["stream"], stream_name(&orders), "{orders_stream}");
    assert_eq!(
        stream_name(&orders),
        format!(
            "WHARF_wharf-test_2Einterop_2E{}_2E{nanos:x}_2Eorders",
            std::process::id()
        )
    );
    let quotes_stream = line("queue", &quotes);
    assert_eq!(quotes_stream["stream"], stream_name(&quotes), "{quotes_stream}");
    for (stream, queue) in [(orders_stream, &orders), (quotes_stream, &quotes)] {
        assert_eq!(stream["subjects"], json!(lane_subjects(queue)), "{stream}");
        assert_eq!(stream["retention"], "workqueue", "{stream}");
        assert_eq!(stream["storage"], "file", "{stream}");
        assert_eq!(stream["duplicate_window"], 120.0, "{stream}");
    }
    // A route's consumers wait its lease (15 s by default; workers renew
    // what they hold with in-progress acks) for an ack; a dead-letter
    // queue's, which wharf reads itself, 30 s.
    let consumer = |name: &str, filter: Option<String>, ack_wait: f64| {
        json!({
            "durable": name,
            "pull": true,
            "ack_policy": "explicit",
            "ack_wait": ack_wait,
            "max_deliver": -1,
            "filter_subject": filter,
        })
    };
    let lanes: serde_json::Map<String, Value> = (0..10)
        .map(|p| {
            let name = format!("wharf-p{p}");
            let config = consumer(&name, Some(format!("wharf.p{p}.{orders}")), 15.0);
            (name, config)
        })
        .collect();
    assert_eq!(
        orders_stream["consumers"],
        Value::Object(lanes),
        "a route with priority has one consumer per lane"
    );
    assert_eq!(
        quotes_stream["consumers"],
        json!({"wharf": consumer("wharf", None, 15.0)}),
        "a route without priority has one consumer, without a filter"
    );

    // The orders went to their lane's subject and were stored in the
    // queue's stream; the same Nats-Msg-Id again was a duplicate.
    let published: Vec<&Value> = lines.iter().filter(|l| l.get("published").is_some()).collect();
    assert_eq!(published.len(), 3, "{}", run.describe());
    for (line, (id, lane, duplicate)) in published.iter().zip([
        ("py-order-json-1", 7, false),
        ("py-order-msgpack-2", 3, false),
        ("py-order-json-1", 7, true),
    ]) {
        assert_eq!(line["published"], id, "{line}");
        assert_eq!(line["subject"], format!("wharf.p{lane}.{orders}"), "{line}");
        assert_eq!(line["stream"], stream_name(&orders), "{line}");
        assert_eq!(line["duplicate"], duplicate, "{line}");
    }

    // Replies: typed ones and error ones, over JetStream and core NATS.
    let reply = |name: &str| line("request", name);
    let inbox = lines
        .iter()
        .find_map(|l| l["inbox"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no inbox line\n{}", run.describe()));

    for (name, via, item, quantity, content_type) in [
        ("json", "jetstream", "teapot", 3, "application/json"),
        ("msgpack", "jetstream", "kettle", 2, "application/msgpack"),
        // An alias: the reply names the request's codec canonically.
        ("x-msgpack", "jetstream", "mug", 4, "application/msgpack"),
        // No content-type header: JSON, and the reply says so.
        ("core-json", "core", "spoon", 6, "application/json"),
        ("core-msgpack", "core", "fork", 7, "application/msgpack"),
    ] {
        let typed = reply(name);
        assert_eq!(typed["via"], via, "{typed}");
        assert_eq!(typed["status"], "ok", "{typed}");
        assert_eq!(typed["error_kind"], Value::Null, "{typed}");
        assert_eq!(typed["content_type"], content_type, "{typed}");
        assert_eq!(
            typed["headers"],
            json!(["content-type", "correlation-id", "wharf-status"]),
            "a reply has no Nats-Msg-Id and no reply-to: {typed}"
        );
        assert_eq!(
            typed["correlation_id_matches"], true,
            "the reply carries the request's correlation-id (or its Nats-Msg-Id without one): {typed}"
        );
        assert_eq!(
            typed["reply"],
            json!({
                "item": item,
                "quantity": quantity,
                "unit_cents": 250,
                "total_cents": 250 * quantity,
            }),
            "{typed}"
        );
    }
    for (name, via, missing) in [("out-of-stock", "jetstream", 5), ("core-out-of-stock", "core", 8)] {
        let error = reply(name);
        assert_eq!(error["via"], via, "{error}");
        assert_eq!(error["status"], "error", "{error}");
        assert_eq!(error["error_kind"], "out-of-stock", "{error}");
        assert_eq!(error["content_type"], "application/json", "{error}");
        assert_eq!(
            error["headers"],
            json!([
                "content-type",
                "correlation-id",
                "wharf-error-kind",
                "wharf-status"
            ]),
            "{error}"
        );
        assert_eq!(error["correlation_id_matches"], true, "{error}");
        assert_eq!(
            error["reply"],
            json!({
                "kind": "out-of-stock",
                "message": "not enough unobtainium",
                "details": {"item": "unobtainium", "missing": missing},
            }),
            "{error}"
        );
    }

    // The dead letters as stored, read by nats-py from the dead-letter
    // queues' streams.
    for (queue, handler, body) in [
        (
            &quotes,
            "interop-quote",
            r#"{"item": "unobtainium", "quantity": 5}"#,
        ),
        (
            &core,
            "interop-quote-core",
            r#"{"item": "unobtainium", "quantity": 8}"#,
        ),
    ] {
        let dlq = format!("{queue}.dlq");
        let stored = line("dead_letter", queue);
        assert_eq!(stored["stream"], stream_name(&dlq), "{stored}");
        assert_eq!(stored["subjects"], json!(lane_subjects(&dlq)), "{stored}");
        assert_eq!(stored["subject"], format!("wharf.p0.{dlq}"), "{stored}");
        assert_eq!(stored["body"], body, "dead letters keep the body byte for byte");
        let headers = &stored["headers"];
        assert_eq!(headers["content-type"], "application/json", "{stored}");
        assert_eq!(headers["wharf-dead-letter-reason"], "permanent", "{stored}");
        assert_eq!(headers["wharf-error-kind"], "out-of-stock", "{stored}");
        assert_eq!(
            headers["wharf-error-message"], "not enough unobtainium",
            "{stored}"
        );
        assert_eq!(headers["wharf-origin-queue"], queue.as_str(), "{stored}");
        assert_eq!(headers["wharf-handler"], handler, "{stored}");
        assert_eq!(headers["wharf-attempt"], "1", "{stored}");
        assert!(
            headers["wharf-failed-at"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z')),
            "{stored}"
        );
        let correlation_id = headers["correlation-id"]
            .as_str()
            .unwrap_or_else(|| panic!("the dead letter keeps correlation-id: {stored}"));
        // A copy gets a fresh Nats-Msg-Id; the original travels in
        // wharf-message-id.
        let original_id = format!("msg-{correlation_id}");
        assert_eq!(headers["wharf-message-id"], original_id.as_str(), "{stored}");
        assert!(
            headers["nats-msg-id"]
                .as_str()
                .is_some_and(|id| !id.is_empty() && id != original_id),
            "a dead letter has a fresh Nats-Msg-Id: {stored}"
        );
    }

    // The Rust side: both orders arrived with exactly what was published,
    // with the priority of their lane, in session order, once each.
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

    // Requests arrived with the caller's correlation id and reply address:
    // the `reply-to` header (the Python inbox) over JetStream, the NATS
    // reply subject (nats-py's request inbox) over core NATS.
    let seen = requests.all();
    let mut items: Vec<&str> = seen.iter().map(|r| r.item.as_str()).collect();
    items.sort_unstable();
    assert_eq!(
        items,
        [
            "fork",
            "kettle",
            "mug",
            "spoon",
            "teapot",
            "unobtainium",
            "unobtainium"
        ],
        "{seen:?}"
    );
    for request in &seen {
        assert_eq!(request.attempt, 1, "{request:?}");
        let reply_to = request.reply_to.as_deref().unwrap_or_default();
        let (content_type, message_id, correlated, queue) = match request.item.as_str() {
            "teapot" => (Some("application/json"), true, true, &quotes),
            "kettle" => (Some("application/msgpack"), true, true, &quotes),
            "mug" => (Some("application/x-msgpack"), true, true, &quotes),
            "spoon" => (None, false, true, &core),
            "fork" => (Some("application/msgpack"), true, false, &core),
            _ => (Some("application/json"), true, true, &request.queue),
        };
        assert_eq!(&request.queue, queue, "where {request:?} arrived");
        if request.queue == quotes {
            assert_eq!(
                reply_to, inbox,
                "a JetStream request's reply address is its reply-to header: {request:?}"
            );
        } else {
            assert!(
                reply_to.starts_with("_INBOX.") && reply_to != inbox,
                "a core request's reply address is its NATS reply subject: {request:?}"
            );
        }
        assert_eq!(request.content_type.as_deref(), content_type, "{request:?}");
        assert_eq!(request.correlation_id.is_some(), correlated, "{request:?}");
        assert_eq!(request.message_id.is_some(), message_id, "{request:?}");
        if let (Some(message_id), Some(correlation_id)) = (&request.message_id, &request.correlation_id) {
            assert_eq!(message_id, &format!("msg-{correlation_id}"), "{request:?}");
        }
    }
    assert_eq!(
        seen.iter().filter(|r| r.queue == quotes).count(),
        4,
        "four requests over JetStream, three over core NATS: {seen:?}"
    );
    assert_eq!(quote_stats.replies, 3, "{quote_stats:?}");
    assert_eq!(quote_stats.error_replies, 1, "{quote_stats:?}");
    assert_eq!(core_stats.replies, 2, "{core_stats:?}");
    assert_eq!(core_stats.error_replies, 1, "{core_stats:?}");

    // The failed requests are dead letters, on JetStream for the core
    // service too: the Python bytes as sent, the original message id, why.
    for (letters, queue, body) in [
        (
            &letters,
            &quotes,
            &br#"{"item": "unobtainium", "quantity": 5}"#[..],
        ),
        (
            &core_letters,
            &core,
            &br#"{"item": "unobtainium", "quantity": 8}"#[..],
        ),
    ] {
        assert_eq!(letters.len(), 1, "one dead letter in {queue}.dlq");
        let letter = &letters[0];
        assert_eq!(letter.error_kind(), Some("out-of-stock"), "{letter:?}");
        assert_eq!(
            letter.reason().map(|r| r.as_str()),
            Some("permanent"),
            "{letter:?}"
        );
        assert_eq!(letter.origin_queue(), Some(queue.as_str()), "{letter:?}");
        assert_eq!(letter.attempts(), Some(1), "{letter:?}");
        assert_eq!(
            &letter.message.body[..],
            body,
            "dead letters keep the body byte for byte"
        );
        let correlation_id = letter
            .message
            .correlation_id
            .as_deref()
            .unwrap_or_else(|| panic!("the dead letter keeps its correlation id: {letter:?}"));
        assert_eq!(
            letter.original().message_id,
            Some(format!("msg-{correlation_id}")),
            "the original message id comes back from wharf-message-id: {letter:?}"
        );
    }
}

/// What the handler of the dead-letter test saw of one message.
#[derive(Debug, Clone)]
struct Handled {
    message_id: Option<String>,
    priority: Option<u8>,
    content_type: Option<String>,
    headers: Vec<(String, String)>,
    order_id: u64,
    attempt: u32,
    /// Whether the handler accepted it (the "warehouse" was open).
    accepted: bool,
}

/// The lines a Python program printed, each a JSON object.
fn json_lines(run: &ScriptRun) -> Vec<Value> {
    assert!(
        run.status.is_some_and(|s| s.success()),
        "the Python program failed or timed out\n{}",
        run.describe()
    );
    run.stdout
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}\n{}", run.describe()))
        })
        .collect()
}

/// `tests/interop/nats_dead_letters.py` (docs/wire-format.md, "Reading and
/// replaying dead letters"): a plain nats-py program lists a queue's dead
/// letters and replays one while a wharf worker consumes the queue, without
/// a consumer of its own (the dead-letter stream, a WorkQueue stream with
/// wharf's consumer on it, refuses a second one). wharf handles the replayed
/// message; the others stay, as wharf's own `dead_letters(q).list()` shows.
#[tokio::test(flavor = "multi_thread")]
async fn a_python_script_lists_and_replays_dead_letters_while_a_worker_consumes() {
    let test = "a_python_script_lists_and_replays_dead_letters_while_a_worker_consumes";
    let python = match support::provision::python() {
        Ok(python) => python,
        Err(why) => return skip(test, &format!("no Python environment: {why}")),
    };
    let url = nats_url();
    if let Err(why) = support::broker_reachable(&url) {
        return skip(test, &format!("NATS is not reachable: {why}"));
    }
    let broker = match Broker::connect(&url).await {
        Ok(broker) => broker,
        Err(error) => {
            return skip(
                test,
                &format!("NATS at {url} answers but is not usable ({error}); scripts/brokers.sh says why"),
            );
        }
    };
    let raw = async_nats::connect(&url).await.expect("raw client connects");
    let queue = support::unique_queue("interop-dlq");
    let dlq_stream = stream_name(&format!("{queue}.dlq"));

    // The warehouse is closed: every order fails for good and is
    // dead-lettered, until the test opens it.
    let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handled = Log::<Handled>::new();
    let handler = {
        let (open, handled) = (open.clone(), handled.clone());
        move |meta: Meta, order: Order| {
            let (open, handled) = (open.clone(), handled.clone());
            async move {
                let accepted = open.load(std::sync::atomic::Ordering::SeqCst);
                let mut headers: Vec<(String, String)> = meta
                    .headers()
                    .iter()
                    .map(|(name, value)| (name.to_owned(), value.to_owned()))
                    .collect();
                headers.sort();
                handled.push(Handled {
                    message_id: meta.message_id().map(str::to_owned),
                    priority: meta.priority(),
                    content_type: meta.message().content_type.clone(),
                    headers,
                    order_id: order.id,
                    attempt: meta.attempt(),
                    accepted,
                });
                if accepted {
                    Ok(())
                } else {
                    Err(wharf::Error::permanent("the warehouse is closed").with_kind("closed"))
                }
            }
        }
    };
    let running = App::new(broker.clone())
        .shutdown_grace(Duration::from_secs(5))
        .route_with(&queue, handler, RouteOptions::new().name("interop-dlq"))
        .start()
        .await
        .expect("the app starts and creates its streams");

    let client = broker.client();
    let bodies = [
        r#"{"id":1,"item":"teapot","quantity":2}"#,
        r#"{"id":2,"item":"kettle","quantity":1}"#,
        r#"{"id":3,"item":"mug","quantity":6}"#,
    ];
    for (n, body) in bodies.iter().enumerate() {
        let id = n + 1;
        let mut message = Message::new(body.as_bytes().to_vec())
            .with_message_id(format!("dl-{id}"))
            .with_header("tenant", "acme");
        message = if id == 2 {
            message
                .with_content_type("application/json; charset=utf-8")
                .with_priority(4)
        } else {
            message.with_content_type("application/json")
        };
        client.send(&queue, message).await.expect("published");
    }
    let dead = broker.dead_letters(&queue);
    let mut before = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while before.len() < 3 && Instant::now() < deadline {
        before = dead.list(10).await.unwrap_or_default();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    open.store(true, std::sync::atomic::Ordering::SeqCst);

    // List (twice: listing takes nothing), then replay order 2 by its stream
    // sequence, then try the same sequence again.
    let listed = run_script(&python, "nats_dead_letters.py", &["list", &queue, &url]).await;
    let listed_again = run_script(&python, "nats_dead_letters.py", &["list", &queue, &url]).await;
    let listed_lines = json_lines(&listed);
    let order_2 = listed_lines
        .iter()
        .find(|l| l["headers"]["wharf-message-id"] == "dl-2")
        .and_then(|l| l["seq"].as_u64())
        .unwrap_or_else(|| panic!("order 2 is listed\n{}", listed.describe()))
        .to_string();
    let replayed = run_script(
        &python,
        "nats_dead_letters.py",
        &["replay", &queue, &url, &order_2],
    )
    .await;
    let replayed_again = run_script(
        &python,
        "nats_dead_letters.py",
        &["replay", &queue, &url, &order_2],
    )
    .await;
    let handled_replay = eventually(PATIENCE, || {
        handled.all().iter().any(|h| h.accepted && h.order_id == 2)
    })
    .await;
    let settled = eventually(PATIENCE, || running.stats(&queue).acked >= 1).await;
    let after = dead.list(10).await.expect("wharf lists the dead letters");
    let listed_after = run_script(&python, "nats_dead_letters.py", &["list", &queue, &url]).await;
    let dlq_consumers: Vec<String> = {
        use futures_util::StreamExt;
        let stream = async_nats::jetstream::new(raw.clone())
            .get_stream(&dlq_stream)
            .await
            .expect("the dead-letter stream exists");
        stream
            .consumer_names()
            .filter_map(|name| async move { name.ok() })
            .collect()
            .await
    };
    let stats = running.stats(&queue);
    running.shutdown().await;
    if let Err(error) = broker.delete_queue(&queue).await {
        eprintln!("could not delete test queue {queue}: {error}");
    }
    broker.close().await;

    eprintln!(
        "the Python program's output:\n{}\n{}\n{}\n{}",
        listed.describe(),
        replayed.describe(),
        replayed_again.describe(),
        listed_after.describe()
    );
    assert_eq!(before.len(), 3, "three dead letters to start with: {before:?}");

    // The listing: every dead letter, oldest first, as stored.
    assert_eq!(listed_lines.len(), 3, "{}", listed.describe());
    assert_eq!(
        json_lines(&listed_again),
        listed_lines,
        "listing takes nothing away"
    );
    let mut sequences = Vec::new();
    for (line, (n, body)) in listed_lines.iter().zip(bodies.iter().enumerate()) {
        let id = n + 1;
        let lane = if id == 2 { 4 } else { 0 };
        assert_eq!(line["subject"], format!("wharf.p{lane}.{queue}.dlq"), "{line}");
        assert_eq!(line["body"], *body, "the body byte for byte: {line}");
        let headers = &line["headers"];
        assert_eq!(headers["wharf-message-id"], format!("dl-{id}"), "{line}");
        assert_eq!(headers["wharf-dead-letter-reason"], "permanent", "{line}");
        assert_eq!(headers["wharf-error-kind"], "closed", "{line}");
        assert_eq!(
            headers["wharf-error-message"], "the warehouse is closed",
            "{line}"
        );
        assert_eq!(headers["wharf-origin-queue"], queue.as_str(), "{line}");
        assert_eq!(headers["wharf-handler"], "interop-dlq", "{line}");
        assert_eq!(headers["wharf-attempt"], "1", "{line}");
        assert_eq!(headers["tenant"], "acme", "{line}");
        sequences.push(line["seq"].as_u64().expect("a sequence"));
    }
    assert!(sequences.is_sorted(), "oldest first: {sequences:?}");

    // The replay: to the origin queue's lane, without the failure headers,
    // with the original message id and wharf-replayed-at, acknowledged by
    // the queue's stream.
    let replay_lines = json_lines(&replayed);
    assert_eq!(replay_lines.len(), 1, "{}", replayed.describe());
    let replay = &replay_lines[0];
    assert_eq!(replay["replayed"].to_string(), order_2, "{replay}");
    assert_eq!(replay["to"], format!("wharf.p4.{queue}"), "{replay}");
    assert_eq!(replay["stream"], stream_name(&queue), "{replay}");
    assert_eq!(replay["duplicate"], false, "{replay}");
    let headers = replay["headers"].as_object().expect("headers");
    let mut names: Vec<&str> = headers.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "content-type",
            "nats-msg-id",
            "tenant",
            "wharf-message-id",
            "wharf-replayed-at"
        ],
        "{replay}"
    );
    assert_eq!(headers["wharf-message-id"], "dl-2", "{replay}");
    assert_eq!(
        headers["content-type"], "application/json; charset=utf-8",
        "{replay}"
    );
    assert!(
        headers["wharf-replayed-at"]
            .as_str()
            .is_some_and(|t| t.len() == "2026-11-21T20:09:00.123Z".len() && t.ends_with('Z')),
        "{replay}"
    );
    // Gone once replayed: a second replay of it finds nothing.
    assert_eq!(
        json_lines(&replayed_again),
        vec![json!({"gone": order_2.parse::<u64>().unwrap()})],
        "{}",
        replayed_again.describe()
    );

    // wharf handled the replayed order like a new message.
    assert!(handled_replay, "order 2 came back: {:?}", handled.all());
    assert!(settled, "and was acked: {stats:?}");
    let seen = handled.all();
    let back: Vec<&Handled> = seen.iter().filter(|h| h.accepted).collect();
    assert_eq!(back.len(), 1, "only order 2 came back: {seen:?}");
    let back = back[0];
    assert_eq!(back.order_id, 2, "{back:?}");
    assert_eq!(back.message_id.as_deref(), Some("dl-2"), "{back:?}");
    assert_eq!(back.priority, Some(4), "{back:?}");
    assert_eq!(
        back.content_type.as_deref(),
        Some("application/json; charset=utf-8"),
        "{back:?}"
    );
    assert_eq!(back.attempt, 1, "a replay gets a fresh set of attempts: {back:?}");
    let names: Vec<&str> = back.headers.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["tenant", "wharf-replayed-at"], "{back:?}");

    // The other two stay, for wharf and for the script.
    let remaining: Vec<Option<&str>> = after.iter().map(|l| l.message.message_id.as_deref()).collect();
    assert_eq!(remaining, [Some("dl-1"), Some("dl-3")], "{after:?}");
    let left: Vec<Value> = json_lines(&listed_after)
        .iter()
        .map(|l| l["headers"]["wharf-message-id"].clone())
        .collect();
    assert_eq!(
        left,
        [json!("dl-1"), json!("dl-3")],
        "{}",
        listed_after.describe()
    );

    // Read without a consumer: the dead-letter stream has only wharf's.
    assert_eq!(dlq_consumers, ["wharf"], "no consumer was added");
}
