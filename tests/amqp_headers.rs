//! Headers on the RabbitMQ wire: idempotency keys are the bytes a publisher
//! sent, and the copies wharf publishes (retry, deferral, dead letter) carry
//! the original's headers but not the broker's own delivery counter.
//!
//! pika sends a Python `bytes` header as an AMQP byte array (field type
//! `x`). Read as UTF-8 with U+FFFD for what is not, the keys `\xffA`,
//! `\xfeA` and `\xc3A` and the text `"\u{FFFD}A"` were one key: one message
//! ran and three were acked as duplicates without running (issue 17, defect
//! 7). Here lapin publishes such headers exactly as pika does.
//!
//! A quorum queue counts its redeliveries of a message in
//! `x-delivery-count`; copies that kept it counted them again on every
//! deferral (issue 17, defect 12). Here a redelivered message is deferred
//! many times and dead-lettered, and its dead letter is read raw.

#![cfg(feature = "amqp")]

mod support;

use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{skip, unique_queue};
use wharf::{App, Broker, Context, Error, Message, Meta, RouteOptions, RouteStats, Running};

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const PATIENCE: Duration = Duration::from_secs(15);

#[derive(serde::Serialize, serde::Deserialize)]
struct Order {
    id: u64,
}

/// A key as pika sends it: `bytes` as a byte array, `str` as a long string.
fn byte_array(bytes: &[u8]) -> AMQPValue {
    AMQPValue::ByteArray(bytes.to_vec().into())
}

fn long_string(bytes: &[u8]) -> AMQPValue {
    AMQPValue::LongString(LongString::from(bytes.to_vec()))
}

/// Publishes order `id` with `key` to `queue` with confirms, as pika does.
async fn publish(channel: &lapin::Channel, queue: &str, id: u64, key: AMQPValue) {
    let mut headers = FieldTable::default();
    headers.insert("idempotency-key".into(), key);
    let properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_headers(headers);
    let body = serde_json::to_vec(&Order { id }).unwrap();
    let confirm = channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            &body,
            properties,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack(), "RabbitMQ confirms order {id}");
}

