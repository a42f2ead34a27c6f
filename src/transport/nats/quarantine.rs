//! Stored messages that async-nats cannot read, found and dead-lettered.
//!
//! nats-server stores a message's header block as its publisher wrote it.
//! async-nats refuses some blocks that the server accepts (not UTF-8, a
//! line without a colon, a header name it does not allow, a status it
//! cannot parse) by dropping the whole connection (its parser returns an
//! I/O error; reported upstream as described in docs/nats.md). Such a
//! message never reaches wharf: it stays unacknowledged, comes back after
//! the ack wait, and takes the connection down again, forever.
//!
//! wharf receives on a connection of its own (see `connection`), so the
//! loss takes down only its pull subscriptions, which ask again at once.
//! Whenever that connection comes back, and when a consumer opens, each
//! consumer reads the messages its stream holds that were delivered at
//! least once (up to the consumers' highest delivered stream sequence)
//! through the stream's message-get API, which returns the header block as
//! stored (base64 in JSON), and checks each block as async-nats would. An
//! unreadable one becomes a delivery the pipeline rejects at once (reason
//! `invalid-header`, counted like any bad input): its dead letter keeps the
//! body byte for byte, the headers that could be read, and the whole stored
//! header block in `wharf-raw-headers` (base64); the original is then
//! deleted from the stream, so it is never delivered again.
//!
//! The route's stream is read whole when it sources events (they keep their
//! own subjects there). A stream the route reads through a consumer it
//! names ([`Subscription::consumer`](crate::Subscription::consumer)) is the
//! team's: it is read from the consumer's ack floor up to what it
//! delivered, within its filter, and an unreadable message found there is
//! acknowledged on that consumer (an ack subject made from its stream
//! sequence, which is what the server looks it up by) instead of deleted:
//! the other services reading the stream still get it. As it stays in the
//! stream, possibly above the consumer's ack floor for a while, the named
//! consumers' streams are scanned only when the receiving connection came
//! back (when such a message took it down), not when a consumer opens, and
//! each process remembers what it dead-lettered there, so that it does
//! not do it twice.

use super::Shared;
use super::naming::{self, CONSUMER};
use super::{convert, publish_confirmed};
use crate::error::{BrokerError, BrokerErrorKind};
use crate::transport::lanes::MAX_PRIORITY;
use crate::transport::{Acker, BoxFuture, Delivery, QueueSpec, Settlement, dead_letter_queue, succeeded};
use crate::wire::message::Message;
use async_nats::HeaderMap;
use async_nats::header::HeaderName;
use async_nats::jetstream::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::Deserialize;
use std::str::FromStr;
use std::sync::Arc;

/// The header of a quarantined message's dead letter that holds its whole
/// stored header block, base64-encoded.
pub(crate) const RAW_HEADERS: &str = "wharf-raw-headers";

/// Most messages one scan reads (a stream with more delivered and
/// unsettled messages is read in part; the next scan reads on).
const MAX_SCAN: usize = 10_000;

/// The JetStream API's error code for "no message found".
const NO_MESSAGE: u64 = 10037;

#[derive(Deserialize)]
struct Got {
    message: Stored,
}

/// A stored message as the message-get API returns it.
#[derive(Deserialize)]
struct Stored {
    subject: String,
    seq: u64,
    #[serde(default)]
    hdrs: Option<String>,
    #[serde(default)]
    data: Option<String>,
}

/// Why async-nats 0.51 would refuse `block` (a stored header block), by
/// the rules of its parser (`connection.rs`, `HMSG`); `None` when it reads.
pub(crate) fn unreadable(block: &[u8]) -> Option<String> {
    let Ok(text) = std::str::from_utf8(block) else {
        return Some("the header block is not valid UTF-8".to_owned());
    };
    let mut lines = text.lines();
    let Some(version) = lines.next() else {
        return Some("the header block has no version line".to_owned());
    };
    let Some(suffix) = version.strip_prefix("NATS/1.0").map(str::trim) else {
        return Some("the header block does not begin with NATS/1.0".to_owned());
    };
    let status = suffix.split_once(' ').map_or(suffix, |(status, _)| status.trim());
    if !status.is_empty() && async_nats::StatusCode::from_str(status).is_err() {
        return Some(format!(
            "the status {status:?} on the version line is not a number"
        ));
    }
    for line in lines.filter(|line| !line.is_empty()) {
        // Continuation lines (leading white space) belong to the value
        // before them, and async-nats reads them as such.
        if line.starts_with(char::is_whitespace) {
            continue;
        }
        let Some((name, _)) = line.split_once(':') else {
            return Some(format!("the header line {:?} has no colon", clip(line)));
        };
        if HeaderName::from_str(name).is_err() {
            return Some(format!("{:?} is not a valid header name", clip(name)));
        }
    }
    None
}

