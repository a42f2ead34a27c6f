//! The settle step's dead-letter copy: the original message, byte for byte,
//! plus wharf's headers saying why, where, when and after how many attempts.

use crate::wire::dead_letter_reason::DeadLetterReason;
use crate::wire::headers::names;
use crate::wire::message::Message;
use std::time::SystemTime;

/// Longest error message kept in a header; brokers limit header sizes.
const MAX_ERROR_MESSAGE: usize = 1024;

pub(crate) struct Failed<'a> {
    pub(crate) reason: DeadLetterReason,
    pub(crate) error_kind: &'a str,
    pub(crate) error_message: &'a str,
    pub(crate) queue: &'a str,
    pub(crate) handler: &'a str,
    pub(crate) attempts: u32,
}

pub(crate) fn dead_letter_message(original: &Message, failed: &Failed<'_>) -> Message {
    let mut message = original.clone();
    let headers = &mut message.headers;
    headers.insert(names::DEAD_LETTER_REASON, failed.reason.as_str());
    headers.insert(names::ERROR_KIND, failed.error_kind);
    headers.insert(
        names::ERROR_MESSAGE,
        truncate(failed.error_message, MAX_ERROR_MESSAGE),
    );
    headers.insert(names::ORIGIN_QUEUE, failed.queue);
    headers.insert(names::HANDLER, failed.handler);
    headers.insert(
        names::FAILED_AT,
        crate::wire::timestamp::rfc3339(SystemTime::now()),
    );
    headers.insert(names::ATTEMPT, failed.attempts.to_string());
    message
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_keeps_the_original_and_adds_reasons() {
        let original = Message::new(vec![0xff, 0x00, 0x13])
            .with_content_type("application/json")
            .with_message_id("m1")
            .with_header("tenant", "acme");
        let failed = Failed {
            reason: DeadLetterReason::Decode,
            error_kind: "decode",
            error_message: &"é".repeat(1000),
            queue: "orders",
            handler: "place_order",
            attempts: 1,
        };
        let dl = dead_letter_message(&original, &failed);
        assert_eq!(dl.body, original.body);
        assert_eq!(dl.message_id.as_deref(), Some("m1"));
        assert_eq!(dl.header("tenant"), Some("acme"));
        assert_eq!(dl.header(names::DEAD_LETTER_REASON), Some("decode"));
        assert_eq!(dl.header(names::ORIGIN_QUEUE), Some("orders"));
        assert_eq!(dl.header(names::ATTEMPT), Some("1"));
        assert!(dl.header(names::ERROR_MESSAGE).unwrap().len() <= MAX_ERROR_MESSAGE);
        assert!(dl.header(names::FAILED_AT).unwrap().ends_with('Z'));
    }
}
