//! Typed connection options beside the URL: several servers, TLS files,
//! credentials read from files (a mounted Kubernetes Secret), and the
//! RabbitMQ connection's vhost, heartbeat and name.
//!
//! `WHARF_BROKER_URL` alone stays the simple path; every option here has an
//! environment variable of its own, read by [`BrokerOptions::from_env`]
//! (and so by [`Broker::from_env`](crate::Broker::from_env)).

use crate::error::{BrokerError, BrokerErrorKind};
use crate::util::redact::redact;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Environment variable holding the broker URL.
pub const BROKER_URL_ENV: &str = "WHARF_BROKER_URL";

/// PEM file of the CA (or CAs) that signed the broker's certificate.
pub const TLS_CA_FILE_ENV: &str = "WHARF_BROKER_TLS_CA_FILE";
/// PEM file of the client certificate (chain), for mutual TLS.
pub const TLS_CERT_FILE_ENV: &str = "WHARF_BROKER_TLS_CERT_FILE";
/// PEM file of the client certificate's private key.
pub const TLS_KEY_FILE_ENV: &str = "WHARF_BROKER_TLS_KEY_FILE";
/// The name the server's certificate is checked against, instead of the
/// host in the URL.
pub const TLS_SERVER_NAME_ENV: &str = "WHARF_BROKER_TLS_SERVER_NAME";
/// User name, with [`PASSWORD_FILE_ENV`].
pub const USER_ENV: &str = "WHARF_BROKER_USER";
/// File holding the password of [`USER_ENV`].
pub const PASSWORD_FILE_ENV: &str = "WHARF_BROKER_PASSWORD_FILE";
/// NATS: file holding an authentication token.
pub const TOKEN_FILE_ENV: &str = "WHARF_BROKER_TOKEN_FILE";
/// NATS: credentials file (a user JWT and its NKey seed, as `nsc` writes it).
pub const NATS_CREDS_FILE_ENV: &str = "WHARF_NATS_CREDS_FILE";
/// NATS: file holding an NKey seed (`SU…`).
pub const NATS_NKEY_FILE_ENV: &str = "WHARF_NATS_NKEY_FILE";
/// RabbitMQ: the virtual host, instead of the URL's.
pub const AMQP_VHOST_ENV: &str = "WHARF_AMQP_VHOST";
/// RabbitMQ: the heartbeat in whole seconds (default 10; 0 takes the
/// server's, 60 s unless configured).
pub const AMQP_HEARTBEAT_ENV: &str = "WHARF_AMQP_HEARTBEAT_SECONDS";
/// The connection's name, as the broker shows it (default `wharf`).
pub const CONNECTION_NAME_ENV: &str = "WHARF_BROKER_CONNECTION_NAME";

/// Every variable [`BrokerOptions::from_env`] reads, besides
/// [`BROKER_URL_ENV`].
pub const OPTION_ENVS: [&str; 12] = [
    TLS_CA_FILE_ENV,
    TLS_CERT_FILE_ENV,
    TLS_KEY_FILE_ENV,
    TLS_SERVER_NAME_ENV,
    USER_ENV,
    PASSWORD_FILE_ENV,
    TOKEN_FILE_ENV,
    NATS_CREDS_FILE_ENV,
    NATS_NKEY_FILE_ENV,
    AMQP_VHOST_ENV,
    AMQP_HEARTBEAT_ENV,
    CONNECTION_NAME_ENV,
];

/// How to reach a broker: one URL or several servers of a cluster, and what
/// the URL cannot say well (TLS files, credentials kept in files, the
/// RabbitMQ connection's settings).
///
/// Files are read when connecting (and, for RabbitMQ, at every reconnect),
/// so a rotated Secret is picked up by the next connection. A file that
/// cannot be read, or an option the broker does not have (an NKey for
/// RabbitMQ), is a [`BrokerErrorKind::Config`] error naming it.
///
/// ```no_run
/// # async fn run() -> Result<(), wharf::BrokerError> {
/// use wharf::{Broker, BrokerOptions};
///
/// let options = BrokerOptions::servers([
///     "amqps://rabbit-0.rabbit:5671",
///     "amqps://rabbit-1.rabbit:5671",
///     "amqps://rabbit-2.rabbit:5671",
/// ])
/// .tls_ca_file("/etc/wharf/tls/ca.crt")
/// .tls_client_certificate("/etc/wharf/tls/tls.crt", "/etc/wharf/tls/tls.key")
/// .user_and_password_file("orders", "/etc/wharf/credentials/password")
/// .vhost("orders");
/// let broker = Broker::connect_with(&options).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct BrokerOptions {
    pub(crate) urls: Vec<String>,
    pub(crate) tls: TlsFiles,
    pub(crate) credentials: Option<Credentials>,
    pub(crate) vhost: Option<String>,
    pub(crate) heartbeat: Option<Duration>,
    pub(crate) connection_name: Option<String>,
}

