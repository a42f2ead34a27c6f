//! Hostile input on NATS that the client library itself stumbles over,
//! published with raw `HPUB` frames as any program could:
//!
//! - a header block async-nats cannot parse (not UTF-8, a line without a
//!   colon, a status that is not a number) ends in the dead-letter stream
//!   with its body byte for byte, the stored header block in
//!   `wharf-raw-headers` and reason `invalid-header`; the worker's other
//!   messages are handled exactly once (those the server was sending right
//!   behind an unreadable one come back after the lease), and what it
//!   publishes meanwhile goes out (its sending connection stays up: only
//!   the connection it receives on is dropped by async-nats, once);
//! - the same for events on the team's own subjects, whether the route
//!   sources them into its stream or reads the team's stream through a
//!   consumer it names; there the unreadable event is acknowledged on that
//!   consumer, not deleted from the team's stream;
//! - an ordinary message whose header block starts with a status line
//!   (`NATS/1.0 503`, `100 Idle Heartbeat`, `404`, `408`) is handled like
//!   any other.
//!
//! Needs NATS with JetStream on `WHARF_TEST_NATS_URL` (default
//! `nats://127.0.0.1:4222`); skips loudly without it, fails under `CI=true`.

#![cfg(feature = "nats")]

mod support;

use base64::Engine;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{dead_letters, skip, unique_queue, wait_for};
use wharf::{App, Broker, DeadLetterReason, Meta, Raw, RouteOptions, Subscription};

/// The route's lease: how long a message sent to a connection that was
/// lost stays with it before JetStream hands it out again.
const LEASE: Duration = Duration::from_secs(5);

fn url() -> String {
    std::env::var("WHARF_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

async fn connect(test: &str) -> Option<Broker> {
    if let Err(why) = support::broker_reachable(&url()) {
        skip(test, &format!("no NATS: {why}"));
        return None;
    }
    match Broker::connect(&url()).await {
        Ok(broker) => Some(broker),
        Err(error) => {
            skip(test, &error.to_string());
            None
        }
    }
}

/// Publishes `body` with the header block `headers` to `subject` in one raw
/// `HPUB` frame, as nats-py or the Go client could, and waits for the
/// server to have it (`PING`/`PONG`). The server stores the block as sent.
fn raw_publish(subject: &str, headers: &[u8], body: &[u8]) {
    let address = url()
        .trim_start_matches("nats://")
        .rsplit('@')
        .next()
        .unwrap()
        .to_owned();
    let stream = TcpStream::connect(address).expect("NATS reachable");
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("INFO"), "{line}");
    let mut writer = stream;
    let mut frame = b"CONNECT {\"verbose\":false,\"headers\":true,\"protocol\":1}\r\n".to_vec();
    frame.extend_from_slice(
        format!(
            "HPUB {subject} {} {}\r\n",
            headers.len(),
            headers.len() + body.len()
        )
        .as_bytes(),
    );
    frame.extend_from_slice(headers);
    frame.extend_from_slice(body);
    frame.extend_from_slice(b"\r\nPING\r\n");
    writer.write_all(&frame).unwrap();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert!(!line.starts_with("-ERR"), "the server refused the frame: {line}");
        if line.starts_with("PONG") {
            return;
        }
    }
}

/// Bodies handled, with how often each was.
#[derive(Clone, Default)]
struct Handled(Arc<Mutex<HashMap<Vec<u8>, u32>>>);

impl Handled {
    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    fn times(&self, body: &[u8]) -> u32 {
        self.0.lock().unwrap().get(body).copied().unwrap_or(0)
    }

    fn repeated(&self) -> Vec<String> {
        let handled = self.0.lock().unwrap();
        handled
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(body, n)| format!("{} x{n}", String::from_utf8_lossy(body)))
            .collect()
    }
}

