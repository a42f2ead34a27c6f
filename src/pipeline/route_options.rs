//! Per-route options: concurrency, retries, timeouts, priority, sessions.

use crate::handler::middleware::{Layers, Middleware};
use crate::pipeline::backoff::Backoff;
use crate::transport::DEFAULT_LEASE;
use crate::transport::binding::Binding;
use crate::transport::subscription::Subscription;
use crate::transport::topology::{QueueType, StreamStorage, Topology};
use std::time::Duration;

/// A route's handler timeout unless set.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The shortest lease: a worker renews what it holds every third of it.
const MIN_LEASE: Duration = Duration::from_secs(1);

/// What happens when a session's next sequence number does not arrive within
/// the gap timeout while later ones wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GapPolicy {
    /// Dead-letter the waiting messages (reason `session-gap`) and continue
    /// the session after the highest of them. Nothing runs out of order;
    /// operators replay the dead letters once the gap is understood.
    DeadLetter,
    /// Give up on the missing numbers and continue with the lowest waiting
    /// one. A missing message that arrives later is dead-lettered with the
    /// same reason: it never ran.
    SkipAhead,
}

/// Options of one route. Every field has a production default.
///
/// ```
/// use std::time::Duration;
/// use wharf::{Backoff, RouteOptions};
/// let options = RouteOptions::new()
///     .concurrency(8)
///     .max_attempts(3)
///     .backoff(Backoff::exponential(Duration::from_millis(200), Duration::from_secs(30)))
///     .timeout(Duration::from_secs(10))
///     .priority(true);
/// ```
#[derive(Clone, Debug)]
pub struct RouteOptions {
    pub(crate) name: Option<String>,
    pub(crate) concurrency: usize,
    pub(crate) prefetch: Option<usize>,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) timeout: Option<Duration>,
    pub(crate) priority: bool,
    pub(crate) persistent: bool,
    pub(crate) max_body_bytes: usize,
    pub(crate) idempotency: bool,
    pub(crate) idempotency_window: Duration,
    pub(crate) sessions: bool,
    pub(crate) session_buffer: usize,
    pub(crate) gap_timeout: Duration,
    pub(crate) gap_policy: GapPolicy,
    pub(crate) defer_delay: Duration,
    pub(crate) lease: Option<Duration>,
    pub(crate) topology: Topology,
    pub(crate) bindings: Vec<Binding>,
    pub(crate) subscriptions: Vec<Subscription>,
    pub(crate) existing_queue: bool,
    pub(crate) middleware: Layers,
}

impl Default for RouteOptions {
    fn default() -> Self {
        RouteOptions {
            name: None,
            concurrency: 32,
            prefetch: None,
            max_attempts: 5,
            backoff: Backoff::default(),
            timeout: Some(DEFAULT_TIMEOUT),
            priority: false,
            persistent: true,
            max_body_bytes: 1024 * 1024,
            idempotency: true,
            idempotency_window: Duration::from_secs(24 * 3600),
            sessions: true,
            session_buffer: 256,
            gap_timeout: Duration::from_secs(30),
            gap_policy: GapPolicy::DeadLetter,
            defer_delay: Duration::from_millis(500),
            lease: None,
            topology: Topology::default(),
            bindings: Vec::new(),
            subscriptions: Vec::new(),
            existing_queue: false,
            middleware: Layers::default(),
        }
    }
}

impl RouteOptions {
    /// The defaults: 32 concurrent handlers, 5 attempts, exponential backoff
    /// 1 s → 60 s with jitter, 60 s timeout, no priority, 1 MiB body limit,
    /// idempotency and sessions on, 256 early session arrivals held per
    /// route, 30 s gap timeout that dead-letters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Handler name used in metrics and dead-letter headers (default: the
    /// handler function's path).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Handlers running at once on this route.
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// Unsettled deliveries the broker may hand over at once. Defaults to
    /// concurrency plus the session buffer, so that early session arrivals
    /// waiting in memory never block the consumer.
    pub fn prefetch(mut self, prefetch: usize) -> Self {
        self.prefetch = Some(prefetch.max(1));
        self
    }

    /// Attempts before a retryable failure is dead-lettered (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Delay between attempts.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Time limit of one handler run; exceeding it is a failed attempt.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// No time limit on handler runs.
    pub fn no_timeout(mut self) -> Self {
        self.timeout = None;
        self
    }

    /// Declare the queue with priorities 0–9 (higher first).
    pub fn priority(mut self, enabled: bool) -> Self {
        self.priority = enabled;
        self
    }

