//! App settings that may come from the environment, read in one explicit
//! place: [`Config::from_env`] (or [`App::config_from_env`](crate::App::config_from_env)).
//! Nothing else in wharf reads these variables.

use crate::error::{BrokerError, BrokerErrorKind};
use crate::transport::topology::{MAX_STREAM_REPLICAS, QueueType, StreamStorage};
use std::net::SocketAddr;
use std::time::Duration;

/// Environment variable read by [`Config::from_env`]: the address of the
/// `/healthz`, `/readyz` and `/metrics` listener (`0.0.0.0:8080`), or `off`
/// (or empty) for none. See [`Config::http`].
pub const HTTP_ADDR_ENV: &str = "WHARF_HTTP_ADDR";

/// Environment variable read by [`Config::from_env`]: the shutdown grace in
/// whole seconds (`25`), from 0 to 86400 (one day). See
/// [`Config::shutdown_grace`].
pub const SHUTDOWN_GRACE_ENV: &str = "WHARF_SHUTDOWN_GRACE_SECONDS";

/// Environment variable read by [`Config::from_env`]: the RabbitMQ
/// work-queue type of routes that do not choose one, `classic` or `quorum`.
/// See [`Config::queue_type`].
pub const QUEUE_TYPE_ENV: &str = "WHARF_QUEUE_TYPE";

/// Environment variable read by [`Config::from_env`]: replicas of the
/// JetStream work, delay and dead-letter streams of routes that do not
/// choose, 1 to 5 (typically 1 or 3). See [`Config::stream_replicas`].
pub const STREAM_REPLICAS_ENV: &str = "WHARF_STREAM_REPLICAS";

/// Environment variable read by [`Config::from_env`]: storage of the
/// JetStream work, delay and dead-letter streams of routes that do not
/// choose, `file` or `memory`. See [`Config::stream_storage`].
pub const STREAM_STORAGE_ENV: &str = "WHARF_STREAM_STORAGE";

/// Environment variable read by [`Config::from_env`]: replicas of the
/// NATS KV store's buckets, 1 to 5. See [`Config::store_replicas`].
pub const STORE_REPLICAS_ENV: &str = "WHARF_STORE_REPLICAS";

/// The longest shutdown grace [`SHUTDOWN_GRACE_ENV`] may ask for: one day.
const MAX_SHUTDOWN_GRACE: u64 = 24 * 60 * 60;

/// The app settings a deployment may override, each `None` when not set
/// (the app keeps what its code chose). Build one in code, or read the
/// environment with [`Config::from_env`]; apply it with
/// [`App::config`](crate::App::config).
///
/// wharf reads no environment variable on its own: only [`Config::from_env`],
/// [`App::config_from_env`](crate::App::config_from_env) and
/// [`Broker::from_env`](crate::Broker::from_env) do, when called.
///
/// ```
/// use std::time::Duration;
/// use wharf::{Config, HttpListener};
///
/// let config = Config::new()
///     .http(HttpListener::Off)
///     .shutdown_grace(Duration::from_secs(10));
/// assert_eq!(config.http, Some(HttpListener::Off));
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Config {
    /// The operations listener (`/healthz`, `/readyz`, `/metrics`), over
    /// [`App::http`](crate::App::http). From [`HTTP_ADDR_ENV`].
    pub http: Option<HttpListener>,
    /// How long in-flight handlers may finish after shutdown begins, over
    /// [`App::shutdown_grace`](crate::App::shutdown_grace). From
    /// [`SHUTDOWN_GRACE_ENV`].
    pub shutdown_grace: Option<Duration>,
    /// RabbitMQ work-queue type of the routes that do not choose one, over
    /// [`App::queue_type`](crate::App::queue_type) (and so over the broker
    /// URL's `?queue_type=`). From [`QUEUE_TYPE_ENV`].
    pub queue_type: Option<QueueType>,
    /// JetStream replicas of the streams of the routes that do not choose,
    /// over [`App::stream_replicas`](crate::App::stream_replicas). From
    /// [`STREAM_REPLICAS_ENV`].
    pub stream_replicas: Option<usize>,
    /// JetStream storage of the streams of the routes that do not choose,
    /// over [`App::stream_storage`](crate::App::stream_storage). From
    /// [`STREAM_STORAGE_ENV`].
    pub stream_storage: Option<StreamStorage>,
    /// Replicas of the NATS KV store's buckets, for the program that builds
    /// the store to pass to
    /// [`NatsKvStore::with_replicas`](crate::store::NatsKvStore::with_replicas)
    /// (the app does not build its store: [`App::config`](crate::App::config)
    /// leaves it alone). From [`STORE_REPLICAS_ENV`].
    pub store_replicas: Option<usize>,
}

