//! Publishing and request/reply from outside a handler (a web back end, a
//! script, a test).

mod inbox;

use inbox::Inbox;

use crate::error::{BrokerError, BrokerErrorKind, HandlerError};
use crate::ops::metrics::RequestMetrics;
use crate::transport::Transport;
use crate::util::id_map::IdMap;
use crate::wire::codec::{Codec, CodecError};
use crate::wire::error_body::ErrorBody;
use crate::wire::headers::names;
use crate::wire::message::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Default time a request waits for its reply.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Publishes messages and makes requests. Cheap to clone: every client of
/// one [`Broker`](crate::Broker) — each [`Broker::client`](crate::Broker::client)
/// call, its clones and [`with_timeout`](Client::with_timeout) variants —
/// shares one reply address (one reply consumer on the broker, opened on
/// the first request), so any number of requests can be in flight at once
/// and `broker.client().request(…)` per request costs no new subscription.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use wharf::{App, Broker};
/// async fn double(n: u64) -> wharf::Reply<u64> { wharf::Reply(n * 2) }
///
/// let broker = Broker::memory();
/// let running = App::new(broker.clone()).route("double", double).start().await?;
/// let four: u64 = broker.client().request("double", &2u64).await?;
/// assert_eq!(four, 4);
/// running.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    /// How long a request waits for its reply unless told otherwise.
    timeout: Duration,
}

/// What every client of one broker shares.
struct Inner {
    transport: Arc<dyn Transport>,
    /// The reply address in use, if one is open.
    inbox: Mutex<Option<Arc<Inbox>>>,
    /// Held while a reply address is being opened, so only one is.
    opening: tokio::sync::Mutex<()>,
    id_prefix: String,
    next_id: AtomicU64,
    /// `wharf_client_request_duration_seconds` handles, by queue.
    metrics: Mutex<IdMap<RequestMetrics>>,
}

impl Client {
    /// The client a [`Broker`](crate::Broker) makes once and hands out.
    pub(crate) fn new(transport: Arc<dyn Transport>) -> Self {
        Client {
            inner: Arc::new(Inner {
                transport,
                inbox: Mutex::new(None),
                opening: tokio::sync::Mutex::new(()),
                id_prefix: crate::util::ids::prefix(),
                next_id: AtomicU64::new(1),
                metrics: Mutex::default(),
            }),
            timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// This client with requests waiting at most `timeout` by default; it
    /// shares this client's reply address.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Client {
            inner: self.inner.clone(),
            timeout,
        }
    }

    /// True when `self` and `other` share one reply address (both come
    /// from the same broker).
    pub fn shares_replies_with(&self, other: &Client) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Publishes `value` as JSON to `queue`, confirmed by the broker.
    pub async fn publish<T: Serialize + ?Sized>(&self, queue: &str, value: &T) -> Result<(), BrokerError> {
        let message = Message::json(value).map_err(|e| {
            BrokerError::new(BrokerErrorKind::Publish, "cannot encode message").with_source(e)
        })?;
        self.send(queue, message).await
    }

    /// Publishes a message to `queue`, confirmed by the broker.
    pub async fn send(&self, queue: &str, message: Message) -> Result<(), BrokerError> {
        self.inner.transport.publish(queue, message).await
    }

    /// Publishes `value` as JSON to a RabbitMQ `exchange` with
    /// `routing_key`, confirmed by the broker: every route bound to the
    /// exchange with a matching key gets a copy
    /// ([`RouteOptions::bind`](crate::RouteOptions::bind)). A message no
    /// queue is bound for is dropped by RabbitMQ and is not an error; one
    /// to an exchange that does not exist is. The in-memory broker routes
    /// as RabbitMQ does; NATS refuses with a
    /// [`Config`](BrokerErrorKind::Config) error.
    pub async fn publish_to_exchange<T: Serialize + ?Sized>(
        &self,
        exchange: &str,
        routing_key: &str,
        value: &T,
    ) -> Result<(), BrokerError> {
        let message = Message::json(value).map_err(|e| {
            BrokerError::new(BrokerErrorKind::Publish, "cannot encode message").with_source(e)
        })?;
        self.send_to_exchange(exchange, routing_key, message).await
    }

