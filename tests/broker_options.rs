//! Typed connection options (`BrokerOptions`) against real brokers: a
//! list of servers whose first is down, credentials read from files
//! (RabbitMQ password; NATS token and NKey seed), RabbitMQ's vhost and
//! heartbeat, and clear errors for what cannot work.
//!
//! RabbitMQ tests use the shared node on 127.0.0.1:5672 (guest/guest);
//! NATS tests start their own nats-server with authorization on a free
//! loopback port (`support::local_server`). TLS is in `tests/broker_tls.rs`.

#![cfg(all(feature = "amqp", feature = "nats"))]

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use support::local_server::LocalServer;
use support::{broker_reachable, chain, skip, unique_queue, wait_for};
use wharf::store::{Claim, NatsKvStore, Store};
use wharf::{App, Broker, BrokerErrorKind, BrokerOptions};

const AMQP: &str = "amqp://127.0.0.1:5672/%2f";
/// Nothing listens on port 1: a server of the list that is down.
const AMQP_DOWN: &str = "amqp://127.0.0.1:1/%2f";
const TOKEN: &str = "t0ken-options-5kq";

/// A file under a fresh directory holding `content`.
fn secret_file(name: &str, content: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique_queue("options"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

fn amqp_up(test: &str) -> bool {
    match broker_reachable("amqp://guest:guest@127.0.0.1:5672/%2f") {
        Ok(()) => true,
        Err(why) => {
            skip(test, &why);
            false
        }
    }
}

/// A message published through `broker` is handled by an app on it.
async fn round_trip(broker: &Broker) {
    let queue = unique_queue("options");
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
    broker.delete_queue(&queue).await.unwrap();
}

#[tokio::test]
async fn amqp_goes_to_the_next_server_and_reads_the_password_file() {
    if !amqp_up("amqp_goes_to_the_next_server_and_reads_the_password_file") {
        return;
    }
    let password = secret_file("password", "guest\n");
    // A server that takes the connection and says nothing (a frozen
    // node): the kernel completes the TCP handshake, nobody answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("amqp://127.0.0.1:{}/%2f", silent.local_addr().unwrap().port());
    let options = BrokerOptions::servers([AMQP_DOWN, silent_url.as_str(), AMQP])
        .user_and_password_file("guest", &password)
        .heartbeat(Duration::from_secs(5))
        .connection_name("wharf-options-test");
    let started = std::time::Instant::now();
    let broker = tokio::time::timeout(Duration::from_secs(30), Broker::connect_with(&options))
        .await
        .expect("the silent server held the connect up for 30 s")
        .expect("the third server takes it");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "the silent server held the connect up for {took:?}"
    );
    assert_eq!(
        broker.url(),
        format!("amqp://127.0.0.1:1/%2f,{silent_url},amqp://127.0.0.1:5672/%2f")
    );
    // The heartbeat asked for is the one RabbitMQ agreed on.
    let listed = std::process::Command::new("rabbitmqctl")
        .args(["list_connections", "-q", "timeout", "client_properties"])
        .output()
        .expect("rabbitmqctl runs");
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed
            .lines()
            .any(|line| line.contains("wharf-options-test") && line.starts_with("5\t")),
        "no connection named wharf-options-test with a 5 s heartbeat:\n{listed}"
    );
    round_trip(&broker).await;
    broker.close().await;

    // The file is read at connect: a wrong password in it is refused.
    std::fs::write(&password, "not-the-password").unwrap();
    let error = Broker::connect_with(&options).await.unwrap_err();
    let shown = chain(&error);
    assert_eq!(error.kind(), BrokerErrorKind::Connection, "{shown}");
    assert!(shown.contains("finished no AMQP handshake"), "{shown}");
    assert!(
        shown.contains("127.0.0.1:1") && shown.contains("127.0.0.1:5672"),
        "{shown}"
    );
    assert!(!shown.contains("not-the-password"), "{shown}");
    remove_dir_of(&password);
}

#[tokio::test]
async fn amqp_connects_to_the_vhost_named() {
    if !amqp_up("amqp_connects_to_the_vhost_named") {
        return;
    }
    let vhost = "wharf-test-options";
    for args in [
        vec!["add_vhost", vhost],
        vec!["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
    ] {
        // add_vhost fails harmlessly when a former run left it.
        let _ = std::process::Command::new("rabbitmqctl").args(&args).output();
    }
    let options = BrokerOptions::new("amqp://guest:guest@127.0.0.1:5672/%2f").vhost(vhost);
    let broker = Broker::connect_with(&options).await.expect("the vhost exists");
    let queue = unique_queue("vhost");
    broker
        .declare(&wharf::transport::QueueSpec::new(&queue))
        .await
        .unwrap();
    let listed = std::process::Command::new("rabbitmqctl")
        .args(["list_queues", "-q", "-p", vhost, "name"])
        .output()
        .expect("rabbitmqctl runs");
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains(&queue), "{queue} not in vhost {vhost}: {listed}");
    broker.delete_queue(&queue).await.unwrap();
    broker.close().await;

    let missing = BrokerOptions::new("amqp://guest:guest@127.0.0.1:5672/%2f").vhost("wharf-no-such-vhost");
    let error = Broker::connect_with(&missing).await.unwrap_err();
    assert!(chain(&error).contains("wharf-no-such-vhost"), "{}", chain(&error));
}

