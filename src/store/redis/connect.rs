//! Opening the connection: `redis://` or `rediss://` (TLS), timeouts and
//! retries, and errors that name the server without its password.

use super::{DEFAULT_PREFIX, DEFAULT_SESSION_TTL, RedisStore};
use crate::error::{BrokerError, BrokerErrorKind};
use crate::util::redact::redact;
use ::redis::RedisError;
use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::Mutex;
use std::time::Duration;

/// One attempt to open a connection gives up after this long.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A command whose reply has not come after this long fails.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Further attempts after a failed connection attempt (with a growing
/// delay of 100 ms, 200 ms, 400 ms plus jitter), at start and when the
/// connection is lost.
const CONNECT_RETRIES: usize = 3;

impl RedisStore {
    /// Connects to the Redis server at `url`:
    /// `redis://[user:password@]host[:port][/db]`, or `rediss://…` for TLS,
    /// with the server's certificate checked against the system's trust
    /// store (a server certified by a private CA needs
    /// [`connect_with_ca`](Self::connect_with_ca)).
    ///
    /// Fails within a few seconds when the server cannot be reached; once
    /// connected, a lost connection is re-established by itself.
    pub async fn connect(url: &str) -> Result<RedisStore, BrokerError> {
        let client = ::redis::Client::open(url).map_err(|e| invalid_url(url, e))?;
        RedisStore::open(url, client).await
    }

    /// Connects over TLS to the `rediss://` server at `url`, trusting the
    /// certificate authorities in `ca_pem` (one or more PEM certificates,
    /// the contents of a `ca.crt`) instead of the system's trust store: for
    /// a server whose certificate a private CA signed. The server's name or
    /// IP address in `url` must be one its certificate names.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use wharf::store::RedisStore;
    ///
    /// let ca = std::fs::read("/etc/wharf/store-ca/ca.crt")?;
    /// let store = RedisStore::connect_with_ca("rediss://redis.jobs.svc:6380", &ca).await?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_with_ca(url: &str, ca_pem: &[u8]) -> Result<RedisStore, BrokerError> {
        if !url.starts_with("rediss://") {
            return Err(BrokerError::new(
                BrokerErrorKind::Config,
                format!(
                    "a CA certificate applies to TLS: use a rediss:// URL, not {}",
                    redact(url)
                ),
            ));
        }
        // Text without a certificate would parse as an empty list of CAs,
        // and every connection would fail with an unknown issuer instead.
        if !String::from_utf8_lossy(ca_pem).contains("-----BEGIN CERTIFICATE-----") {
            return Err(BrokerError::new(
                BrokerErrorKind::Config,
                "the Redis CA certificate holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            ));
        }
        let certificates = ::redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca_pem.to_vec()),
        };
        let client = ::redis::Client::build_with_tls(url, certificates).map_err(|e| {
            if e.kind() == ::redis::ErrorKind::Io {
                // The PEM did not parse (the URL did, or it would say so).
                BrokerError::new(
                    BrokerErrorKind::Config,
                    "the Redis CA certificate is not a PEM certificate",
                )
                .with_source(e)
            } else {
                invalid_url(url, e)
            }
        })?;
        RedisStore::open(url, client).await
    }

    async fn open(url: &str, client: ::redis::Client) -> Result<RedisStore, BrokerError> {
        if url.starts_with("rediss://") {
            use_ring_unless_chosen();
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(CONNECT_RETRIES)
            .set_max_delay(Duration::from_secs(1));
        let con = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(|e| {
                // A TLS-only port drops a plain-text client without a word.
                let hint =
                    if url.starts_with("redis://") && e.is_connection_dropped() && !e.is_connection_refusal()
                    {
                        " (the server closed the connection: if it expects TLS, use rediss://)"
                    } else {
                        ""
                    };
                BrokerError::new(
                    BrokerErrorKind::Connection,
                    format!("cannot connect to Redis at {}{hint}", redact(url)),
                )
                .with_source(e)
            })?;
        Ok(RedisStore {
            batches: super::batches::Batches::new(&con),
            client,
            changes: Mutex::new(None),
            con,
            prefix: DEFAULT_PREFIX.to_owned(),
            session_ttl: DEFAULT_SESSION_TTL,
        })
    }
}

fn invalid_url(url: &str, error: RedisError) -> BrokerError {
    BrokerError::new(
        BrokerErrorKind::Config,
        format!("invalid Redis URL {}", redact(url)),
    )
    .with_source(error)
}

/// Makes ring the process's rustls crypto provider unless one was chosen:
/// the redis crate builds its TLS configuration from the process default,
/// and rustls cannot pick one by itself when a program's dependencies
/// enable more than one (it panics).
fn use_ring_unless_chosen() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine: a provider is set.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