    /// Publishes a message to a RabbitMQ `exchange` with `routing_key`, as
    /// [`publish_to_exchange`](Client::publish_to_exchange) does.
    pub async fn send_to_exchange(
        &self,
        exchange: &str,
        routing_key: &str,
        message: Message,
    ) -> Result<(), BrokerError> {
        self.inner
            .transport
            .publish_to_exchange(exchange, routing_key, message)
            .await
    }

    /// Publishes `value` as JSON to a NATS `subject`, confirmed by the
    /// JetStream stream capturing it: every route subscribed to a pattern
    /// matching it gets a copy
    /// ([`RouteOptions::subscribe`](crate::RouteOptions::subscribe)). A
    /// subject no stream captures is an error (`no responders`). Other
    /// brokers refuse with a [`Config`](BrokerErrorKind::Config) error.
    pub async fn publish_to_subject<T: Serialize + ?Sized>(
        &self,
        subject: &str,
        value: &T,
    ) -> Result<(), BrokerError> {
        let message = Message::json(value).map_err(|e| {
            BrokerError::new(BrokerErrorKind::Publish, "cannot encode message").with_source(e)
        })?;
        self.send_to_subject(subject, message).await
    }

    /// Publishes a message to a NATS `subject`, as
    /// [`publish_to_subject`](Client::publish_to_subject) does.
    pub async fn send_to_subject(&self, subject: &str, message: Message) -> Result<(), BrokerError> {
        self.inner.transport.publish_to_subject(subject, message).await
    }

    /// Sends `request` as JSON to `queue` and waits for the typed reply, up
    /// to the client's timeout (30 s unless set with [`with_timeout`](Client::with_timeout)).
    pub async fn request<Req, Resp>(&self, queue: &str, request: &Req) -> Result<Resp, RequestError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        self.request_timeout(queue, request, self.timeout).await
    }

    /// Like [`request`](Client::request) with its own timeout.
    pub async fn request_timeout<Req, Resp>(
        &self,
        queue: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, RequestError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let message = Message::json(request).map_err(RequestError::Encode)?;
        let reply = self.request_message(queue, message, timeout).await?;
        decode_reply(&reply)
    }

    /// Sends a prepared message as a request and returns the raw reply. The
    /// correlation id and reply address are set here. An error reply is
    /// returned as `Err(RequestError::Remote)`.
    pub async fn request_message(
        &self,
        queue: &str,
        message: Message,
        timeout: Duration,
    ) -> Result<Message, RequestError> {
        let started = std::time::Instant::now();
        let result = self.round_trip(queue, message, timeout).await;
        // Indexed like `metrics::REQUEST_OUTCOMES`.
        let outcome = match &result {
            Ok(_) => 0,
            Err(RequestError::Remote(_)) => 1,
            Err(RequestError::Timeout { .. }) => 2,
            Err(_) => 3,
        };
        let took = started.elapsed().as_secs_f64();
        let mut metrics = self.inner.metrics.lock().unwrap_or_else(|p| p.into_inner());
        match metrics.get(queue) {
            Some(handles) => handles.0[outcome].record(took),
            None => {
                let handles = RequestMetrics::register(queue);
                handles.0[outcome].record(took);
                metrics.insert(queue.to_owned(), handles);
            }
        }
        result
    }

    async fn round_trip(
        &self,
        queue: &str,
        message: Message,
        timeout: Duration,
    ) -> Result<Message, RequestError> {
        let inbox = self.inbox().await.map_err(RequestError::Broker)?;
        let id = self.next_id();
        let (wait, in_flight) = inbox.wait(&id);
        if let Err(error) = inbox
            .requests
            .send_request(queue, &id, &inbox.address, message, in_flight)
            .await
        {
            return Err(RequestError::Broker(error));
        }
        match tokio::time::timeout(timeout, wait).await {
            Ok(Some(reply)) => match reply.header(names::STATUS) {
                Some("error") => Err(RequestError::Remote(remote_error(&reply))),
                // Made up by a transport that learnt the request could not be
                // delivered (NATS: no stream and no service for the subject).
                Some("undeliverable") => Err(RequestError::Broker(BrokerError::new(
                    BrokerErrorKind::Publish,
                    format!(
                        "request to {queue:?} not delivered: {}",
                        String::from_utf8_lossy(&reply.body)
                    ),
                ))),
                // Made up by a transport that learnt the request was stored
                // where no reply can come back (NATS: a lean request taken by
                // a stream created since the client last looked).
                Some("unanswerable") => Err(RequestError::Broker(BrokerError::new(
                    BrokerErrorKind::Publish,
                    format!(
                        "request to {queue:?} cannot be answered: {}",
                        String::from_utf8_lossy(&reply.body)
                    ),
                ))),
                _ => Ok(reply),
            },
            Ok(None) => Err(RequestError::Broker(BrokerError::new(
                BrokerErrorKind::Connection,
                "the reply address was closed before the reply arrived",
            ))),
            Err(_) => Err(RequestError::Timeout {
                queue: queue.to_owned(),
                after: timeout,
            }),
        }
    }

    /// A correlation id no other request of this process has:
    /// `<prefix>-<n>`.
    fn next_id(&self) -> String {
        let n = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        crate::util::ids::numbered(&self.inner.id_prefix, n)
    }

    /// The shared reply address, opened on first use and again after the
    /// broker closed it.
    async fn inbox(&self) -> Result<Arc<Inbox>, BrokerError> {
        if let Some(inbox) = self.open_inbox() {
            return Ok(inbox);
        }
        let _opening = self.inner.opening.lock().await;
        if let Some(inbox) = self.open_inbox() {
            return Ok(inbox);
        }
        let inbox = Arc::new(Inbox::new(self.inner.transport.reply_inbox().await?));
        *self.inner.inbox.lock().unwrap_or_else(|p| p.into_inner()) = Some(inbox.clone());
        Ok(inbox)
    }

    fn open_inbox(&self) -> Option<Arc<Inbox>> {
        let slot = self.inner.inbox.lock().unwrap_or_else(|p| p.into_inner());
        slot.as_ref().filter(|inbox| inbox.is_open()).cloned()
    }
}

