//! Secrets never printed: URLs with their credentials masked, for logs,
//! errors and `Debug` output.
//!
//! Redaction fails closed. A URL is parsed as a URL (the `url` crate, the
//! parser the broker clients use); anything that does not parse, or has no
//! `scheme://` authority, is masked whole, since where its secrets are
//! cannot be known. A list of servers (`nats://a:4222,nats://u:pw@b:4222`)
//! is redacted server by server, and masked whole when any one of them
//! cannot be parsed.

use percent_encoding::percent_decode_str;
use url::Url;

/// What a secret, or a whole URL that cannot be parsed, is shown as.
pub(crate) const MASK: &str = "***";

/// Query parameters whose values are masked: any name containing one of
/// these, case-insensitively, after percent-decoding.
const SECRET_PARAMS: [&str; 8] = ["pass", "pwd", "token", "secret", "key", "auth", "cred", "sig"];

/// `url` with every password, token, secret query value and fragment
/// replaced by `***`.
///
/// `amqp://user:pw@host/vh` → `amqp://user:***@host/vh`;
/// `nats://s3cr3t@host` (a user name alone may be a token) → `nats://***@host`;
/// `nats://a:4222,nats://u:pw@b:4222` → `nats://a:4222,nats://u:***@b:4222`;
/// `not a url` → `***`.
pub(crate) fn redact(url: &str) -> String {
    let servers: Option<Vec<String>> = url.split(',').map(|server| redact_one(server.trim())).collect();
    servers.map_or_else(|| MASK.to_owned(), |servers| servers.join(","))
}

/// One URL redacted, or `None` when it cannot be parsed as one with an
/// authority (every server of a list must name its scheme, so that a comma
/// inside a password cannot leave half of it looking like a server).
fn redact_one(url: &str) -> Option<String> {
    if !url.contains("://") {
        return None;
    }
    let mut parsed = Url::parse(url).ok()?;
    if parsed.cannot_be_a_base() {
        return None;
    }
    if parsed.password().is_some() {
        parsed.set_password(Some(MASK)).ok()?;
    } else if !parsed.username().is_empty() {
        parsed.set_username(MASK).ok()?;
    }
    if let Some(query) = parsed.query() {
        let query = redact_query(query);
        parsed.set_query(Some(&query));
    }
    if parsed.fragment().is_some() {
        parsed.set_fragment(Some(MASK));
    }
    Some(parsed.into())
}

/// A query string with the values of secret-looking parameters masked; the
/// rest as it was.
fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret_param(name) => format!("{name}={MASK}"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn is_secret_param(name: &str) -> bool {
    let name = percent_decode_str(name).decode_utf8_lossy().to_ascii_lowercase();
    SECRET_PARAMS.iter().any(|secret| name.contains(secret))
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn masks_passwords_and_tokens() {
        assert_eq!(
            redact("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            redact("nats://s3cr3t@127.0.0.1:4222"),
            "nats://***@127.0.0.1:4222"
        );
        assert_eq!(
            redact("redis://:hunter2@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(redact("postgres://u:secret@db/app"), "postgres://u:***@db/app");
        // The last `@` ends the user info, as every client parses it.
        assert_eq!(redact("amqp://u:p@w:rd@host"), "amqp://u:***@host");
        assert_eq!(redact("memory://"), "memory://");
        assert_eq!(redact("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    }

    #[test]
    fn masks_percent_encoded_secrets() {
        assert_eq!(
            redact("nats://wharf:pa%40ss%3Aw%2Frd@127.0.0.1:4222"),
            "nats://wharf:***@127.0.0.1:4222"
        );
        assert_eq!(redact("nats://t%40ken@host"), "nats://***@host");
        // A percent-encoded parameter name is still recognised.
        assert_eq!(
            redact("amqp://host/%2f?to%6Ben=abc&name=x"),
            "amqp://host/%2f?to%6Ben=***&name=x"
        );
    }

    #[test]
    fn masks_secret_query_parameters_and_fragments() {
        assert_eq!(
            redact("nats://host:4222?token=abc&name=x"),
            "nats://host:4222?token=***&name=x"
        );
        assert_eq!(
            redact("rediss://host/0?Password=a&api_KEY=b&auth_mechanism=c&heartbeat=10&x"),
            "rediss://host/0?Password=***&api_KEY=***&auth_mechanism=***&heartbeat=10&x"
        );
        assert_eq!(redact("amqp://host/vh#s3cr3t"), "amqp://host/vh#***");
    }

    #[test]
    fn several_servers_are_redacted_one_by_one() {
        assert_eq!(
            redact("nats://a:4222,nats://u:pw@b:4222"),
            "nats://a:4222,nats://u:***@b:4222"
        );
        assert_eq!(
            redact("nats://tok@a:4222, tls://u:pw@b:4222 ,nats://c"),
            "nats://***@a:4222,tls://u:***@b:4222,nats://c"
        );
    }

    #[test]
    fn what_cannot_be_parsed_is_masked_whole() {
        for url in [
            "",
            "s3cr3t",
            "host:4222",
            "u:pw@host",
            "nats://u:pw@ho st",
            "nats://u:pw@host:99999",
            "mailto:u:pw@host",
            // A server without its scheme in a list: masked whole, also
            // when it is the tail of a password with a comma in it.
            "nats://a:4222,u:pw@b:4222",
            "nats://u:1234,5678@host",
            "nats://a:4222,",
        ] {
            assert_eq!(redact(url), "***", "{url:?}");
        }
    }
}
