//! A long-lived wharf worker configured only by environment variables: the
//! program the container image (`Dockerfile`) runs and the Helm chart
//! (`charts/wharf-worker`) deploys.
//!
//! ```sh
//! WHARF_BROKER_URL=amqp://guest:guest@127.0.0.1:5672/%2f WHARF_HTTP_ADDR=127.0.0.1:8080 \
//!     cargo run --example worker --features amqp,nats,redis
//! curl 127.0.0.1:8080/readyz; curl 127.0.0.1:8080/metrics
//! ```
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `WHARF_BROKER_URL` | `memory://` | `amqp://user:password@host:5672/%2f`, `nats://host:4222`, `nats://user:password@host:4222`, `nats://token@host:4222`, several servers of a cluster `nats://a:4222,nats://b:4222` or `amqp://a/%2f,amqp://b/%2f` (credentials percent-encoded; never printed: logs and errors show the URL redacted, see docs/operations.md#secrets) |
//! | `WHARF_BROKER_TLS_CA_FILE` | system roots | PEM file of the CA that signed the broker's certificate (`amqps://`, `tls://`) |
//! | `WHARF_BROKER_TLS_CERT_FILE`, `WHARF_BROKER_TLS_KEY_FILE` | none | PEM client certificate and key, for brokers that verify clients |
//! | `WHARF_BROKER_TLS_SERVER_NAME` | the URL's host | the name the broker's certificate is checked against |
//! | `WHARF_BROKER_USER`, `WHARF_BROKER_PASSWORD_FILE` | none | user name, and the file holding its password (a mounted Secret) |
//! | `WHARF_BROKER_TOKEN_FILE` | none | NATS: file holding a token |
//! | `WHARF_NATS_CREDS_FILE` | none | NATS: credentials file (JWT and NKey seed) |
//! | `WHARF_NATS_NKEY_FILE` | none | NATS: file holding an NKey seed |
//! | `WHARF_AMQP_VHOST` | the URL's | RabbitMQ virtual host |
//! | `WHARF_AMQP_HEARTBEAT_SECONDS` | `10` | RabbitMQ heartbeat; 0 takes the server's (60 s unless configured) |
//! | `WHARF_BROKER_CONNECTION_NAME` | `wharf` | the connection's name on the broker (the chart sets the pod's name) |
//! | `WHARF_QUEUE` | `orders` | the queue the handler consumes |
//! | `WHARF_CONCURRENCY` | `16` | handlers at once |
//! | `WHARF_PREFETCH` | 2 × concurrency | unsettled deliveries per worker |
//! | `WHARF_MAX_ATTEMPTS` | `5` | attempts before a message is dead-lettered |
//! | `WHARF_BACKOFF_MS` | `1000` | first retry delay (doubling, capped at 60 s, jittered) |
//! | `WHARF_SHUTDOWN_GRACE_SECONDS` | `25` | drain time after SIGTERM, whole seconds up to 86400; keep the pod's `terminationGracePeriodSeconds` above it (read by `App::config_from_env`) |
//! | `WHARF_HTTP_ADDR` | `0.0.0.0:8080` | `/healthz`, `/readyz`, `/metrics`; `off` disables (read by `App::config_from_env`) |
//! | `WHARF_STORE_URL` | in-memory | `redis://[user:password@]host:6379[/db]` or `rediss://…` (feature `redis`) or a NATS URL as for the broker (feature `nats`; on a NATS broker it takes the broker's TLS files and credentials): idempotency and sessions shared by all pods; credentials never printed (another scheme is reported by its scheme only). Unset, each process keeps its own: several pods need a shared store |
//! | `WHARF_STORE_REPLICAS` | `1` (an existing bucket as it is) | replicas of the NATS KV store's buckets, 1 to 5 (a `nats://` store only; read by `Config::from_env`) |
//! | `WHARF_QUEUE_TYPE` | URL's `?queue_type=`, else `classic` | RabbitMQ work-queue type, `classic` or `quorum` (read by `App::config_from_env`) |
//! | `WHARF_STREAM_REPLICAS` | `1` (an existing stream as it is) | JetStream replicas of the work, delay and dead-letter streams, 1 to 5 (read by `App::config_from_env`) |
//! | `WHARF_STREAM_STORAGE` | `file` (an existing stream as it is) | JetStream storage of those streams, `file` or `memory` (read by `App::config_from_env`) |
//! | `WHARF_STORE_CA_FILE` | system trust store | PEM file of the CA that signed the certificate of a `rediss://` store (a private CA) |
//! | `WHARF_MEMORY_STORE_MAX_KEYS` | `100000` | idempotency records the in-memory store keeps (about 220 bytes each plus a stored reply); past it the completed ones closest to expiry are evicted |
//! | `WHARF_MEMORY_STORE_MAX_SESSIONS` | `100000` | sessions the in-memory store keeps (about 260 bytes each plus a checkpoint); past it the longest idle ones are evicted |
//! | `WHARF_LOG_FORMAT` | `text` | `json` for one JSON object per line |
//! | `RUST_LOG` | `info` | log filter (`tracing-subscriber` syntax) |
//!
//! The handler takes an order, `{"id": 1, "item": "teapot", "quantity": 2}`:
//! quantity 0 is a permanent error (dead-lettered at once, error reply to a
//! request); the item `flaky` fails its first attempt (retried); anything
//! else succeeds, replying with a receipt when asked.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;
use wharf::{App, Backoff, Broker, Context, Error, RouteOptions};

#[derive(Debug, Deserialize)]
struct Order {
    id: u64,
    item: String,
    quantity: u32,
}

#[derive(Debug, Serialize)]
struct Receipt {
    order_id: u64,
    total_cents: u64,
}

async fn place_order(ctx: Context, order: Order) -> Result<Receipt, Error> {
    if order.quantity == 0 {
        return Err(Error::permanent(format!("order {} has no items", order.id)).with_kind("invalid-order"));
    }
    if order.item == "flaky" && ctx.attempt() == 1 {
        return Err(Error::new(format!(
            "order {}: warehouse busy, try again",
            order.id
        )));
    }
    tracing::info!(order = order.id, item = %order.item, quantity = order.quantity, "order placed");
    Ok(Receipt {
        order_id: order.id,
        total_cents: u64::from(order.quantity) * 250,
    })
}

/// `name` parsed, or `default` when unset; a value that does not parse is
/// an error naming the variable.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(value) => value
            .trim()
            .parse()
            .map_err(|_| format!("{name}={value:?} is not valid")),
    }
}

