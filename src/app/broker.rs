//! Choosing and connecting a broker by URL.

use crate::client::Client;
use crate::error::{BrokerError, BrokerErrorKind};
use crate::ops::dead_letters::DeadLetters;
use crate::transport::broker_options::BrokerOptions;
use crate::transport::memory::MemoryTransport;
use crate::transport::{QueueSpec, Transport};
use crate::util::redact::redact;
use std::fmt;
use std::sync::Arc;

pub use crate::transport::broker_options::BROKER_URL_ENV;

/// A connection to a broker: the in-memory one, RabbitMQ (`amqp://`) or NATS
/// (`nats://`). Cheap to clone; clones share the connection.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), wharf::BrokerError> {
/// // WHARF_BROKER_URL unset or `memory://`: the in-process broker.
/// let broker = wharf::Broker::connect("memory://").await?;
/// assert_eq!(broker.kind(), "memory");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Broker {
    transport: Arc<dyn Transport>,
    url: String,
    /// The broker's one client: every `client()` is a handle to it.
    client: Client,
}

impl Broker {
    /// A new, empty in-process broker. Messages live as long as the process.
    pub fn memory() -> Self {
        Broker::new(Arc::new(MemoryTransport::new()), "memory://".to_owned())
    }

    /// Connects to the broker named by `url`: `memory://`, `amqp://…` or
    /// `nats://…` (several servers of a cluster comma-separated). Credentials
    /// in the URL are never printed, in errors or in `Debug`.
    pub async fn connect(url: &str) -> Result<Self, BrokerError> {
        Broker::connect_with(&BrokerOptions::new(url)).await
    }

    /// Connects with typed options: several servers, TLS files, credentials
    /// kept in files, RabbitMQ's vhost, heartbeat and connection name.
    pub async fn connect_with(options: &BrokerOptions) -> Result<Self, BrokerError> {
        let scheme = options.scheme()?;
        match scheme.as_str() {
            "memory" => Ok(Broker::memory()),
            #[cfg(feature = "amqp")]
            "amqp" | "amqps" => {
                let transport = crate::transport::amqp::AmqpTransport::connect(options).await?;
                Ok(Broker::new(Arc::new(transport), options.shown()))
            }
            #[cfg(not(feature = "amqp"))]
            "amqp" | "amqps" => Err(BrokerError::new(
                BrokerErrorKind::Unsupported,
                format!(
                    "cannot connect to {}: this build of wharf has no RabbitMQ transport (enable the `amqp` feature)",
                    options.shown()
                ),
            )),
            #[cfg(feature = "nats")]
            "nats" | "tls" => {
                let transport = crate::transport::nats::NatsTransport::connect(options).await?;
                Ok(Broker::new(Arc::new(transport), options.shown()))
            }
            #[cfg(not(feature = "nats"))]
            "nats" | "tls" => Err(BrokerError::new(
                BrokerErrorKind::Unsupported,
                format!(
                    "cannot connect to {}: this build of wharf has no NATS transport (enable the `nats` feature)",
                    options.shown()
                ),
            )),
            _ => Err(BrokerError::new(
                BrokerErrorKind::Config,
                format!(
                    "unsupported broker URL {:?}: expected memory://, amqp://… or nats://…",
                    options.shown()
                ),
            )),
        }
    }

    /// Connects to the broker in `WHARF_BROKER_URL` with the options in the
    /// other variables of [`BrokerOptions::from_env`], or the in-process
    /// broker when `WHARF_BROKER_URL` is unset or empty.
    pub async fn from_env() -> Result<Self, BrokerError> {
        match BrokerOptions::from_env()? {
            Some(options) => Broker::connect_with(&options).await,
            None => Ok(Broker::memory()),
        }
    }

    /// Wraps a custom [`Transport`].
    pub fn from_transport(transport: impl Transport, url: &str) -> Self {
        Broker::new(Arc::new(transport), redact(url))
    }

    /// The broker over `transport`, with its one client (`url` redacted).
    fn new(transport: Arc<dyn Transport>, url: String) -> Self {
        Broker {
            client: Client::new(transport.clone()),
            transport,
            url,
        }
    }

    /// `memory`, `amqp` or `nats`.
    pub fn kind(&self) -> &'static str {
        self.transport.kind()
    }

    /// The broker URL with credentials masked.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A client for publishing and request/reply: a handle to the broker's
    /// one client, so every call shares one reply address (one reply
    /// consumer on the broker, opened on the first request).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The dead-letter queue of `queue`, to inspect, replay or purge.
    pub fn dead_letters(&self, queue: &str) -> DeadLetters {
        DeadLetters::new(self.transport.clone(), queue)
    }

    /// Declares `queue` (and its dead-letter queue) as a route would, for
    /// publishers that must not publish before any worker has started.
    pub async fn declare(&self, queue: &QueueSpec) -> Result<(), BrokerError> {
        self.transport.declare(queue).await
    }

    /// Deletes `queue` and everything wharf declared for it (dead-letter and
    /// delay queues), with their messages: for a route that is retired.
    pub async fn delete_queue(&self, queue: &str) -> Result<(), BrokerError> {
        self.transport.delete(queue).await
    }

    /// Messages waiting in `queue` (delivered but unsettled ones not counted).
    pub async fn queue_depth(&self, queue: &str) -> Result<u64, BrokerError> {
        self.transport.depth(queue).await
    }

    /// Sends held-back acks and closes the connection (a no-op for the
    /// in-memory broker). Every clone of this broker is closed with it.
    pub async fn close(&self) {
        self.transport.close().await;
    }

    /// The transport underneath, e.g. to wrap it (instrumentation, fault
    /// injection in tests) and pass the wrapper to [`Broker::from_transport`].
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }
}

impl fmt::Debug for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broker")
            .field("kind", &self.kind())
            .field("url", &self.url)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn broker_errors_never_show_the_password() {
        // Refused either way: nothing listens on port 1, or a transport not
        // built in.
        for url in [
            "amqp://guest:hunter2@127.0.0.1:1",
            "nats://wharf:hunter2@127.0.0.1:1",
        ] {
            let error = Broker::connect(url).await.unwrap_err();
            assert!(
                matches!(
                    error.kind(),
                    BrokerErrorKind::Unsupported | BrokerErrorKind::Connection
                ),
                "{error:?}"
            );
            let text = format!("{} {error:?}", crate::error::Chain(&error));
            assert!(!text.contains("hunter2"), "secret leaked: {text}");
        }
        let error = Broker::connect("kafka://x:pw@h").await.unwrap_err();
        assert_eq!(error.kind(), BrokerErrorKind::Config);
        assert!(!crate::error::Chain(&error).to_string().contains("pw@"));
    }

    #[tokio::test]
    async fn memory_url_and_debug_output() {
        let broker = Broker::connect("memory://").await.unwrap();
        assert_eq!(broker.kind(), "memory");
        assert_eq!(
            format!("{broker:?}"),
            r#"Broker { kind: "memory", url: "memory://" }"#
        );
    }
}
