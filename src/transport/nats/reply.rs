//! The request client's reply address on NATS: a core subscription to
//! `<inbox>.*`. Each request gets its own reply subject `<inbox>.<token>`
//! (see [`token`]), so that whatever comes back can be matched without
//! headers: the handler's reply, JetStream's publish ack when a stream holds
//! the queue (ignored unless it reports an error), or the server's "no
//! responders" status when neither a stream nor a core service listens
//! (turned into a clear error for that request).
//!
//! A request takes one of two forms ([`super::request_form`]): *durable*,
//! with `reply-to`, `Nats-Msg-Id` and `correlation-id` headers, for a
//! subject a stream holds; *lean*, without them, for a core service.

use super::outbox::{Failure, Outbox};
use super::request_form::{Form, Forms};
use super::{Shared, convert, naming, outbound};
use crate::error::{BrokerError, BrokerErrorKind};
use crate::transport::{BoxFuture, ReplyInbox, RequestSender, succeeded};
use crate::wire::headers::names;
use crate::wire::message::Message;
use async_nats::StatusCode;
use async_nats::client::traits::Publisher;
use futures_util::{StreamExt, TryFutureExt};
use serde::Deserialize;
use std::sync::Arc;
use std::task::Poll;
use tokio::sync::mpsc;

/// `wharf-status` of a reply the transport made up because the request
/// could not be delivered; the client turns it into a broker error.
pub(crate) const UNDELIVERABLE: &str = "undeliverable";
/// `wharf-status` of a reply the transport made up because the request was
/// stored without a reply address (a lean request taken by a stream).
pub(crate) const UNANSWERABLE: &str = "unanswerable";

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
    let forms = Arc::new(Forms::default());
    let learnt = forms.clone();
    let (failures, mut failed) = mpsc::unbounded_channel::<Failure>();
    let mut subscription =
        subscription.filter_map(move |message| std::future::ready(to_reply(message, &learnt)));
    // What the outbox could not send fails its request; the stream ends
    // with the subscription.
    let replies = futures_util::stream::poll_fn(move |cx| {
        while let Poll::Ready(Some((reply, why))) = failed.poll_recv(cx) {
            if let Some(id) = correlation_id(last_token(reply.as_str())) {
                return Poll::Ready(Some(made_up(
                    id,
                    UNDELIVERABLE,
                    &format!("publishing the request failed: {why}"),
                )));
            }
        }
        subscription.poll_next_unpin(cx)
    });
    let outbox = Outbox::new(shared.client.clone(), shared.runtime.clone(), failures);
    Ok(ReplyInbox {
        address: prefix.clone(),
        replies: Box::pin(replies),
        requests: Box::new(Requests {
            shared,
            prefix,
            forms,
            outbox,
        }),
    })
}

/// Why a request could not be published.
fn publish_failed(e: async_nats::PublishError) -> BrokerError {
    BrokerError::new(BrokerErrorKind::Publish, "publishing the request failed").with_source(e)
}

struct Requests {
    shared: Arc<Shared>,
    prefix: String,
    forms: Arc<Forms>,
    /// Publishes the requests, in batches.
    outbox: Arc<Outbox>,
}

impl RequestSender for Requests {
    fn send(&self, queue: &str, message: Message) -> BoxFuture<'_, Result<(), BrokerError>> {
        // A request whose correlation id its maker set.
        let id = message.correlation_id.clone().unwrap_or_default();
        self.request(queue, &id, message, false, false)
    }

    /// The reply address is this inbox's, in the reply subject: `reply_to`
    /// is not needed. With other requests in flight, the request goes out
    /// with theirs, through the outbox.
    fn send_request(
        &self,
        queue: &str,
        id: &str,
        _reply_to: &str,
        message: Message,
        in_flight: usize,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.request(queue, id, message, true, in_flight > 1)
    }
}

