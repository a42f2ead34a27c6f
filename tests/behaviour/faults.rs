//! Fault injection for behaviour cases: a store that is slow or panics, and
//! a transport wrapper whose dead-letter settlements fail. Each wraps the
//! real thing of the transport under test.

use futures_util::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use wharf::store::{Claim, ClaimToken, MemoryStore, SessionPosition, SessionTurn, Store, StoredReply};
use wharf::transport::{
    Acker, BoxFuture, Delivery, DeliveryStream, QueueSpec, ReplyInbox, Settlement, Transport,
};
use wharf::{Broker, BrokerError, BrokerErrorKind, Message};

/// What a [`FaultyStore`] does wrong.
#[derive(Clone, Copy)]
pub enum Fault {
    /// `session_position` takes this long (a remote store's round trip).
    SlowSessionNext(Duration),
    /// `claim` panics for keys ending in `/boom` (a bug in a store).
    PanicOnBoomKey,
    /// Recording a finished run (`complete`, `session_finish`) fails for
    /// this long from the first time it is asked: a replicated store
    /// electing a new leader right after a handler ran.
    FailsOverAfterARun(Duration),
}

/// The in-memory store with one fault.
pub struct FaultyStore {
    inner: MemoryStore,
    fault: Fault,
    /// When the store went away ([`Fault::FailsOverAfterARun`]).
    away_since: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// Writes refused meanwhile.
    pub refused: Arc<AtomicUsize>,
}

impl FaultyStore {
    pub fn new(fault: Fault) -> Self {
        FaultyStore {
            inner: MemoryStore::new(),
            fault,
            away_since: std::sync::Mutex::new(None),
            refused: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// An error while failing over, else `None`.
    fn failing_over(&self) -> Option<BrokerError> {
        let Fault::FailsOverAfterARun(outage) = self.fault else {
            return None;
        };
        let since = *self
            .away_since
            .lock()
            .unwrap()
            .get_or_insert_with(tokio::time::Instant::now);
        (since.elapsed() < outage).then(|| {
            self.refused.fetch_add(1, Ordering::SeqCst);
            BrokerError::new(
                BrokerErrorKind::Store,
                "no leader for the store's stream (electing)",
            )
        })
    }
}

impl Store for FaultyStore {
    fn claim(&self, key: &str, lease: Duration) -> BoxFuture<'_, Result<Claim, BrokerError>> {
        if matches!(self.fault, Fault::PanicOnBoomKey) && key.ends_with("/boom") {
            panic!("store bug on key {key}");
        }
        self.inner.claim(key, lease)
    }

    fn complete(
        &self,
        key: &str,
        token: ClaimToken,
        reply: Option<StoredReply>,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        if let Some(error) = self.failing_over() {
            return Box::pin(async move { Err(error) });
        }
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

    fn session_renew(&self, s: &str, n: u64, lease: Duration) -> BoxFuture<'_, Result<bool, BrokerError>> {
        self.inner.session_renew(s, n, lease)
    }

    fn session_begin(
        &self,
        s: &str,
        n: u64,
        lease: Duration,
    ) -> BoxFuture<'_, Result<SessionTurn, BrokerError>> {
        self.inner.session_begin(s, n, lease)
    }

    fn session_finish(&self, s: &str, n: u64) -> BoxFuture<'_, Result<(), BrokerError>> {
        if let Some(error) = self.failing_over() {
            return Box::pin(async move { Err(error) });
        }
        self.inner.session_finish(s, n)
    }

    fn session_abort(&self, s: &str, n: u64, hold: Duration) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.inner.session_abort(s, n, hold)
    }

    fn session_position(&self, s: &str) -> BoxFuture<'_, Result<SessionPosition, BrokerError>> {
        match self.fault {
            Fault::SlowSessionNext(delay) => {
                let s = s.to_owned();
                Box::pin(async move {
                    tokio::time::sleep(delay).await;
                    self.inner.session_position(&s).await
                })
            }
            Fault::PanicOnBoomKey | Fault::FailsOverAfterARun(_) => self.inner.session_position(s),
        }
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

