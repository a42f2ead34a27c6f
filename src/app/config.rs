//! App settings that may come from the environment, read in one explicit
//! place: [`Config::from_env`] (or [`App::config_from_env`](crate::App::config_from_env)).
//! Nothing else in wharf reads these variables.

use crate::error::{BrokerError, BrokerErrorKind};
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

    /// Reads [`HTTP_ADDR_ENV`] and [`SHUTDOWN_GRACE_ENV`] from the process
    /// environment; a variable that is unset leaves its setting `None`. A
    /// value that does not parse is a [`BrokerErrorKind::Config`] error
    /// naming the variable, the value and what was expected.
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
        Ok(Config { http, shutdown_grace })
    }
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