/// The TLS files and the server name to verify.
#[derive(Clone, Default, Debug, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) client: Option<(PathBuf, PathBuf)>,
    pub(crate) server_name: Option<String>,
}

// Read only by the broker transports; a build without both keeps the type.
#[cfg_attr(not(any(feature = "amqp", feature = "nats")), allow(dead_code))]
impl TlsFiles {
    /// Whether any TLS option is set (which turns TLS on).
    pub(crate) fn any(&self) -> bool {
        self.ca_file.is_some() || self.client.is_some() || self.server_name.is_some()
    }
}

/// A secret given in code or kept in a file.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Secret {
    Value(String),
    File(PathBuf),
}

#[cfg_attr(not(any(feature = "amqp", feature = "nats")), allow(dead_code))]
impl Secret {
    /// The secret; a file's content without its trailing line break.
    pub(crate) fn read(&self, what: &str) -> Result<String, BrokerError> {
        match self {
            Secret::Value(value) => Ok(value.clone()),
            Secret::File(path) => {
                let text = read_file(path, what)?;
                let value = text.trim_end_matches(['\n', '\r']).to_owned();
                if value.is_empty() {
                    return Err(config(format!("the {what} file {} is empty", path.display())));
                }
                Ok(value)
            }
        }
    }
}

/// Who the connection says it is.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Credentials {
    UserAndPassword { user: String, password: Secret },
    Token(Secret),
    NatsCredentialsFile(PathBuf),
    NKeySeed(Secret),
}

impl Credentials {
    /// What it is, for errors (no secret in it).
    pub(crate) fn describe(&self) -> &'static str {
        match self {
            Credentials::UserAndPassword { .. } => "a user name and password",
            Credentials::Token(_) => "a token",
            Credentials::NatsCredentialsFile(_) => "a NATS credentials file",
            Credentials::NKeySeed(_) => "an NKey seed",
        }
    }
}

/// Reads `path` whole; a config error naming `what` and the path.
#[cfg_attr(not(any(feature = "amqp", feature = "nats")), allow(dead_code))]
pub(crate) fn read_file(path: &Path, what: &str) -> Result<String, BrokerError> {
    std::fs::read_to_string(path)
        .map_err(|e| config(format!("cannot read the {what} file {}", path.display())).with_source(e))
}

pub(crate) fn config(message: String) -> BrokerError {
    BrokerError::new(BrokerErrorKind::Config, message)
}

impl BrokerOptions {
    /// Options for `url`: one server, or several comma-separated
    /// (`nats://a:4222,nats://b:4222`, `amqp://a/%2f,amqp://b/%2f`), each
    /// with its scheme.
    pub fn new(url: impl Into<String>) -> Self {
        let url = url.into();
        // A piece without a scheme continues the one before: a comma in a
        // password (`amqp://u:pa,ss@h`) does not start a server.
        let mut urls: Vec<String> = Vec::new();
        for piece in url.split(',') {
            match urls.last_mut() {
                Some(last) if !piece.contains("://") && !piece.trim().is_empty() => {
                    last.push(',');
                    last.push_str(piece);
                }
                _ => urls.push(piece.trim().to_owned()),
            }
        }
        BrokerOptions {
            urls,
            ..BrokerOptions::default()
        }
    }

    /// Options for the servers of a cluster, tried in turn: connecting
    /// goes to the first that answers, and a lost connection to the next.
    /// All must be of one broker (`amqp`/`amqps`, or `nats`/`tls`).
    pub fn servers<S: Into<String>>(urls: impl IntoIterator<Item = S>) -> Self {
        BrokerOptions {
            urls: urls.into_iter().map(Into::into).collect(),
            ..BrokerOptions::default()
        }
    }

