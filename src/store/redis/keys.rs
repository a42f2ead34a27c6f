//! Where a store keeps what (the key layout in the module documentation),
//! and the expiries sent with it.

use super::RedisStore;
use std::borrow::Cow;
use std::time::Duration;

/// The longest expiry sent (about 35,000 years): Redis rejects expiry times
/// that overflow its clock.
const MAX_MILLIS: u64 = 1 << 50;

impl RedisStore {
    pub(super) fn record_key(&self, key: &str) -> String {
        format!("{}k:{key}", self.prefix)
    }

    /// The session's hash, lease and checkpoint keys, in the order the
    /// scripts take them.
    pub(super) fn session_keys(&self, session: &str) -> [String; 4] {
        let tag = hash_tag(session);
        let prefix = &self.prefix;
        [
            format!("{prefix}s:{{{tag}}}"),
            format!("{prefix}l:{{{tag}}}"),
            format!("{prefix}st:{{{tag}}}"),
            format!("{prefix}h:{{{tag}}}"),
        ]
    }

    /// The pub/sub channel announcing session changes.
    pub(super) fn changes_channel(&self) -> String {
        format!("{}changes", self.prefix)
    }
}

/// `session` as the inside of a hash tag: never empty, no `}`, one-to-one.
fn hash_tag(session: &str) -> Cow<'_, str> {
    if session.is_empty() {
        return Cow::Borrowed("%");
    }
    if !session.contains(['%', '}']) {
        return Cow::Borrowed(session);
    }
    Cow::Owned(session.replace('%', "%25").replace('}', "%7D"))
}

/// `duration` in whole milliseconds for `PX`/`PEXPIRE`: rounded up, at least
/// 1 (Redis rejects 0), at most [`MAX_MILLIS`].
pub(super) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos().div_ceil(1_000_000))
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_MILLIS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_id_is_kept_whole_inside_its_hash_tag() {
        assert_eq!(hash_tag("q/s"), "q/s");
        assert_eq!(hash_tag(""), "%");
        assert_eq!(hash_tag("a}b%7D{c"), "a%7Db%257D{c");
        assert_ne!(hash_tag("a}"), hash_tag("a%7D"));
        assert_ne!(hash_tag("%"), hash_tag(""));
    }

    #[test]
    fn expiries_are_rounded_up_to_whole_milliseconds() {
        assert_eq!(millis(Duration::ZERO), 1);
        assert_eq!(millis(Duration::from_micros(1)), 1);
        assert_eq!(millis(Duration::from_micros(1500)), 2);
        assert_eq!(millis(Duration::from_millis(300)), 300);
        assert_eq!(millis(Duration::MAX), MAX_MILLIS);
    }
}