/// Whether and where the operations listener runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpListener {
    /// No listener, even if the code set one.
    Off,
    /// Listen on this address (port 0 picks a free port).
    At(SocketAddr),
}

impl Config {
    /// Nothing set: applied, it changes nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`Config::http`].
    pub fn http(mut self, listener: HttpListener) -> Self {
        self.http = Some(listener);
        self
    }

    /// Sets [`Config::shutdown_grace`].
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = Some(grace);
        self
    }

    /// Sets [`Config::queue_type`].
    pub fn queue_type(mut self, queue_type: QueueType) -> Self {
        self.queue_type = Some(queue_type);
        self
    }

    /// Sets [`Config::stream_replicas`].
    pub fn stream_replicas(mut self, replicas: usize) -> Self {
        self.stream_replicas = Some(replicas);
        self
    }

    /// Sets [`Config::stream_storage`].
    pub fn stream_storage(mut self, storage: StreamStorage) -> Self {
        self.stream_storage = Some(storage);
        self
    }

    /// Sets [`Config::store_replicas`].
    pub fn store_replicas(mut self, replicas: usize) -> Self {
        self.store_replicas = Some(replicas);
        self
    }

    /// Reads [`HTTP_ADDR_ENV`], [`SHUTDOWN_GRACE_ENV`], [`QUEUE_TYPE_ENV`],
    /// [`STREAM_REPLICAS_ENV`], [`STREAM_STORAGE_ENV`] and
    /// [`STORE_REPLICAS_ENV`] from the process environment; a variable that
    /// is unset (or, but for [`HTTP_ADDR_ENV`], empty) leaves its setting
    /// `None`. A value that does not parse is a [`BrokerErrorKind::Config`]
    /// error naming the variable, the value and what was expected.
    pub fn from_env() -> Result<Config, BrokerError> {
        // Not UTF-8: kept (lossily) so that it fails to parse and is
        // reported, rather than taken for unset.
        Config::from_vars(|name| std::env::var_os(name).map(|value| value.to_string_lossy().into_owned()))
    }

    /// [`Config::from_env`] with the variables looked up by `var` (the value
    /// of the variable named, or `None` when unset) instead of the process
    /// environment: for a team's own configuration source, and for tests.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use wharf::{Config, HttpListener};
    ///
    /// let vars = HashMap::from([("WHARF_HTTP_ADDR", "off")]);
    /// let config = Config::from_vars(|name| vars.get(name).map(|v| v.to_string()))?;
    /// assert_eq!(config.http, Some(HttpListener::Off));
    /// assert_eq!(config.shutdown_grace, None);
    /// # Ok::<(), wharf::BrokerError>(())
    /// ```
    pub fn from_vars(mut var: impl FnMut(&str) -> Option<String>) -> Result<Config, BrokerError> {
        let http = var(HTTP_ADDR_ENV).map(|value| parse_http(&value)).transpose()?;
        let shutdown_grace = var(SHUTDOWN_GRACE_ENV)
            .map(|value| parse_grace(&value))
            .transpose()?
            .flatten();
        let queue_type = var(QUEUE_TYPE_ENV)
            .map(|value| {
                parse_word(&value, |word| {
                    word.parse::<QueueType>()
                        .map_err(|_| invalid(QUEUE_TYPE_ENV, &value, "classic or quorum"))
                })
            })
            .transpose()?
            .flatten();
        let stream_replicas = var(STREAM_REPLICAS_ENV)
            .map(|value| parse_replicas(STREAM_REPLICAS_ENV, &value))
            .transpose()?
            .flatten();
        let stream_storage = var(STREAM_STORAGE_ENV)
            .map(|value| {
                parse_word(&value, |word| {
                    word.parse::<StreamStorage>()
                        .map_err(|_| invalid(STREAM_STORAGE_ENV, &value, "file or memory"))
                })
            })
            .transpose()?
            .flatten();
        let store_replicas = var(STORE_REPLICAS_ENV)
            .map(|value| parse_replicas(STORE_REPLICAS_ENV, &value))
            .transpose()?
            .flatten();
        Ok(Config {
            http,
            shutdown_grace,
            queue_type,
            stream_replicas,
            stream_storage,
            store_replicas,
        })
    }
}