    /// The same options for other servers (`url`, one or several
    /// comma-separated): e.g. for a NATS KV store on the broker's cluster,
    /// with the broker's TLS files and credentials.
    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.urls = BrokerOptions::new(url).urls;
        self
    }

    /// Trusts the CA (PEM, one or more certificates) in `path` for the
    /// broker's certificate, instead of the system's roots; turns TLS on.
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls.ca_file = Some(path.into());
        self
    }

    /// Presents the client certificate (PEM, leaf first) in `cert` with
    /// its private key (PEM: PKCS#8, RSA or SEC1) in `key`, for brokers
    /// that verify clients; turns TLS on.
    pub fn tls_client_certificate(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls.client = Some((cert.into(), key.into()));
        self
    }

    /// Checks the broker's certificate against `name` instead of the host
    /// in the URL (a server reached by an address its certificate does not
    /// name); turns TLS on.
    pub fn tls_server_name(mut self, name: impl Into<String>) -> Self {
        self.tls.server_name = Some(name.into());
        self
    }

    /// Logs in as `user` with `password`.
    pub fn user_and_password(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some(Credentials::UserAndPassword {
            user: user.into(),
            password: Secret::Value(password.into()),
        });
        self
    }

    /// Logs in as `user` with the password in the file at `path`.
    pub fn user_and_password_file(mut self, user: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        self.credentials = Some(Credentials::UserAndPassword {
            user: user.into(),
            password: Secret::File(path.into()),
        });
        self
    }

    /// NATS: authenticates with `token`.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.credentials = Some(Credentials::Token(Secret::Value(token.into())));
        self
    }

    /// NATS: authenticates with the token in the file at `path`.
    pub fn token_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.credentials = Some(Credentials::Token(Secret::File(path.into())));
        self
    }

    /// NATS: authenticates with the credentials file at `path` (a user JWT
    /// and its NKey seed, as `nsc` writes it).
    pub fn nats_credentials_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.credentials = Some(Credentials::NatsCredentialsFile(path.into()));
        self
    }

    /// NATS: authenticates with an NKey seed (`SU…`).
    pub fn nkey_seed(mut self, seed: impl Into<String>) -> Self {
        self.credentials = Some(Credentials::NKeySeed(Secret::Value(seed.into())));
        self
    }

    /// NATS: authenticates with the NKey seed in the file at `path`.
    pub fn nkey_seed_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.credentials = Some(Credentials::NKeySeed(Secret::File(path.into())));
        self
    }

    /// RabbitMQ: the virtual host, instead of the URL's.
    pub fn vhost(mut self, vhost: impl Into<String>) -> Self {
        self.vhost = Some(vhost.into());
        self
    }

    /// RabbitMQ: the heartbeat interval, in whole seconds (part of a second
    /// counts as a whole one; zero takes the server's, 60 s unless
    /// configured). Default 10 s, so a dead peer is noticed in about 20.
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat = Some(interval);
        self
    }

    /// The connection's name, as the broker shows it (RabbitMQ's
    /// management UI, NATS's `connz`). Default `wharf`.
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = Some(name.into());
        self
    }

    /// The servers, with their credentials masked.
    pub fn urls(&self) -> Vec<String> {
        self.urls.iter().map(|u| redact(u)).collect()
    }

    /// The options in `WHARF_BROKER_URL` and the variables in
    /// [`OPTION_ENVS`]; `None` when `WHARF_BROKER_URL` is unset or empty
    /// (the in-process broker). A value that does not parse, or an option
    /// without the URL, is a [`BrokerErrorKind::Config`] error naming the
    /// variable.
    pub fn from_env() -> Result<Option<BrokerOptions>, BrokerError> {
        BrokerOptions::from_vars(|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()))
    }

    /// [`BrokerOptions::from_env`] with the variables looked up by `var`.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use wharf::BrokerOptions;
    ///
    /// let vars = HashMap::from([
    ///     ("WHARF_BROKER_URL", "nats://n1:4222,nats://n2:4222"),
    ///     ("WHARF_NATS_CREDS_FILE", "/etc/wharf/credentials/nats.creds"),
    /// ]);
    /// let options = BrokerOptions::from_vars(|name| vars.get(name).map(|v| v.to_string()))?
    ///     .expect("a URL is set");
    /// assert_eq!(options.urls(), ["nats://n1:4222", "nats://n2:4222"]);
    /// # Ok::<(), wharf::BrokerError>(())
    /// ```
    pub fn from_vars(
        mut var: impl FnMut(&str) -> Option<String>,
    ) -> Result<Option<BrokerOptions>, BrokerError> {
        let mut get = |name: &str| var(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let url = get(BROKER_URL_ENV);
        let values: Vec<(&str, String)> = OPTION_ENVS
            .iter()
            .filter_map(|name| get(name).map(|value| (*name, value)))
            .collect();
        let Some(url) = url else {
            if let Some((name, _)) = values.first() {
                return Err(config(format!(
                    "{name} is set but {} is not: set the broker URL too",
                    BROKER_URL_ENV
                )));
            }
            return Ok(None);
        };
        let value = |name: &str| values.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
        let mut options = BrokerOptions::new(url);
        if let Some(ca) = value(TLS_CA_FILE_ENV) {
            options = options.tls_ca_file(ca);
        }
        match (value(TLS_CERT_FILE_ENV), value(TLS_KEY_FILE_ENV)) {
            (Some(cert), Some(key)) => options = options.tls_client_certificate(cert, key),
            (None, None) => {}
            (Some(_), None) => {
                return Err(config(format!(
                    "{TLS_CERT_FILE_ENV} is set without {TLS_KEY_FILE_ENV}"
                )));
            }
            (None, Some(_)) => {
                return Err(config(format!(
                    "{TLS_KEY_FILE_ENV} is set without {TLS_CERT_FILE_ENV}"
                )));
            }
        }
        if let Some(name) = value(TLS_SERVER_NAME_ENV) {
            options = options.tls_server_name(name);
        }
        let mut chosen: Vec<&str> = Vec::new();
        match (value(USER_ENV), value(PASSWORD_FILE_ENV)) {
            (Some(user), Some(file)) => {
                options = options.user_and_password_file(user, file);
                chosen.push(USER_ENV);
            }
            (None, None) => {}
            (Some(_), None) => return Err(config(format!("{USER_ENV} is set without {PASSWORD_FILE_ENV}"))),
            (None, Some(_)) => return Err(config(format!("{PASSWORD_FILE_ENV} is set without {USER_ENV}"))),
        }
        if let Some(file) = value(TOKEN_FILE_ENV) {
            options = options.token_file(file);
            chosen.push(TOKEN_FILE_ENV);
        }
        if let Some(file) = value(NATS_CREDS_FILE_ENV) {
            options = options.nats_credentials_file(file);
            chosen.push(NATS_CREDS_FILE_ENV);
        }
        if let Some(file) = value(NATS_NKEY_FILE_ENV) {
            options = options.nkey_seed_file(file);
            chosen.push(NATS_NKEY_FILE_ENV);
        }
        if chosen.len() > 1 {
            return Err(config(format!(
                "{} are all set: choose one way to authenticate",
                chosen.join(" and ")
            )));
        }
        if let Some(vhost) = value(AMQP_VHOST_ENV) {
            options = options.vhost(vhost);
        }
        if let Some(seconds) = value(AMQP_HEARTBEAT_ENV) {
            let seconds: u16 = seconds.parse().map_err(|_| {
                config(format!(
                    "{AMQP_HEARTBEAT_ENV}={seconds:?} is not valid: expected whole seconds from 0 to 65535, like 10"
                ))
            })?;
            options = options.heartbeat(Duration::from_secs(u64::from(seconds)));
        }
        if let Some(name) = value(CONNECTION_NAME_ENV) {
            options = options.connection_name(name);
        }
        Ok(Some(options))
    }

    /// The lower-case scheme shared by every server; an error when there
    /// is none, or when they differ in broker.
    pub(crate) fn scheme(&self) -> Result<String, BrokerError> {
        let mut found: Option<String> = None;
        if self.urls.is_empty() {
            return Err(config("no broker URL given".to_owned()));
        }
        for url in &self.urls {
            let scheme = url
                .split_once("://")
                .map(|(s, _)| s.to_ascii_lowercase())
                .ok_or_else(|| config(format!("{} has no scheme (amqp://, nats://)", redact(url))))?;
            let family = |s: &str| match s {
                "amqps" => "amqp".to_owned(),
                "tls" => "nats".to_owned(),
                other => other.to_owned(),
            };
            match &found {
                Some(first) if family(first) != family(&scheme) => {
                    return Err(config(format!(
                        "the servers {} mix brokers ({first}:// and {scheme}://)",
                        redact(&self.urls.join(","))
                    )));
                }
                Some(_) => {}
                None => found = Some(scheme),
            }
        }
        Ok(found.expect("at least one URL"))
    }

    /// The servers joined as one URL list, for messages (redacted).
    pub(crate) fn shown(&self) -> String {
        redact(&self.urls.join(","))
    }

    /// An error when an option of the other broker is set.
    #[cfg_attr(not(any(feature = "amqp", feature = "nats")), allow(dead_code))]
    pub(crate) fn check_for(&self, broker: &str) -> Result<(), BrokerError> {
        let wrong = |what: &str| {
            Err(config(format!(
                "{what} applies to {} only, and the broker URL {} is {broker}",
                if broker == "NATS" { "RabbitMQ" } else { "NATS" },
                self.shown()
            )))
        };
        match broker {
            "RabbitMQ" => match &self.credentials {
                Some(Credentials::Token(_)) => wrong("a token"),
                Some(Credentials::NatsCredentialsFile(_)) => wrong("a NATS credentials file"),
                Some(Credentials::NKeySeed(_)) => wrong("an NKey seed"),
                _ => Ok(()),
            },
            _ if self.vhost.is_some() => wrong("a virtual host"),
            _ if self.heartbeat.is_some() => wrong("the heartbeat setting"),
            _ => Ok(()),
        }
    }
}