fn codec_of(message: &Message) -> Result<Codec, CodecError> {
    Codec::from_content_type(message.content_type.as_deref())
}

fn decode_reply<T: DeserializeOwned>(reply: &Message) -> Result<T, RequestError> {
    codec_of(reply)
        .and_then(|codec| codec.decode(&reply.body))
        .map_err(RequestError::Decode)
}

/// An error reply as the caller sees it (also the test kit's `Settled::reply`).
pub(crate) fn remote_error(reply: &Message) -> RemoteError {
    let body: Result<ErrorBody, _> = codec_of(reply).and_then(|c| c.decode(&reply.body));
    match body {
        Ok(body) => RemoteError {
            kind: body.kind,
            message: body.message,
            details: body.details,
        },
        Err(e) => RemoteError {
            kind: reply.header(names::ERROR_KIND).unwrap_or("unknown").to_owned(),
            message: format!("error reply with an unreadable body: {e}"),
            details: None,
        },
    }
}

/// A request failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum RequestError {
    /// No reply within the timeout.
    Timeout {
        /// The queue the request went to.
        queue: String,
        /// How long it waited.
        after: Duration,
    },
    /// The handler failed and sent an error reply.
    Remote(RemoteError),
    /// The broker could not be reached or refused the request.
    Broker(BrokerError),
    /// The request could not be encoded.
    Encode(CodecError),
    /// The reply does not decode into the expected type.
    Decode(CodecError),
}

impl RequestError {
    /// The remote error, if the handler sent one.
    pub fn remote(&self) -> Option<&RemoteError> {
        match self {
            RequestError::Remote(remote) => Some(remote),
            _ => None,
        }
    }
}

/// Only what went wrong with the request; the error behind it (the error
/// reply, the broker's error, the codec's) is its `source()`.
impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Timeout { queue, after } => write!(f, "no reply from {queue:?} within {after:?}"),
            RequestError::Remote(_) => f.write_str("request failed"),
            RequestError::Broker(_) => f.write_str("request not delivered"),
            RequestError::Encode(_) => f.write_str("request not sent"),
            RequestError::Decode(_) => f.write_str("reply unusable"),
        }
    }
}

impl std::error::Error for RequestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RequestError::Timeout { .. } => None,
            RequestError::Remote(e) => Some(e),
            RequestError::Broker(e) => Some(e),
            RequestError::Encode(e) | RequestError::Decode(e) => Some(e),
        }
    }
}

/// A handler that makes a request may return its error as it is: kind
/// `request`, permanent when sending it again cannot work (it does not
/// encode, or the broker refused it for good), retryable otherwise (a
/// timeout, an error reply, a reply that does not decode). Map it to an
/// error of your own to decide by the remote error's kind.
impl HandlerError for RequestError {
    fn is_permanent(&self) -> bool {
        match self {
            RequestError::Encode(_) => true,
            RequestError::Broker(e) => e.is_permanent(),
            _ => false,
        }
    }

