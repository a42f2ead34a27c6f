//! A NATS URL as wharf takes it, made into what async-nats takes: the
//! server addresses without credentials, and the credentials as connect
//! options.
//!
//! wharf's NATS URL is `nats://[user:password@]host[:port]` or
//! `nats://token@host[:port]` (`tls://` for TLS), or several of them
//! separated by commas, each with its scheme. User names, passwords and
//! tokens may be percent-encoded (`%40` for `@`) and are decoded. A user
//! name without a password (or with an empty one) is a token, as in
//! nats-py. Credentials written on any server of a list are used for all
//! of them (servers a cluster announces too); servers that carry different
//! credentials are a configuration error, since one connection has one
//! identity.
//!
//! Why the credentials leave the URLs: async-nats 0.51 does not send the
//! ones a URL carries (the server refuses the connection), and it logs
//! each address it tries with `Debug` (`attempting connection`, at debug
//! level), which shows a password. Given as `ConnectOptions::
//! user_and_password` or `token` instead, they are sent, and async-nats
//! masks them in its own `Debug` output.

use crate::error::{BrokerError, BrokerErrorKind};
use crate::transport::broker_options::{self as options, BrokerOptions, config};
use crate::util::redact::redact;
use async_nats::{ConnectOptions, ServerAddr};
use percent_encoding::percent_decode_str;
use url::Url;

/// Who a connection says it is. `Debug` only in tests (to compare test
/// values): nothing outside them may print it.
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(Debug))]
enum Credentials {
    UserAndPassword { user: String, password: String },
    Token(String),
}

/// The servers of a NATS URL, without credentials, and the credentials.
pub(crate) struct NatsUrl {
    servers: Vec<ServerAddr>,
    credentials: Option<Credentials>,
}

impl NatsUrl {
    /// Parses `url`; a configuration error (showing the URL redacted) when
    /// it is not one, or its servers carry different credentials.
    pub(crate) fn parse(url: &str) -> Result<NatsUrl, BrokerError> {
        let invalid = |why: String| {
            BrokerError::new(
                BrokerErrorKind::Config,
                format!("invalid NATS URL {}: {why}", redact(url)),
            )
        };
        let mut servers = Vec::new();
        let mut credentials: Option<(usize, Credentials)> = None;
        for (index, server) in url.split(',').map(str::trim).enumerate() {
            let number = index + 1;
            if !server.contains("://") {
                return Err(invalid(format!(
                    "server {number} has no scheme (write each server in full: nats://a:4222,nats://b:4222)"
                )));
            }
            let mut parsed = Url::parse(server).map_err(|e| invalid(format!("server {number}: {e}")))?;
            if let Some(found) =
                take_credentials(&mut parsed).map_err(|why| invalid(format!("server {number}: {why}")))?
            {
                match &credentials {
                    Some((first, known)) if *known != found => {
                        return Err(invalid(format!(
                            "servers {first} and {number} carry different credentials (write them on one server, or the same on every one)"
                        )));
                    }
                    Some(_) => {}
                    None => credentials = Some((number, found)),
                }
            }
            servers.push(ServerAddr::from_url(parsed).map_err(|e| invalid(format!("server {number}: {e}")))?);
        }
        Ok(NatsUrl {
            servers,
            credentials: credentials.map(|(_, credentials)| credentials),
        })
    }

    /// async-nats's options for `options` (the URL's credentials, or the
    /// typed ones: not both; TLS from the typed files), and the servers to
    /// pass to [`ConnectOptions::connect`]. Files are read now.
    pub(crate) fn connect_options(
        options: &BrokerOptions,
    ) -> Result<(ConnectOptions, Vec<ServerAddr>), BrokerError> {
        options.check_for("NATS")?;
        let parsed = NatsUrl::parse(&options.urls.join(","))?;
        let mut connect = match (&parsed.credentials, &options.credentials) {
            (Some(_), Some(typed)) => {
                return Err(config(format!(
                    "the NATS URL {} carries credentials and {} is given too: give them once",
                    options.shown(),
                    typed.describe()
                )));
            }
            (Some(Credentials::UserAndPassword { user, password }), None) => {
                ConnectOptions::new().user_and_password(user.clone(), password.clone())
            }
            (Some(Credentials::Token(token)), None) => ConnectOptions::new().token(token.clone()),
            (None, None) => ConnectOptions::new(),
            (None, Some(typed)) => typed_credentials(typed)?,
        };
        if options.tls.any() {
            connect = connect.require_tls(true).tls_client_config(
                crate::transport::tls::client_config(&options.tls)?
                    .as_ref()
                    .clone(),
            );
        }
        Ok((connect, parsed.servers))
    }
}

