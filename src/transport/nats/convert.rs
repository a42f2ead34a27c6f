//! wharf's message model on NATS headers (the mapping is documented in
//! `docs/wire-format.md`).

use super::naming;
use crate::wire::codec::Codec;
use crate::wire::headers::names;
use crate::wire::message::Message;
use async_nats::HeaderMap;
use async_nats::header::HeaderName;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// JetStream's de-duplication id.
pub(crate) const MSG_ID: &str = "Nats-Msg-Id";
/// The content type.
pub(crate) const CONTENT_TYPE: &str = "content-type";
/// The correlation id.
pub(crate) const CORRELATION_ID: &str = "correlation-id";
/// The reply address of a message that went through JetStream (whose own
/// reply subject is JetStream's ack subject).
pub(crate) const REPLY_TO: &str = "reply-to";
/// The original message id on a copy wharf made (whose `Nats-Msg-Id` is
/// fresh, or JetStream's duplicate window would drop it).
pub(crate) const ORIGINAL_ID: &str = "wharf-message-id";
/// When a deferred copy is due, in Unix milliseconds.
pub(crate) const NOT_BEFORE: &str = "wharf-not-before";

/// The lane a deferred copy goes back to (its subject in the delay stream
/// has none).
pub(crate) const LANE: &str = "wharf-lane";

/// Reads a NATS message into wharf's model. `reply` is the message's own
/// reply subject: the reply address on core NATS, JetStream's ack subject
/// (ignored) on JetStream. The priority is the subject's lane; a
/// `priority` header is an ordinary header, passed to the handler.
pub(crate) fn to_message(
    subject: &str,
    headers: Option<&HeaderMap>,
    body: bytes::Bytes,
    core_reply: Option<&str>,
) -> Message {
    let mut message = Message::new(body);
    message.priority = naming::lane_of(subject);
    message.reply_to = core_reply.map(str::to_owned);
    let mut original_id = None;
    if let Some(headers) = headers {
        // A HeaderMap has no order; sort so that the same message always
        // reads the same. Sorted on the stack when there are few (a `Vec`
        // here was an allocation per message).
        const ON_STACK: usize = 16;
        let mut stack = [("", ""); ON_STACK];
        let mut heap = Vec::new();
        let named = headers
            .iter()
            .filter_map(|(name, values)| Some((name.as_ref(), values.last()?.as_str())));
        let sorted: &mut [(&str, &str)] = if headers.len() <= ON_STACK {
            let mut n = 0;
            for (slot, entry) in stack.iter_mut().zip(named) {
                *slot = entry;
                n += 1;
            }
            &mut stack[..n]
        } else {
            heap.extend(named);
            &mut heap
        };
        sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for &mut (name, value) in sorted {
            if name.eq_ignore_ascii_case(CONTENT_TYPE) {
                message.content_type = Some(value.to_owned());
            } else if name.eq_ignore_ascii_case(MSG_ID) {
                message.message_id = Some(value.to_owned());
            } else if name.eq_ignore_ascii_case(CORRELATION_ID) {
                message.correlation_id = Some(value.to_owned());
            } else if name.eq_ignore_ascii_case(REPLY_TO) {
                if message.reply_to.is_none() {
                    message.reply_to = Some(value.to_owned());
                }
            } else if name.eq_ignore_ascii_case(ORIGINAL_ID) {
                original_id = Some(value.to_owned());
            } else if name.eq_ignore_ascii_case(NOT_BEFORE)
                || name.eq_ignore_ascii_case(LANE)
                || name.len() >= 5 && name[..5].eq_ignore_ascii_case("nats-")
            {
                // Transport bookkeeping, not the handler's business.
            } else {
                message.headers.insert(name.to_ascii_lowercase(), value);
            }
        }
    }
    if original_id.is_some() {
        message.message_id = original_id;
    }
    message
}