    fn kind(&self) -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("request")
    }
}

/// An error reply: the handler's error kind, message and details.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteError {
    /// Machine-readable kind: the handler's [`Error::with_kind`](crate::Error::with_kind)
    /// or [`HandlerError::kind`], `handler`, or wharf's (`decode`,
    /// `content-type`, `timeout`, `panic`, …).
    pub kind: String,
    /// Human-readable message: the handler's error and its causes.
    pub message: String,
    /// Structured details from [`Error::with_details`](crate::Error::with_details)
    /// or [`HandlerError::details`].
    pub details: Option<serde_json::Value>,
}

impl RemoteError {
    /// The details decoded into `T`.
    pub fn details_as<T: DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_value(self.details.clone()?).ok()
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// The cause of [`RequestError::Remote`].
impl std::error::Error for RemoteError {}

#[cfg(all(test, not(wharf_loom)))]
mod tests {
    use super::*;
    use crate::transport::memory::MemoryTransport;

    #[test]
    fn request_errors_show_their_cause_through_source() {
        use crate::error::{Chain, IntoFailure};
        use std::error::Error as _;
        let error = RequestError::Broker(
            BrokerError::new(BrokerErrorKind::Publish, "publishing the request failed")
                .with_source(std::io::Error::other("connection reset")),
        );
        assert_eq!(error.to_string(), "request not delivered");
        let source = error.source().expect("the broker error");
        assert_eq!(source.to_string(), "publishing the request failed");
        assert!(source.downcast_ref::<BrokerError>().is_some());
        assert_eq!(
            Chain(&error).to_string(),
            "request not delivered: publishing the request failed: connection reset"
        );
        let failure = error.into_failure();
        assert!(!failure.permanent);
        assert_eq!(failure.kind, "request");
        assert_eq!(
            failure.message,
            "request not delivered: publishing the request failed: connection reset"
        );

        let remote = RequestError::Remote(RemoteError {
            kind: "out-of-stock".into(),
            message: "3 × tea missing".into(),
            details: None,
        });
        assert_eq!(remote.to_string(), "request failed");
        assert_eq!(
            Chain(&remote).to_string(),
            "request failed: out-of-stock: 3 × tea missing"
        );
        assert!(remote.remote().is_some());

        let decode = RequestError::Decode(CodecError::Decode("expected u32".into()));
        assert_eq!(
            Chain(&decode).to_string(),
            "reply unusable: cannot decode payload: expected u32"
        );
        assert!(!decode.into_failure().permanent);
        assert!(
            RequestError::Encode(CodecError::Encode("no".into()))
                .into_failure()
                .permanent
        );
        let timeout = RequestError::Timeout {
            queue: "orders".into(),
            after: Duration::from_secs(1),
        };
        assert!(timeout.source().is_none());
        assert_eq!(timeout.to_string(), "no reply from \"orders\" within 1s");
    }

    #[test]
    fn ids_are_the_prefix_and_a_counter() {
        let client = Client::new(Arc::new(MemoryTransport::new()));
        let prefix = client.inner.id_prefix.clone();
        assert_eq!(client.next_id(), format!("{prefix}-1"));
        client.inner.next_id.store(u64::MAX, Ordering::Relaxed);
        assert_eq!(client.next_id(), format!("{prefix}-{}", u64::MAX));
        client.inner.next_id.store(1_000_000_007, Ordering::Relaxed);
        assert_eq!(client.next_id(), format!("{prefix}-1000000007"));
    }

    #[tokio::test]
    async fn timed_out_request_leaves_nothing_pending() {
        let client = Client::new(Arc::new(MemoryTransport::new()));
        let error = client
            .request_timeout::<_, u64>("nobody-listens", &1u64, Duration::from_millis(20))
            .await
            .unwrap_err();
        assert!(matches!(error, RequestError::Timeout { .. }), "{error}");
        let inbox = client.inbox().await.unwrap();
        assert_eq!(inbox.waiting(), 0, "the timed-out waiter is removed");
    }
}

#[cfg(all(test, not(wharf_loom)))]
mod lifetime_tests {
    use super::*;
    use crate::transport::memory::MemoryTransport;

