//! What every behaviour case gets: a broker of the transport under test,
//! unique queue names, and small helpers to wait for and record what happened.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wharf::store::{Claim, ClaimToken, MemoryStore, SessionPosition, SessionTurn, Store, StoredReply};
use wharf::transport::BoxFuture;
use wharf::{App, Broker, BrokerError, Client, DeadLetter, Running};

/// How long a case waits for something that should happen.
pub const PATIENCE: Duration = Duration::from_secs(15);

pub struct Harness {
    pub broker: Broker,
    prefix: String,
    /// Queues this case named, deleted (with their dead-letter and delay
    /// queues) when the case is over, so that brokers do not fill up.
    queues: Arc<Mutex<Vec<String>>>,
}

/// Deletes a case's queues afterwards.
pub struct Cleanup {
    broker: Broker,
    queues: Arc<Mutex<Vec<String>>>,
}

impl Cleanup {
    pub async fn run(self) {
        let queues = std::mem::take(&mut *self.queues.lock().unwrap());
        for queue in queues {
            if let Err(error) = self.broker.delete_queue(&queue).await {
                eprintln!("could not delete test queue {queue}: {error}");
            }
        }
    }
}

static NEXT: AtomicU64 = AtomicU64::new(0);

impl Harness {
    /// A harness for `transport`, or `None` (after saying why, loudly) when
    /// its broker is not reachable. With `CI=true` an unreachable broker
    /// fails the test instead.
    pub async fn connect(transport: &str) -> Option<Harness> {
        let broker = match transport {
            "memory" => Broker::memory(),
            other => {
                let amqp = || {
                    std::env::var("WHARF_TEST_AMQP_URL")
                        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
                };
                let url = match other {
                    "amqp" | "amqp_bound" => amqp(),
                    // The same RabbitMQ, with quorum work queues.
                    "amqp_quorum" => {
                        let url = amqp();
                        let separator = if url.contains('?') { '&' } else { '?' };
                        format!("{url}{separator}queue_type=quorum")
                    }
                    "nats" | "nats_bound" | "nats_consumed" => std::env::var("WHARF_TEST_NATS_URL")
                        .unwrap_or_else(|_| "nats://127.0.0.1:4222".into()),
                    _ => panic!("unknown transport {other}"),
                };
                // Starts the brokers (scripts/brokers.sh) if this one is down.
                if let Err(why) = crate::test_support::broker_reachable(&url) {
                    crate::test_support::skip(
                        &format!("the {other} cases"),
                        &format!("broker not reachable: {why}"),
                    );
                    return None;
                }
                match Broker::connect(&url).await {
                    Ok(broker) if other.ends_with("_bound") || other == "nats_consumed" => {
                        #[cfg(feature = "nats")]
                        if other.starts_with("nats") {
                            let jetstream = crate::bound::nats_event_stream(&url, other == "nats_consumed")
                                .await
                                .unwrap_or_else(|e| panic!("the bound variant's event stream: {e}"));
                            let transport = broker.transport().clone();
                            let bound = match other {
                                "nats_consumed" => {
                                    crate::bound::Bound::through_consumers(transport, jetstream)
                                }
                                _ => crate::bound::Bound::new(transport),
                            };
                            return Some(Harness::over(Broker::from_transport(bound, &url)));
                        }
                        let bound = crate::bound::Bound::new(broker.transport().clone());
                        Broker::from_transport(bound, &url)
                    }
                    Ok(broker) => broker,
                    Err(error) => {
                        crate::test_support::skip(
                            &format!("the {other} cases"),
                            &format!("broker not usable: {error}"),
                        );
                        return None;
                    }
                }
            }
        };
        Some(Harness::over(broker))
    }

    /// A harness over `broker`, with a queue prefix no earlier run used.
    fn over(broker: Broker) -> Harness {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
        Harness {
            broker,
            prefix: format!("wharf-test.{}.{:x}", std::process::id(), nanos),
            queues: Arc::default(),
        }
    }

    /// What deletes this case's queues once it is over.
    pub fn cleanup(&self) -> Cleanup {
        Cleanup {
            broker: self.broker.clone(),
            queues: self.queues.clone(),
        }
    }

