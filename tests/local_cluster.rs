//! The clusters and TLS brokers of `tests/support/local_cluster.rs` (and
//! `scripts/local-cluster.sh` under it) work, checked with the raw clients:
//! a JetStream stream with three replicas on the NATS cluster keeps its
//! messages while a server is killed; a quorum queue declared through one
//! RabbitMQ node is read back through another while the first is down; the
//! TLS brokers let in a client with the right certificate and refuse one
//! without. wharf itself is not involved.
//!
//! `cargo test --features amqp,nats --test local_cluster -- --nocapture`
//! (as root here: RabbitMQ nodes run as the rabbitmq user). The four tests
//! run side by side in about 30 s, most of it the RabbitMQ cluster booting.
//! Without the programs they skip loudly; with `CI=true` that fails.

#![cfg(all(feature = "amqp", feature = "nats"))]

mod support;

use async_nats::jetstream;
use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties, DefaultConnectionBuilder};
use std::time::Duration;
use support::local_cluster::{NatsCluster, RabbitCluster, TlsNats, TlsRabbit};
use support::unique_queue;

/// How long a client may take to do one thing against a local cluster.
const PATIENCE: Duration = Duration::from_secs(20);

async fn within<T>(what: &str, work: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, work)
        .await
        .unwrap_or_else(|_| panic!("timed out after {PATIENCE:?}: {what}"))
}

