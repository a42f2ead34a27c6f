//! A received JetStream message as a delivery, and its delivery count read
//! from the ack subject: shared by the consumer, the hand-back and the
//! queue inspection (`fetch`).

use super::acker::{NatsAcker, Source};
use super::convert;
use crate::transport::Delivery;
use crate::wire::attempt_header;
use crate::wire::headers::names;
use std::sync::Arc;

/// A received JetStream message as a delivery. Its count is the attempts
/// a copy carries plus JetStream's deliveries of this message (`delivered`,
/// read from its ack subject: [`AckPrefix::delivered`]). A consumer's
/// delivery takes a place in its window here, which its acker frees when
/// it is dropped, and is kept alive ([`keepalive`](super::keepalive))
/// until then: `held` is its key if it is held already (it waited in a
/// lane).
pub(crate) fn delivery(
    source: &Arc<Source>,
    mut message: async_nats::Message,
    delivered: Option<u64>,
    held: Option<usize>,
) -> Delivery {
    let delivered = delivered
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
        .unwrap_or(1)
        .max(1);
    let held = held.or_else(|| source.hold(&message));
    let headers = message.headers.take();
    let wharf = convert::to_message(message.subject.as_str(), headers.as_ref(), message.payload, None);
    // A malformed count is not a count: the delivery counts only what
    // JetStream counted, and the pipeline rejects it.
    let (attempts, malformed) = match attempt_header::carried(wharf.header(names::ATTEMPT)) {
        Ok(attempts) => (attempts, None),
        Err(why) => (0, Some(why)),
    };
    let ack_subject = message.reply.unwrap_or_else(|| "".into());
    if let Some(window) = &source.window {
        window.acquire();
    }
    let delivery = NatsAcker {
        source: source.clone(),
        ack_subject,
        headers,
        message: Arc::new(wharf),
        count: attempts.saturating_add(delivered),
        settled: false,
        held,
    }
    .delivery();
    match malformed {
        Some(why) => delivery.with_malformed(why),
        None => delivery,
    }
}

/// The delivery count in a JetStream ack subject (ADR-15):
/// `$JS.ACK.<stream>.<consumer>.<delivered>.…` (7 tokens after the prefix,
/// older servers) or `$JS.ACK.<domain>.<account hash>.<stream>.<consumer>.
/// <delivered>.…` (9 or more). Only that token is parsed:
/// `jetstream::Message::info` also parses the sequences and the timestamp,
/// about 2,000 instructions per message, a quarter of wharf's own cost on
/// this path.
pub(crate) fn delivered_count(ack_subject: &str) -> Option<u64> {
    delivered_at(ack_subject).map(|(_, count)| count)
}

/// [`delivered_count`] and where its token starts in `ack_subject`.
fn delivered_at(ack_subject: &str) -> Option<(usize, u64)> {
    const PREFIX: &str = "$JS.ACK.";
    let rest = ack_subject.strip_prefix(PREFIX)?.as_bytes();
    // Where the first five tokens start, and how many tokens there are: a
    // plain byte loop (the subject is short; `split('.')` searched for each
    // dot with memchr, about 450 instructions per message).
    let mut starts = [0usize; 5];
    let mut count = 1;
    for (at, byte) in rest.iter().enumerate() {
        if *byte == b'.' {
            if let Some(start) = starts.get_mut(count) {
                *start = at + 1;
            }
            count += 1;
        }
    }
    let index = match count {
        7 => 2,
        9.. => 4,
        _ => return None,
    };
    Some((
        PREFIX.len() + starts[index],
        leading_number(&rest[starts[index]..])?,
    ))
}

/// The number in the token `rest` starts with.
fn leading_number(rest: &[u8]) -> Option<u64> {
    let token = &rest[..rest.iter().position(|b| *b == b'.').unwrap_or(rest.len())];
    std::str::from_utf8(token).ok()?.parse().ok()
}

/// What a consumer's ack subjects hold before the delivery count
/// (`$JS.ACK.<stream>.<consumer>.`, or with the domain and account hash
/// first), learnt from the last message. A message whose ack subject starts
/// the same way has its count read right after it: finding the count's
/// token took about 500 instructions per message, comparing the start
/// about 20.
#[derive(Default)]
pub(crate) struct AckPrefix(String);

