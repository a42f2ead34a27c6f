//! The TLS client configuration of a broker connection, from the files of
//! [`BrokerOptions`](crate::BrokerOptions): one rustls configuration for
//! RabbitMQ and NATS alike, so that both check the same things and report
//! a bad file the same way.
//!
//! - Roots: the certificates of the CA file when one is given (only them:
//!   a private CA is what the file is for), else the system's.
//! - Client certificate and key, for brokers that verify clients.
//! - A server name to check the broker's certificate against instead of
//!   the host of the URL.

use crate::error::BrokerError;
use crate::transport::broker_options::{
    TLS_CA_FILE_ENV, TLS_CERT_FILE_ENV, TLS_KEY_FILE_ENV, TlsFiles, config,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::Path;
use std::sync::Arc;

/// The rustls configuration for `files`.
pub(crate) fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, BrokerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = Arc::new(roots(files)?);
    let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| config(format!("cannot build the TLS certificate check: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = match &files.server_name {
        Some(name) => Arc::new(NamedServer {
            name: ServerName::try_from(name.clone()).map_err(|_| {
                config(format!(
                    "the TLS server name {name:?} is not a DNS name or IP address"
                ))
            })?,
            inner: verifier,
        }),
        None => verifier,
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| config(format!("cannot build the TLS configuration: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config_ = match &files.client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = certificates(cert, "TLS client certificate", TLS_CERT_FILE_ENV)?;
            let text = read(key, "TLS client key", TLS_KEY_FILE_ENV)?;
            let key_der = PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|e| {
                config(format!(
                    "the TLS client key file {} ({TLS_KEY_FILE_ENV}) holds no PEM private key (PKCS#8, RSA or EC): {e}",
                    key.display()
                ))
            })?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                config(format!(
                    "the TLS client key {} does not fit the certificate {}: {e}",
                    key.display(),
                    cert.display()
                ))
            })?
        }
    };
    Ok(Arc::new(config_))
}

/// The CA file's certificates, or the system's roots.
fn roots(files: &TlsFiles) -> Result<RootCertStore, BrokerError> {
    let mut roots = RootCertStore::empty();
    match &files.ca_file {
        Some(path) => {
            for cert in certificates(path, "TLS CA", TLS_CA_FILE_ENV)? {
                roots.add(cert).map_err(|e| {
                    config(format!(
                        "a certificate in the TLS CA file {} ({TLS_CA_FILE_ENV}) is not a usable CA: {e}",
                        path.display()
                    ))
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(config(format!(
                    "no system CA certificates could be loaded for TLS; give the broker's CA in {TLS_CA_FILE_ENV}"
                )));
            }
        }
    }
    Ok(roots)
}

/// The PEM certificates in `path`; an error when there are none.
fn certificates(path: &Path, what: &str, env: &str) -> Result<Vec<CertificateDer<'static>>, BrokerError> {
    let text = read(path, what, env)?;
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            config(format!(
                "the {what} file {} ({env}) is not PEM: {e}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(config(format!(
            "the {what} file {} ({env}) holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// Reads `path`; a config error naming the file and its variable.
fn read(path: &Path, what: &str, env: &str) -> Result<String, BrokerError> {
    std::fs::read_to_string(path)
        .map_err(|e| config(format!("cannot read the {what} file {} ({env})", path.display())).with_source(e))
}

/// Checks the server's certificate against a configured name instead of
/// the one the connection was made to.
#[derive(Debug)]
struct NamedServer {
    name: ServerName<'static>,
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for NamedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// What a failed TLS handshake most likely means, from the error's text
/// (rustls's own words, as the clients pass them on) and whether a client
/// certificate was given, to say beside it.
pub(crate) fn hint(error_text: &str, files: Option<&TlsFiles>) -> Option<&'static str> {
    let client_certificate = files.is_some_and(|f| f.client.is_some());
    let refused_client = [
        "CertificateRequired",
        "certificate required",
        "BadCertificate",
        "UnknownCA",
        "DecryptError",
    ]
    .iter()
    .any(|alert| error_text.contains(alert));
    if error_text.contains("UnknownIssuer") {
        Some("the broker's certificate is not signed by a trusted CA (check WHARF_BROKER_TLS_CA_FILE)")
    } else if error_text.contains("NotValidForName") {
        Some(
            "the broker's certificate does not name the host connected to (connect by a name it carries, or set WHARF_BROKER_TLS_SERVER_NAME)",
        )
    } else if refused_client && !client_certificate {
        // Go's TLS (nats-server) answers a missing certificate with
        // BadCertificate, Erlang's (RabbitMQ) with CertificateRequired.
        Some(
            "the broker requires a client certificate (set WHARF_BROKER_TLS_CERT_FILE and WHARF_BROKER_TLS_KEY_FILE)",
        )
    } else if !client_certificate && files.is_some() && closed(error_text) {
        // Under TLS 1.3 the server checks the client after the client has
        // finished its handshake: its alert may come as a reset instead.
        Some(
            "the broker closed the TLS connection; if it requires a client certificate, set WHARF_BROKER_TLS_CERT_FILE and WHARF_BROKER_TLS_KEY_FILE",
        )
    } else if refused_client {
        Some("the broker refused the client certificate (is it signed by a CA the broker trusts?)")
    } else if error_text.contains("Expired") {
        Some("a certificate has expired")
    } else {
        None
    }
}

/// Whether the peer closed the connection.
fn closed(error_text: &str) -> bool {
    [
        "reset by peer",
        "ConnectionReset",
        "UnexpectedEof",
        "unexpected end of file",
        "Broken pipe",
    ]
    .iter()
    .any(|words| error_text.contains(words))
}
