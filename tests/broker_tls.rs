//! TLS with verified client certificates, on both brokers: a CA and
//! server and client certificates made by the test (`scripts/local-cluster.sh
//! certs`, openssl), a nats-server and a RabbitMQ node of the test's own
//! with TLS listeners that require a client certificate
//! (`support::local_cluster`). wharf connects with the CA file and the
//! client certificate and runs a message through; a wrong CA, a missing
//! client certificate and a server name the certificate does not carry are
//! each a clear error naming the cause.

#![cfg(all(feature = "amqp", feature = "nats"))]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use support::local_cluster::{Certs, TlsNats, TlsRabbit};
use support::{chain, unique_queue, wait_for};
use wharf::store::{Claim, NatsKvStore, Store};
use wharf::{App, Broker, BrokerErrorKind, BrokerOptions};

/// A message published through `broker` is handled by an app on it.
async fn round_trip(broker: &Broker) {
    let queue = unique_queue("tls");
    let handled = Arc::new(AtomicU64::new(0));
    let seen = handled.clone();
    let handler = move |n: u64| {
        let seen = seen.clone();
        async move {
            seen.fetch_add(n, Ordering::SeqCst);
        }
    };
    let running = App::new(broker.clone())
        .route(&queue, handler)
        .start()
        .await
        .unwrap();
    broker.client().publish(&queue, &7u64).await.unwrap();
    wait_for("the message handled over TLS", Duration::from_secs(15), || {
        handled.load(Ordering::SeqCst) == 7
    })
    .await;
    running.shutdown().await;
    broker.delete_queue(&queue).await.unwrap();
}

/// `url` with the CA and the client certificate.
fn trusted(url: &str, certs: &Certs) -> BrokerOptions {
    BrokerOptions::new(url)
        .tls_ca_file(&certs.ca)
        .tls_client_certificate(&certs.client, &certs.client_key)
}

/// Connecting with `options` fails as a connection error whose text
/// says `cause`.
async fn refused(options: &BrokerOptions, cause: &str) {
    let error = Broker::connect_with(options)
        .await
        .expect_err("the connection is refused");
    let shown = chain(&error);
    assert_eq!(error.kind(), BrokerErrorKind::Connection, "{shown}");
    assert!(shown.contains(cause), "expected {cause:?} in: {shown}");
}

#[tokio::test]
async fn nats_over_tls_with_a_client_certificate() {
    let Some(server) = TlsNats::start("nats_over_tls_with_a_client_certificate") else {
        return;
    };
    let certs = &server.certs;
    let options = trusted(&server.url, certs);
    let broker = Broker::connect_with(&options)
        .await
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
    round_trip(&broker).await;
    broker.close().await;
    let store = NatsKvStore::connect_with(&options)
        .await
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
    store.ensure_buckets().await.unwrap();
    let claim = store
        .claim(&unique_queue("tls-key"), Duration::from_secs(30))
        .await
        .unwrap();
    assert!(matches!(claim, Claim::Acquired(_)), "{claim:?}");

    // The same server, connected to by its IP address, checked against
    // another name the certificate carries.
    let by_name = trusted(&server.url, certs).tls_server_name("localhost");
    Broker::connect_with(&by_name)
        .await
        .unwrap_or_else(|e| panic!("{}", chain(&e)))
        .close()
        .await;

    refused(
        &BrokerOptions::new(&server.url)
            .tls_ca_file(&certs.wrong_ca)
            .tls_client_certificate(&certs.client, &certs.client_key),
        "not signed by a trusted CA",
    )
    .await;
    refused(
        &BrokerOptions::new(&server.url).tls_ca_file(&certs.ca),
        "requires a client certificate",
    )
    .await;
    refused(
        &trusted(&server.url, certs).tls_server_name("nats.example.org"),
        "does not name the host connected to",
    )
    .await;
}

#[tokio::test]
async fn rabbitmq_over_tls_with_a_client_certificate() {
    let Some(node) = TlsRabbit::start("rabbitmq_over_tls_with_a_client_certificate") else {
        return;
    };
    let certs = &node.certs;
    let broker = Broker::connect_with(&trusted(&node.url, certs))
        .await
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
    round_trip(&broker).await;
    broker.close().await;

    let by_name = trusted(&node.url, certs).tls_server_name("localhost");
    Broker::connect_with(&by_name)
        .await
        .unwrap_or_else(|e| panic!("{}", chain(&e)))
        .close()
        .await;

    refused(
        &BrokerOptions::new(&node.url)
            .tls_ca_file(&certs.wrong_ca)
            .tls_client_certificate(&certs.client, &certs.client_key),
        "not signed by a trusted CA",
    )
    .await;
    refused(
        &BrokerOptions::new(&node.url).tls_ca_file(&certs.ca),
        "requires a client certificate",
    )
    .await;
    refused(
        &trusted(&node.url, certs).tls_server_name("rabbit.example.org"),
        "does not name the host connected to",
    )
    .await;
}