    #[tokio::test]
    async fn cancelled_requests_leave_nothing_pending() {
        let client = Client::new(Arc::new(MemoryTransport::new()));
        for _ in 0..100 {
            // The caller gives up: an HTTP request cancelled, a select! lost.
            let _ = tokio::time::timeout(
                Duration::from_millis(1),
                client.request::<_, u64>("nobody-listens", &1u64),
            )
            .await;
        }
        let inbox = client.inbox().await.unwrap();
        assert_eq!(inbox.waiting(), 0);
    }

    /// Answers one request on `queue` by hand: take it, reply to its address.
    async fn answer_one(transport: Arc<dyn Transport>, queue: &str) {
        loop {
            if let Some(request) = transport.fetch(queue, 1).await.unwrap().pop() {
                let message = request.message.clone();
                request.settle(crate::transport::Settlement::Ack).await.unwrap();
                let reply = Message::new(message.body.clone())
                    .with_correlation_id(message.correlation_id.clone().unwrap());
                let address = message.reply_to.as_deref().unwrap();
                transport.reply(address, reply).await.unwrap();
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[test]
    fn a_client_outlives_the_runtime_that_opened_its_reply_address() {
        let transport: Arc<dyn Transport> = Arc::new(MemoryTransport::new());
        let client = Client::new(transport.clone());
        for n in [1u64, 2] {
            // A new runtime each time; the first one's reply task dies with it.
            let runtime = tokio::runtime::Runtime::new().unwrap();
            let reply: u64 = runtime.block_on(async {
                let answer = tokio::spawn(answer_one(transport.clone(), "echo"));
                let reply = client
                    .request_timeout("echo", &n, Duration::from_secs(5))
                    .await
                    .unwrap();
                answer.await.unwrap();
                reply
            });
            assert_eq!(reply, n);
        }
    }
}

#[cfg(all(test, not(wharf_loom)))]
mod inbox_tests {
    use super::*;
    use crate::transport::Settlement;
    use crate::transport::memory::MemoryTransport;

    /// Takes `count` requests from `queue`, then answers them in reverse
    /// order (echoing the body).
    async fn answer_all_reversed(transport: Arc<dyn Transport>, queue: &str, count: usize) {
        let mut requests = Vec::new();
        while requests.len() < count {
            let batch = transport.fetch(queue, count - requests.len()).await.unwrap();
            if batch.is_empty() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            requests.extend(batch);
        }
        // Past the short timeouts: those requesters are gone, whichever of
        // them was reading the reply stream.
        tokio::time::sleep(Duration::from_millis(50)).await;
        for request in requests.into_iter().rev() {
            let message = request.message.clone();
            request.settle(Settlement::Ack).await.unwrap();
            let reply = Message::new(message.body.clone())
                .with_correlation_id(message.correlation_id.clone().unwrap());
            transport
                .reply(message.reply_to.as_deref().unwrap(), reply)
                .await
                .unwrap();
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replies_reach_their_requests_when_readers_give_up() {
        let transport: Arc<dyn Transport> = Arc::new(MemoryTransport::new());
        let client = Client::new(transport.clone());
        let count = 200u64;
        let answering = tokio::spawn(answer_all_reversed(transport.clone(), "echo", count as usize));
        let requests: Vec<_> = (0..count)
            .map(|n| {
                let client = client.clone();
                tokio::spawn(async move {
                    // Every third request gives up long before its reply.
                    let timeout = if n % 3 == 0 {
                        Duration::from_millis(10)
                    } else {
                        Duration::from_secs(10)
                    };
                    (n, client.request_timeout::<_, u64>("echo", &n, timeout).await)
                })
            })
            .collect();
        let all_end = async {
            for request in requests {
                let (n, result) = request.await.unwrap();
                match result {
                    Ok(reply) => assert_eq!(reply, n),
                    Err(RequestError::Timeout { .. }) => assert_eq!(n % 3, 0, "request {n} timed out"),
                    Err(other) => panic!("request {n}: {other}"),
                }
            }
            answering.await.unwrap();
        };
        // Replies come within ~100 ms; a request left without a reader would
        // wait for its 10 s timeout.
        tokio::time::timeout(Duration::from_secs(3), all_end)
            .await
            .expect("every request gets its reply at once");
        assert_eq!(client.inbox().await.unwrap().waiting(), 0);
    }
}
