//! The request client's reply address on NATS: a core subscription to
//! `<inbox>.*`. Each request gets its own reply subject `<inbox>.<token>`
//! (the token is its correlation id when that is a plain `[A-Za-z0-9_-]`
//! token, else `_x` and the id in hex), used both as the core NATS reply
//! subject and as the `reply-to` header, so that whatever comes back can be
//! matched: the handler's reply, JetStream's publish ack when a stream holds
//! the queue (ignored unless it reports an error), or the server's "no
//! responders" status when neither a stream nor a core service listens
//! (turned into a clear error for that request).

use super::{Shared, convert, naming};
use crate::error::{BrokerError, BrokerErrorKind};
use crate::headers::names;
use crate::message::Message;
use crate::transport::{BoxFuture, ReplyInbox, RequestSender};
use async_nats::StatusCode;
use futures_util::StreamExt;
use std::sync::Arc;

/// `wharf-status` of a reply the transport made up because the request
/// could not be delivered; the client turns it into a broker error.
pub(crate) const UNDELIVERABLE: &str = "undeliverable";

/// Opens a reply address.
pub(crate) async fn open(shared: Arc<Shared>) -> Result<ReplyInbox, BrokerError> {
    let prefix = shared.client.new_inbox();
    let subscription = shared
        .client
        .subscribe(format!("{prefix}.*"))
        .await
        .map_err(|e| {
            BrokerError::new(BrokerErrorKind::Connection, "cannot open a reply subscription").with_source(e)
        })?;
    let replies = subscription.filter_map(|message| std::future::ready(to_reply(message)));
    Ok(ReplyInbox {
        address: prefix.clone(),
        replies: Box::pin(replies),
        requests: Box::new(Requests { shared, prefix }),
    })
}

struct Requests {
    shared: Arc<Shared>,
    prefix: String,
}

impl RequestSender for Requests {
    fn send(&self, queue: &str, message: Message) -> BoxFuture<'_, Result<(), BrokerError>> {
        let queue = queue.to_owned();
        Box::pin(async move {
            naming::check_queue(&queue)?;
            // A core publish while disconnected would wait in the client's
            // buffer and the caller would only learn of it at its timeout.
            if !*self.shared.connected.borrow() {
                return Err(BrokerError::new(
                    BrokerErrorKind::Connection,
                    "not connected to NATS (reconnecting): the request was not sent",
                ));
            }
            let mut message = message;
            let token = token(message.correlation_id.as_deref().unwrap_or_default());
            let reply = format!("{}.{token}", self.prefix);
            message.reply_to = Some(reply.clone());
            let headers = convert::headers(&message, false);
            let subject = naming::subject(&queue, message.priority.unwrap_or(0));
            self.shared
                .client
                .publish_with_reply_and_headers(subject, reply, headers, message.body)
                .await
                .map_err(|e| {
                    BrokerError::new(BrokerErrorKind::Publish, "publishing the request failed").with_source(e)
                })
        })
    }
}

/// What a message on the reply subscription means for its request.
fn to_reply(message: async_nats::Message) -> Option<Message> {
    let correlation_id = || correlation_id(message.subject.rsplit('.').next().unwrap_or_default());
    if message.status == Some(StatusCode::NO_RESPONDERS) {
        return Some(undeliverable(
            correlation_id()?,
            "no queue or service is listening for this request (declare the queue or start a worker)",
        ));
    }
    let headers = message.headers.as_ref();
    let is_reply = headers.is_some_and(|h| {
        h.get_last(convert::CORRELATION_ID).is_some() || h.get_last(names::STATUS).is_some()
    });
    if is_reply {
        let mut reply = convert::to_message(message.subject.as_str(), headers, message.payload, None);
        reply.priority = None;
        if reply.correlation_id.is_none() {
            reply.correlation_id = correlation_id();
        }
        return Some(reply);
    }
    // JetStream's publish ack: {"stream": …, "seq": …} or {"error": …}.
    let ack: serde_json::Value = serde_json::from_slice(&message.payload).ok()?;
    let error = ack.get("error")?;
    Some(undeliverable(
        correlation_id()?,
        &format!("JetStream did not store the request: {error}"),
    ))
}

fn undeliverable(correlation_id: String, why: &str) -> Message {
    Message::new(why.to_owned())
        .with_correlation_id(correlation_id)
        .with_header(names::STATUS, UNDELIVERABLE)
}

/// Marks a token that carries its correlation id hex-encoded.
const HEX_TOKEN: &str = "_x";

/// The last token of a request's reply subject: its correlation id as it
/// is when that is a plain token (wharf's client's ids are), else hex.
fn token(correlation_id: &str) -> std::borrow::Cow<'_, str> {
    let plain = !correlation_id.is_empty()
        && !correlation_id.starts_with('_')
        && correlation_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain {
        return correlation_id.into();
    }
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut token = String::with_capacity(HEX_TOKEN.len() + 2 * correlation_id.len());
    token.push_str(HEX_TOKEN);
    for b in correlation_id.bytes() {
        token.push(char::from(DIGITS[usize::from(b >> 4)]));
        token.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    token.into()
}

/// The correlation id a reply subject's last token stands for.
fn correlation_id(token: &str) -> Option<String> {
    let Some(hex) = token.strip_prefix(HEX_TOKEN) else {
        return (!token.is_empty()).then(|| token.to_owned());
    };
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_the_correlation_id() {
        for id in [
            "1a2b-c3.d4",
            "2f29-18ea3938e9d3cce7-1",
            "_x41",
            "x y",
            "ünï",
            "a>b*",
        ] {
            let token = token(id);
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{token}"
            );
            assert_eq!(correlation_id(&token).as_deref(), Some(id));
        }
        assert_eq!(token("2f29-1").as_ref(), "2f29-1", "a plain id is its own token");
        assert_eq!(correlation_id("_xzz"), None);
        assert_eq!(correlation_id(""), None);
    }
}