/// At most 64 characters of `text`, for an explanation.
fn clip(text: &str) -> &str {
    match text.char_indices().nth(64) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

/// What can be read of an unreadable header block: the lines async-nats
/// would accept, values read as UTF-8 with replacements.
fn readable_part(block: &[u8]) -> HeaderMap {
    let text = String::from_utf8_lossy(block);
    let mut headers = HeaderMap::new();
    for line in text.lines().skip(1) {
        if let Some((name, value)) = line.split_once(':')
            && let Ok(name) = HeaderName::from_str(name)
        {
            headers.append(name, value.trim().replace(['\r', '\n'], " ").as_str());
        }
    }
    headers
}

/// The unreadable messages of streams read through named consumers that
/// this process dead-lettered and acknowledged: (stream, consumer, stream
/// sequence). Bounded: forgotten all at once past [`REMEMBERED`].
#[derive(Default)]
pub(crate) struct Quarantined(std::sync::Mutex<std::collections::HashSet<(String, String, u64)>>);

/// How many dead-lettered messages [`Quarantined`] remembers at most.
const REMEMBERED: usize = 10_000;

impl Quarantined {
    fn contains(&self, key: &(String, String, u64)) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).contains(key)
    }

    fn insert(&self, key: (String, String, u64)) {
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if set.len() >= REMEMBERED {
            set.clear();
        }
        set.insert(key);
    }
}

/// How an unreadable message leaves where it was found once its dead
/// letter is stored.
#[derive(Clone)]
enum Removal {
    /// Deleted from the route's own stream.
    Delete,
    /// Acknowledged on the named consumer of another's stream.
    Ack { consumer: String },
}

/// Where to look for unreadable messages: the stored messages of `stream`
/// from `from` up to `upto` (delivered at least once) on `subjects`.
struct Scope {
    stream: String,
    subjects: String,
    from: u64,
    upto: u64,
    removal: Removal,
}

/// The unreadable messages among those delivered at least once, in
/// `spec`'s stream and, after the receiving connection came back
/// (`reconnected`), in the streams it reads through named consumers, each
/// as a delivery to reject.
pub(crate) async fn scan(
    shared: &Arc<Shared>,
    spec: &QueueSpec,
    reconnected: bool,
) -> Result<Vec<Delivery>, BrokerError> {
    let queue: Arc<str> = spec.name.as_str().into();
    let mut found = Vec::new();
    if let Some(scope) = own_scope(shared, spec).await {
        found.extend(scan_scope(shared, &queue, scope).await?);
    }
    if !reconnected {
        return Ok(found);
    }
    for subscription in &spec.subscriptions {
        if let Some(consumer) = subscription.consumer_name()
            && let Some(scope) = consumer_scope(shared, subscription.stream(), consumer).await
        {
            found.extend(scan_scope(shared, &queue, scope).await?);
        }
    }
    Ok(found)
}

/// The route's own stream, up to the highest stream sequence any consumer
/// of the queue delivered: what lies above it was never delivered and may
/// still be read.
async fn own_scope(shared: &Arc<Shared>, spec: &QueueSpec) -> Option<Scope> {
    let name = naming::stream(&spec.name);
    let stream = shared.jetstream.get_stream(&name).await.ok()?;
    let mut delivered = 0;
    let consumers: Vec<String> = if spec.priority {
        (0..=MAX_PRIORITY as u8).map(naming::lane_consumer).collect()
    } else {
        vec![CONSUMER.to_owned()]
    };
    for consumer in consumers {
        if let Ok(info) = stream.consumer_info(&consumer).await {
            delivered = delivered.max(info.delivered.stream_sequence);
        }
    }
    // Sourced events keep their subjects in the route's stream.
    let sources = spec
        .subscriptions
        .iter()
        .any(|s| !s.is_core() && s.consumer_name().is_none());
    Some(Scope {
        stream: name,
        subjects: if sources {
            ">".to_owned()
        } else {
            naming::any_lane(&spec.name)
        },
        from: 1,
        upto: delivered,
        removal: Removal::Delete,
    })
}