fn init_logs() -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match std::env::var("WHARF_LOG_FORMAT").as_deref() {
        Ok("json") => builder.json().flatten_event(true).with_current_span(true).init(),
        Ok("text") | Err(_) => builder.init(),
        Ok(other) => return Err(format!("WHARF_LOG_FORMAT={other:?}: use text or json")),
    }
    Ok(())
}

async fn store(app: App, url: Option<String>) -> Result<App, Box<dyn std::error::Error>> {
    let Some(url) = url else {
        tracing::info!(
            "idempotency keys and sessions are kept in this process only; workers in several \
             processes need WHARF_STORE_URL"
        );
        let store = wharf::store::MemoryStore::new()
            .with_max_keys(env_or(
                "WHARF_MEMORY_STORE_MAX_KEYS",
                wharf::store::DEFAULT_MAX_KEYS,
            )?)
            .with_max_sessions(env_or(
                "WHARF_MEMORY_STORE_MAX_SESSIONS",
                wharf::store::DEFAULT_MAX_SESSIONS,
            )?);
        return Ok(app.store(store));
    };
    let ca_file = std::env::var_os("WHARF_STORE_CA_FILE").filter(|path| !path.is_empty());
    #[cfg(feature = "redis")]
    if url.starts_with("redis://") || url.starts_with("rediss://") {
        let store = match ca_file {
            Some(path) => {
                let ca = std::fs::read(&path)
                    .map_err(|e| format!("WHARF_STORE_CA_FILE={}: {e}", path.to_string_lossy()))?;
                wharf::store::RedisStore::connect_with_ca(&url, &ca).await?
            }
            None => wharf::store::RedisStore::connect(&url).await?,
        };
        return Ok(app.store(store));
    }
    if ca_file.is_some() {
        return Err("WHARF_STORE_CA_FILE applies to a rediss:// WHARF_STORE_URL only".into());
    }
    #[cfg(feature = "nats")]
    if url.starts_with("nats://") || url.starts_with("tls://") {
        // On a NATS broker, the store takes the broker's TLS files and
        // credentials (WHARF_BROKER_TLS_*, WHARF_NATS_CREDS_FILE, …).
        let options = match wharf::BrokerOptions::from_env()? {
            Some(broker)
                if broker
                    .urls()
                    .iter()
                    .all(|u| u.starts_with("nats://") || u.starts_with("tls://")) =>
            {
                broker.with_url(url.as_str())
            }
            _ => wharf::BrokerOptions::new(url.as_str()),
        };
        let mut store = wharf::store::NatsKvStore::connect_with(&options).await?;
        if let Some(replicas) = wharf::Config::from_env()?.store_replicas {
            store = store.with_replicas(replicas);
        }
        return Ok(app.store(store));
    }
    let _ = app;
    // Only the scheme, and only when it is one: the rest of the URL may
    // hold a password.
    let message = match url.split_once("://") {
        Some((scheme, _))
            if !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
        {
            format!(
                "WHARF_STORE_URL: no store for {scheme}:// URLs in this build (redis://… needs the feature redis, nats://… the feature nats)"
            )
        }
        _ => "WHARF_STORE_URL is not a URL (redis://… or nats://…)".to_owned(),
    };
    Err(message.into())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logs()?;
    let queue = std::env::var("WHARF_QUEUE").unwrap_or_else(|_| "orders".to_owned());
    let concurrency: usize = env_or("WHARF_CONCURRENCY", 16)?;
    let prefetch: usize = env_or("WHARF_PREFETCH", concurrency * 2)?;
    let attempts: u32 = env_or("WHARF_MAX_ATTEMPTS", 5)?;
    let backoff_ms: u64 = env_or("WHARF_BACKOFF_MS", 1000)?;
    let http: SocketAddr = "0.0.0.0:8080".parse()?;

    let broker = Broker::from_env().await?;
    tracing::info!(broker = %broker.url(), %queue, concurrency, prefetch, "starting worker");
    let options = RouteOptions::new()
        .name("place_order")
        .concurrency(concurrency)
        .prefetch(prefetch)
        .max_attempts(attempts)
        .backoff(Backoff::exponential(
            Duration::from_millis(backoff_ms),
            Duration::from_secs(60),
        ));
    let app = App::new(broker)
        .route_with(&queue, place_order, options)
        .shutdown_grace(Duration::from_secs(25))
        .http(http)
        // WHARF_HTTP_ADDR and WHARF_SHUTDOWN_GRACE_SECONDS override the two
        // lines above: wharf reads them here, when asked, and nowhere else.
        .config_from_env()?;
    let app = store(app, std::env::var("WHARF_STORE_URL").ok()).await?;
    app.run().await?;
    tracing::info!("worker stopped");
    Ok(())
}
