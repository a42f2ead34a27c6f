//! A reply the broker refuses because of its address (issue 17, defect 10):
//! the handler ran and succeeded, but no retry can deliver its reply, so
//! the message is dead-lettered at once with reason `reply` instead of
//! being run again up to `max_attempts` times. A reply that fails for
//! another reason (the connection) is still a failed attempt, retried.
//!
//! The in-memory broker with a reply step that fails on demand: no broker
//! refuses an address that passed `Transport::check_reply_address`, so the
//! refusal is staged here.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use wharf::transport::{BoxFuture, Delivery, DeliveryStream, QueueSpec, ReplyInbox, Transport};
use wharf::{App, Broker, BrokerError, BrokerErrorKind, DeadLetterReason, Message, RouteOptions};

/// The in-memory transport, except that replies to `refused.*` are refused
/// as an unusable address and replies to `flaky.*` fail as a lost connection.
struct RefusingReplies(Arc<dyn Transport>);

impl Transport for RefusingReplies {
    fn kind(&self) -> &'static str {
        self.0.kind()
    }
    fn declare(&self, spec: &QueueSpec) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.0.declare(spec)
    }
    fn consume(
        &self,
        spec: &QueueSpec,
        prefetch: usize,
    ) -> BoxFuture<'_, Result<DeliveryStream, BrokerError>> {
        self.0.consume(spec, prefetch)
    }
    fn publish(&self, queue: &str, message: Message) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.0.publish(queue, message)
    }
    fn reply(&self, address: &str, message: Message) -> BoxFuture<'_, Result<(), BrokerError>> {
        if address.starts_with("refused.") {
            let error = BrokerError::new(BrokerErrorKind::Address, format!("no such address {address}"));
            return Box::pin(std::future::ready(Err(error)));
        }
        if address.starts_with("flaky.") {
            let error = BrokerError::new(BrokerErrorKind::Connection, "connection lost");
            return Box::pin(std::future::ready(Err(error)));
        }
        self.0.reply(address, message)
    }
    fn check_reply_address(&self, address: &str) -> Result<(), String> {
        self.0.check_reply_address(address)
    }
    fn reply_inbox(&self) -> BoxFuture<'_, Result<ReplyInbox, BrokerError>> {
        self.0.reply_inbox()
    }
    fn fetch(&self, queue: &str, max: usize) -> BoxFuture<'_, Result<Vec<Delivery>, BrokerError>> {
        self.0.fetch(queue, max)
    }
    fn depth(&self, queue: &str) -> BoxFuture<'_, Result<u64, BrokerError>> {
        self.0.depth(queue)
    }
    fn delete(&self, queue: &str) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.0.delete(queue)
    }
    fn connected(&self) -> watch::Receiver<bool> {
        self.0.connected()
    }
    fn flush(&self) -> BoxFuture<'_, ()> {
        self.0.flush()
    }
    fn close(&self) -> BoxFuture<'_, ()> {
        self.0.close()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_refused_for_its_address_is_dead_lettered_not_retried() {
    let memory = Broker::memory().transport().clone();
    let broker = Broker::from_transport(RefusingReplies(memory), "memory://");
    let runs = Arc::new(AtomicU32::new(0));
    let counter = runs.clone();
    let handler = move |n: u32| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok::<u32, wharf::Error>(n)
        }
    };
    let options = RouteOptions::new()
        .max_attempts(3)
        .backoff(wharf::Backoff::exponential(
            Duration::from_millis(1),
            Duration::from_millis(2),
        ));
    let running = App::new(broker.clone())
        .route_with("jobs", handler, options)
        .start()
        .await
        .unwrap();
    let refused = Message::json(&1).unwrap().with_reply_to("refused.inbox");
    broker.client().send("jobs", refused).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let letters = loop {
        let letters = broker.dead_letters("jobs").take(1).await.unwrap();
        if !letters.is_empty() {
            break letters;
        }
        assert!(
            Instant::now() < deadline,
            "no dead letter: {:?}",
            running.stats("jobs")
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(letters[0].reason(), Some(DeadLetterReason::Reply));
    assert_eq!(letters[0].error_kind(), Some("reply"));
    assert!(letters[0].error_message().unwrap().contains("refused.inbox"));
    assert_eq!(runs.load(Ordering::SeqCst), 1, "run once, not once per attempt");
    assert_eq!(running.stats("jobs").retried, 0);

    // A reply that fails for another reason is a failed attempt: retried.
    runs.store(0, Ordering::SeqCst);
    let flaky = Message::json(&2).unwrap().with_reply_to("flaky.inbox");
    broker.client().send("jobs", flaky).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let letters = loop {
        let letters = broker.dead_letters("jobs").take(1).await.unwrap();
        if !letters.is_empty() {
            break letters;
        }
        assert!(
            Instant::now() < deadline,
            "no dead letter: {:?}",
            running.stats("jobs")
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(letters[0].reason(), Some(DeadLetterReason::MaxAttempts));
    assert_eq!(runs.load(Ordering::SeqCst), 3, "one run per attempt");
    running.shutdown().await;
}
