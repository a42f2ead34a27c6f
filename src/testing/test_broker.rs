//! The kit's broker: an in-memory broker that records what goes through
//! it and starts apps with their settlements tracked.

use super::recorder::{Record, Recording};
use super::test_app::TestApp;
use super::tracked::Limits;
use super::tracker::Tracker;
use crate::app::App;
use crate::app::broker::Broker;
use crate::error::{BrokerError, BrokerErrorKind};
use crate::pipeline::{SettleEvent, SettleListener};
use crate::transport::memory::MemoryTransport;
use crate::wire::message::Message;
use futures_util::{FutureExt, Stream};
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An in-memory broker for tests, like FastStream's `TestBroker`: build
/// the app on [`broker`](Self::broker), [`start`](Self::start) it, then
/// publish through the [`TestApp`] and await each message's outcome.
///
/// Clones share the broker. Everything lives in the process, as with
/// [`Broker::memory`]; keep one `TestBroker` within one test (one runtime).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), wharf::BrokerError> {
/// use wharf::App;
/// use wharf::testing::TestBroker;
///
/// async fn double(n: u64) -> wharf::Reply<u64> { wharf::Reply(n * 2) }
///
/// let kit = TestBroker::new();
/// let app = kit.start(App::new(kit.broker()).route("double", double)).await?;
/// assert_eq!(app.request::<_, u64>("double", &21u64).await, Ok(42));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TestBroker {
    pub(super) shared: Arc<Shared>,
    pub(super) limits: Limits,
}

/// What every clone of a [`TestBroker`] and its apps share.
pub(super) struct Shared {
    /// The in-memory broker itself, for the kit's own publishes.
    pub(super) memory: MemoryTransport,
    /// The same broker behind the recorder: what apps and clients use.
    pub(super) broker: Broker,
    pub(super) record: Arc<Record>,
    pub(super) tracker: Arc<Tracker>,
    /// The kit's reply address, for the requests it sends.
    pub(super) reply_address: String,
    /// Holds the reply address open; what comes in was recorded already.
    pub(super) replies: Mutex<Pin<Box<dyn Stream<Item = Message> + Send>>>,
    /// Numbers the kit's messages (for correlation ids and error texts).
    pub(super) next: AtomicU64,
}

impl TestBroker {
    /// A new, empty in-memory broker.
    pub fn new() -> Self {
        let memory = MemoryTransport::new();
        let record = Arc::new(Record::default());
        let tracker = Arc::new(Tracker::default());
        let recording = Recording {
            memory: memory.clone(),
            record: record.clone(),
            tracker: tracker.clone(),
        };
        let broker = Broker::from_transport(recording, "memory://");
        // The in-memory broker opens reply addresses at once.
        let inbox = crate::transport::Transport::reply_inbox(&memory)
            .now_or_never()
            .expect("the in-memory broker opens a reply address at once")
            .expect("the in-memory broker cannot fail");
        TestBroker {
            shared: Arc::new(Shared {
                memory,
                broker,
                record,
                tracker,
                reply_address: inbox.address,
                replies: Mutex::new(inbox.replies),
                next: AtomicU64::new(1),
            }),
            limits: Limits::default(),
        }
    }

    /// How long [`Tracked::outcome`](super::Tracked::outcome) waits for a
    /// message to end: `wall_clock` of real time or `tokio_time` of tokio
    /// time, whichever passes first (defaults:
    /// [`DEFAULT_WALL_CLOCK_LIMIT`](super::DEFAULT_WALL_CLOCK_LIMIT),
    /// [`DEFAULT_TOKIO_TIME_LIMIT`](super::DEFAULT_TOKIO_TIME_LIMIT)).
    /// Applies to the apps started afterwards.
    pub fn outcome_limits(mut self, wall_clock: Duration, tokio_time: Duration) -> Self {
        self.limits = Limits {
            wall_clock,
            tokio_time,
        };
        self
    }

    /// The broker to build the app on: `App::new(test_broker.broker())`.
    /// A [`Client`](crate::Client) from it works as usual; what it and the
    /// handlers publish is recorded.
    pub fn broker(&self) -> Broker {
        self.shared.broker.clone()
    }

    /// Starts `app`, which must have been built on [`broker`](Self::broker),
    /// with every settlement of its routes tracked. Several apps may run
    /// on one `TestBroker`.
    pub async fn start<S: Clone + Send + Sync + 'static>(&self, app: App<S>) -> Result<TestApp, BrokerError> {
        if !Arc::ptr_eq(app.broker().transport(), self.shared.broker.transport()) {
            return Err(BrokerError::new(
                BrokerErrorKind::Config,
                "the app was not built on this TestBroker: build it with App::new(test_broker.broker())",
            ));
        }
        let tracker = self.shared.tracker.clone();
        let listener: SettleListener = Arc::new(move |event: &SettleEvent<'_>| tracker.settled(event));
        let running = app.with_settle_listener(listener).start().await?;
        Ok(TestApp {
            kit: self.clone(),
            running,
        })
    }
}

impl Default for TestBroker {
    fn default() -> Self {
        TestBroker::new()
    }
}

impl std::fmt::Debug for TestBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestBroker")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}