impl Requests {
    /// Publishes request `id`; `with_message_id`: a durable request without
    /// a message id gets `id` as its message id (as the client's requests
    /// do everywhere); `together`: through the outbox, with the requests
    /// made about the same time (see [`Outbox`]).
    fn request(
        &self,
        queue: &str,
        id: &str,
        message: Message,
        with_message_id: bool,
        together: bool,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        // Everything but the publish itself is done before the future is
        // made: the future is allocated per request, and a JetStream lookup
        // held in it would make every request's future as large as the rare
        // lookup's.
        if let Err(e) = naming::check_queue(queue) {
            return Box::pin(std::future::ready(Err(e)));
        }
        // A core publish while disconnected would wait in the client's
        // buffer and the caller would only learn of it at its timeout.
        if !*self.shared.connected.borrow() {
            return Box::pin(std::future::ready(Err(BrokerError::new(
                BrokerErrorKind::Connection,
                "not connected to NATS (reconnecting): the request was not sent",
            ))));
        }
        let subject = match naming::lane(message.priority) {
            Ok(lane) => naming::subject(queue, lane),
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let known = match is_plain(id) {
            true => self.forms.known_form(&subject),
            // Only a plain id can be a lean token.
            false => Some(Form::Durable),
        };
        match known {
            Some(form) => self.publish(form, subject, id, message, with_message_id, together),
            None => {
                let id = id.to_owned();
                Box::pin(async move {
                    let form = self.forms.learn_form(&self.shared, &subject).await;
                    self.publish(form, subject, &id, message, with_message_id, together)
                        .await
                })
            }
        }
    }

    /// Publishes a request in `form` to `subject`.
    fn publish(
        &self,
        form: Form,
        subject: String,
        id: &str,
        mut message: Message,
        with_message_id: bool,
        together: bool,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        let reply = if form == Form::Lean {
            strip_for_service(&mut message, id);
            self.reply_subject(&[LEAN_TOKEN, id])
        } else {
            let reply = self.reply_subject(&[&token(id)]);
            if !id.is_empty() {
                message.correlation_id = Some(id.to_owned());
                if with_message_id && message.message_id.is_none() {
                    message.message_id = Some(id.to_owned());
                }
            }
            message.reply_to = Some(reply.clone());
            reply
        };
        let headers = convert::headers(&message, false);
        let outbound = outbound(subject.into(), Some(reply.into()), headers, message.body);
        let outbound = match together {
            true => match self.outbox.send(outbound) {
                None => return succeeded(),
                // The queue is full: this one waits until async-nats takes it.
                Some(outbound) => outbound,
            },
            false => outbound,
        };
        Box::pin(
            self.shared
                .client
                .publish_message(outbound)
                .map_err(publish_failed),
        )
    }

    /// `<prefix>.` and `token` (in parts), without `format!`'s machinery.
    fn reply_subject(&self, token: &[&str]) -> String {
        let len = self.prefix.len() + 1 + token.iter().map(|part| part.len()).sum::<usize>();
        let mut subject = String::with_capacity(len);
        subject.push_str(&self.prefix);
        subject.push('.');
        token.iter().for_each(|part| subject.push_str(part));
        subject
    }
}

/// Leaves out of request `id` what a core service does not need: the reply
/// address and correlation (its reply subject is both), a message id equal
/// to the correlation id (no stream sees the request to de-duplicate it)
/// and the default content type.
fn strip_for_service(message: &mut Message, id: &str) {
    if message.message_id.as_deref() == Some(id) {
        message.message_id = None;
    }
    message.correlation_id = None;
    message.reply_to = None;
    convert::drop_default_content_type(message);
}

/// What a message on the reply subscription means for its request.
fn to_reply(message: async_nats::Message, forms: &Forms) -> Option<Message> {
    let token = last_token(message.subject.as_str());
    let lean = token.starts_with(LEAN_TOKEN);
    let correlation_id = || correlation_id(token);
    if message.status == Some(StatusCode::NO_RESPONDERS) {
        return Some(made_up(
            correlation_id()?,
            UNDELIVERABLE,
            "no queue or service is listening for this request (declare the queue or start a worker)",
        ));
    }
    let headers = message.headers.as_ref();
    let has_reply_headers = headers.is_some_and(|h| {
        h.get_last(convert::CORRELATION_ID).is_some() || h.get_last(names::STATUS).is_some()
    });
    if lean
        && !has_reply_headers
        && let Some(ack) = publish_ack(&message.payload)
    {
        // A stream holds the subject now and stored the request without
        // a reply address: a worker will handle it, but cannot answer.
        forms.forget();
        return Some(made_up(
            correlation_id()?,
            UNANSWERABLE,
            &format!(
                "the queue is now held by the JetStream stream {:?}, which stored this request \
                 without a reply address: it will be handled, but no reply can come back \
                 (the next request to it is sent with one)",
                ack.stream
            ),
        ));
    }
    if lean || has_reply_headers {
        // A service's reply to a lean request has no headers when it
        // succeeded in JSON: its subject says which request it answers.
        let mut reply = convert::to_message(message.subject.as_str(), headers, message.payload, None);
        reply.priority = None;
        // The subject is the request's own: its token is the correlation id
        // even when the reply carries another (a service that passed a lean
        // request on gave the copy a message id, and answers with that).
        if let Some(id) = correlation_id() {
            reply.correlation_id = Some(id);
        }
        return Some(reply);
    }
    // JetStream's publish ack: {"stream": …, "seq": …} or {"error": …}.
    let ack: serde_json::Value = serde_json::from_slice(&message.payload).ok()?;
    let error = ack.get("error")?;
    Some(made_up(
        correlation_id()?,
        UNDELIVERABLE,
        &format!("JetStream did not store the request: {error}"),
    ))
}

/// The last token of a subject (a byte search: `rsplit` cost some hundred
/// instructions per reply).
fn last_token(subject: &str) -> &str {
    let dot = subject.bytes().rposition(|b| b == b'.');
    &subject[dot.map_or(0, |at| at + 1)..]
}

/// JetStream's publish ack, exactly: a reply body with other fields is a
/// handler's.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Read to tell an ack from a reply.
struct PublishAck {
    stream: String,
    seq: u64,
    #[serde(default)]
    duplicate: bool,
    #[serde(default)]
    domain: Option<String>,
}

fn publish_ack(body: &[u8]) -> Option<PublishAck> {
    if !body.starts_with(br#"{"stream":"#) {
        return None;
    }
    serde_json::from_slice(body).ok()
}

fn made_up(correlation_id: String, status: &str, why: &str) -> Message {
    Message::new(why.to_owned())
        .with_correlation_id(correlation_id)
        .with_header(names::STATUS, status)
}

/// Marks the token of a lean request (its plain correlation id follows).
const LEAN_TOKEN: &str = "_c";
/// Marks a token that carries its correlation id hex-encoded.
const HEX_TOKEN: &str = "_x";

/// The last token of a request's reply subject: its correlation id as it
/// is when that is a plain token (wharf's client's ids are), else hex.
fn token(correlation_id: &str) -> std::borrow::Cow<'_, str> {
    if is_plain(correlation_id) {
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

/// Whether `correlation_id` can be a token as it is.
fn is_plain(correlation_id: &str) -> bool {
    !correlation_id.is_empty()
        && !correlation_id.starts_with('_')
        && correlation_id.bytes().all(naming::is_token_byte)
}

/// The correlation id a reply subject's last token stands for.
fn correlation_id(token: &str) -> Option<String> {
    if let Some(plain) = token.strip_prefix(LEAN_TOKEN) {
        return is_plain(plain).then(|| plain.to_owned());
    }
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

    fn arriving(token: &str, headers: &[(&str, &str)], body: &str) -> async_nats::Message {
        let headers = (!headers.is_empty()).then(|| {
            let mut map = async_nats::HeaderMap::new();
            for (name, value) in headers {
                map.insert(*name, *value);
            }
            map
        });
        async_nats::Message {
            subject: format!("_INBOX.abc.{token}").into(),
            reply: None,
            payload: bytes::Bytes::copy_from_slice(body.as_bytes()),
            length: body.len(),
            headers,
            status: None,
            description: None,
        }
    }

    #[test]
    fn a_bare_message_for_a_lean_request_is_its_reply() {
        let reply = to_reply(arriving("_c7f-1", &[], "42"), &Forms::default()).expect("a reply");
        assert_eq!(reply.correlation_id.as_deref(), Some("7f-1"));
        assert_eq!(&reply.body[..], b"42");
        assert_eq!(reply.header(names::STATUS), None, "no status: it succeeded");
        // A reply body that merely looks like an ack, with other fields.
        let body = r#"{"stream":"x","seq":1,"note":"mine"}"#;
        let reply = to_reply(arriving("_c7f-2", &[], body), &Forms::default()).expect("a reply");
        assert_eq!(reply.header(names::STATUS), None);
    }

    #[test]
    fn the_token_is_the_correlation_even_when_the_reply_names_another() {
        // A service passed the lean request on; the copy got a message id.
        let headers = [(convert::CORRELATION_ID, "wharf-copy-9"), (names::STATUS, "ok")];
        let reply = to_reply(arriving("_c7f-3", &headers, "1"), &Forms::default()).expect("a reply");
        assert_eq!(reply.correlation_id.as_deref(), Some("7f-3"));
    }

    #[test]
    fn a_publish_ack_for_a_lean_request_fails_it_and_forgets_the_form() {
        let forms = Forms::default();
        forms.learn("wharf.p0.orders", true);
        let ack = r#"{"stream":"WHARF_orders","seq":12}"#;
        let reply = to_reply(arriving("_c7f-4", &[], ack), &forms).expect("made up");
        assert_eq!(reply.correlation_id.as_deref(), Some("7f-4"));
        assert_eq!(reply.header(names::STATUS), Some(UNANSWERABLE));
        assert!(String::from_utf8_lossy(&reply.body).contains("WHARF_orders"));
        assert!(!forms.is_known("wharf.p0.orders"), "asked again next time");
    }

    #[test]
    fn a_publish_ack_for_a_durable_request_is_ignored_unless_it_failed() {
        let ack = r#"{"stream":"WHARF_orders","seq":12}"#;
        assert!(to_reply(arriving("7f-5", &[], ack), &Forms::default()).is_none());
        let failed = r#"{"error":{"code":503,"description":"insufficient resources"}}"#;
        let reply = to_reply(arriving("7f-6", &[], failed), &Forms::default()).expect("made up");
        assert_eq!(reply.header(names::STATUS), Some(UNDELIVERABLE));
        assert_eq!(reply.correlation_id.as_deref(), Some("7f-6"));
    }

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
