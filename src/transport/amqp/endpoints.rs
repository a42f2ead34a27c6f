//! Where and how the RabbitMQ connection connects: the servers of
//! [`BrokerOptions`] parsed into lapin's URIs with the typed settings
//! applied, tried in turn, over wharf's TLS configuration when TLS files
//! are given.

use super::topology::{QueueType, connection_error};
use crate::error::{BrokerError, BrokerErrorKind};
use crate::transport::broker_options::{BrokerOptions, Credentials, Secret, TlsFiles, config};
use crate::util::redact::redact;
use lapin::tcp::{AsyncTcpStream, RustlsConnector};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How long a TCP connection (and TLS handshake) to one server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one server may take to finish the AMQP handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// wharf's own URL parameter, removed before the URL goes to lapin.
const QUEUE_TYPE_PARAM: &str = "queue_type";

/// The servers to connect to and how.
pub(crate) struct Endpoints {
    uris: Vec<AMQPUri>,
    /// The servers, redacted, for messages.
    pub(crate) shown: String,
    /// A password kept in a file, read at every connection.
    password: Option<Secret>,
    tls: Option<TlsFiles>,
    name: String,
    /// The server to try first: the one connected to last.
    next: AtomicUsize,
    /// The broker-wide queue type of the URL (`?queue_type=quorum`).
    pub(crate) queue_type: QueueType,
}

impl Endpoints {
    /// Parses and checks `options`; nothing is connected yet.
    pub(crate) fn new(options: &BrokerOptions) -> Result<Endpoints, BrokerError> {
        options.check_for("RabbitMQ")?;
        let mut uris = Vec::new();
        let mut queue_types = Vec::new();
        // Credentials written on any server are used for all of them, as
        // for NATS; servers that carry different ones are an error.
        let mut url_login: Option<(usize, String, String)> = None;
        let mut without_login = Vec::new();
        for (index, url) in options.urls.iter().enumerate() {
            let (lapin_url, queue_type) = split_url(url)?;
            let mut uri: AMQPUri = lapin_url.parse().map_err(|e: String| {
                // Some of lapin's parse errors quote the whole URL.
                let why = e.replace(&lapin_url, &redact(&lapin_url));
                config(format!("invalid AMQP URL {}: {why}", redact(url)))
            })?;
            if has_userinfo(url) {
                let login = (
                    uri.authority.userinfo.username.clone(),
                    uri.authority.userinfo.password.clone(),
                );
                match &url_login {
                    Some((first, user, password)) if (user, password) != (&login.0, &login.1) => {
                        return Err(config(format!(
                            "servers {} and {} of {} carry different credentials (write them on one server, or the same on every one)",
                            first + 1,
                            index + 1,
                            options.shown()
                        )));
                    }
                    Some(_) => {}
                    None => url_login = Some((index, login.0, login.1)),
                }
            } else {
                without_login.push(index);
            }
            if options.tls.any() && uri.scheme != AMQPScheme::AMQPS {
                return Err(config(format!(
                    "TLS files are given but {} is not amqps:// (write amqps://host:5671)",
                    redact(url)
                )));
            }
            if let Some(vhost) = &options.vhost {
                uri.vhost.clone_from(vhost);
            }
            // Notice a dead peer within seconds. A heartbeat of 0 asks for
            // the server's (RabbitMQ's default: 60 s); part of a second
            // counts as a whole one.
            match options.heartbeat {
                Some(interval) => {
                    let seconds = interval.as_secs() + u64::from(interval.subsec_nanos() > 0);
                    uri.query.heartbeat = Some(u16::try_from(seconds).unwrap_or(u16::MAX));
                }
                None => {
                    uri.query.heartbeat.get_or_insert(10);
                }
            }
            uris.push(uri);
            queue_types.push(queue_type);
        }
        if queue_types.iter().any(|t| *t != queue_types[0]) {
            return Err(config(format!(
                "the servers {} ask for different queue types: write ?queue_type= the same on each, or on none",
                options.shown()
            )));
        }
        if let Some((_, user, password)) = &url_login {
            for index in without_login {
                uris[index].authority.userinfo.username.clone_from(user);
                uris[index].authority.userinfo.password.clone_from(password);
            }
        }
        let password = match &options.credentials {
            None => None,
            Some(_) if url_login.is_some() => {
                return Err(config(format!(
                    "the AMQP URL {} carries credentials and a user name and password are given too: give them once",
                    options.shown()
                )));
            }
            Some(Credentials::UserAndPassword { user, password }) => {
                for uri in &mut uris {
                    uri.authority.userinfo.username.clone_from(user);
                }
                Some(password.clone())
            }
            // Refused by `check_for`.
            Some(_) => None,
        };
        Ok(Endpoints {
            uris,
            shown: options.shown(),
            password,
            tls: options.tls.any().then(|| options.tls.clone()),
            name: options
                .connection_name
                .clone()
                .unwrap_or_else(|| "wharf".to_owned()),
            next: AtomicUsize::new(0),
            queue_type: queue_types[0],
        })
    }