    /// Whether the broker stores this route's messages (the default). With
    /// `false`, on NATS the route is a core NATS service: it listens on the
    /// queue's subjects (`wharf.*.<queue>`) in a queue group, with the lowest
    /// latency and no persistence: a request that arrives while no worker
    /// listens gets a "no responders" error, failed attempts are retried in
    /// the worker's memory, and messages a stopping worker did not start are
    /// lost unless another worker takes them. Dead letters are still stored.
    /// RabbitMQ and the in-memory broker keep using their queue.
    pub fn persistent(mut self, persistent: bool) -> Self {
        self.persistent = persistent;
        self
    }

    /// Bodies larger than this are dead-lettered unread (reason `too-large`).
    /// Default 1 MiB (1,048,576 bytes).
    ///
    /// On NATS the server's `max_payload` (also 1 MiB by default, and counting
    /// the headers too) is met first: a larger message is refused when it is
    /// published, so the publisher gets the error and nothing is stored, and
    /// with both defaults `too-large` never happens there. To accept larger
    /// bodies on NATS, raise both: `max_payload` in the nats-server
    /// configuration (clients learn it when they connect) and this limit.
    /// To have wharf dead-letter oversized bodies on NATS, set this limit
    /// below `max_payload`. See docs/nats.md, "Message size".
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Honour `idempotency-key` headers (default on).
    pub fn idempotency(mut self, enabled: bool) -> Self {
        self.idempotency = enabled;
        self
    }

    /// How long a handled key suppresses duplicates (default 24 h).
    pub fn idempotency_window(mut self, window: Duration) -> Self {
        self.idempotency_window = window;
        self
    }

    /// Honour `session-id`/`sequence` headers (default on).
    pub fn sessions(mut self, enabled: bool) -> Self {
        self.sessions = enabled;
        self
    }

    /// Room for session messages waiting for their turn, on top of
    /// `concurrency`: the default prefetch is `concurrency + session_buffer`,
    /// and up to `prefetch − 1` messages may wait in memory. Beyond that the
    /// message furthest from its turn goes back to the broker and comes again
    /// later, so memory stays bounded and the consumer can always receive the
    /// message a session is waiting for.
    pub fn session_buffer(mut self, messages: usize) -> Self {
        self.session_buffer = messages;
        self
    }

    /// How long a session waits for a missing sequence number.
    pub fn gap_timeout(mut self, timeout: Duration) -> Self {
        self.gap_timeout = timeout;
        self
    }

    /// What to do when the gap timeout expires.
    pub fn gap_policy(mut self, policy: GapPolicy) -> Self {
        self.gap_policy = policy;
        self
    }

    /// How long a message that cannot run yet (a duplicate still running, a
    /// full session buffer, an unavailable store) waits before it comes back.
    pub fn defer_delay(mut self, delay: Duration) -> Self {
        self.defer_delay = delay;
        self
    }

    pub(crate) fn effective_prefetch(&self) -> usize {
        self.prefetch
            .unwrap_or(self.concurrency + if self.sessions { self.session_buffer } else { 0 })
    }

    /// How long a worker that stopped answering (killed, cut off) keeps
    /// what it held before another worker takes it over: its idempotency
    /// claims and session turns in the store and, on NATS, the messages it
    /// was handed (JetStream's ack wait of the consumers this route
    /// creates; RabbitMQ hands a lost connection's messages to another
    /// worker at once).
    ///
    /// Default 15 s. A live worker renews what it holds every third of the
    /// lease for as long as it needs it — a message waiting in its buffer
    /// or for its session's turn, a claim or turn while its handler runs,
    /// however long the handler's timeout — so the lease only bounds how
    /// long a dead worker's work stays out of reach. Shorter means faster
    /// recovery after a crash; the cost is that a worker cut off from its
    /// broker or store for longer than the lease may find its work taken
    /// over and run elsewhere meanwhile (at least once, as always: an
    /// idempotency record still stops a second run that starts after the
    /// first one finished). At least 1 s. Keep the
    /// [`gap_timeout`](Self::gap_timeout) well above it: a crashed worker's
    /// session messages come back within the lease, and must not look like
    /// a gap.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }

    /// RabbitMQ: declare this route's work queue as `queue_type`, over the
    /// app's default ([`App::queue_type`](crate::App::queue_type),
    /// `WHARF_QUEUE_TYPE`) and the broker URL's `?queue_type=`; classic
    /// when none is set. A quorum queue is replicated across the cluster;
    /// its dead-letter and delay queues stay classic, and wharf's
    /// [`max_attempts`](Self::max_attempts) decides when a message is
    /// dead-lettered, not the queue's delivery limit (`docs/amqp.md`).
    /// Declaring a queue that exists as the other type fails with a
    /// [`Config`](crate::BrokerErrorKind::Config) error saying how to
    /// migrate. Other brokers ignore it.
    pub fn queue_type(mut self, queue_type: QueueType) -> Self {
        self.topology.queue_type = Some(queue_type);
        self
    }

