//! Credentials in a NATS URL reach the server: `nats://user:password@host`
//! and `nats://token@host`, percent-encoded or not, alone or as one of
//! several comma-separated servers, for the transport (`Broker::connect`)
//! and for the NATS KV store (`NatsKvStore::connect`).
//!
//! Each test starts its own nats-server with authorization (and JetStream)
//! on a free loopback port, killed when the test ends; the shared server on
//! 4222 has no authorization and is not used. Without
//! `/usr/sbin/nats-server` the tests skip loudly (and fail under `CI=true`).

#![cfg(feature = "nats")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use support::local_server::LocalServer;
use support::{skip, unique_queue, wait_for};
use wharf::store::{Claim, NatsKvStore, Store};
use wharf::{App, Broker, BrokerErrorKind};

const USER: &str = "wharf-user";
/// Has characters a URL must percent-encode (`@`, `:`, `/`).
const PASSWORD: &str = "pa@ss:w/rd-7g2k";
const PASSWORD_ENCODED: &str = "pa%40ss%3Aw%2Frd-7g2k";
const TOKEN: &str = "t0ken-9xq4";

fn server(test: &str, auth: &[&str]) -> Option<LocalServer> {
    match LocalServer::nats(auth) {
        Ok(server) => Some(server),
        Err(why) => {
            skip(test, &why);
            None
        }
    }
}

fn user_password_server(test: &str) -> Option<LocalServer> {
    server(test, &["--user", USER, "--pass", PASSWORD])
}

fn token_server(test: &str) -> Option<LocalServer> {
    server(test, &["--auth", TOKEN])
}

/// A message published through a broker connected with `url` is handled
/// by an app on that broker.
async fn round_trip(url: &str, server: &LocalServer) {
    let broker = match Broker::connect(url).await {
        Ok(broker) => broker,
        Err(error) => panic!(
            "connecting with the URL's credentials: {error}\nserver log:\n{}",
            server.log()
        ),
    };
    assert!(
        !broker.url().contains(PASSWORD_ENCODED) && !broker.url().contains(TOKEN),
        "{}",
        broker.url()
    );
    let queue = unique_queue("url-credentials");
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
    wait_for("the message handled", Duration::from_secs(10), || {
        handled.load(Ordering::SeqCst) == 7
    })
    .await;
    running.shutdown().await;
    broker.close().await;
}

/// A NATS KV store connected with `url` works: buckets made, a key claimed.
async fn store_works(url: &str, server: &LocalServer) {
    let store = match NatsKvStore::connect(url).await {
        Ok(store) => store,
        Err(error) => panic!(
            "connecting the store with the URL's credentials: {error}\nserver log:\n{}",
            server.log()
        ),
    };
    store.ensure_buckets().await.unwrap();
    let claim = store
        .claim("url-credentials", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(matches!(claim, Claim::Acquired(_)), "{claim:?}");
}

/// Connecting with `url` is refused by the server, and says so without
/// the secrets.
async fn refused(url: &str) {
    let error = Broker::connect(url).await.expect_err("the server refuses it");
    assert_eq!(error.kind(), BrokerErrorKind::Connection, "{error}");
    let shown = format!("{} {error:?}", support::chain(&error));
    for secret in [PASSWORD, PASSWORD_ENCODED, TOKEN, "wrong-pw-5v8h"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    let error = NatsKvStore::connect(url)
        .await
        .expect_err("the server refuses it");
    assert_eq!(error.kind(), BrokerErrorKind::Connection, "{error}");
}

#[tokio::test]
async fn user_and_password_in_the_url_are_sent() {
    let Some(server) = user_password_server("user_and_password_in_the_url_are_sent") else {
        return;
    };
    let url = format!("nats://{USER}:{PASSWORD_ENCODED}@127.0.0.1:{}", server.port);
    round_trip(&url, &server).await;
    store_works(&url, &server).await;

    // The server does ask: without them, or with a wrong password, no
    // connection.
    refused(&format!("nats://127.0.0.1:{}", server.port)).await;
    refused(&format!("nats://{USER}:wrong-pw-5v8h@127.0.0.1:{}", server.port)).await;
}

#[tokio::test]
async fn a_token_in_the_url_is_sent() {
    let Some(server) = token_server("a_token_in_the_url_is_sent") else {
        return;
    };
    let url = format!("nats://{TOKEN}@127.0.0.1:{}", server.port);
    round_trip(&url, &server).await;
    store_works(&url, &server).await;
    refused(&format!("nats://127.0.0.1:{}", server.port)).await;
}

#[tokio::test]
async fn credentials_on_one_of_several_servers_are_used_for_all() {
    let Some(server) = user_password_server("credentials_on_one_of_several_servers_are_used_for_all") else {
        return;
    };
    // A server that is not there first: the client moves on to the next.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!(
        "nats://127.0.0.1:{closed}, nats://{USER}:{PASSWORD_ENCODED}@127.0.0.1:{}",
        server.port
    );
    round_trip(&url, &server).await;
    store_works(&url, &server).await;

    let Some(token_server) = token_server("credentials_on_one_of_several_servers_are_used_for_all") else {
        return;
    };
    let url = format!(
        "nats://{TOKEN}@127.0.0.1:{},nats://127.0.0.1:{closed}",
        token_server.port
    );
    round_trip(&url, &token_server).await;
    store_works(&url, &token_server).await;
}

#[tokio::test]
async fn different_credentials_on_several_servers_are_a_configuration_error() {
    let url = "nats://a:pw-one-3k@127.0.0.1:1,nats://a:pw-two-8m@127.0.0.1:2";
    for error in [
        Broker::connect(url).await.unwrap_err(),
        NatsKvStore::connect(url).await.unwrap_err(),
    ] {
        assert_eq!(error.kind(), BrokerErrorKind::Config, "{error}");
        let shown = format!("{} {error:?}", support::chain(&error));
        assert!(shown.contains("different credentials"), "{shown}");
        assert!(
            !shown.contains("pw-one-3k") && !shown.contains("pw-two-8m"),
            "{shown}"
        );
    }
}