    /// A queue name no other test or earlier run uses.
    pub fn queue(&self, name: &str) -> String {
        let queue = format!(
            "{}.{}.{}",
            self.prefix,
            name,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.queues.lock().unwrap().push(queue.clone());
        queue
    }

    pub fn client(&self) -> Client {
        self.broker.client()
    }

    /// A new app on this broker with a short shutdown grace.
    pub fn app(&self) -> App {
        App::new(self.broker.clone()).shutdown_grace(Duration::from_secs(5))
    }

    pub async fn dead_letters(&self, queue: &str, count: usize) -> Vec<DeadLetter> {
        let dlq = self.broker.dead_letters(queue);
        let mut letters = Vec::new();
        let deadline = Instant::now() + PATIENCE;
        while letters.len() < count {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {count} dead letters in {}; got {}",
                dlq.queue(),
                letters.len()
            );
            letters.extend(dlq.take(count - letters.len()).await.unwrap());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        letters
    }
}

/// Waits until the route on `queue` satisfies `done`; returns its stats.
pub async fn until(
    running: &Running,
    queue: &str,
    done: impl Fn(&wharf::RouteStats) -> bool,
) -> wharf::RouteStats {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let stats = running.stats(queue);
        if done(&stats) {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "timed out; stats of {queue}: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A shared, clonable record of what handlers saw.
#[derive(Clone, Default)]
pub struct Log<T>(Arc<Mutex<Vec<T>>>);

impl<T: Clone> Log<T> {
    pub fn new() -> Self {
        Log(Arc::new(Mutex::new(Vec::new())))
    }

    pub fn push(&self, value: T) {
        self.0.lock().unwrap().push(value);
    }

    pub fn all(&self) -> Vec<T> {
        self.0.lock().unwrap().clone()
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// Tracks how many handlers run at once and the most ever seen.
#[derive(Clone, Default)]
pub struct Gauge {
    now: Arc<AtomicU64>,
    max: Arc<AtomicU64>,
}

impl Gauge {
    pub fn enter(&self) -> GaugeGuard {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        GaugeGuard(self.now.clone())
    }

    pub fn max(&self) -> u64 {
        self.max.load(Ordering::SeqCst)
    }
}

pub struct GaugeGuard(Arc<AtomicU64>);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Starts another worker on `queue` that records `(order id, attempt)`,
/// waits until it has acked `count` messages, and returns what it saw: what
/// the next pod gets after this one went away.
pub async fn next_worker_sees(h: &Harness, queue: &str, count: u64) -> Vec<(u64, u32)> {
    let seen = Log::new();
    let log = seen.clone();
    let record = move |ctx: wharf::Context, order: crate::cases::Order| {
        let log = log.clone();
        async move { log.push((order.id, ctx.attempt())) }
    };
    let next = h.app().route(queue, record).start().await.unwrap();
    until(&next, queue, |s| s.acked == count).await;
    next.shutdown().await;
    seen.all()
}

/// The in-memory store, shared between the apps of a case and the case
/// itself: a case can claim a key as another worker would, or look at what
/// a worker that went away left behind.
#[derive(Clone, Default)]
pub struct SharedStore(Arc<MemoryStore>);

impl Store for SharedStore {
    fn claim(&self, key: &str, lease: Duration) -> BoxFuture<'_, Result<Claim, BrokerError>> {
        self.0.claim(key, lease)
    }

    fn complete(
        &self,
        key: &str,
        token: ClaimToken,
        reply: Option<StoredReply>,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.0.complete(key, token, reply, ttl)
    }

    fn release(&self, key: &str, token: ClaimToken) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.0.release(key, token)
    }

    fn renew_claim(
        &self,
        key: &str,
        token: ClaimToken,
        lease: Duration,
    ) -> BoxFuture<'_, Result<bool, BrokerError>> {
        self.0.renew_claim(key, token, lease)
    }

    fn session_renew(&self, s: &str, n: u64, lease: Duration) -> BoxFuture<'_, Result<bool, BrokerError>> {
        self.0.session_renew(s, n, lease)
    }

    fn session_begin(
        &self,
        s: &str,
        n: u64,
        lease: Duration,
    ) -> BoxFuture<'_, Result<SessionTurn, BrokerError>> {
        self.0.session_begin(s, n, lease)
    }

    fn session_finish(&self, s: &str, n: u64) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.0.session_finish(s, n)
    }

    fn session_abort(&self, s: &str, n: u64, hold: Duration) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.0.session_abort(s, n, hold)
    }

    fn session_position(&self, s: &str) -> BoxFuture<'_, Result<SessionPosition, BrokerError>> {
        self.0.session_position(s)
    }

    fn session_skip(&self, s: &str, from: u64, to: u64) -> BoxFuture<'_, Result<bool, BrokerError>> {
        self.0.session_skip(s, from, to)
    }

    fn session_state(&self, s: &str) -> BoxFuture<'_, Result<Option<bytes::Bytes>, BrokerError>> {
        self.0.session_state(s)
    }

    fn set_session_state(&self, s: &str, value: bytes::Bytes) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.0.set_session_state(s, value)
    }

    fn session_changes(&self) -> Option<tokio::sync::broadcast::Receiver<Arc<str>>> {
        self.0.session_changes()
    }
}
