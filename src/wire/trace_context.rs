//! W3C Trace Context (`traceparent`) carried through messages, so that a
//! trace follows a request through workers: read from a message's
//! `traceparent` header, recorded on the message's span, and written, with
//! this handling as the parent, to its reply and to the messages its
//! handler publishes.
//!
//! Only propagated: a message without a (valid) `traceparent` starts no
//! trace, and its replies and published messages carry none.

/// The header name (lower case, as wharf reads headers).
pub(crate) const TRACEPARENT: &str = "traceparent";
/// Vendor trace state, passed on unchanged with a `traceparent`.
pub(crate) const TRACESTATE: &str = "tracestate";

/// One hop of a trace: the trace, the span that caused this message (or,
/// for [`child`](TraceContext::child), this handling), and the flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TraceContext {
    pub(crate) trace_id: u128,
    pub(crate) span_id: u64,
    pub(crate) flags: u8,
    pub(crate) state: Option<String>,
}

impl TraceContext {
    /// The context a message carries, if its `traceparent` is valid
    /// (version `00` exactly; a later version is read by its first four
    /// fields, as the specification asks).
    pub(crate) fn of(message: &crate::wire::message::Message) -> Option<Self> {
        let header = message.header(TRACEPARENT)?;
        let mut context = parse(header)?;
        context.state = message.header(TRACESTATE).map(str::to_owned);
        Some(context)
    }

    /// The same trace with a new span: this handling, the parent of what it
    /// sends.
    pub(crate) fn child(&self) -> Self {
        TraceContext {
            span_id: new_span_id(),
            ..self.clone()
        }
    }

    /// The `traceparent` value naming this context's span as the parent.
    pub(crate) fn header(&self) -> String {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }

    /// Writes `traceparent` (and `tracestate`) onto an outgoing message,
    /// unless the handler set its own.
    pub(crate) fn stamp(&self, message: &mut crate::wire::message::Message) {
        if message.header(TRACEPARENT).is_some() {
            return;
        }
        message.headers.insert(TRACEPARENT, self.header());
        if let Some(state) = &self.state {
            message.headers.insert(TRACESTATE, state.as_str());
        }
    }
}

fn parse(header: &str) -> Option<TraceContext> {
    let header = header.trim();
    let mut fields = header.split('-');
    let version = fields.next()?;
    let trace = fields.next()?;
    let span = fields.next()?;
    let flags = fields.next()?;
    let rest = fields.next();
    let lower_hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !lower_hex(version, 2) || version == "ff" || (version == "00" && rest.is_some()) {
        return None;
    }
    if !lower_hex(trace, 32) || !lower_hex(span, 16) || !lower_hex(flags, 2) {
        return None;
    }
    let trace_id = u128::from_str_radix(trace, 16).ok()?;
    let span_id = u64::from_str_radix(span, 16).ok()?;
    // All-zero ids are invalid.
    if trace_id == 0 || span_id == 0 {
        return None;
    }
    Some(TraceContext {
        trace_id,
        span_id,
        flags: u8::from_str_radix(flags, 16).ok()?,
        state: None,
    })
}

/// A span id of its own for a handling: 64 random bits, never zero
/// (`src/util/ids.rs`).
fn new_span_id() -> u64 {
    crate::util::ids::span_id()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::message::Message;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_read_and_handed_on_with_a_new_parent() {
        let message = Message::new("x")
            .with_header(TRACEPARENT, VALID)
            .with_header(TRACESTATE, "vendor=1");
        let received = TraceContext::of(&message).expect("valid");
        assert_eq!(received.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(received.span_id, 0x00f067aa0ba902b7);
        assert_eq!(received.flags, 1);
        let handling = received.child();
        assert_eq!(handling.trace_id, received.trace_id, "same trace");
        assert_ne!(handling.span_id, received.span_id, "a span of its own");
        let mut out = Message::new("y");
        handling.stamp(&mut out);
        let header = out.header(TRACEPARENT).unwrap();
        assert!(
            header.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{header}"
        );
        assert!(header.ends_with("-01"));
        assert_eq!(parse(header).unwrap().span_id, handling.span_id);
        assert_eq!(out.header(TRACESTATE), Some("vendor=1"));
    }

    #[test]
    fn invalid_traceparents_start_nothing() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let message = Message::new("x").with_header(TRACEPARENT, bad);
            assert_eq!(TraceContext::of(&message), None, "{bad:?}");
        }
        // A later version may add fields; its first four are read.
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
        assert!(TraceContext::of(&Message::new("x").with_header(TRACEPARENT, future)).is_some());
    }

    #[test]
    fn a_handler_s_own_traceparent_is_kept() {
        let handling = parse(VALID).unwrap().child();
        let mine = "00-11111111111111111111111111111111-2222222222222222-00";
        let mut out = Message::new("y").with_header(TRACEPARENT, mine);
        handling.stamp(&mut out);
        assert_eq!(out.header(TRACEPARENT), Some(mine));
    }

    #[test]
    fn span_ids_differ() {
        let ids: std::collections::HashSet<u64> = (0..10_000).map(|_| new_span_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(!ids.contains(&0));
    }
}
