//! Secrets never printed: broker URLs with their credentials masked.

/// Query parameters whose values are masked.
const SECRET_PARAMS: [&str; 5] = ["password", "pass", "token", "secret", "key"];

/// `url` with any password, token or secret query value replaced by `***`.
///
/// `amqp://user:pw@host/vh` → `amqp://user:***@host/vh`;
/// `nats://s3cr3t@host` (a token) → `nats://***@host`.
pub(crate) fn redact(url: &str) -> String {
    let (before_query, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = match before_query.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            let authority = match authority.rsplit_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((user, _)) => format!("{user}:***@{host}"),
                    None => format!("***@{host}"),
                },
                None => authority.to_owned(),
            };
            format!("{scheme}://{authority}{path}")
        }
        None => before_query.to_owned(),
    };
    if let Some(query) = query {
        out.push('?');
        let params: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if SECRET_PARAMS.iter().any(|s| k.to_ascii_lowercase().contains(s)) => {
                    format!("{k}=***")
                }
                _ => pair.to_owned(),
            })
            .collect();
        out.push_str(&params.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn masks_passwords_tokens_and_secret_parameters() {
        assert_eq!(
            redact("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            redact("nats://s3cr3t@127.0.0.1:4222"),
            "nats://***@127.0.0.1:4222"
        );
        assert_eq!(redact("amqp://u:p@w:rd@host"), "amqp://u:***@host");
        assert_eq!(
            redact("nats://host:4222?token=abc&name=x"),
            "nats://host:4222?token=***&name=x"
        );
        assert_eq!(redact("memory://"), "memory://");
    }
}
