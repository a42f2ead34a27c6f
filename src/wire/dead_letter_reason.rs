//! Why a message was dead-lettered: the values of the
//! `wharf-dead-letter-reason` header (docs/wire-format.md).

use std::fmt;
use std::str::FromStr;

/// Why a message went to the dead-letter queue (header `wharf-dead-letter-reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeadLetterReason {
    /// The body does not decode into the handler's payload type.
    Decode,
    /// The content type is neither JSON nor MessagePack.
    ContentType,
    /// The body is larger than the route's limit.
    TooLarge,
    /// A wharf header is malformed: priority out of range, non-numeric
    /// sequence, session without sequence, oversized key, a `wharf-attempt`
    /// that is not a number of attempts.
    InvalidHeader,
    /// The reply address can never be used on this broker (empty, or not
    /// a valid address there): no run could answer it.
    Reply,
    /// The handler returned a permanent error.
    Permanent,
    /// Every attempt failed (errors, panics or timeouts).
    MaxAttempts,
    /// The message waited for a missing session sequence number too long.
    SessionGap,
    /// A middleware refused the message before its handler ran
    /// (`Request::refuse`); the error kind says why.
    Refused,
}

impl DeadLetterReason {
    /// Every reason, for pre-registering metrics.
    pub const ALL: [DeadLetterReason; 9] = [
        DeadLetterReason::Decode,
        DeadLetterReason::ContentType,
        DeadLetterReason::TooLarge,
        DeadLetterReason::InvalidHeader,
        DeadLetterReason::Reply,
        DeadLetterReason::Permanent,
        DeadLetterReason::MaxAttempts,
        DeadLetterReason::SessionGap,
        DeadLetterReason::Refused,
    ];

    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::Decode => "decode",
            DeadLetterReason::ContentType => "content-type",
            DeadLetterReason::TooLarge => "too-large",
            DeadLetterReason::InvalidHeader => "invalid-header",
            DeadLetterReason::Reply => "reply",
            DeadLetterReason::Permanent => "permanent",
            DeadLetterReason::MaxAttempts => "max-attempts",
            DeadLetterReason::SessionGap => "session-gap",
            DeadLetterReason::Refused => "refused",
        }
    }

    /// True for bad input that never reached a handler run.
    pub fn is_bad_input(self) -> bool {
        matches!(
            self,
            DeadLetterReason::Decode
                | DeadLetterReason::ContentType
                | DeadLetterReason::TooLarge
                | DeadLetterReason::InvalidHeader
                | DeadLetterReason::Reply
        )
    }
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeadLetterReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DeadLetterReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown dead-letter reason {s:?}"))
    }
}