    /// A connection to the first server that takes one, starting with the
    /// one connected to last, then the next. The error of the last server
    /// tried, with every server's in the message, when none does.
    pub(crate) async fn connect(&self) -> Result<Connection, BrokerError> {
        let password = self
            .password
            .as_ref()
            .map(|p| p.read("RabbitMQ password"))
            .transpose()?;
        let tls = self
            .tls
            .as_ref()
            .map(crate::transport::tls::client_config)
            .transpose()?;
        let first = self.next.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        let mut last = None;
        for offset in 0..self.uris.len() {
            let index = (first + offset) % self.uris.len();
            let mut uri = self.uris[index].clone();
            if let Some(password) = &password {
                uri.authority.userinfo.password.clone_from(password);
            }
            let host = format!("{}:{}", uri.authority.host, uri.authority.port);
            let tls = tls.clone().filter(|_| uri.scheme == AMQPScheme::AMQPS);
            match self.connect_one(uri, tls).await {
                Ok(connection) => {
                    self.next.store(index, Ordering::Relaxed);
                    return Ok(connection);
                }
                Err(error) => {
                    failures.push(format!("{host}: {}", crate::error::Chain(&error)));
                    last = Some(error);
                }
            }
        }
        let error = last.expect("at least one server");
        if self.uris.len() == 1 {
            return Err(error);
        }
        Err(BrokerError::new(
            BrokerErrorKind::Connection,
            format!("no RabbitMQ server took a connection ({})", failures.join("; ")),
        ))
    }

    /// After a lost connection, start with the server after the one lost.
    pub(crate) fn rotate(&self) {
        let next = (self.next.load(Ordering::Relaxed) + 1) % self.uris.len();
        self.next.store(next, Ordering::Relaxed);
    }

    /// One server: TCP (and TLS for `amqps://`) within [`CONNECT_TIMEOUT`],
    /// the AMQP handshake within [`HANDSHAKE_TIMEOUT`], so that a server
    /// that takes the connection and then says nothing (a frozen node)
    /// cannot hold up the others. lapin's own `connection_timeout` is not
    /// applied on its async path.
    async fn connect_one(
        &self,
        uri: AMQPUri,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Connection, BrokerError> {
        let properties = ConnectionProperties::default().with_connection_name(self.name.as_str().into());
        let host = format!("{}:{}", uri.authority.host, uri.authority.port);
        let domain = self
            .tls
            .as_ref()
            .and_then(|t| t.server_name.clone())
            .unwrap_or_else(|| uri.authority.host.clone());
        let connector = tls.map(|config| Arc::new(RustlsConnector::from(config)));
        let runtime = lapin::runtime::default_runtime().map_err(connection_error)?;
        let connecting = Connection::connector(
            uri,
            runtime,
            async move |uri, runtime| {
                let open = async {
                    let addrs: Vec<std::net::SocketAddr> =
                        tokio::net::lookup_host((uri.authority.host.as_str(), uri.authority.port))
                            .await?
                            .collect();
                    let stream = AsyncTcpStream::connect(&runtime, addrs).await?;
                    match &connector {
                        Some(connector) => stream.into_rustls(connector, &domain).await,
                        None => Ok(stream),
                    }
                };
                match tokio::time::timeout(CONNECT_TIMEOUT, open).await {
                    Ok(opened) => Ok(opened?),
                    Err(_) => Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no connection within {CONNECT_TIMEOUT:?}"),
                    )
                    .into()),
                }
            },
            properties,
        );
        let connected = tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await.map_err(|_| {
            BrokerError::new(
                BrokerErrorKind::Connection,
                format!("{host} took the connection but finished no AMQP handshake within {HANDSHAKE_TIMEOUT:?}"),
            )
        })?;
        connected.map_err(|e| {
            let hint = crate::transport::tls::hint(&format!("{e} {e:?}"), self.tls.as_ref());
            let error = connection_error(e);
            match hint {
                Some(hint) => BrokerError::new(
                    BrokerErrorKind::Connection,
                    format!("RabbitMQ connection failed: {hint}"),
                )
                .with_source(error),
                None => error,
            }
        })
    }
}

/// Whether `url` names a user (or password) in its authority.
fn has_userinfo(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|parsed| !parsed.username().is_empty() || parsed.password().is_some())
}

/// Takes wharf's parameters out of the URL's query string.
pub(crate) fn split_url(url: &str) -> Result<(String, QueueType), BrokerError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), QueueType::Classic));
    };
    let mut queue_type = QueueType::Classic;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((QUEUE_TYPE_PARAM, "quorum")) => queue_type = QueueType::Quorum,
            Some((QUEUE_TYPE_PARAM, "classic")) => queue_type = QueueType::Classic,
            Some((QUEUE_TYPE_PARAM, other)) => {
                return Err(BrokerError::new(
                    BrokerErrorKind::Config,
                    format!("queue_type must be classic or quorum, not {other:?}"),
                ));
            }
            _ => rest.push(pair),
        }
    }
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((url, queue_type))
}