    /// NATS: replicas of this route's work, delay and dead-letter streams,
    /// 1 to [`MAX_STREAM_REPLICAS`](crate::MAX_STREAM_REPLICAS) (typically
    /// 1 or 3; more than one needs a JetStream cluster with at least as many
    /// servers), over the app's default
    /// ([`App::stream_replicas`](crate::App::stream_replicas),
    /// `WHARF_STREAM_REPLICAS`). Unset anywhere, new streams get one replica
    /// and existing ones are used as they are. A value out of range fails
    /// the start; a stream that exists with other replicas is a
    /// [`Config`](crate::BrokerErrorKind::Config) error (`docs/nats.md`).
    /// Other brokers ignore it.
    pub fn stream_replicas(mut self, replicas: usize) -> Self {
        self.topology.stream_replicas = Some(replicas);
        self
    }

    /// NATS: storage of this route's work, delay and dead-letter streams,
    /// over the app's default ([`App::stream_storage`](crate::App::stream_storage),
    /// `WHARF_STREAM_STORAGE`). Unset anywhere, new streams are on file and
    /// existing ones are used as they are. A stream that exists with the
    /// other storage is a [`Config`](crate::BrokerErrorKind::Config) error
    /// (`docs/nats.md`). Other brokers ignore it.
    pub fn stream_storage(mut self, storage: StreamStorage) -> Self {
        self.topology.stream_storage = Some(storage);
        self
    }

    /// RabbitMQ: binds this route's queue to an exchange, so that what is
    /// published there ([`Client::publish_to_exchange`](crate::Client::publish_to_exchange),
    /// or any publisher) and matches the binding reaches this route too.
    /// Call it again for more exchanges or keys. The exchange is declared
    /// (durable) unless the binding is [`existing`](Binding::existing).
    /// Two routes bound to one exchange each get every matching message;
    /// retries, dead letters and replays go to this route's queue only.
    /// Bindings are added, never removed: one dropped from the code stays
    /// on the queue until removed on the broker (`docs/amqp.md`). The
    /// in-memory broker routes as RabbitMQ does; NATS refuses a route with
    /// bindings at the start.
    pub fn bind(mut self, binding: Binding) -> Self {
        self.bindings.push(binding);
        self
    }

    /// NATS: this route also takes the events published on a subject
    /// pattern (`orders.*.created`, `orders.>`), captured by a JetStream
    /// stream ([`Subscription`]); core NATS and JetStream publishers alike.
    /// The route's own stream sources the matching events from that
    /// stream, from the moment the subscription is first declared: two
    /// routes (two services) subscribed to one subject each get every
    /// event; retries, dead letters and replays stay on this route's own
    /// subjects. Call it again for more subjects. Subscriptions are added,
    /// never removed (`docs/nats.md`). Not with
    /// [`priority`](Self::priority) or [`persistent(false)`](Self::persistent):
    /// the start fails. Other brokers refuse a route with subscriptions.
    pub fn subscribe(mut self, subscription: Subscription) -> Self {
        self.subscriptions.push(subscription);
        self
    }

    /// Takes the route's work queue as it is instead of declaring it: for a
    /// queue another team created, perhaps with settings wharf would not
    /// choose (not durable, a TTL, a length limit, another queue type),
    /// which a declaration would refuse as different. The start fails with
    /// a [`Config`](crate::BrokerErrorKind::Config) error when it does not
    /// exist. RabbitMQ: a passive declare (AMQP does not tell how a queue
    /// was declared, so its settings are not compared; `docs/amqp.md` says
    /// which ones work against wharf). NATS: the stream `WHARF_<queue>`
    /// must exist, its replicas and storage are not compared. The
    /// dead-letter and delay queues are still wharf's and declared.
    pub fn existing_queue(mut self) -> Self {
        self.existing_queue = true;
        self
    }

    /// Adds `middleware` around this route's handler, inside the app's own
    /// ([`App::middleware`](crate::App::middleware)); the first added runs
    /// first. See [`wharf::middleware`](crate::middleware).
    pub fn middleware(mut self, middleware: impl Middleware) -> Self {
        self.middleware.push(middleware);
        self
    }

    /// The effective [`lease`](Self::lease).
    pub(crate) fn effective_lease(&self) -> Duration {
        self.lease.unwrap_or(DEFAULT_LEASE).max(MIN_LEASE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_is_short_and_independent_of_the_timeout() {
        let secs = Duration::from_secs;
        assert_eq!(RouteOptions::new().effective_lease(), secs(15));
        assert_eq!(RouteOptions::new().lease(secs(3)).effective_lease(), secs(3));
        assert_eq!(
            RouteOptions::new()
                .lease(Duration::from_millis(10))
                .effective_lease(),
            secs(1),
            "at least 1 s"
        );
        assert_eq!(
            RouteOptions::new()
                .no_timeout()
                .lease(secs(100))
                .effective_lease(),
            secs(100),
            "not tied to the handler's timeout"
        );
    }
}