impl fmt::Debug for BrokerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerOptions")
            .field("urls", &self.urls())
            .field("tls", &self.tls)
            .field(
                "credentials",
                &self.credentials.as_ref().map(Credentials::describe),
            )
            .field("vhost", &self.vhost)
            .field("heartbeat", &self.heartbeat)
            .field("connection_name", &self.connection_name)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read(vars: &[(&str, &str)]) -> Result<Option<BrokerOptions>, BrokerError> {
        let vars: HashMap<&str, &str> = vars.iter().copied().collect();
        BrokerOptions::from_vars(|name| vars.get(name).map(|v| (*v).to_owned()))
    }

    fn error(vars: &[(&str, &str)]) -> String {
        read(vars).unwrap_err().to_string()
    }

    #[test]
    fn no_url_is_the_memory_broker_unless_an_option_is_set() {
        assert!(read(&[]).unwrap().is_none());
        assert!(read(&[("WHARF_BROKER_URL", "  ")]).unwrap().is_none());
        assert!(error(&[(NATS_CREDS_FILE_ENV, "/x")]).contains("WHARF_BROKER_URL is not"));
    }

    #[test]
    fn every_variable_lands_in_its_option() {
        let options = read(&[
            ("WHARF_BROKER_URL", "amqps://u:pw@a:5671/%2f, amqps://b:5671/%2f"),
            (TLS_CA_FILE_ENV, "/tls/ca.crt"),
            (TLS_CERT_FILE_ENV, "/tls/tls.crt"),
            (TLS_KEY_FILE_ENV, "/tls/tls.key"),
            (TLS_SERVER_NAME_ENV, "rabbit.internal"),
            (USER_ENV, "orders"),
            (PASSWORD_FILE_ENV, "/creds/password"),
            (AMQP_VHOST_ENV, "shop"),
            (AMQP_HEARTBEAT_ENV, "30"),
            (CONNECTION_NAME_ENV, "orders-7f9c"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(options.urls(), ["amqps://u:***@a:5671/%2f", "amqps://b:5671/%2f"]);
        assert_eq!(
            options.tls,
            TlsFiles {
                ca_file: Some("/tls/ca.crt".into()),
                client: Some(("/tls/tls.crt".into(), "/tls/tls.key".into())),
                server_name: Some("rabbit.internal".into()),
            }
        );
        assert!(matches!(
            &options.credentials,
            Some(Credentials::UserAndPassword { user, password: Secret::File(path) })
                if user == "orders" && path == Path::new("/creds/password")
        ));
        assert_eq!(options.vhost.as_deref(), Some("shop"));
        assert_eq!(options.heartbeat, Some(Duration::from_secs(30)));
        assert_eq!(options.connection_name.as_deref(), Some("orders-7f9c"));
        assert_eq!(options.scheme().unwrap(), "amqps");
    }

    #[test]
    fn halves_of_a_pair_and_two_logins_are_errors() {
        let url = ("WHARF_BROKER_URL", "nats://a:4222");
        assert!(error(&[url, (TLS_CERT_FILE_ENV, "/c")]).contains("without WHARF_BROKER_TLS_KEY_FILE"));
        assert!(error(&[url, (PASSWORD_FILE_ENV, "/p")]).contains("without WHARF_BROKER_USER"));
        let both = error(&[url, (TOKEN_FILE_ENV, "/t"), (NATS_CREDS_FILE_ENV, "/c")]);
        assert!(both.contains("choose one way"), "{both}");
        let heartbeat = error(&[url, (AMQP_HEARTBEAT_ENV, "soon")]);
        assert!(
            heartbeat.contains("WHARF_AMQP_HEARTBEAT_SECONDS=\"soon\""),
            "{heartbeat}"
        );
    }

    #[test]
    fn servers_must_be_of_one_broker_and_options_of_theirs() {
        let mixed = BrokerOptions::new("nats://a:4222,amqp://b:5672")
            .scheme()
            .unwrap_err();
        assert!(mixed.to_string().contains("mix brokers"), "{mixed}");
        assert_eq!(
            BrokerOptions::new("tls://a:4222,nats://b:4222").scheme().unwrap(),
            "tls"
        );
        let nkey = BrokerOptions::new("amqp://a")
            .nkey_seed("SUxx")
            .check_for("RabbitMQ")
            .unwrap_err();
        assert!(
            nkey.to_string().contains("an NKey seed applies to NATS only"),
            "{nkey}"
        );
        let vhost = BrokerOptions::new("nats://a")
            .vhost("v")
            .check_for("NATS")
            .unwrap_err();
        assert!(vhost.to_string().contains("applies to RabbitMQ only"), "{vhost}");
    }

    #[test]
    fn a_comma_in_a_password_does_not_start_a_server() {
        let options = BrokerOptions::new("amqp://u:pa,ss@a/%2f,amqp://b/%2f");
        assert_eq!(options.urls, ["amqp://u:pa,ss@a/%2f", "amqp://b/%2f"]);
        assert_eq!(BrokerOptions::new("nats://a,").urls, ["nats://a", ""]);
    }

    #[test]
    fn with_url_keeps_everything_but_the_servers() {
        let broker = BrokerOptions::new("tls://a:4222")
            .tls_ca_file("/ca.pem")
            .token_file("/token");
        let store = broker.clone().with_url("tls://b:4222, tls://c:4222");
        assert_eq!(store.urls(), ["tls://b:4222", "tls://c:4222"]);
        assert_eq!(store.tls, broker.tls);
        assert!(store.credentials == broker.credentials);
    }

    #[test]
    fn secrets_come_from_files_without_their_line_break_and_never_show() {
        let dir = std::env::temp_dir().join(format!("wharf-options-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("password");
        std::fs::write(&file, "hunter2\n").unwrap();
        assert_eq!(Secret::File(file.clone()).read("password").unwrap(), "hunter2");
        std::fs::write(&file, "\n").unwrap();
        assert!(
            Secret::File(file.clone())
                .read("password")
                .unwrap_err()
                .to_string()
                .contains("is empty")
        );
        let missing = Secret::File(dir.join("nope")).read("password").unwrap_err();
        assert!(
            crate::error::Chain(&missing)
                .to_string()
                .contains("cannot read the password file"),
            "{missing}"
        );
        let options = BrokerOptions::new("amqp://a").user_and_password("u", "hunter2");
        assert!(!format!("{options:?}").contains("hunter2"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