/// What the consumer `consumer` of `stream` delivered and was not
/// acknowledged below its ack floor.
async fn consumer_scope(shared: &Arc<Shared>, stream: &str, consumer: &str) -> Option<Scope> {
    let info = shared
        .jetstream
        .get_stream_no_info(stream)
        .await
        .ok()?
        .consumer_info(consumer)
        .await
        .ok()?;
    let subjects = match info.config.filter_subject.as_str() {
        "" => ">".to_owned(),
        filter => filter.to_owned(),
    };
    Some(Scope {
        stream: stream.to_owned(),
        subjects,
        from: info.ack_floor.stream_sequence + 1,
        upto: info.delivered.stream_sequence,
        removal: Removal::Ack {
            consumer: consumer.to_owned(),
        },
    })
}

/// The unreadable messages in `scope`, as deliveries of `queue` to reject.
async fn scan_scope(
    shared: &Arc<Shared>,
    queue: &Arc<str>,
    scope: Scope,
) -> Result<Vec<Delivery>, BrokerError> {
    let failed = |e: &dyn std::fmt::Display| {
        BrokerError::new(
            BrokerErrorKind::Consume,
            format!("reading the stored messages of {} failed: {e}", scope.stream),
        )
    };
    // The context puts the API prefix (`$JS.API.`) in front.
    let subject = format!("STREAM.MSG.GET.{}", scope.stream);
    let mut found = Vec::new();
    let mut next = scope.from;
    for _ in 0..MAX_SCAN {
        if next > scope.upto {
            break;
        }
        let request = serde_json::json!({ "seq": next, "next_by_subj": scope.subjects });
        let response: Response<Got> = shared
            .jetstream
            .request(subject.clone(), &request)
            .await
            .map_err(|e| failed(&e))?;
        let stored = match response {
            Response::Ok(got) => got.message,
            Response::Err { error } if error.error_code().0 == NO_MESSAGE => break,
            Response::Err { error } => return Err(failed(&error)),
        };
        next = stored.seq + 1;
        if stored.seq > scope.upto {
            break;
        }
        let Some(block) = stored.hdrs.as_deref().map(|h| BASE64.decode(h)) else {
            continue;
        };
        let block = block.map_err(|e| failed(&e))?;
        if let Removal::Ack { consumer } = &scope.removal
            && shared
                .quarantined
                .contains(&(scope.stream.clone(), consumer.clone(), stored.seq))
        {
            continue;
        }
        if let Some(why) = unreadable(&block) {
            tracing::warn!(
                %queue,
                stream = %scope.stream,
                sequence = stored.seq,
                %why,
                "a stored message async-nats cannot read: dead-lettering it"
            );
            found.push(quarantined(shared, queue, &scope, stored, block, why)?);
        }
    }
    Ok(found)
}

fn quarantined(
    shared: &Arc<Shared>,
    queue: &Arc<str>,
    scope: &Scope,
    stored: Stored,
    block: Vec<u8>,
    why: String,
) -> Result<Delivery, BrokerError> {
    let body = match stored.data.as_deref() {
        Some(data) => BASE64.decode(data).map_err(|e| {
            BrokerError::new(
                BrokerErrorKind::Consume,
                format!("a stored body is not base64: {e}"),
            )
        })?,
        None => Vec::new(),
    };
    let headers = readable_part(&block);
    let message = convert::to_message(&stored.subject, Some(&headers), Bytes::from(body), None);
    let explanation = format!(
        "{why}: the client library cannot read this message's headers (the stored header block is \
         kept in {RAW_HEADERS}, base64)"
    );
    let acker = QuarantineAcker {
        shared: shared.clone(),
        queue: queue.clone(),
        stream: scope.stream.clone(),
        removal: scope.removal.clone(),
        sequence: stored.seq,
        raw: BASE64.encode(&block),
        headers,
        message: Arc::new(message),
    };
    Ok(Delivery::malformed(
        acker.message.clone(),
        1,
        Box::new(acker),
        explanation,
    ))
}