/// The headers of `message` as wharf publishes it. `copy` gives the copy a
/// fresh `Nats-Msg-Id` and keeps the original id in `wharf-message-id`.
pub(crate) fn headers(message: &Message, copy: bool) -> HeaderMap {
    // wharf's own names, parsed once (a message's other headers are
    // checked as they come).
    const CONTENT_TYPE_NAME: HeaderName = HeaderName::from_static(CONTENT_TYPE);
    const MSG_ID_NAME: HeaderName = HeaderName::from_static(MSG_ID);
    const ORIGINAL_ID_NAME: HeaderName = HeaderName::from_static(ORIGINAL_ID);
    const CORRELATION_ID_NAME: HeaderName = HeaderName::from_static(CORRELATION_ID);
    const REPLY_TO_NAME: HeaderName = HeaderName::from_static(REPLY_TO);
    let mut headers = HeaderMap::new();
    if let Some(content_type) = &message.content_type {
        put(&mut headers, CONTENT_TYPE_NAME, content_type);
    }
    match (&message.message_id, copy) {
        (Some(id), false) => put(&mut headers, MSG_ID_NAME, id),
        (Some(id), true) => {
            put(&mut headers, ORIGINAL_ID_NAME, id);
            put(&mut headers, MSG_ID_NAME, &unique_id());
        }
        (None, true) => put(&mut headers, MSG_ID_NAME, &unique_id()),
        (None, false) => {}
    }
    if let Some(correlation_id) = &message.correlation_id {
        put(&mut headers, CORRELATION_ID_NAME, correlation_id);
    }
    if let Some(reply_to) = &message.reply_to {
        put(&mut headers, REPLY_TO_NAME, reply_to);
    }
    for (name, value) in message.headers.iter() {
        set(&mut headers, name, value);
    }
    headers
}

/// Leaves out of a core reply what a lean request's requester does not
/// need: a reply to a request without a correlation id (whose reply
/// subject is its correlation) that succeeded says so by having no
/// `wharf-status`, and JSON, the default, needs no `content-type`. Error
/// replies keep every header.
pub(crate) fn strip_lean_reply(reply: &mut Message) {
    if reply.correlation_id.is_some() || reply.header(names::STATUS) != Some("ok") {
        return;
    }
    reply.headers.discard(names::STATUS);
    drop_default_content_type(reply);
}

/// Whether `reply` is a successful JSON reply to a lean request and
/// nothing more, so that it goes out with no headers at all: what
/// [`strip_lean_reply`] would leave of it is nothing (checked without
/// changing it, which costs more than the check).
pub(crate) fn is_bare_reply(reply: &Message) -> bool {
    reply.correlation_id.is_none()
        && reply.message_id.is_none()
        && reply.reply_to.is_none()
        && reply.headers.len() == 1
        && reply.header(names::STATUS) == Some("ok")
        && reply
            .content_type
            .as_deref()
            .is_none_or(|t| t.eq_ignore_ascii_case(Codec::Json.content_type()))
}

/// JSON is what a message without `content-type` means: not written.
pub(crate) fn drop_default_content_type(message: &mut Message) {
    if message
        .content_type
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case(Codec::Json.content_type()))
    {
        message.content_type = None;
    }
}

/// A copy of a received message's headers with `changes` applied, and a
/// fresh `Nats-Msg-Id` (the original id moves to `wharf-message-id`).
pub(crate) fn copy_headers(received: Option<&HeaderMap>, changes: &[(&str, String)]) -> HeaderMap {
    let mut headers = received.cloned().unwrap_or_default();
    let original = headers
        .get_last(MSG_ID)
        .map(|v| v.as_str().to_owned())
        .filter(|_| headers.get_last(ORIGINAL_ID).is_none());
    if let Some(original) = original {
        set(&mut headers, ORIGINAL_ID, &original);
    }
    set(&mut headers, MSG_ID, &unique_id());
    for (name, value) in changes {
        set(&mut headers, name, value);
    }
    headers
}

/// Sets a header, replacing earlier values. A name NATS cannot carry is
/// left out; line breaks in values (error messages) become spaces.
pub(crate) fn set(headers: &mut HeaderMap, name: &str, value: &str) {
    let Ok(name) = HeaderName::try_from(name) else {
        tracing::debug!(
            header = crate::util::log_text::Logged::id(name).value(),
            "header name not valid on NATS; left out"
        );
        return;
    };
    put(headers, name, value);
}

