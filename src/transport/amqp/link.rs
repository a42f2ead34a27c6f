//! The connection to RabbitMQ and its supervision: a lost connection is
//! re-established with backoff, the routes' topology is declared again, and
//! consumers resume on the new connection. Every connection is a numbered
//! *connection*; deliveries remember theirs, so that nothing is acknowledged on
//! a channel that died with an earlier one (the broker redelivers those).

use super::acks::AckBook;
use super::endpoints::Endpoints;
use super::topology::{self, QueueType, connection_error};
use crate::error::{BrokerError, BrokerErrorKind};
use crate::transport::QueueSpec;
use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::StreamExt;
use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long an operation waits for a lost connection to come back before it
/// fails with a clear error instead of hanging.
const RECONNECT_WAIT: Duration = Duration::from_secs(10);

/// One generation of the connection (a new one after every reconnect) and
/// what wharf keeps open on it.
pub(crate) struct Connected {
    pub(crate) generation: u64,
    pub(crate) connection: Connection,
    /// Confirm-mode channel for everything wharf publishes.
    publisher: Mutex<Channel>,
    /// The channel (and its acks) for `basic.get`, opened on first use.
    fetcher: tokio::sync::Mutex<Option<Arc<AckBook>>>,
    /// Confirm-mode channel for publishes to exchanges, opened on first
    /// use: RabbitMQ closes the channel of a publish to an exchange that
    /// does not exist, which must not fail the publisher's other confirms.
    events: tokio::sync::Mutex<Option<Channel>>,
}

impl Connected {
    /// The fetch channel's ack book, opened again if its channel closed.
    pub(crate) async fn fetch_book(&self) -> Result<Arc<AckBook>, BrokerError> {
        let mut fetcher = self.fetcher.lock().await;
        if let Some(book) = fetcher.as_ref().filter(|b| b.alive()) {
            return Ok(book.clone());
        }
        let channel = self.connection.create_channel().await.map_err(connection_error)?;
        let book = AckBook::start(channel, 0);
        *fetcher = Some(book.clone());
        Ok(book)
    }

    /// The publisher channel, opened again if the broker closed it (a
    /// channel error does not end the connection).
    async fn publisher(&self) -> Result<Channel, BrokerError> {
        let current = lock(&self.publisher).clone();
        if current.status().connected() {
            return Ok(current);
        }
        let channel = confirm_channel(&self.connection).await?;
        *lock(&self.publisher) = channel.clone();
        Ok(channel)
    }

    /// Publishes to the default exchange with routing key `to` and waits for
    /// the broker's confirm. `mandatory`: an unroutable message (no queue of
    /// that name) is an error instead of being dropped.
    pub(crate) async fn publish(
        &self,
        to: &str,
        payload: &[u8],
        properties: BasicProperties,
        mandatory: bool,
    ) -> Result<(), BrokerError> {
        let channel = self.publisher().await?;
        publish_on(&channel, to, payload, properties, mandatory).await
    }

    /// Publishes to `exchange` with `routing_key` and waits for the
    /// broker's confirm. Not mandatory: a message no queue is bound for is
    /// dropped, as an event nobody subscribed to.
    pub(crate) async fn publish_to_exchange(
        &self,
        exchange: &str,
        routing_key: &str,
        payload: &[u8],
        properties: BasicProperties,
    ) -> Result<(), BrokerError> {
        let channel = {
            let mut events = self.events.lock().await;
            match events.as_ref().filter(|c| c.status().connected()) {
                Some(channel) => channel.clone(),
                None => {
                    let channel = confirm_channel(&self.connection).await?;
                    *events = Some(channel.clone());
                    channel
                }
            }
        };
        let target = format!("exchange {exchange:?} with routing key {routing_key:?}");
        publish_routed(
            &channel,
            (exchange, routing_key),
            &target,
            payload,
            properties,
            false,
        )
        .await
    }
}

/// Publishes on `channel` (in confirm mode) to the queue `to`, through the
/// default exchange, and waits for the confirm.
pub(crate) async fn publish_on(
    channel: &Channel,
    to: &str,
    payload: &[u8],
    properties: BasicProperties,
    mandatory: bool,
) -> Result<(), BrokerError> {
    publish_routed(
        channel,
        ("", to),
        &format!("{to:?}"),
        payload,
        properties,
        mandatory,
    )
    .await
}