impl AckPrefix {
    /// The delivery count in `ack_subject` ([`delivered_count`]).
    pub(crate) fn delivered(&mut self, ack_subject: Option<&str>) -> Option<u64> {
        let ack_subject = ack_subject?;
        if !self.0.is_empty()
            && let Some(rest) = ack_subject.strip_prefix(self.0.as_str())
            && let Some(count) = leading_number(rest.as_bytes())
        {
            // Past the prefix the remaining tokens are not counted: a
            // subject cut short after the count still reads (servers send
            // none).
            return Some(count);
        }
        let (at, count) = delivered_at(ack_subject)?;
        self.0.clear();
        self.0.push_str(&ack_subject[..at]);
        Some(count)
    }
}

#[cfg(test)]
mod tests {
    use super::{AckPrefix, delivered_count};

    #[test]
    fn the_ack_prefix_reads_counts_as_the_full_parse_does() {
        let subjects = [
            "$JS.ACK.WORK.wharf.3.17.12.1733350000000000000.0",
            "$JS.ACK.WORK.wharf.1.18.13.1733350000000000001.5",
            "$JS.ACK.WORK.wharf.12.19.14.1733350000000000002.4",
            // Another lane's consumer of the same stream.
            "$JS.ACK.WORK.wharf-p9.2.20.1.1733350000000000003.0",
            "$JS.ACK.WORK.wharf.7.21.15.1733350000000000004.0",
            // Domain and account hash first, as newer servers send.
            "$JS.ACK._.ACCHASH.WORK.wharf.5.17.12.1733350000000000000.0",
            "$JS.ACK._.ACCHASH.WORK.wharf.6.18.13.1733350000000000000.0.RANDOM",
            "$JS.ACK.WORK.wharf.4.22.16.1733350000000000005.0",
            // Not ack subjects, or no count where it belongs.
            "$JS.ACK.WORK.wharf.x.17.12.1.0",
            "$JS.ACK.WORK.wharf..17.12.1.0",
            "_INBOX.abc.3",
            "$JS.ACK.WORK.wharf.8.23.17.1733350000000000006.0",
        ];
        let mut prefix = AckPrefix::default();
        for subject in subjects {
            assert_eq!(
                prefix.delivered(Some(subject)),
                delivered_count(subject),
                "{subject}"
            );
        }
        assert_eq!(
            prefix.0, "$JS.ACK.WORK.wharf.",
            "learnt from the last good subject"
        );
        assert_eq!(prefix.delivered(None), None);
        // The one difference: what follows the count is not checked.
        assert_eq!(delivered_count("$JS.ACK.WORK.wharf.3"), None);
        assert_eq!(prefix.delivered(Some("$JS.ACK.WORK.wharf.3")), Some(3));
    }

    #[test]
    fn the_delivery_count_comes_from_either_ack_subject_format() {
        // nats-server 2.9 sends the 7-token form; newer ones may add the
        // domain, the account hash and a trailing random token.
        assert_eq!(
            delivered_count("$JS.ACK.WORK.wharf.3.17.12.1733350000000000000.0"),
            Some(3)
        );
        assert_eq!(
            delivered_count("$JS.ACK._.ACCHASH.WORK.wharf.5.17.12.1733350000000000000.0"),
            Some(5)
        );
        assert_eq!(
            delivered_count("$JS.ACK.hub.ACCHASH.WORK.wharf.2.17.12.1733350000000000000.0.RANDOM"),
            Some(2)
        );
        assert_eq!(delivered_count("$JS.ACK.WORK.wharf.x.17.12.1.0"), None);
        assert_eq!(delivered_count("$JS.ACK.WORK.wharf.3"), None);
        assert_eq!(delivered_count("_INBOX.abc.3"), None);
        assert_eq!(delivered_count("$JS.ACK.WORK.wharf..17.12.1.0"), None, "empty");
        assert_eq!(
            delivered_count("$JS.ACK.WORK.wharf.18446744073709551615.17.12.1.0"),
            Some(u64::MAX)
        );
        assert_eq!(
            delivered_count("$JS.ACK.WORK.wharf.18446744073709551616.17.12.1.0"),
            None,
            "past u64::MAX"
        );
    }
}
