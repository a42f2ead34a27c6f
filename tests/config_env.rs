//! The environment is read only when asked: `App::start` ignores
//! `WHARF_HTTP_ADDR` and `WHARF_SHUTDOWN_GRACE_SECONDS`;
//! `App::config_from_env` applies them.
//!
//! Its own test binary with a single test: it sets the variables for the
//! whole process before any other thread exists, which no other test may
//! race with.

mod support;

use std::future::Future;
use std::time::{Duration, Instant};
use support::{http_get, wait_for};
use tokio::sync::Semaphore;
use wharf::{App, Broker, BrokerErrorKind, Config, HTTP_ADDR_ENV, HttpListener, SHUTDOWN_GRACE_ENV};

/// Sets `name` for the whole process.
fn set_env(name: &str, value: &str) {
    // SAFETY: the only test of this binary sets the environment between its
    // runtimes, when no thread of its own exists that could read it.
    unsafe { std::env::set_var(name, value) };
}

/// Runs `future` on a runtime of the calling thread only, gone on return.
fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

#[test]
fn the_environment_counts_only_through_config_from_env() {
    set_env(HTTP_ADDR_ENV, "127.0.0.1:0");
    set_env(SHUTDOWN_GRACE_ENV, "1");
    let config = Config::from_env().unwrap();
    assert_eq!(
        config.http,
        Some(HttpListener::At("127.0.0.1:0".parse().unwrap()))
    );
    assert_eq!(config.shutdown_grace, Some(Duration::from_secs(1)));
    block_on(ignored_by_start());
    block_on(applied_by_config_from_env());

    set_env(HTTP_ADDR_ENV, "off");
    block_on(off_turns_off_the_listener_set_in_code());

    set_env(HTTP_ADDR_ENV, "port 8080");
    block_on(a_bad_value_fails_config_from_env_only());
}

/// Never opens: the handlers below hold their message until shutdown
/// abandons them.
static GATE: Semaphore = Semaphore::const_new(0);

async fn stuck(_n: u64) {
    let _permit = GATE.acquire().await;
}

/// Starts `app` (routed on `queue`), puts a stuck handler in flight and
/// shuts the app down. Returns whether it drained, or `None` if the
/// shutdown took longer than `limit`.
async fn drain_with_a_stuck_handler(app: App, broker: &Broker, queue: &str, limit: Duration) -> Option<bool> {
    let running = app.start().await.unwrap();
    broker.client().publish(queue, &1u64).await.unwrap();
    wait_for("the handler to start", Duration::from_secs(5), || {
        running.stats(queue).in_flight == 1
    })
    .await;
    let report = tokio::time::timeout(limit, running.shutdown()).await.ok()?;
    Some(report.drained)
}

async fn ignored_by_start() {
    let broker = Broker::memory();
    // Neither setting in code, and no config: the variables must not count.
    let running = App::new(broker.clone())
        .route("config-env-ignored", stuck)
        .start()
        .await
        .unwrap();
    assert_eq!(running.http_addr(), None, "no listener unless asked for");
    running.shutdown().await;

    // The default grace (25 s), not the environment's 1 s: after 3 s the
    // drain still waits for the stuck handler.
    let app = App::new(broker.clone()).route("config-env-grace", stuck);
    let drained = drain_with_a_stuck_handler(app, &broker, "config-env-grace", Duration::from_secs(3)).await;
    assert_eq!(drained, None, "the drain outlasted the environment's grace");
}

async fn applied_by_config_from_env() {
    let broker = Broker::memory();
    let app = App::new(broker.clone())
        .route("config-env-applied", stuck)
        .config_from_env()
        .unwrap();
    let started = Instant::now();
    let drained =
        drain_with_a_stuck_handler(app, &broker, "config-env-applied", Duration::from_secs(10)).await;
    assert_eq!(drained, Some(false), "abandoned after the 1 s grace");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );

    // The listener the environment names, over none in code.
    let running = App::new(broker.clone())
        .route("config-env-http", stuck)
        .config_from_env()
        .unwrap()
        .start()
        .await
        .unwrap();
    let addr = running.http_addr().expect("listening as the environment says");
    assert!(addr.ip().is_loopback(), "{addr}");
    assert_ne!(addr.port(), 0);
    assert_eq!(http_get(addr, "/healthz").await, (200, "ok\n".into()));
    running.shutdown().await;
}

async fn off_turns_off_the_listener_set_in_code() {
    let running = App::new(Broker::memory())
        .route("config-env-off", stuck)
        .http("127.0.0.1:0".parse().unwrap())
        .config_from_env()
        .unwrap()
        .start()
        .await
        .unwrap();
    assert_eq!(running.http_addr(), None, "turned off by the environment");
    running.shutdown().await;
}

async fn a_bad_value_fails_config_from_env_only() {
    let error = match App::new(Broker::memory()).config_from_env() {
        Ok(_) => panic!("a bad WHARF_HTTP_ADDR was accepted"),
        Err(error) => error,
    };
    assert_eq!(error.kind(), BrokerErrorKind::Config);
    assert!(
        error.to_string().contains(r#"WHARF_HTTP_ADDR="port 8080""#),
        "{error}"
    );
    // Before, start read the variable and failed on it.
    let running = App::new(Broker::memory())
        .route("config-env-bad", stuck)
        .start()
        .await
        .expect("start does not look at the environment");
    assert_eq!(running.http_addr(), None);
    running.shutdown().await;
}
