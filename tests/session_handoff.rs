//! A worker that finishes a session's number while it already holds the
//! next one asks the store for that number's turn in the same step
//! (`Store::session_finish_and_begin`): one store call per message of a
//! busy in-order session instead of two, with the order kept.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wharf::store::{Claim, ClaimToken, MemoryStore, SessionPosition, SessionTurn, Store, StoredReply};
use wharf::transport::BoxFuture;
use wharf::{App, Broker, BrokerError, Message, RouteOptions, codec};

/// The in-memory store, counting the session calls it gets.
#[derive(Default)]
struct Counting {
    inner: MemoryStore,
    begins: AtomicUsize,
    finishes: AtomicUsize,
    handoffs: AtomicUsize,
}

impl Store for Counting {
    fn claim(&self, key: &str, lease: Duration) -> BoxFuture<'_, Result<Claim, BrokerError>> {
        self.inner.claim(key, lease)
    }
    fn complete(
        &self,
        key: &str,
        token: ClaimToken,
        reply: Option<StoredReply>,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.inner.complete(key, token, reply, ttl)
    }
    fn release(&self, key: &str, token: ClaimToken) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.inner.release(key, token)
    }
    fn renew_claim(
        &self,
        key: &str,
        token: ClaimToken,
        lease: Duration,
    ) -> BoxFuture<'_, Result<bool, BrokerError>> {
        self.inner.renew_claim(key, token, lease)
    }
    fn session_begin(
        &self,
        s: &str,
        n: u64,
        lease: Duration,
    ) -> BoxFuture<'_, Result<SessionTurn, BrokerError>> {
        self.begins.fetch_add(1, Ordering::SeqCst);
        self.inner.session_begin(s, n, lease)
    }
    fn session_renew(&self, s: &str, n: u64, lease: Duration) -> BoxFuture<'_, Result<bool, BrokerError>> {
        self.inner.session_renew(s, n, lease)
    }
    fn session_finish(&self, s: &str, n: u64) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.finishes.fetch_add(1, Ordering::SeqCst);
        self.inner.session_finish(s, n)
    }
    fn session_finish_and_begin(
        &self,
        s: &str,
        n: u64,
        lease: Duration,
    ) -> BoxFuture<'_, Result<Option<SessionTurn>, BrokerError>> {
        self.handoffs.fetch_add(1, Ordering::SeqCst);
        self.inner.session_finish_and_begin(s, n, lease)
    }
    fn session_abort(&self, s: &str, n: u64, hold: Duration) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.inner.session_abort(s, n, hold)
    }
    fn session_position(&self, s: &str) -> BoxFuture<'_, Result<SessionPosition, BrokerError>> {
        self.inner.session_position(s)
    }
    fn session_skip(&self, s: &str, from: u64, to: u64) -> BoxFuture<'_, Result<bool, BrokerError>> {
        self.inner.session_skip(s, from, to)
    }
    fn session_state(&self, s: &str) -> BoxFuture<'_, Result<Option<bytes::Bytes>, BrokerError>> {
        self.inner.session_state(s)
    }
    fn set_session_state(&self, s: &str, value: bytes::Bytes) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.inner.set_session_state(s, value)
    }
}

/// Forwards to a shared [`Counting`], so that the test keeps a handle.
struct Shared(Arc<Counting>);

macro_rules! forward {
    ($($name:ident($($arg:ident: $ty:ty),*) -> $out:ty;)*) => {
        $(fn $name(&self, $($arg: $ty),*) -> BoxFuture<'_, $out> { self.0.$name($($arg),*) })*
    };
}

impl Store for Shared {
    forward! {
        claim(key: &str, lease: Duration) -> Result<Claim, BrokerError>;
        complete(key: &str, token: ClaimToken, reply: Option<StoredReply>, ttl: Duration) -> Result<(), BrokerError>;
        release(key: &str, token: ClaimToken) -> Result<(), BrokerError>;
        renew_claim(key: &str, token: ClaimToken, lease: Duration) -> Result<bool, BrokerError>;
        session_begin(s: &str, n: u64, lease: Duration) -> Result<SessionTurn, BrokerError>;
        session_renew(s: &str, n: u64, lease: Duration) -> Result<bool, BrokerError>;
        session_finish(s: &str, n: u64) -> Result<(), BrokerError>;
        session_finish_and_begin(s: &str, n: u64, lease: Duration) -> Result<Option<SessionTurn>, BrokerError>;
        session_abort(s: &str, n: u64, hold: Duration) -> Result<(), BrokerError>;
        session_position(s: &str) -> Result<SessionPosition, BrokerError>;
        session_skip(s: &str, from: u64, to: u64) -> Result<bool, BrokerError>;
        session_state(s: &str) -> Result<Option<bytes::Bytes>, BrokerError>;
        set_session_state(s: &str, value: bytes::Bytes) -> Result<(), BrokerError>;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_sessions_next_turn_is_asked_for_with_the_finish() {
    const COUNT: u64 = 300;
    const SESSIONS: u64 = 3;
    let broker = Broker::memory();
    let client = broker.client();
    for index in 0..COUNT {
        let message = Message::new(&b"{}"[..])
            .with_content_type(codec::JSON)
            .with_session(format!("s{}", index % SESSIONS), index / SESSIONS + 1);
        client.send("handoff", message).await.unwrap();
    }
    let seen: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let log = seen.clone();
    let store = Arc::new(Counting::default());
    let app = App::new(broker.clone())
        .route_with(
            "handoff",
            move |meta: wharf::Meta, _body: serde_json::Value| {
                let log = log.clone();
                async move {
                    // Long enough for the next number to arrive meanwhile.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    let session = meta.session_id().unwrap().to_owned();
                    log.lock().unwrap().push((session, meta.sequence().unwrap()));
                }
            },
            RouteOptions::new().sessions(true).prefetch(64).concurrency(8),
        )
        .store(Shared(store.clone()));
    let running = app.start().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while running.stats("handoff").acked < COUNT {
        assert!(Instant::now() < deadline, "{:?}", running.stats("handoff"));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    running.shutdown().await;

    let seen = seen.lock().unwrap().clone();
    for session in 0..SESSIONS {
        let order: Vec<u64> = seen
            .iter()
            .filter(|(s, _)| *s == format!("s{session}"))
            .map(|(_, n)| *n)
            .collect();
        let expected: Vec<u64> = (1..=COUNT / SESSIONS).collect();
        assert_eq!(order, expected, "session s{session} ran in order, each once");
    }
    let (begins, finishes, handoffs) = (
        store.begins.load(Ordering::SeqCst),
        store.finishes.load(Ordering::SeqCst),
        store.handoffs.load(Ordering::SeqCst),
    );
    // Counted through the wrapper only: the default handoff forwards to the
    // inner store, not back through these counters.
    assert_eq!(finishes + handoffs, COUNT as usize, "one end per message");
    assert!(
        handoffs as u64 >= COUNT * 9 / 10 && begins as u64 <= COUNT / 10,
        "most turns were handed over with the finish: {begins} begins, {finishes} finishes, {handoffs} handoffs"
    );
}