/// Wraps a broker so that its next `n` dead-letter settlements fail (the
/// dead-letter publish is not confirmed); the original stays unsettled and
/// goes back to its queue, as the transport contract says.
pub fn failing_dead_letters(broker: &Broker) -> (Broker, Arc<AtomicUsize>) {
    let transport = FailingDeadLetters::around(broker);
    let failures = transport.failures.clone();
    (Broker::from_transport(transport, broker.url()), failures)
}

/// `broker` as a new broker that counts the reply addresses its clients
/// open (`Transport::reply_inbox`): one reply consumer each.
pub fn counting_reply_inboxes(broker: &Broker) -> (Broker, Arc<AtomicUsize>) {
    let transport = FailingDeadLetters::around(broker);
    let opened = transport.inboxes_opened.clone();
    (Broker::from_transport(transport, broker.url()), opened)
}

/// The transport of a broker, with dead-letter settlements that fail as
/// often as `failures` says (none at first) and reply addresses counted.
struct FailingDeadLetters {
    inner: Arc<dyn Transport>,
    failures: Arc<AtomicUsize>,
    inboxes_opened: Arc<AtomicUsize>,
}

impl FailingDeadLetters {
    fn around(broker: &Broker) -> Self {
        FailingDeadLetters {
            inner: broker.transport().clone(),
            failures: Arc::new(AtomicUsize::new(0)),
            inboxes_opened: Arc::new(AtomicUsize::new(0)),
        }
    }
}

struct FailingAcker {
    inner: Option<Delivery>,
    failures: Arc<AtomicUsize>,
}

impl Acker for FailingAcker {
    fn settle(mut self: Box<Self>, settlement: Settlement) -> BoxFuture<'static, Result<(), BrokerError>> {
        let delivery = self.inner.take().expect("settled once");
        let fail = matches!(settlement, Settlement::DeadLetter { .. })
            && self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if fail {
            drop(delivery);
            return Box::pin(async {
                Err(BrokerError::new(
                    BrokerErrorKind::Publish,
                    "dead-letter publish not confirmed",
                ))
            });
        }
        delivery.settle(settlement)
    }
}

impl Transport for FailingDeadLetters {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn declare(&self, spec: &QueueSpec) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.inner.declare(spec)
    }

    fn consume(
        &self,
        spec: &QueueSpec,
        prefetch: usize,
    ) -> BoxFuture<'_, Result<DeliveryStream, BrokerError>> {
        let failures = self.failures.clone();
        let inner = self.inner.consume(spec, prefetch);
        Box::pin(async move {
            let wrapped = inner.await?.map(move |d| {
                let (message, count) = (d.message.clone(), d.delivery_count);
                let acker = FailingAcker {
                    inner: Some(d),
                    failures: failures.clone(),
                };
                Delivery::new(message, count, Box::new(acker))
            });
            Ok(Box::pin(wrapped) as DeliveryStream)
        })
    }

    fn publish(&self, queue: &str, message: Message) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.inner.publish(queue, message)
    }

    fn reply(&self, address: &str, message: Message) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.inner.reply(address, message)
    }

    fn reply_inbox(&self) -> BoxFuture<'_, Result<ReplyInbox, BrokerError>> {
        self.inboxes_opened.fetch_add(1, Ordering::SeqCst);
        self.inner.reply_inbox()
    }

    fn fetch(&self, queue: &str, max: usize) -> BoxFuture<'_, Result<Vec<Delivery>, BrokerError>> {
        self.inner.fetch(queue, max)
    }

    fn depth(&self, queue: &str) -> BoxFuture<'_, Result<u64, BrokerError>> {
        self.inner.depth(queue)
    }

    fn delete(&self, queue: &str) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.inner.delete(queue)
    }

    fn connected(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.connected()
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        self.inner.flush()
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        self.inner.close()
    }
}