#[tokio::test]
async fn options_of_the_wrong_kind_are_configuration_errors() {
    for (options, says) in [
        (
            BrokerOptions::new(AMQP).nkey_seed("SUAB"),
            "an NKey seed applies to NATS only",
        ),
        (
            BrokerOptions::new("nats://127.0.0.1:4222").vhost("v"),
            "applies to RabbitMQ only",
        ),
        (
            BrokerOptions::new(AMQP).tls_ca_file("/nonexistent/ca.pem"),
            "is not amqps://",
        ),
        (
            BrokerOptions::new("amqp://guest:guest@127.0.0.1:5672/%2f").user_and_password("guest", "guest"),
            "give them once",
        ),
        (
            BrokerOptions::new("nats://t0k@127.0.0.1:4222").token("other"),
            "give them once",
        ),
        (
            BrokerOptions::new("nats://127.0.0.1:4222")
                .nats_credentials_file(secret_file("bad.creds", "not creds")),
            "is not one",
        ),
        (
            BrokerOptions::new("amqps://127.0.0.1:5671/%2f").tls_ca_file("/nonexistent/ca.pem"),
            "cannot read the TLS CA file /nonexistent/ca.pem (WHARF_BROKER_TLS_CA_FILE)",
        ),
        (
            BrokerOptions::new("tls://127.0.0.1:4222").tls_ca_file(secret_file("ca.pem", "no PEM here")),
            "holds no PEM certificate",
        ),
        (
            BrokerOptions::new("nats://127.0.0.1:4222").nkey_seed_file(secret_file("seed", "not-a-seed\n")),
            "does not start with SU",
        ),
    ] {
        let error = Broker::connect_with(&options).await.unwrap_err();
        let shown = chain(&error);
        assert_eq!(error.kind(), BrokerErrorKind::Config, "{options:?}: {shown}");
        assert!(shown.contains(says), "{options:?}: {shown}");
    }
}

fn nats_server(test: &str, args: &[&str]) -> Option<LocalServer> {
    match LocalServer::nats(args) {
        Ok(server) => Some(server),
        Err(why) => {
            skip(test, &why);
            None
        }
    }
}

#[tokio::test]
async fn nats_goes_to_the_next_server_with_a_token_file_for_broker_and_store() {
    let test = "nats_goes_to_the_next_server_with_a_token_file_for_broker_and_store";
    let Some(server) = nats_server(test, &["--auth", TOKEN]) else {
        return;
    };
    let token = secret_file("token", &format!("{TOKEN}\n"));
    let options = BrokerOptions::servers([
        "nats://127.0.0.1:1".to_owned(),
        format!("nats://127.0.0.1:{}", server.port),
    ])
    .token_file(&token)
    .connection_name("wharf-options-test");
    let broker = match Broker::connect_with(&options).await {
        Ok(broker) => broker,
        Err(error) => panic!("{}\nserver log:\n{}", chain(&error), server.log()),
    };
    round_trip(&broker).await;
    broker.close().await;
    let store = NatsKvStore::connect_with(&options)
        .await
        .expect("the store connects alike");
    store.ensure_buckets().await.unwrap();
    let claim = store
        .claim(&unique_queue("options-key"), Duration::from_secs(30))
        .await
        .unwrap();
    assert!(matches!(claim, Claim::Acquired(_)), "{claim:?}");

    std::fs::write(&token, "wrong-token").unwrap();
    let error = Broker::connect_with(&options).await.unwrap_err();
    assert_eq!(error.kind(), BrokerErrorKind::Connection, "{}", chain(&error));
    assert!(!chain(&error).contains("wrong-token"), "{}", chain(&error));
    remove_dir_of(&token);
}

#[tokio::test]
async fn nats_authenticates_with_an_nkey_seed_file() {
    let test = "nats_authenticates_with_an_nkey_seed_file";
    let user = nkeys::KeyPair::new_user();
    let config = secret_file(
        "nkey.conf",
        &format!(
            "authorization {{ users = [ {{ nkey: {} }} ] }}\n",
            user.public_key()
        ),
    );
    let Some(server) = nats_server(test, &["-c", &config.display().to_string()]) else {
        return;
    };
    let seed = secret_file("seed", &format!("{}\n", user.seed().unwrap()));
    let url = format!("nats://127.0.0.1:{}", server.port);
    let broker = match Broker::connect_with(&BrokerOptions::new(&url).nkey_seed_file(&seed)).await {
        Ok(broker) => broker,
        Err(error) => panic!("{}\nserver log:\n{}", chain(&error), server.log()),
    };
    round_trip(&broker).await;
    broker.close().await;

    // Another user's seed is refused.
    let other = nkeys::KeyPair::new_user().seed().unwrap();
    let refused = Broker::connect_with(&BrokerOptions::new(&url).nkey_seed(other))
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), BrokerErrorKind::Connection, "{}", chain(&refused));
    remove_dir_of(&seed);
    remove_dir_of(&config);
}

fn remove_dir_of(file: &Path) {
    if let Some(dir) = file.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}