/// Sets a header by a name known to be valid.
fn put(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if value.contains(['\r', '\n']) {
        headers.insert(name, value.replace(['\r', '\n'], " ").as_str());
    } else {
        headers.insert(name, value);
    }
}

/// An id no other copy has: this process's prefix and a counter
/// (`wharf-<process id>-<random>-<n>`, `src/util/ids.rs`).
pub(crate) fn unique_id() -> String {
    static PREFIX: OnceLock<String> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| format!("wharf-{}", crate::util::ids::prefix()));
    crate::util::ids::numbered(prefix, NEXT.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_plain_successful_json_reply_is_bare() {
        let ok = |content_type: &str| {
            let mut reply = Message::new(&b"{}"[..]).with_content_type(content_type);
            reply.headers.insert_static(names::STATUS, "ok");
            reply
        };
        let stripped = |mut reply: Message| {
            strip_lean_reply(&mut reply);
            headers(&reply, false)
        };
        let bare = ok("application/json");
        assert!(is_bare_reply(&bare));
        assert!(
            stripped(bare).is_empty(),
            "what strip_lean_reply leaves of a bare reply: nothing"
        );
        let not_bare = [
            ok("application/msgpack"),
            ok("application/json").with_correlation_id("c1"),
            ok("application/json").with_header("traceparent", "00-1-2-01"),
            Message::new(&b"{}"[..]).with_header(names::STATUS, "error"),
        ];
        for reply in not_bare {
            assert!(!is_bare_reply(&reply), "{reply:?}");
            assert!(!stripped(reply).is_empty());
        }
    }

    #[test]
    fn a_message_survives_the_round_trip() {
        let message = Message::new(&b"{\"id\":1}"[..])
            .with_content_type("application/json")
            .with_message_id("m1")
            .with_correlation_id("c1")
            .with_reply_to("_INBOX.x")
            .with_idempotency_key("k")
            .with_session("s", 3);
        let headers = headers(&message, false);
        let back = to_message("wharf.p4.q", Some(&headers), message.body.clone(), None);
        assert_eq!(back.priority, Some(4));
        assert_eq!(back.message_id.as_deref(), Some("m1"));
        assert_eq!(back.correlation_id.as_deref(), Some("c1"));
        assert_eq!(back.reply_to.as_deref(), Some("_INBOX.x"));
        assert_eq!(back.idempotency_key(), Some("k"));
        assert_eq!(back.sequence(), Some("3"));
        assert_eq!(back.content_type.as_deref(), Some("application/json"));
    }

    #[test]
    fn copies_keep_the_message_id_but_not_the_dedup_id() {
        let message = Message::new(&b"1"[..]).with_message_id("m1");
        let first = copy_headers(Some(&headers(&message, false)), &[("wharf-attempt", "2".into())]);
        let second = copy_headers(Some(&first), &[]);
        assert_ne!(first.get_last(MSG_ID), second.get_last(MSG_ID));
        let back = to_message("wharf.p0.q", Some(&second), message.body.clone(), None);
        assert_eq!(back.message_id.as_deref(), Some("m1"));
        assert_eq!(back.header("wharf-attempt"), Some("2"));
    }

    #[test]
    fn a_priority_header_is_an_ordinary_header() {
        for value in ["high", "7", "42"] {
            let mut headers = HeaderMap::new();
            headers.insert("priority", value);
            let message = to_message("wharf.p0.q", Some(&headers), bytes::Bytes::new(), None);
            assert_eq!(message.priority, Some(0), "the lane is the priority");
            assert_eq!(message.header("priority"), Some(value), "passed on as it was");
        }
        let lane_three = Message::new(&b"1"[..]).with_priority(3);
        assert!(headers(&lane_three, false).get_last("priority").is_none());
    }

    #[test]
    fn line_breaks_do_not_break_headers() {
        let mut headers = HeaderMap::new();
        set(&mut headers, "wharf-error-message", "a\r\nb");
        assert_eq!(headers.get_last("wharf-error-message").unwrap().as_str(), "a  b");
    }
}