/// Waits until the route's stats satisfy `done`; fails with them after
/// [`PATIENCE`].
async fn until(running: &Running, queue: &str, what: &str, done: impl Fn(&RouteStats) -> bool) {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let stats = running.stats(queue);
        if done(&stats) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}; stats: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_compared_as_the_bytes_sent() {
    if let Err(why) = support::broker_reachable(URL) {
        return skip("amqp_headers", &format!("RabbitMQ is not reachable: {why}"));
    }
    let broker = match Broker::connect(URL).await {
        Ok(broker) => broker,
        Err(error) => {
            return skip("amqp_headers", &format!("RabbitMQ is not reachable: {error}"));
        }
    };
    let connection = Connection::connect(URL, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let queue = unique_queue("header-bytes");

    // Order id → the key bytes its handler saw (via `wharf::headers::to_bytes`).
    let runs: Arc<Mutex<BTreeMap<u64, Vec<Vec<u8>>>>> = Arc::default();
    // Order 5 fails for good until the flag is cleared, so that it is
    // dead-lettered and replayed.
    let broken = Arc::new(AtomicBool::new(true));
    let handler = {
        let (runs, broken) = (runs.clone(), broken.clone());
        move |meta: Meta, order: Order| {
            let (runs, broken) = (runs.clone(), broken.clone());
            async move {
                if order.id == 5 && broken.load(Ordering::SeqCst) {
                    return Err(Error::permanent("not yet"));
                }
                let key = wharf::headers::to_bytes(meta.idempotency_key().unwrap()).into_owned();
                runs.lock().unwrap().entry(order.id).or_default().push(key);
                Ok(())
            }
        }
    };
    let running = App::new(broker.clone())
        .route(&queue, handler)
        .start()
        .await
        .unwrap();

    // Four different keys that a lossy reading made one.
    publish(&channel, &queue, 1, byte_array(b"\xffA")).await;
    publish(&channel, &queue, 2, byte_array(b"\xfeA")).await;
    publish(&channel, &queue, 3, byte_array(b"\xc3A")).await;
    publish(&channel, &queue, 4, long_string("\u{FFFD}A".as_bytes())).await;
    until(&running, &queue, "four keys handled", |s| s.acked == 4).await;
    assert_eq!(
        running.stats(&queue).duplicates,
        0,
        "no key was taken for another"
    );

    // The same bytes again, as a byte array and as a long string: one key.
    publish(&channel, &queue, 11, byte_array(b"\xffA")).await;
    publish(&channel, &queue, 12, long_string(b"\xffA")).await;
    publish(&channel, &queue, 14, byte_array("\u{FFFD}A".as_bytes())).await;
    until(&running, &queue, "three duplicates acked", |s| s.duplicates == 3).await;

    // A dead letter keeps the key's bytes, and its replay sends them again.
    publish(&channel, &queue, 5, byte_array(b"\xfdA")).await;
    until(&running, &queue, "order 5 dead-lettered", |s| {
        s.dead_lettered == 1
    })
    .await;
    broken.store(false, Ordering::SeqCst);
    assert_eq!(broker.dead_letters(&queue).replay(1).await.unwrap(), 1);
    until(&running, &queue, "the replay handled", |s| s.acked == 5).await;
    publish(&channel, &queue, 15, byte_array(b"\xfdA")).await;
    until(&running, &queue, "its duplicate acked", |s| s.duplicates == 4).await;

    let stats = running.stats(&queue);
    let runs = runs.lock().unwrap().clone();
    running.shutdown().await;
    let _ = connection.close(200, "done".into()).await;
    broker.delete_queue(&queue).await.unwrap();
    broker.close().await;

    let expected: BTreeMap<u64, Vec<Vec<u8>>> = [
        (1, b"\xffA".to_vec()),
        (2, b"\xfeA".to_vec()),
        (3, b"\xc3A".to_vec()),
        (4, "\u{FFFD}A".as_bytes().to_vec()),
        (5, b"\xfdA".to_vec()),
    ]
    .into_iter()
    .map(|(id, key)| (id, vec![key]))
    .collect();
    assert_eq!(runs, expected, "each key ran once, and the handler saw its bytes");
    assert_eq!((stats.acked, stats.duplicates, stats.dead_lettered), (5, 4, 1));
}

/// A message a quorum queue redelivered (its consumer went away without
/// acking it) is then deferred several times (it waits for its turn in a
/// session) and at last dead-lettered: its handler saw the one redelivery as
/// its one earlier attempt, each deferral cost nothing, and the dead letter
/// carries neither the queue's `x-delivery-count` nor an `x-death` that
/// grew with every deferral (RabbitMQ keeps one entry per queue and reason,
/// and counts in it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_do_not_carry_the_quorum_delivery_count() {
    let quorum_url = format!("{URL}?queue_type=quorum");
    if let Err(why) = support::broker_reachable(URL) {
        return skip("amqp_headers", &format!("RabbitMQ is not reachable: {why}"));
    }
    let broker = match Broker::connect(&quorum_url).await {
        Ok(broker) => broker,
        Err(error) => return skip("amqp_headers", &format!("RabbitMQ is not reachable: {error}")),
    };
    let queue = unique_queue("quorum-copies");
    broker
        .declare(&wharf::transport::QueueSpec::new(queue.clone()))
        .await
        .unwrap();
    // Number 2 of a session, published before number 1, taken and given
    // back by a plain consumer that goes away: RabbitMQ redelivers it.
    let second = Message::json(&Order { id: 2 }).unwrap().with_session("s", 2);
    broker.client().send(&queue, second).await.unwrap();
    let connection = Connection::connect(URL, ConnectionProperties::default())
        .await
        .unwrap();
    let taker = connection.create_channel().await.unwrap();
    let mut got = None;
    for _ in 0..100 {
        got = taker
            .basic_get(queue.as_str().into(), BasicGetOptions::default())
            .await
            .unwrap();
        if got.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(got.is_some(), "the message is in the queue");
    taker.close(200, "gone".into()).await.unwrap();

    let attempts: Arc<Mutex<Vec<(u64, u32)>>> = Arc::default();
    let handler = {
        let attempts = attempts.clone();
        move |ctx: Context, order: Order| {
            let attempts = attempts.clone();
            async move {
                attempts.lock().unwrap().push((order.id, ctx.attempt()));
                if order.id == 2 {
                    return Err(Error::permanent("dead-lettered to be read"));
                }
                Ok(())
            }
        }
    };
    // One delivery at a time: number 2 cannot wait in memory for number
    // 1, so it is deferred until 1 has run.
    let options = RouteOptions::new()
        .prefetch(1)
        .max_attempts(3)
        .defer_delay(Duration::from_millis(20));
    let running = App::new(broker.clone())
        .route_with(&queue, handler, options)
        .start()
        .await
        .unwrap();
    const DEFERRALS: u64 = 6;
    until(&running, &queue, "number 2 deferred again and again", |s| {
        s.deferred >= DEFERRALS
    })
    .await;
    let first = Message::json(&Order { id: 1 }).unwrap().with_session("s", 1);
    broker.client().send(&queue, first).await.unwrap();
    until(&running, &queue, "number 2 dead-lettered", |s| {
        s.dead_lettered == 1
    })
    .await;
    let stats = running.stats(&queue);
    running.shutdown().await;

    let dead_letters = connection.create_channel().await.unwrap();
    let letter = dead_letters
        .basic_get(
            format!("{queue}.dlq").as_str().into(),
            BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
        .expect("the dead letter");
    let _ = connection.close(200, "done".into()).await;
    broker.delete_queue(&queue).await.unwrap();
    broker.close().await;

    assert_eq!(
        attempts.lock().unwrap().clone(),
        vec![(1, 1), (2, 2)],
        "number 2 ran once, as its second attempt (the redelivery was the first); {stats:?}"
    );
    let headers = letter.delivery.properties.headers().clone().unwrap_or_default();
    let headers = headers.inner();
    assert!(
        !headers.contains_key("x-delivery-count"),
        "the dead letter has no delivery count of its own: {headers:?}"
    );
    assert_eq!(
        headers.get("wharf-attempt"),
        Some(&AMQPValue::LongLongInt(2)),
        "{headers:?}"
    );
    // One entry for the one delay queue it went through, counting every
    // trip through it.
    let Some(AMQPValue::FieldArray(deaths)) = headers.get("x-death") else {
        panic!("RabbitMQ's x-death from the delay queue: {headers:?}");
    };
    assert_eq!(deaths.as_slice().len(), 1, "{deaths:?}");
    let AMQPValue::FieldTable(death) = &deaths.as_slice()[0] else {
        panic!("{deaths:?}");
    };
    let count = match death.inner().get("count") {
        Some(AMQPValue::LongLongInt(n)) => *n as u64,
        other => panic!("x-death count: {other:?}"),
    };
    assert!(count >= DEFERRALS, "x-death counts the deferrals: {death:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publishers_delivery_count_is_not_the_brokers() {
    // `x-delivery-count` is the broker's count of redeliveries (a quorum
    // queue sets it when it redelivers). On a first delivery it can only
    // be a publisher's header: it must not read as deliveries that never
    // happened ("delivered 1000 times … its worker died").
    if let Err(why) = support::broker_reachable(URL) {
        return skip("amqp_headers", &format!("RabbitMQ is not reachable: {why}"));
    }
    let broker = match Broker::connect(URL).await {
        Ok(broker) => broker,
        Err(error) => {
            return skip("amqp_headers", &format!("RabbitMQ is not reachable: {error}"));
        }
    };
    let connection = Connection::connect(URL, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let queue = unique_queue("publisher-delivery-count");
    let attempts: Arc<Mutex<Vec<u32>>> = Arc::default();
    let handler = {
        let attempts = attempts.clone();
        move |ctx: Context, _: Order| {
            let attempts = attempts.clone();
            async move { attempts.lock().unwrap().push(ctx.attempt()) }
        }
    };
    let running = App::new(broker.clone())
        .route(&queue, handler)
        .start()
        .await
        .unwrap();
    let mut headers = FieldTable::default();
    headers.insert("x-delivery-count".into(), AMQPValue::LongLongInt(999));
    let properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_headers(headers);
    let body = serde_json::to_vec(&Order { id: 1 }).unwrap();
    channel
        .basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            &body,
            properties,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    until(&running, &queue, "the message handled", |s| s.acked == 1).await;
    assert_eq!(*attempts.lock().unwrap(), vec![1], "its first attempt");
    assert_eq!(running.stats(&queue).dead_lettered, 0);
    running.shutdown().await;
    broker.delete_queue(&queue).await.unwrap();
}