/// `parse`d, unless empty (unset).
fn parse_word<T>(
    value: &str,
    parse: impl FnOnce(&str) -> Result<T, BrokerError>,
) -> Result<Option<T>, BrokerError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    parse(trimmed).map(Some)
}

/// Replicas, 1 to [`MAX_STREAM_REPLICAS`]; empty counts as unset.
fn parse_replicas(name: &str, value: &str) -> Result<Option<usize>, BrokerError> {
    parse_word(value, |word| match word.parse::<usize>() {
        Ok(replicas) if (1..=MAX_STREAM_REPLICAS).contains(&replicas) => Ok(replicas),
        _ => Err(invalid(
            name,
            value,
            &format!("a whole number from 1 to {MAX_STREAM_REPLICAS}, like 1 or 3"),
        )),
    })
}

/// An address, or `off` / empty for none.
fn parse_http(value: &str) -> Result<HttpListener, BrokerError> {
    let trimmed = value.trim();
    if trimmed.is_empty() || trimmed.eq_ignore_ascii_case("off") {
        return Ok(HttpListener::Off);
    }
    trimmed
        .parse()
        .map(HttpListener::At)
        .map_err(|_| invalid(HTTP_ADDR_ENV, value, "an address like 0.0.0.0:8080, or off"))
}

/// Whole seconds; empty counts as unset.
fn parse_grace(value: &str) -> Result<Option<Duration>, BrokerError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    match trimmed.parse::<u64>() {
        Ok(seconds) if seconds <= MAX_SHUTDOWN_GRACE => Ok(Some(Duration::from_secs(seconds))),
        _ => Err(invalid(
            SHUTDOWN_GRACE_ENV,
            value,
            &format!("whole seconds from 0 to {MAX_SHUTDOWN_GRACE}, like 25"),
        )),
    }
}