/// async-nats's options with typed credentials, files read.
fn typed_credentials(credentials: &options::Credentials) -> Result<ConnectOptions, BrokerError> {
    use options::Credentials as Typed;
    Ok(match credentials {
        Typed::UserAndPassword { user, password } => {
            ConnectOptions::new().user_and_password(user.clone(), password.read("NATS password")?)
        }
        Typed::Token(token) => ConnectOptions::new().token(token.read("NATS token")?),
        Typed::NKeySeed(seed) => {
            let seed = seed.read("NATS NKey seed")?;
            if !seed.starts_with("SU") {
                return Err(config(
                    "the NATS NKey seed does not start with SU (a user seed, as `nk -gen user` writes it)"
                        .to_owned(),
                ));
            }
            ConnectOptions::new().nkey(seed)
        }
        Typed::NatsCredentialsFile(path) => {
            let text = options::read_file(path, "NATS credentials")?;
            ConnectOptions::with_credentials(&text).map_err(|e| {
                config(format!(
                    "the NATS credentials file {} is not one (a user JWT and NKey seed, as nsc writes it)",
                    path.display()
                ))
                .with_source(e)
            })?
        }
    })
}

/// Takes the user info out of `url`, decoded.
fn take_credentials(url: &mut Url) -> Result<Option<Credentials>, String> {
    let user = decode(url.username(), "user name")?;
    let password = url.password().map(|p| decode(p, "password")).transpose()?;
    let credentials = match (user, password) {
        (user, None) if user.is_empty() => None,
        (token, None) => Some(Credentials::Token(token)),
        (user, Some(password)) if password.is_empty() => Some(Credentials::Token(user)),
        (user, Some(_)) if user.is_empty() => return Err("a password without a user name".to_owned()),
        (user, Some(password)) => Some(Credentials::UserAndPassword { user, password }),
    };
    if credentials.is_some() {
        // Cannot fail: a URL with user info has a host.
        let _ = url.set_password(None);
        let _ = url.set_username("");
    }
    Ok(credentials)
}

fn decode(encoded: &str, what: &str) -> Result<String, String> {
    percent_decode_str(encoded)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| format!("the {what} is not UTF-8 once percent-decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> (Vec<String>, Option<Credentials>) {
        let parsed = NatsUrl::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        let servers = parsed.servers.iter().map(|s| s.as_url_str().to_owned()).collect();
        (servers, parsed.credentials)
    }

    fn user(user: &str, password: &str) -> Option<Credentials> {
        Some(Credentials::UserAndPassword {
            user: user.into(),
            password: password.into(),
        })
    }

    #[test]
    fn credentials_leave_the_servers() {
        assert_eq!(
            parse("nats://wharf:s3cr3t@127.0.0.1:4222"),
            (vec!["nats://127.0.0.1:4222".into()], user("wharf", "s3cr3t"))
        );
        assert_eq!(
            parse("tls://t0ken@nats.example:4443"),
            (
                vec!["tls://nats.example:4443".into()],
                Some(Credentials::Token("t0ken".into()))
            )
        );
        assert_eq!(
            parse("nats://127.0.0.1:4222"),
            (vec!["nats://127.0.0.1:4222".into()], None)
        );
        // An empty password: the user name is a token, as nats-py takes it.
        assert_eq!(
            parse("nats://t0ken:@h").1,
            Some(Credentials::Token("t0ken".into()))
        );
    }

    #[test]
    fn percent_encoded_credentials_are_decoded() {
        assert_eq!(
            parse("nats://us%65r:pa%40ss%3Aw%2Frd%25@h:1").1,
            user("user", "pa@ss:w/rd%")
        );
        assert_eq!(parse("nats://t%2Bk@h").1, Some(Credentials::Token("t+k".into())));
        let error = NatsUrl::parse("nats://u:%FF%FE@h").err().unwrap();
        assert!(error.to_string().contains("not UTF-8"), "{error}");
    }

    #[test]
    fn several_servers_share_the_credentials_written_on_any_of_them() {
        assert_eq!(
            parse("nats://a:4222, nats://u:pw@b:4222 ,tls://c"),
            (
                vec!["nats://a:4222".into(), "nats://b:4222".into(), "tls://c".into()],
                user("u", "pw")
            )
        );
        assert_eq!(parse("nats://u:pw@a,nats://u:pw@b").1, user("u", "pw"));
    }

    #[test]
    fn bad_urls_are_configuration_errors_that_show_no_secret() {
        for (url, says) in [
            (
                "nats://u:pw-1x@a,nats://u:pw-2y@b",
                "servers 1 and 2 carry different credentials",
            ),
            (
                "nats://t-1x@a,nats://b,nats://u:pw-2y@c",
                "servers 1 and 3 carry different credentials",
            ),
            ("nats://a:4222,u:pw-1x@b:4222", "server 2 has no scheme"),
            ("nats://:pw-1x@a", "a password without a user name"),
            ("nats://u:pw-1x@a:99999", "server 1: invalid port number"),
            ("amqp://u:pw-1x@a", "invalid scheme"),
            ("nats://a,", "server 2 has no scheme"),
        ] {
            let error = NatsUrl::parse(url)
                .err()
                .unwrap_or_else(|| panic!("{url} parsed"));
            assert_eq!(error.kind(), BrokerErrorKind::Config, "{url}");
            let shown = format!("{} {error:?}", crate::error::Chain(&error));
            assert!(shown.contains(says), "{url}: {shown}");
            assert!(
                !shown.contains("pw-1x") && !shown.contains("pw-2y"),
                "{url}: {shown}"
            );
        }
    }
}