/// Settles a quarantined message: its dead letter, then the original's
/// removal (see [`Removal`]). Anything else leaves it where it is, to be
/// found again by the next scan.
struct QuarantineAcker {
    shared: Arc<Shared>,
    queue: Arc<str>,
    stream: String,
    removal: Removal,
    sequence: u64,
    /// The stored header block, base64.
    raw: String,
    /// The headers that could be read.
    headers: HeaderMap,
    message: Arc<Message>,
}

impl QuarantineAcker {
    async fn dead_letter(self, dead: Message) -> Result<(), BrokerError> {
        let mut changes = dead.wharf_headers();
        changes.push((RAW_HEADERS, self.raw.clone()));
        let mut headers = convert::copy_headers(Some(&self.headers), &changes);
        // One id per stored message, so that two workers finding it at
        // once store one dead letter (JetStream's duplicate window).
        let id = format!("wharf-quarantine-{}-{}", self.stream, self.sequence);
        convert::set(&mut headers, convert::MSG_ID, &id);
        let lane = self.message.priority.unwrap_or(0);
        let subject = naming::subject(&dead_letter_queue(&self.queue), lane);
        publish_confirmed(&self.shared, subject, headers, self.message.body.clone()).await?;
        if let Removal::Ack { consumer } = &self.removal {
            // The server finds a pending message by the stream sequence in
            // its ack subject (`$JS.ACK.<stream>.<consumer>.<delivered>.
            // <stream seq>.<consumer seq>.<time>.<pending>`); the consumer
            // sequence it takes from its own record.
            let ack = format!("$JS.ACK.{}.{consumer}.1.{}.0.0.0", self.stream, self.sequence);
            super::acker::ack(&self.shared, ack.into()).await?;
            let key = (self.stream.clone(), consumer.clone(), self.sequence);
            self.shared.quarantined.insert(key);
            return Ok(());
        }
        let deleted = self
            .shared
            .jetstream
            .get_stream_no_info(&self.stream)
            .await
            .map_err(|e| BrokerError::new(BrokerErrorKind::Consume, e.to_string()))?
            .delete_message(self.sequence)
            .await;
        match deleted {
            Ok(_) => Ok(()),
            // Another worker deleted it first.
            Err(e) if e.to_string().contains("no message found") => Ok(()),
            Err(e) => Err(BrokerError::new(
                BrokerErrorKind::Consume,
                format!(
                    "deleting the unreadable message {} of {}: {e}",
                    self.sequence, self.stream
                ),
            )),
        }
    }
}

impl Acker for QuarantineAcker {
    fn settle(self: Box<Self>, settlement: Settlement) -> BoxFuture<'static, Result<(), BrokerError>> {
        match settlement {
            Settlement::DeadLetter { message } => Box::pin(self.dead_letter(*message)),
            _ => succeeded(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_judged_as_async_nats_reads_them() {
        let readable: [&[u8]; 5] = [
            b"NATS/1.0\r\n\r\n",
            b"NATS/1.0\r\nidempotency-key: k\r\nsession-id: s\r\n\r\n",
            b"NATS/1.0 503\r\nfoo: bar\r\n\r\n",
            b"NATS/1.0 100 Idle Heartbeat\r\n\r\n",
            b"NATS/1.0\r\nlong: a\r\n  continued\r\n\r\n",
        ];
        for block in readable {
            assert_eq!(unreadable(block), None, "{:?}", String::from_utf8_lossy(block));
        }
        let unreadable_blocks: [&[u8]; 5] = [
            b"NATS/1.0\r\nx-junk: \xff\xfe\r\n\r\n",
            b"NATS/1.0\r\nnocolonline\r\n\r\n",
            b"NATS/1.0 abc\r\n\r\n",
            b"HTTP/1.1\r\n\r\n",
            b"NATS/1.0\r\nbad name: v\r\n\r\n",
        ];
        for block in unreadable_blocks {
            assert!(
                unreadable(block).is_some(),
                "{:?}",
                String::from_utf8_lossy(block)
            );
        }
    }

    #[test]
    fn the_readable_part_keeps_good_lines() {
        let headers =
            readable_part(b"NATS/1.0\r\nx-junk: \xff\xfe\r\nnocolon\r\nidempotency-key: k1\r\n\r\n");
        assert_eq!(headers.get_last("idempotency-key").unwrap().as_str(), "k1");
        assert_eq!(headers.get_last("x-junk").unwrap().as_str(), "\u{fffd}\u{fffd}");
        assert_eq!(headers.len(), 2);
    }
}