/// Publishes on `channel` to `(exchange, routing key)`, named `target` in
/// errors, and waits for the confirm.
async fn publish_routed(
    channel: &Channel,
    (exchange, routing_key): (&str, &str),
    target: &str,
    payload: &[u8],
    properties: BasicProperties,
    mandatory: bool,
) -> Result<(), BrokerError> {
    let to = target;
    let failed = |e: lapin::Error| {
        // A publish to an exchange that does not exist: RabbitMQ closes the
        // channel with NOT_FOUND. Trying again would fail the same way.
        let missing = matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp)
            if matches!(amqp.kind(), lapin::protocol::AMQPErrorKind::Soft(lapin::protocol::AMQPSoftError::NOTFOUND)));
        let (kind, why) = match missing {
            true => (
                BrokerErrorKind::Config,
                format!("publish to {to} failed: no such exchange"),
            ),
            false => (BrokerErrorKind::Publish, format!("publish to {to} failed")),
        };
        BrokerError::new(kind, why).with_source(e)
    };
    let options = BasicPublishOptions {
        mandatory,
        ..BasicPublishOptions::default()
    };
    let confirm = channel
        .basic_publish(exchange.into(), routing_key.into(), options, payload, properties)
        .await
        .map_err(failed)?
        .await
        .map_err(failed)?;
    match confirm {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => Err(BrokerError::new(
            BrokerErrorKind::Publish,
            format!("no queue named {to}: the message was not routed"),
        )),
        Confirmation::Nack(_) => Err(BrokerError::new(
            BrokerErrorKind::Publish,
            format!("RabbitMQ did not accept the message for {to} (nack)"),
        )),
        Confirmation::NotRequested => Err(BrokerError::new(
            BrokerErrorKind::Publish,
            "publisher confirms are not enabled on this channel",
        )),
    }
}

/// Binds `spec`'s queue to its exchanges on a channel of its own: a
/// refusal closes the channel it happens on, which must not be the
/// publisher's (in-flight confirms of replies and retries would fail).
async fn bind_on_own_channel(connection: &Connection, spec: &QueueSpec) -> Result<(), BrokerError> {
    if spec.bindings.is_empty() {
        return Ok(());
    }
    let channel = connection.create_channel().await.map_err(connection_error)?;
    let bound = super::exchanges::bind_queue(&channel, &spec.name, &spec.bindings).await;
    if channel.status().connected() {
        let _ = channel.close(200, "wharf: bound".into()).await;
    }
    bound
}

