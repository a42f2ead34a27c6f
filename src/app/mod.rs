//! The app builder: routes, state, store, shutdown grace.

pub(crate) mod broker;
pub(crate) mod config;
pub(crate) mod running;
pub mod shutdown;

use crate::app::broker::Broker;
use crate::app::config::{Config, HttpListener};
use crate::app::running::{RouteControl, Running};
use crate::error::{BrokerError, BrokerErrorKind};
use crate::handler::middleware::{Layers, Middleware};
use crate::handler::route_shared::RouteShared;
use crate::handler::{BoxedHandler, Handler, boxed};
use crate::pipeline::route_options::RouteOptions;
use crate::pipeline::{Lifecycle, Pipeline, SettleListener};
use crate::store::{MemoryStore, Store};
use crate::transport::QueueSpec;
use crate::transport::topology::{QueueType, StreamStorage, Topology};
use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A wharf worker: typed handlers subscribed to queues.
///
/// ```no_run
/// use wharf::{App, Broker, Error};
/// #[derive(serde::Deserialize)]
/// struct Order { id: u64 }
///
/// async fn place_order(order: Order) -> Result<(), Error> {
///     println!("placing order {}", order.id);
///     Ok(())
/// }
///
/// #[tokio::main]
/// async fn main() -> Result<(), wharf::BrokerError> {
///     let broker = Broker::from_env().await?;
///     App::new(broker).route("orders", place_order).run().await
/// }
/// ```
pub struct App<S = ()> {
    broker: Broker,
    state: S,
    routes: Vec<RouteDef<S>>,
    store: Arc<dyn Store>,
    grace: Duration,
    http: Option<SocketAddr>,
    middleware: Layers,
    /// The routes' topology where a route does not choose.
    topology: Topology,
    /// Told of every settlement: set by `wharf::testing` only.
    settle_listener: Option<SettleListener>,
}

struct RouteDef<S> {
    queue: String,
    handler: BoxedHandler<S>,
    handler_name: String,
    options: RouteOptions,
}

impl App<()> {
    /// An app without shared state.
    pub fn new(broker: Broker) -> Self {
        App::with_state(broker, ())
    }
}