/// Retries `work` until it succeeds; fails with its last error after
/// [`PATIENCE`].
async fn retry<T>(what: &str, mut work: impl AsyncFnMut() -> Result<T, String>) -> T {
    let started = tokio::time::Instant::now();
    let deadline = started + PATIENCE;
    let mut first = None;
    loop {
        let error = match tokio::time::timeout_at(deadline, work()).await {
            Ok(Ok(done)) => {
                if let Some(first) = first {
                    eprintln!(
                        "{what}: done after {:.1?}; it first failed with: {first}",
                        started.elapsed()
                    );
                }
                return done;
            }
            Ok(Err(error)) => error,
            Err(_) => "no answer".to_owned(),
        };
        first.get_or_insert_with(|| error.clone());
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: still failing after {PATIENCE:?}: {error}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn nats_cluster_keeps_a_three_replica_stream_while_a_server_is_down() {
    let Some(cluster) = NatsCluster::start("local_cluster::nats_cluster") else {
        return;
    };
    assert_eq!(cluster.urls.len(), 3, "{:?}", cluster.urls);
    let name = unique_queue("cluster").replace('.', "-");
    let subject = format!("{name}.in");

    let first = within("connecting to server 1", async_nats::connect(&cluster.urls[0]))
        .await
        .expect("server 1 takes clients");
    let js = jetstream::new(first);
    let mut stream = within(
        "creating the stream",
        js.create_stream(jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            num_replicas: 3,
            ..Default::default()
        }),
    )
    .await
    .expect("a stream with three replicas is created");
    let ack = within("publishing", async {
        js.publish(subject.clone(), "one".into()).await?.await
    })
    .await
    .expect("the message is stored");
    let info = within("the stream's info", stream.info()).await.unwrap();
    let replicas = info.cluster.as_ref().map(|c| c.replicas.len());
    assert_eq!(
        (info.config.num_replicas, replicas, info.state.messages),
        (3, Some(2), 1),
        "three replicas (a leader and two followers) hold one message: {info:?}"
    );

    // One server down: the other two are a majority, and take more. If it
    // led the stream or the cluster's metadata, requests go unanswered until
    // the other two elect a new leader (a few seconds): retry.
    cluster.kill_node(1);
    let third = within("connecting to server 3", async_nats::connect(&cluster.urls[2]))
        .await
        .expect("server 3 takes clients");
    let js = jetstream::new(third);
    let stored = retry("reading the first message through server 3", async || {
        let stream = js.get_stream(&name).await.map_err(|e| e.to_string())?;
        stream
            .get_raw_message(ack.sequence)
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    assert_eq!(stored.payload.as_ref(), b"one");
    let second = retry("storing a message on two servers of three", async || {
        js.publish(subject.clone(), "two".into())
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())
    })
    .await;

    cluster.start_node(1);
    let back = within(
        "connecting to server 1 again",
        async_nats::connect(&cluster.urls[0]),
    )
    .await
    .expect("server 1 is back");
    let stream = within(
        "the stream through server 1",
        jetstream::new(back).get_stream(&name),
    )
    .await
    .unwrap();
    let stored = within(
        "reading the second message",
        stream.get_raw_message(second.sequence),
    )
    .await
    .expect("the second message is there");
    assert_eq!(stored.payload.as_ref(), b"two");
}

#[tokio::test]
async fn rabbit_cluster_serves_a_quorum_queue_from_every_node() {
    let Some(cluster) = RabbitCluster::start("local_cluster::rabbit_cluster") else {
        return;
    };
    assert_eq!(cluster.urls.len(), 3, "{:?}", cluster.urls);
    let queue = unique_queue("cluster");

    // Declared and written through node 2.
    let second = within(
        "connecting to node 2",
        Connection::connect(&cluster.urls[1], ConnectionProperties::default()),
    )
    .await
    .expect("node 2 takes guest over 127.0.0.1");
    let channel = second.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    within(
        "declaring the queue",
        channel.queue_declare(queue.as_str().into(), durable, arguments),
    )
    .await
    .expect("a quorum queue is declared through node 2");
    let confirm = within("publishing", async {
        channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                b"hello",
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?
            .await
    })
    .await
    .unwrap();
    assert!(confirm.is_ack(), "the cluster confirms the message");
    second.close(200, "done".into()).await.ok();

    // Read through node 3 while node 2 is out. Node 2 led the queue (it
    // was declared there): until nodes 1 and 3 elect a new leader, basic.get
    // fails, and takes its channel or connection with it. Retry.
    cluster.stop_app(2);
    let message = retry("reading the message through node 3", async || {
        let third = Connection::connect(&cluster.urls[2], ConnectionProperties::default())
            .await
            .map_err(|e| format!("connecting: {e}"))?;
        let channel = third.create_channel().await.map_err(|e| e.to_string())?;
        let got = channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await;
        third.close(200, "done".into()).await.ok();
        got.map_err(|e| format!("basic.get: {e}"))?
            .ok_or_else(|| "basic.get: the queue is empty".to_owned())
    })
    .await;
    assert_eq!(message.delivery.data, b"hello");
    cluster.start_app(2);
}

#[tokio::test]
async fn tls_nats_takes_a_client_certificate_and_refuses_no_certificate() {
    let Some(server) = TlsNats::start("local_cluster::tls_nats") else {
        return;
    };
    let certs = &server.certs;
    let client = within(
        "connecting with a certificate",
        async_nats::ConnectOptions::new()
            .add_root_certificates(certs.ca.clone())
            .add_client_certificate(certs.client.clone(), certs.client_key.clone())
            .connect(&server.url),
    )
    .await
    .expect("a client with a certificate signed by the CA connects");
    within("a round trip", client.flush()).await.unwrap();

    let refused = within(
        "connecting without a certificate",
        async_nats::ConnectOptions::new()
            .add_root_certificates(certs.ca.clone())
            .connect(&server.url),
    )
    .await;
    assert!(refused.is_err(), "a client without a certificate is refused");
    let untrusted = within(
        "connecting with the wrong CA",
        async_nats::ConnectOptions::new()
            .add_root_certificates(certs.wrong_ca.clone())
            .add_client_certificate(certs.client.clone(), certs.client_key.clone())
            .connect(&server.url),
    )
    .await;
    assert!(
        untrusted.is_err(),
        "a client trusting another CA refuses the server"
    );
}

#[tokio::test]
async fn tls_rabbit_takes_a_client_certificate_and_refuses_no_certificate() {
    let Some(node) = TlsRabbit::start("local_cluster::tls_rabbit") else {
        return;
    };
    let certs = &node.certs;
    let read = |path: &std::path::Path| std::fs::read(path).unwrap();
    let connect = |identity: Option<OwnedIdentity>| {
        let tls = OwnedTLSConfig {
            identity,
            cert_chain: Some(String::from_utf8(read(&certs.ca)).unwrap()),
        };
        let url = node.url.clone();
        async move {
            DefaultConnectionBuilder::new()?
                .with_uri_str(url)
                .with_tls_config(tls)
                .connect()
                .await
        }
    };
    let identity = OwnedIdentity::PKCS8 {
        pem: read(&certs.client),
        key: read(&certs.client_key),
    };
    let connection = within("connecting with a certificate", connect(Some(identity)))
        .await
        .expect("a client with a certificate signed by the CA connects");
    connection.create_channel().await.expect("a channel over TLS");
    connection.close(200, "done".into()).await.ok();

    let refused = within("connecting without a certificate", connect(None)).await;
    assert!(refused.is_err(), "a client without a certificate is refused");

    let plain = within(
        "connecting to the plain listener",
        Connection::connect(&node.plain_url, ConnectionProperties::default()),
    )
    .await
    .expect("the plain listener takes guest");
    plain.close(200, "done".into()).await.ok();
}