pub(crate) async fn confirm_channel(connection: &Connection) -> Result<Channel, BrokerError> {
    let channel = connection.create_channel().await.map_err(connection_error)?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(connection_error)?;
    Ok(channel)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The supervised connection.
pub(crate) struct Link {
    endpoints: Endpoints,
    pub(crate) url: String,
    pub(crate) queue_type: QueueType,
    current: watch::Sender<Option<Arc<Connected>>>,
    connected: watch::Sender<bool>,
    /// Routes declared so far, declared again after a reconnect.
    routes: Mutex<Vec<QueueSpec>>,
    /// Delay queues known to exist (they are durable and survive reconnects).
    delays: Mutex<HashSet<String>>,
    generation: AtomicU64,
    closing: CancellationToken,
    /// Ack books of live channels, to flush on shutdown.
    books: Mutex<Vec<std::sync::Weak<AckBook>>>,
}

impl Link {
    /// Connects once (an unreachable broker is an error now, not a hang) and
    /// starts supervising the connection.
    pub(crate) async fn connect(endpoints: Endpoints) -> Result<Arc<Self>, BrokerError> {
        let link = Arc::new(Link {
            url: endpoints.shown.clone(),
            queue_type: endpoints.queue_type,
            endpoints,
            current: watch::channel(None).0,
            connected: watch::channel(false).0,
            routes: Mutex::new(Vec::new()),
            delays: Mutex::new(HashSet::new()),
            generation: AtomicU64::new(0),
            closing: CancellationToken::new(),
            books: Mutex::new(Vec::new()),
        });
        let conn = link.open_connection().await.map_err(|error| {
            if error.kind() == BrokerErrorKind::Config {
                return error;
            }
            BrokerError::new(
                BrokerErrorKind::Connection,
                format!("cannot connect to RabbitMQ at {}", link.url),
            )
            .with_source(error)
        })?;
        tokio::spawn(link.clone().supervise(conn));
        Ok(link)
    }

    async fn open_connection(&self) -> Result<Arc<Connected>, BrokerError> {
        let connection = self.endpoints.connect().await?;
        let publisher = confirm_channel(&connection).await?;
        let specs = lock(&self.routes).clone();
        for spec in &specs {
            topology::declare_route(&publisher, spec, self.queue_type).await?;
        }
        // The bindings were made when the routes started and live on with
        // their durable queues; made again in case the broker lost them, an
        // exchange that has gone meanwhile (another team's) is reported,
        // not a reason to stay disconnected.
        for spec in specs.iter().filter(|spec| !spec.bindings.is_empty()) {
            if let Err(error) = bind_on_own_channel(&connection, spec).await {
                tracing::warn!(queue = %spec.name, error = %crate::error::Chain(&error), "queue bindings not renewed after the reconnect");
            }
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(Arc::new(Connected {
            generation,
            connection,
            publisher: Mutex::new(publisher),
            fetcher: tokio::sync::Mutex::new(None),
            events: tokio::sync::Mutex::new(None),
        }))
    }

    /// Publishes a connection and waits for it to fail; then
    /// reconnects with backoff, until closed.
    async fn supervise(self: Arc<Self>, mut conn: Arc<Connected>) {
        loop {
            let mut events = conn.connection.events_listener();
            self.current.send_replace(Some(conn.clone()));
            self.connected.send_replace(true);
            tracing::info!(url = %self.url, generation = conn.generation, "connected to RabbitMQ");
            loop {
                tokio::select! {
                    () = self.closing.cancelled() => return,
                    event = events.next() => match event {
                        Some(lapin::Event::Error(error)) => {
                            tracing::warn!(error = %crate::error::Chain(&error), "RabbitMQ connection lost");
                            break;
                        }
                        Some(_) => {}
                        None => break,
                    },
                }
            }
            self.current.send_replace(None);
            self.connected.send_replace(false);
            self.endpoints.rotate();
            let mut delays = ExponentialBuilder::new()
                .with_min_delay(Duration::from_millis(100))
                .with_max_delay(Duration::from_secs(5))
                .with_jitter()
                .without_max_times()
                .build();
            conn = loop {
                let delay = delays.next().unwrap_or(Duration::from_secs(5));
                tokio::select! {
                    () = self.closing.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
                match self.open_connection().await {
                    Ok(conn) => break conn,
                    Err(error) => {
                        // Next time start with another server, also when
                        // this one took the connection but failed after.
                        self.endpoints.rotate();
                        tracing::warn!(error = %crate::error::Chain(&error), ?delay, "reconnecting to RabbitMQ")
                    }
                }
            };
        }
    }

    /// The current connection, waiting a while for a lost connection to return.
    pub(crate) async fn conn(&self) -> Result<Arc<Connected>, BrokerError> {
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        let mut current = self.current.subscribe();
        let waited = tokio::time::timeout(RECONNECT_WAIT, current.wait_for(|s| s.is_some())).await;
        match waited {
            Ok(Ok(conn)) => Ok(conn.clone().expect("waited for a connection")),
            _ if self.closing.is_cancelled() => Err(BrokerError::new(
                BrokerErrorKind::Closed,
                "the RabbitMQ connection was closed",
            )),
            _ => Err(BrokerError::new(
                BrokerErrorKind::Connection,
                format!(
                    "RabbitMQ at {} is unreachable (no connection for {RECONNECT_WAIT:?}; still reconnecting)",
                    self.url
                ),
            )),
        }
    }

    /// Sessions as they come and go, for consumers to resume on.
    pub(crate) fn connections(&self) -> watch::Receiver<Option<Arc<Connected>>> {
        self.current.subscribe()
    }

    /// The connection now, if connected.
    pub(crate) fn current(&self) -> Option<Arc<Connected>> {
        self.current.borrow().clone()
    }

    pub(crate) fn connected(&self) -> watch::Receiver<bool> {
        self.connected.subscribe()
    }

    /// Declares a route's queues now and after every reconnect.
    pub(crate) async fn declare(&self, spec: &QueueSpec) -> Result<(), BrokerError> {
        if let Some(subscription) = spec.subscriptions.first() {
            return Err(crate::transport::no_subjects("amqp", subscription.subject()));
        }
        let conn = self.conn().await?;
        let channel = conn.publisher().await?;
        topology::declare_route(&channel, spec, self.queue_type).await?;
        bind_on_own_channel(&conn.connection, spec).await?;
        let mut routes = lock(&self.routes);
        if !routes.contains(spec) {
            routes.push(spec.clone());
        }
        Ok(())
    }

    /// The delay queue of `queue` for `bucket_ms`, declared on first use.
    pub(crate) async fn delay_queue(
        &self,
        conn: &Connected,
        queue: &str,
        bucket_ms: u64,
    ) -> Result<String, BrokerError> {
        let name = topology::delay_queue(queue, bucket_ms);
        if lock(&self.delays).contains(&name) {
            return Ok(name);
        }
        let channel = conn.publisher().await?;
        topology::declare_delay(&channel, queue, bucket_ms).await?;
        lock(&self.delays).insert(name.clone());
        Ok(name)
    }

    /// Forgets declarations of a deleted queue.
    pub(crate) fn forget(&self, queue: &str) {
        lock(&self.routes).retain(|spec| spec.name != queue);
        let prefix = format!("{queue}.delay.");
        lock(&self.delays).retain(|name| !name.starts_with(&prefix));
    }

    /// Keeps `book` for [`flush`](Self::flush).
    pub(crate) fn track(&self, book: &Arc<AckBook>) {
        let mut books = lock(&self.books);
        books.retain(|b| b.strong_count() > 0);
        books.push(Arc::downgrade(book));
    }

    /// Sends every held-back ack now.
    pub(crate) async fn flush(&self) {
        let books: Vec<Arc<AckBook>> = lock(&self.books).iter().filter_map(|b| b.upgrade()).collect();
        for book in books {
            book.flush().await;
        }
    }

    /// Flushes, then closes the connection for good.
    pub(crate) async fn close(&self) {
        self.flush().await;
        self.closing.cancel();
        if let Some(conn) = self.current.send_replace(None) {
            let _ = conn.connection.close(200, "wharf: shutting down".into()).await;
        }
        self.connected.send_replace(false);
    }
}