impl<S: Clone + Send + Sync + 'static> App<S> {
    /// An app whose handlers can take [`State<S>`](crate::State).
    pub fn with_state(broker: Broker, state: S) -> Self {
        App {
            broker,
            state,
            routes: Vec::new(),
            store: Arc::new(MemoryStore::new()),
            grace: Duration::from_secs(25),
            http: None,
            middleware: Layers::default(),
            topology: Topology::default(),
            settle_listener: None,
        }
    }

    /// Subscribes `handler` to `queue` with default [`RouteOptions`].
    pub fn route<H, Args>(self, queue: &str, handler: H) -> Self
    where
        H: Handler<Args, S>,
        Args: 'static,
    {
        self.route_with(queue, handler, RouteOptions::default())
    }

    /// Subscribes `handler` to `queue` with `options`.
    pub fn route_with<H, Args>(mut self, queue: &str, handler: H, options: RouteOptions) -> Self
    where
        H: Handler<Args, S>,
        Args: 'static,
    {
        let handler_name = options
            .name
            .clone()
            .unwrap_or_else(|| std::any::type_name::<H>().to_owned());
        self.routes.push(RouteDef {
            queue: queue.to_owned(),
            handler: boxed(handler),
            handler_name,
            options,
        });
        self
    }

    /// Adds `middleware` around the handler of every route, outside each
    /// route's own ([`RouteOptions::middleware`]); the first added runs
    /// first. See [`wharf::middleware`](crate::middleware).
    pub fn middleware(mut self, middleware: impl Middleware) -> Self {
        self.middleware.push(middleware);
        self
    }

    /// The idempotency and session store (default: in-memory, one process).
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Arc::new(store);
        self
    }

    /// How long in-flight handlers may run on after shutdown begins before
    /// they are abandoned and their messages returned (default 25 s, under
    /// Kubernetes' default 30 s termination grace period). A [`Config`]
    /// applied later ([`App::config`], [`App::config_from_env`]) may
    /// override it.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Serves `/healthz` (alive), `/readyz` (connected, consuming, not
    /// draining: 200, else 503 with the reason) and `/metrics` (Prometheus
    /// text format, wharf's exporter installed as the process's `metrics`
    /// recorder) on `addr`, from start until the app is dropped. Off unless
    /// set here or by a [`Config`] applied with [`App::config`] (such as
    /// [`HTTP_ADDR_ENV`](crate::HTTP_ADDR_ENV) through
    /// [`App::config_from_env`]); the app reads no environment variable on
    /// its own. Port 0 picks a free port: see [`Running::http_addr`].
    pub fn http(mut self, addr: SocketAddr) -> Self {
        self.http = Some(addr);
        self
    }

    /// RabbitMQ: the work-queue type of every route that does not choose
    /// one ([`RouteOptions::queue_type`]), over the broker URL's
    /// `?queue_type=` (the broker-wide default; classic without it). A
    /// [`Config`] applied later ([`QUEUE_TYPE_ENV`](crate::QUEUE_TYPE_ENV)
    /// through [`App::config_from_env`]) may override it.
    pub fn queue_type(mut self, queue_type: QueueType) -> Self {
        self.topology.queue_type = Some(queue_type);
        self
    }

    /// NATS: replicas of the work, delay and dead-letter streams of every
    /// route that does not choose ([`RouteOptions::stream_replicas`]),
    /// 1 to [`MAX_STREAM_REPLICAS`](crate::MAX_STREAM_REPLICAS). A
    /// [`Config`] applied later ([`STREAM_REPLICAS_ENV`](crate::STREAM_REPLICAS_ENV))
    /// may override it.
    pub fn stream_replicas(mut self, replicas: usize) -> Self {
        self.topology.stream_replicas = Some(replicas);
        self
    }

    /// NATS: storage of the work, delay and dead-letter streams of every
    /// route that does not choose ([`RouteOptions::stream_storage`]). A
    /// [`Config`] applied later ([`STREAM_STORAGE_ENV`](crate::STREAM_STORAGE_ENV))
    /// may override it.
    pub fn stream_storage(mut self, storage: StreamStorage) -> Self {
        self.topology.stream_storage = Some(storage);
        self
    }

    /// Applies the settings `config` has (those that are `Some`), over what
    /// the code set before; the others stay as they are.
    /// [`Config::store_replicas`] is not the app's: it is for the program
    /// that builds the store.
    pub fn config(mut self, config: &Config) -> Self {
        match config.http {
            Some(HttpListener::Off) => self.http = None,
            Some(HttpListener::At(addr)) => self.http = Some(addr),
            None => {}
        }
        if let Some(grace) = config.shutdown_grace {
            self.grace = grace;
        }
        let chosen = Topology {
            queue_type: config.queue_type,
            stream_replicas: config.stream_replicas,
            stream_storage: config.stream_storage,
        };
        self.topology = chosen.or(self.topology);
        self
    }

    /// The environment's overrides: [`Config::from_env`] (`WHARF_HTTP_ADDR`,
    /// `WHARF_SHUTDOWN_GRACE_SECONDS`, `WHARF_QUEUE_TYPE`,
    /// `WHARF_STREAM_REPLICAS`, `WHARF_STREAM_STORAGE`) applied with
    /// [`App::config`], over
    /// what the code set before this call. The one place an app reads the
    /// environment: without this call (or [`App::config`] with a
    /// [`Config`] from elsewhere), those variables are ignored.
    ///
    /// ```no_run
    /// # async fn order(n: u64) {}
    /// use wharf::{App, Broker};
    ///
    /// # async fn run() -> Result<(), wharf::BrokerError> {
    /// App::new(Broker::from_env().await?)
    ///     .route("orders", order)
    ///     .http("0.0.0.0:8080".parse().unwrap())
    ///     .config_from_env()?
    ///     .run()
    ///     .await
    /// # }
    /// ```
    pub fn config_from_env(self) -> Result<Self, BrokerError> {
        Ok(self.config(&Config::from_env()?))
    }

    /// Declares every queue, starts consuming and returns the running app.
    pub async fn start(self) -> Result<Running, BrokerError> {
        let mut seen = HashSet::new();
        for route in &self.routes {
            if !seen.insert(route.queue.as_str()) {
                return Err(BrokerError::new(
                    BrokerErrorKind::Config,
                    format!("queue {:?} has more than one route", route.queue),
                ));
            }
            route
                .options
                .topology
                .or(self.topology)
                .check()
                .map_err(|error| {
                    BrokerError::new(
                        BrokerErrorKind::Config,
                        format!("queue {:?}: {error}", route.queue),
                    )
                })?;
            for binding in &route.options.bindings {
                binding.check().map_err(|error| {
                    BrokerError::new(
                        BrokerErrorKind::Config,
                        format!("queue {:?}: {error}", route.queue),
                    )
                })?;
                // RabbitMQ's, and the in-memory broker's likeness of it.
                if self.broker.transport().kind() == "nats" {
                    return Err(crate::transport::no_exchanges(
                        self.broker.transport().kind(),
                        binding.exchange(),
                    ));
                }
            }
            crate::transport::subscription::check_route(
                &route.queue,
                &route.options.subscriptions,
                route.options.priority,
                route.options.persistent,
            )?;
            if let Some(subscription) = route.options.subscriptions.first()
                && self.broker.transport().kind() != "nats"
            {
                return Err(crate::transport::no_subjects(
                    self.broker.transport().kind(),
                    subscription.subject(),
                ));
            }
        }
        let transport = self.broker.transport().clone();
        let lifecycle = Lifecycle::default();
        let mut running = Running::new(transport.clone(), lifecycle.clone(), self.grace);
        if let Some(addr) = self.http {
            // Up while starting too: alive, not ready yet.
            running.serve_http(addr).await?;
        }
        self.store.register_metrics();
        let mut routes: Vec<(String, Arc<dyn RouteControl>)> = Vec::new();
        let mut streams = Vec::new();
        for route in self.routes {
            let spec = QueueSpec {
                name: route.queue.clone(),
                priority: route.options.priority,
                persistent: route.options.persistent,
                lease: route.options.effective_lease(),
                topology: route.options.topology.or(self.topology),
                bindings: route.options.bindings.clone(),
                subscriptions: route.options.subscriptions.clone(),
                existing: route.options.existing_queue,
            };
            transport.declare(&spec).await?;
            let shared = RouteShared {
                queue: route.queue.as_str().into(),
                handler_name: route.handler_name.as_str().into(),
                transport: transport.clone(),
                store: self.store.clone(),
                max_attempts: route.options.max_attempts,
            };
            let handler = route
                .options
                .middleware
                .after(&self.middleware)
                .wrap(route.handler, self.state.clone());
            let pipeline = Arc::new(Pipeline::new(
                shared,
                handler,
                self.state.clone(),
                &route.options,
                lifecycle.clone(),
                self.settle_listener.clone(),
            ));
            if route.options.sessions {
                pipeline.follow_session_changes();
                let (gap, lease) = (route.options.gap_timeout, route.options.effective_lease());
                if gap < lease * 2 {
                    // A crashed worker's session messages come back (and its
                    // turns end) within the lease: with a gap timeout that
                    // short, a crash looks like a gap.
                    tracing::warn!(
                        queue = %route.queue,
                        gap_timeout = ?gap,
                        ?lease,
                        "the session gap timeout is under twice the lease: a crashed worker's session \
                         messages may be taken for a gap (keep gap_timeout well above the lease)"
                    );
                }
            }
            let stream = transport
                .consume(&spec, route.options.effective_prefetch())
                .await?;
            tracing::info!(queue = %route.queue, handler = %route.handler_name, "route started");
            streams.push((pipeline.clone(), stream));
            routes.push((route.queue, Arc::new(pipeline) as Arc<dyn RouteControl>));
        }
        Ok(running.begin(routes, streams))
    }

    /// Runs until SIGTERM or SIGINT, then shuts down gracefully and closes
    /// the broker connection: the whole life of a worker process. The signal
    /// handlers are installed before anything starts.
    pub async fn run(self) -> Result<(), BrokerError> {
        let signal = crate::app::shutdown::signal();
        let broker = self.broker.clone();
        self.run_until(signal).await?;
        broker.close().await;
        Ok(())
    }

    /// Runs until `signal` completes, then shuts down gracefully (the broker
    /// connection stays open).
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> Result<(), BrokerError> {
        let running = self.start().await?;
        signal.await;
        tracing::info!("shutdown signal received; draining");
        running.shutdown().await;
        Ok(())
    }

    /// Tells `listener` of every settlement on every route (`wharf::testing`).
    pub(crate) fn with_settle_listener(mut self, listener: SettleListener) -> Self {
        self.settle_listener = Some(listener);
        self
    }

    /// The broker the app runs on.
    pub(crate) fn broker(&self) -> &Broker {
        &self.broker
    }
}
