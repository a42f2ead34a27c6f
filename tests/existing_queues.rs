//! Routes that take their queue as it is (`RouteOptions::existing_queue`):
//! a queue another team declared with settings wharf would not choose is
//! used instead of refused, and a missing one is a clear error.

#![cfg(any(feature = "amqp", feature = "nats"))]

mod support;

#[allow(unused_imports)]
use support::events::{Order, Seen, try_start};
#[allow(unused_imports)]
use support::{chain, skip, unique_queue, wait_for};
#[allow(unused_imports)]
use wharf::{Broker, BrokerErrorKind, RouteOptions};

/// Runs `tests/interop/declare_existing.py` for `broker` and `queue`;
/// `false` after saying why when there is no Python environment.
fn declare_from_python(test: &str, broker: &str, queue: &str, url: &str) -> bool {
    let python = match support::provision::python() {
        Ok(python) => python,
        Err(why) => {
            skip(test, &format!("no Python environment: {why}"));
            return false;
        }
    };
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/declare_existing.py");
    let output = std::process::Command::new(python)
        .arg(script)
        .args([broker, queue, url])
        .output()
        .expect("the Python program runs");
    assert!(
        output.status.success(),
        "declaring from Python failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    true
}

#[cfg(feature = "amqp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_a_queue_declared_otherwise_is_used_as_it_is() {
    const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
    let test = "rabbitmq_a_queue_declared_otherwise_is_used_as_it_is";
    if let Err(why) = support::broker_reachable(URL) {
        return skip(test, &format!("RabbitMQ is not reachable: {why}"));
    }
    let broker = Broker::connect(URL).await.unwrap();
    let (queue, missing) = (unique_queue("theirs"), unique_queue("missing"));
    // Another team's queue, declared from Python (pika): not durable, with
    // a message TTL.
    if !declare_from_python(test, "amqp", &queue, URL) {
        return;
    }

    let start = async |queue: &str, options: RouteOptions, seen: &Seen| {
        try_start(&broker, queue, options, seen).await
    };
    let error = start(&queue, RouteOptions::new(), &Seen::default())
        .await
        .err()
        .expect("declaring it is refused");
    assert_eq!(error.kind(), BrokerErrorKind::Config, "{}", chain(&error));

    let seen = Seen::default();
    let running = start(&queue, RouteOptions::new().existing_queue(), &seen)
        .await
        .unwrap_or_else(|e| panic!("taken as it is: {}", chain(&e)));
    broker.client().publish(&queue, &Order { id: 1 }).await.unwrap();
    wait_for("the order handled", std::time::Duration::from_secs(15), || {
        seen.lock().unwrap().as_slice() == [1]
    })
    .await;
    running.shutdown().await;

    let error = start(&missing, RouteOptions::new().existing_queue(), &Seen::default())
        .await
        .err()
        .expect("a missing queue is refused");
    assert_eq!(error.kind(), BrokerErrorKind::Config);
    assert!(
        chain(&error).contains(&format!("queue {missing:?} does not exist")),
        "{}",
        chain(&error)
    );

    // A queue exclusive to its owner's connection cannot be consumed by
    // anyone else: said so, not a bare RESOURCE_LOCKED.
    let owner = lapin::Connection::connect(URL, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let exclusive = unique_queue("exclusive");
    owner
        .create_channel()
        .await
        .unwrap()
        .queue_declare(
            exclusive.as_str().into(),
            lapin::options::QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
    let error = start(&exclusive, RouteOptions::new().existing_queue(), &Seen::default())
        .await
        .err()
        .expect("an exclusive queue is refused");
    assert_eq!(error.kind(), BrokerErrorKind::Config, "{}", chain(&error));
    assert!(
        chain(&error).contains("is exclusive to the connection"),
        "{}",
        chain(&error)
    );
    owner.close(200, "done".into()).await.unwrap();
    broker.delete_queue(&queue).await.unwrap();
    broker.delete_queue(&missing).await.unwrap();
}

#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_a_stream_created_otherwise_is_used_as_it_is() {
    const URL: &str = "nats://127.0.0.1:4222";
    let test = "nats_a_stream_created_otherwise_is_used_as_it_is";
    if let Err(why) = support::broker_reachable(URL) {
        return skip(test, &format!("NATS is not reachable: {why}"));
    }
    let broker = Broker::connect(URL).await.unwrap();
    let (queue, missing) = (unique_queue("theirs"), unique_queue("missing"));
    // The stream as the wire format names it, made from Python (nats-py)
    // in memory storage.
    if !declare_from_python(test, "nats", &queue, URL) {
        return;
    }
    let file = || RouteOptions::new().stream_storage(wharf::StreamStorage::File);
    let start = async |queue: &str, options: RouteOptions, seen: &Seen| {
        try_start(&broker, queue, options, seen).await
    };
    let error = start(&queue, file(), &Seen::default())
        .await
        .err()
        .expect("a different stream is refused");
    assert_eq!(error.kind(), BrokerErrorKind::Config, "{}", chain(&error));

    let seen = Seen::default();
    let running = start(&queue, file().existing_queue(), &seen)
        .await
        .unwrap_or_else(|e| panic!("taken as it is: {}", chain(&e)));
    broker.client().publish(&queue, &Order { id: 1 }).await.unwrap();
    wait_for("the order handled", std::time::Duration::from_secs(15), || {
        seen.lock().unwrap().as_slice() == [1]
    })
    .await;
    running.shutdown().await;

    let error = start(&missing, RouteOptions::new().existing_queue(), &Seen::default())
        .await
        .err()
        .expect("a missing stream is refused");
    assert_eq!(error.kind(), BrokerErrorKind::Config);
    assert!(chain(&error).contains("does not exist"), "{}", chain(&error));
    broker.delete_queue(&queue).await.unwrap();
    broker.delete_queue(&missing).await.unwrap();
}

/// A stream taken as it is that does not offer what wharf needs (lanes it
/// does not capture, deletes denied), or a consumer on it that wharf
/// cannot read through, is refused with each shortfall named, and left
/// as it is.
#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_an_adopted_stream_falling_short_is_refused_with_each_difference() {
    use async_nats::jetstream::{self, consumer, stream};
    const URL: &str = "nats://127.0.0.1:4222";
    let test = "nats_an_adopted_stream_falling_short_is_refused_with_each_difference";
    if let Err(why) = support::broker_reachable(URL) {
        return skip(test, &format!("NATS is not reachable: {why}"));
    }
    let broker = Broker::connect(URL).await.unwrap();
    let jetstream = jetstream::new(async_nats::connect(URL).await.unwrap());
    // The stream name as docs/wire-format.md encodes it: '.' is _2E.
    let name_of = |queue: &str| format!("WHARF_{}", queue.replace('.', "_2E"));
    let refused = async |queue: &str| {
        let options = RouteOptions::new().existing_queue();
        let error = try_start(&broker, queue, options, &Seen::default())
            .await
            .err()
            .expect("refused");
        assert_eq!(error.kind(), BrokerErrorKind::Config, "{}", chain(&error));
        chain(&error)
    };

    let short = unique_queue("short");
    jetstream
        .create_stream(stream::Config {
            name: name_of(&short),
            subjects: vec![format!("wharf.p0.{short}")],
            deny_delete: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let message = refused(&short).await;
    assert!(
        message.contains(&format!("not [\"wharf.p1.{short}\"")),
        "{message}"
    );
    assert!(message.contains("deny_delete"), "{message}");
    let kept = jetstream.get_stream(name_of(&short)).await.unwrap();
    assert_eq!(kept.cached_info().config.subjects.len(), 1, "left as it is");

    let foreign = unique_queue("foreign-consumer");
    let stream = jetstream
        .create_stream(stream::Config {
            name: name_of(&foreign),
            subjects: vec![format!("wharf.*.{foreign}")],
            ..Default::default()
        })
        .await
        .unwrap();
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("wharf".into()),
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let message = refused(&foreign).await;
    assert!(message.contains("consumer \"wharf\""), "{message}");
    assert!(message.contains("ack policy is none"), "{message}");

    // A 'wharf' consumer reading one lane only would leave the others
    // unread.
    let narrow = unique_queue("narrow-consumer");
    let stream = jetstream
        .create_stream(stream::Config {
            name: name_of(&narrow),
            subjects: vec![format!("wharf.*.{narrow}")],
            ..Default::default()
        })
        .await
        .unwrap();
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("wharf".into()),
            filter_subject: format!("wharf.p0.{narrow}"),
            ack_policy: consumer::AckPolicy::Explicit,
            max_deliver: -1,
            ..Default::default()
        })
        .await
        .unwrap();
    let message = refused(&narrow).await;
    assert!(
        message.contains(&format!(
            "it delivers \"wharf.p0.{narrow}\", and wharf reads the whole stream"
        )),
        "{message}"
    );
    broker.delete_queue(&narrow).await.unwrap();
    broker.delete_queue(&short).await.unwrap();
    broker.delete_queue(&foreign).await.unwrap();
}