fn invalid(name: &str, value: &str, expected: &str) -> BrokerError {
    BrokerError::new(
        BrokerErrorKind::Config,
        format!("{name}={value:?} is not valid: expected {expected}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::topology::Topology;
    use crate::{App, Broker};
    use std::collections::HashMap;

    fn read(vars: &[(&str, &str)]) -> Result<Config, BrokerError> {
        let vars: HashMap<&str, &str> = vars.iter().copied().collect();
        Config::from_vars(|name| vars.get(name).map(|v| (*v).to_owned()))
    }

    fn error(vars: &[(&str, &str)]) -> String {
        let error = read(vars).expect_err("invalid");
        assert_eq!(error.kind(), BrokerErrorKind::Config);
        error.to_string()
    }

    #[test]
    fn nothing_set_is_nothing_overridden() {
        assert_eq!(read(&[]).unwrap(), Config::default());
    }

    #[test]
    fn an_address_turns_the_listener_on_there() {
        let config = read(&[(HTTP_ADDR_ENV, " 0.0.0.0:8080 ")]).unwrap();
        assert_eq!(
            config.http,
            Some(HttpListener::At("0.0.0.0:8080".parse().unwrap()))
        );
        let v6 = read(&[(HTTP_ADDR_ENV, "[::1]:0")]).unwrap();
        assert_eq!(v6.http, Some(HttpListener::At("[::1]:0".parse().unwrap())));
    }

    #[test]
    fn off_or_empty_turns_the_listener_off() {
        for value in ["off", "OFF", " Off ", "", "  "] {
            let config = read(&[(HTTP_ADDR_ENV, value)]).unwrap();
            assert_eq!(config.http, Some(HttpListener::Off), "{value:?}");
        }
    }

    #[test]
    fn a_bad_address_is_an_error_naming_the_variable_and_value() {
        for value in ["localhost:8080", "8080", "0.0.0.0", "on", "0.0.0.0:99999"] {
            let message = error(&[(HTTP_ADDR_ENV, value)]);
            assert!(message.contains("WHARF_HTTP_ADDR"), "{message}");
            assert!(message.contains(&format!("{value:?}")), "{message}");
            assert!(message.contains("0.0.0.0:8080, or off"), "{message}");
        }
    }

    #[test]
    fn grace_is_whole_seconds() {
        let config = read(&[(SHUTDOWN_GRACE_ENV, "10")]).unwrap();
        assert_eq!(config.shutdown_grace, Some(Duration::from_secs(10)));
        assert_eq!(config.http, None, "the other setting stays unset");
        let zero = read(&[(SHUTDOWN_GRACE_ENV, " 0 ")]).unwrap();
        assert_eq!(zero.shutdown_grace, Some(Duration::ZERO));
        let day = read(&[(SHUTDOWN_GRACE_ENV, "86400")]).unwrap();
        assert_eq!(day.shutdown_grace, Some(Duration::from_secs(86_400)));
        let empty = read(&[(SHUTDOWN_GRACE_ENV, "")]).unwrap();
        assert_eq!(empty.shutdown_grace, None, "empty is unset");
    }

    #[test]
    fn a_bad_grace_is_an_error_naming_the_variable_and_value() {
        for value in ["25s", "2.5", "-1", "ten", "86401", "18446744073709551616"] {
            let message = error(&[(SHUTDOWN_GRACE_ENV, value)]);
            assert!(message.contains("WHARF_SHUTDOWN_GRACE_SECONDS"), "{message}");
            assert!(message.contains(&format!("{value:?}")), "{message}");
            assert!(message.contains("whole seconds from 0 to 86400"), "{message}");
        }
    }

    #[test]
    fn topology_variables_are_read() {
        let config = read(&[
            (QUEUE_TYPE_ENV, " Quorum "),
            (STREAM_REPLICAS_ENV, "3"),
            (STREAM_STORAGE_ENV, "memory"),
            (STORE_REPLICAS_ENV, " 5 "),
        ])
        .unwrap();
        assert_eq!(config.queue_type, Some(QueueType::Quorum));
        assert_eq!(config.stream_replicas, Some(3));
        assert_eq!(config.stream_storage, Some(StreamStorage::Memory));
        assert_eq!(config.store_replicas, Some(5));
        assert_eq!((config.http, config.shutdown_grace), (None, None));
        let other = read(&[
            (QUEUE_TYPE_ENV, "classic"),
            (STREAM_REPLICAS_ENV, "1"),
            (STREAM_STORAGE_ENV, "FILE"),
            (STORE_REPLICAS_ENV, "1"),
        ])
        .unwrap();
        assert_eq!(
            other,
            Config::new()
                .queue_type(QueueType::Classic)
                .stream_replicas(1)
                .stream_storage(StreamStorage::File)
                .store_replicas(1)
        );
    }

    #[test]
    fn empty_topology_variables_are_unset() {
        let vars = [
            QUEUE_TYPE_ENV,
            STREAM_REPLICAS_ENV,
            STREAM_STORAGE_ENV,
            STORE_REPLICAS_ENV,
        ];
        let empty: Vec<(&str, &str)> = vars.iter().map(|name| (*name, " ")).collect();
        assert_eq!(read(&empty).unwrap(), Config::default());
    }

    #[test]
    fn a_bad_topology_value_is_an_error_naming_the_variable_and_value() {
        let cases: [(&str, &[&str], &str); 4] = [
            (
                QUEUE_TYPE_ENV,
                &["stream", "quorum,classic", "1"],
                "expected classic or quorum",
            ),
            (
                STREAM_REPLICAS_ENV,
                &["0", "6", "three", "-1", "2.0"],
                "a whole number from 1 to 5, like 1 or 3",
            ),
            (
                STREAM_STORAGE_ENV,
                &["disk", "mem", "1"],
                "expected file or memory",
            ),
            (
                STORE_REPLICAS_ENV,
                &["0", "7", "r3"],
                "a whole number from 1 to 5, like 1 or 3",
            ),
        ];
        for (name, values, expected) in cases {
            for value in values {
                let message = error(&[(name, value)]);
                assert!(
                    message.starts_with(&format!("{name}={value:?} is not valid")),
                    "{message}"
                );
                assert!(message.contains(expected), "{message}");
            }
        }
    }

    #[test]
    fn the_app_takes_the_topology_that_is_set_and_keeps_the_rest() {
        let app = || {
            App::new(Broker::memory())
                .queue_type(QueueType::Quorum)
                .stream_replicas(3)
        };
        let untouched = app().config(&Config::default());
        assert_eq!(
            untouched.topology,
            Topology::new().queue_type(QueueType::Quorum).stream_replicas(3)
        );
        let moved = app().config(
            &Config::new()
                .queue_type(QueueType::Classic)
                .stream_storage(StreamStorage::Memory)
                .store_replicas(3),
        );
        assert_eq!(
            moved.topology,
            Topology::new()
                .queue_type(QueueType::Classic)
                .stream_replicas(3)
                .stream_storage(StreamStorage::Memory)
        );
    }

    #[test]
    fn one_bad_variable_fails_the_whole_config() {
        let message = error(&[(HTTP_ADDR_ENV, "off"), (SHUTDOWN_GRACE_ENV, "soon")]);
        assert!(message.contains("WHARF_SHUTDOWN_GRACE_SECONDS"), "{message}");
    }

    #[test]
    fn the_app_takes_what_is_set_and_keeps_the_rest() {
        let code: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        let app = || {
            App::new(Broker::memory())
                .http(code)
                .shutdown_grace(Duration::from_secs(7))
        };

        let untouched = app().config(&Config::default());
        assert_eq!(untouched.http, Some(code));
        assert_eq!(untouched.grace, Duration::from_secs(7));

        let there: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let moved = app().config(&Config::new().http(HttpListener::At(there)));
        assert_eq!(moved.http, Some(there));
        assert_eq!(moved.grace, Duration::from_secs(7));

        let off = Config::new()
            .http(HttpListener::Off)
            .shutdown_grace(Duration::from_secs(1));
        let off = app().config(&off);
        assert_eq!(off.http, None);
        assert_eq!(off.grace, Duration::from_secs(1));

        // Without a listener in code, the configuration can add one.
        let added = App::new(Broker::memory()).config(
            &Config::from_vars(|name| (name == HTTP_ADDR_ENV).then(|| "127.0.0.1:0".to_owned())).unwrap(),
        );
        assert_eq!(added.http, Some("127.0.0.1:0".parse().unwrap()));
    }
}