async fn record(wharf::State(handled): wharf::State<Handled>, Raw { body, .. }: Raw) {
    *handled.0.lock().unwrap().entry(body.to_vec()).or_default() += 1;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_header_blocks_are_dead_lettered_and_disturb_nothing_else() {
    let test = "unreadable_header_blocks_are_dead_lettered_and_disturb_nothing_else";
    let Some(broker) = connect(test).await else {
        return;
    };
    let queue = unique_queue("hostile-headers");
    let handled = Handled::default();
    let running = App::with_state(broker.clone(), handled.clone())
        .route_with(
            &queue,
            record,
            RouteOptions::new()
                .concurrency(8)
                .timeout(Duration::from_secs(2))
                .lease(LEASE),
        )
        .start()
        .await
        .unwrap();
    let client = broker.client();
    let subject = format!("wharf.p0.{queue}");

    for i in 0..50 {
        client.publish(&queue, &format!("before-{i}")).await.unwrap();
    }
    wait_for("the first valid messages", Duration::from_secs(10), || {
        handled.count() == 50
    })
    .await;

    let poison: [(&[u8], &[u8]); 3] = [
        (b"NATS/1.0\r\nx-junk: \xff\xfe\r\n\r\n", b"\"junk value\""),
        (
            b"NATS/1.0\r\nnocolonline\r\nidempotency-key: p2\r\n\r\n",
            b"\"no colon\"",
        ),
        (b"NATS/1.0 abc\r\n\r\n", b"\x00\x01 binary body \xff"),
    ];
    for (headers, body) in poison {
        raw_publish(&subject, headers, body);
    }
    // Valid messages keep flowing while the unreadable ones are dealt with.
    for i in 0..50 {
        client.publish(&queue, &format!("after-{i}")).await.unwrap();
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let letters = dead_letters(&broker, &queue, poison.len(), Duration::from_secs(15)).await;
    assert_eq!(
        letters.len(),
        poison.len(),
        "every unreadable message is dead-lettered"
    );
    for (headers, body) in poison {
        let letter = letters
            .iter()
            .find(|l| l.message.body.as_ref() == body)
            .unwrap_or_else(|| panic!("no dead letter with body {:?}", String::from_utf8_lossy(body)));
        assert_eq!(letter.reason(), Some(DeadLetterReason::InvalidHeader));
        assert_eq!(letter.origin_queue(), Some(queue.as_str()));
        let raw = letter
            .message
            .header("wharf-raw-headers")
            .expect("the stored header block");
        let raw = base64::engine::general_purpose::STANDARD.decode(raw).unwrap();
        assert_eq!(raw, headers, "the header block as stored");
        assert!(letter.error_message().unwrap().contains("cannot read"));
    }
    // Those the server was sending right behind an unreadable one went to
    // the connection async-nats dropped: they come back after the lease.
    wait_for("every valid message", LEASE + Duration::from_secs(10), || {
        handled.count() == 100
    })
    .await;
    assert_eq!(
        handled.repeated(),
        Vec::<String>::new(),
        "no valid message ran twice"
    );
    for (_, body) in poison {
        assert_eq!(
            handled.times(body),
            0,
            "an unreadable message never reaches the handler"
        );
    }
    let stats = running.stats(&queue);
    assert_eq!(
        stats.rejected,
        poison.len() as u64,
        "counted as rejected: {stats:?}"
    );

    // Nothing of them is left to come back: the stream holds no message.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(broker.queue_depth(&queue).await.unwrap(), 0);
    running.shutdown().await;
    broker.delete_queue(&queue).await.unwrap();
}

/// An unreadable event reaches neither a route sourcing the team's stream
/// nor one reading it through a consumer it names: each dead-letters it
/// once, counted as rejected, and handles every other event once. The
/// team's stream keeps it (other services read it too); the named consumer
/// has it acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_events_are_dead_lettered_by_every_subscribed_route() {
    let test = "unreadable_events_are_dead_lettered_by_every_subscribed_route";
    let Some(broker) = connect(test).await else {
        return;
    };
    let (stream, prefix) = support::events::unique_events("hostile");
    let jetstream = async_nats::jetstream::new(async_nats::connect(url()).await.unwrap());
    jetstream
        .create_stream(async_nats::jetstream::stream::Config {
            name: stream.clone(),
            subjects: vec![format!("{prefix}.>")],
            ..Default::default()
        })
        .await
        .unwrap();
    let (sourcing, consuming) = (
        unique_queue("hostile-sourcing"),
        unique_queue("hostile-consuming"),
    );
    let consumer = consuming.replace('.', "_");
    let options = |subscription: Subscription| {
        RouteOptions::new()
            .subscribe(subscription)
            .concurrency(4)
            .lease(LEASE)
    };
    let handled = [Handled::default(), Handled::default()];
    let mut apps = Vec::new();
    for (queue, subscription, handled) in [
        (
            &sourcing,
            Subscription::new(&stream, format!("{prefix}.>")),
            &handled[0],
        ),
        (
            &consuming,
            Subscription::new(&stream, format!("{prefix}.>")).consumer(&consumer),
            &handled[1],
        ),
    ] {
        let app = App::with_state(broker.clone(), handled.clone())
            .route_with(queue, record, options(subscription))
            .start()
            .await
            .unwrap();
        apps.push(app);
    }
    let client = broker.client();
    let subject = format!("{prefix}.orders.created");
    for i in 0..10 {
        client
            .publish_to_subject(&subject, &format!("before-{i}"))
            .await
            .unwrap();
    }
    raw_publish(
        &subject,
        b"NATS/1.0\r\nx-junk: \xff\xfe\r\n\r\n",
        b"\"poison event\"",
    );
    for i in 0..10 {
        client
            .publish_to_subject(&subject, &format!("after-{i}"))
            .await
            .unwrap();
    }

    for (queue, handled) in [(&sourcing, &handled[0]), (&consuming, &handled[1])] {
        let letters = dead_letters(&broker, queue, 1, LEASE + Duration::from_secs(15)).await;
        assert_eq!(letters.len(), 1, "{queue}: the unreadable event dead-lettered");
        assert_eq!(letters[0].reason(), Some(DeadLetterReason::InvalidHeader));
        assert_eq!(letters[0].message.body.as_ref(), b"\"poison event\"");
        assert_eq!(letters[0].origin_queue(), Some(queue.as_str()));
        wait_for(
            &format!("{queue}: every valid event"),
            LEASE + Duration::from_secs(15),
            || handled.count() == 20,
        )
        .await;
        assert_eq!(handled.repeated(), Vec::<String>::new(), "{queue}: none twice");
        assert_eq!(handled.times(b"\"poison event\""), 0);
    }
    for (app, queue) in apps.iter().zip([&sourcing, &consuming]) {
        assert_eq!(app.stats(queue).rejected, 1, "{queue}: counted as rejected");
    }
    let mut team = jetstream.get_stream(&stream).await.unwrap();
    assert_eq!(
        team.info().await.unwrap().state.messages,
        21,
        "the team's stream keeps every event"
    );
    let named = team.consumer_info(&consumer).await.unwrap();
    assert_eq!(
        (named.num_ack_pending, named.num_pending),
        (0, 0),
        "the consumer has every event acknowledged, the unreadable one too"
    );
    for app in apps {
        app.shutdown().await;
    }
    broker.delete_queue(&sourcing).await.unwrap();
    broker.delete_queue(&consuming).await.unwrap();
    let _ = jetstream.delete_stream(&stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_status_lines_are_ordinary_messages() {
    let test = "stored_status_lines_are_ordinary_messages";
    let Some(broker) = connect(test).await else {
        return;
    };
    let queue = unique_queue("hostile-status");
    let keys: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let seen = keys.clone();
    let handled = Handled::default();
    let running = App::with_state(broker.clone(), handled.clone())
        .route_with(
            &queue,
            move |wharf::State(handled): wharf::State<Handled>, meta: Meta, Raw { body, .. }: Raw| {
                let seen = seen.clone();
                async move {
                    seen.lock()
                        .unwrap()
                        .push(meta.header("idempotency-key").map(str::to_owned));
                    *handled.0.lock().unwrap().entry(body.to_vec()).or_default() += 1;
                }
            },
            RouteOptions::new(),
        )
        .start()
        .await
        .unwrap();
    let subject = format!("wharf.p0.{queue}");
    let blocks: [&[u8]; 4] = [
        b"NATS/1.0 503\r\nidempotency-key: s503\r\n\r\n",
        b"NATS/1.0 100 Idle Heartbeat\r\nidempotency-key: s100\r\n\r\n",
        b"NATS/1.0 404 No Messages\r\nidempotency-key: s404\r\n\r\n",
        b"NATS/1.0 408 Request Timeout\r\nidempotency-key: s408\r\n\r\n",
    ];
    for (i, block) in blocks.iter().enumerate() {
        raw_publish(&subject, block, format!("{i}").as_bytes());
    }
    // And a plain one after them: the subscription is undisturbed.
    broker.client().publish(&queue, &"plain").await.unwrap();
    wait_for("every message handled", Duration::from_secs(10), || {
        handled.count() == blocks.len() + 1
    })
    .await;
    let mut keys = keys.lock().unwrap().clone();
    keys.sort();
    assert_eq!(
        keys,
        [None, Some("s100"), Some("s404"), Some("s408"), Some("s503")].map(|k| k.map(str::to_owned)),
        "their other headers are read"
    );
    let stats = running.stats(&queue);
    assert_eq!((stats.acked, stats.rejected), (5, 0), "{stats:?}");
    running.shutdown().await;
    broker.delete_queue(&queue).await.unwrap();
}
