//! The store's batched operations (`batch.rs`): what one call of each
//! carries and how a batch of them is sent, as one call of its script.

use super::batch::{Batcher, Run};
use super::failed;
use super::scripts::{BEGIN, CLAIM, COMPLETE, END, PASS};
use ::redis::aio::ConnectionManager;
use ::redis::{FromRedisValue, Script, ScriptInvocation};
use bytes::Bytes;

/// A claim: the record's key, a fresh token, the lease (ms).
pub(super) struct ClaimCall {
    pub(super) key: String,
    pub(super) token: u64,
    pub(super) lease_ms: u64,
}

/// What `claim.lua` answers for one record: code, has reply, body, type.
pub(super) type ClaimAnswer = (u8, u8, Bytes, String);

/// A completion: the record's key, the window (ms), the reply kept.
pub(super) struct CompleteCall {
    pub(super) key: String,
    pub(super) window_ms: u64,
    pub(super) reply: Option<(Bytes, String)>,
}

/// A session's turn asked for: its keys, the number, lease and TTL (ms).
pub(super) struct BeginCall {
    pub(super) keys: [String; 4],
    pub(super) sequence: u64,
    pub(super) lease_ms: u64,
    pub(super) ttl_ms: u64,
}

/// What `session_begin.lua` answers for one session: code, next.
pub(super) type BeginAnswer = (u8, u64);

/// A turn ended: finished (`after` is the next number) or aborted (`after`
/// is `None`, held for `hold_ms`).
pub(super) struct EndCall {
    pub(super) keys: [String; 4],
    pub(super) sequence: u64,
    pub(super) after: Option<u64>,
    pub(super) ttl_ms: u64,
    pub(super) channel: String,
    pub(super) session: String,
    pub(super) hold_ms: u64,
}

/// A number finished and the next one's turn asked for.
pub(super) struct PassCall {
    pub(super) keys: [String; 4],
    pub(super) sequence: u64,
    pub(super) following: u64,
    pub(super) lease_ms: u64,
    pub(super) ttl_ms: u64,
    pub(super) channel: String,
    pub(super) session: String,
}

/// The batched operations of one store.
pub(super) struct Batches {
    pub(super) claims: Batcher<ClaimCall, ClaimAnswer>,
    pub(super) completions: Batcher<CompleteCall, i64>,
    pub(super) begins: Batcher<BeginCall, BeginAnswer>,
    pub(super) ends: Batcher<EndCall, i64>,
    pub(super) passes: Batcher<PassCall, BeginAnswer>,
}

impl Batches {
    pub(super) fn new(con: &ConnectionManager) -> Self {
        Batches {
            claims: Batcher::new(
                "claim",
                runner(con, &CLAIM, "claim", |invocation, call: &ClaimCall| {
                    invocation.key(&call.key).arg(call.token).arg(call.lease_ms);
                }),
            ),
            completions: Batcher::new(
                "complete",
                runner(con, &COMPLETE, "complete", |invocation, call: &CompleteCall| {
                    invocation.key(&call.key).arg(call.window_ms);
                    match &call.reply {
                        Some((body, content_type)) => invocation.arg(1).arg(&body[..]).arg(content_type),
                        None => invocation.arg(0).arg("").arg(""),
                    };
                }),
            ),
            begins: Batcher::new(
                "session begin",
                runner(con, &BEGIN, "session begin", |invocation, call: &BeginCall| {
                    invocation
                        .key(&call.keys[..])
                        .arg(call.sequence)
                        .arg(call.lease_ms)
                        .arg(call.ttl_ms);
                }),
            ),
            ends: Batcher::new(
                "session end",
                runner(con, &END, "session end", |invocation, call: &EndCall| {
                    let after = call.after.map(|n| n.to_string()).unwrap_or_default();
                    invocation
                        .key(&call.keys[..])
                        .arg(call.sequence)
                        .arg(after)
                        .arg(call.ttl_ms)
                        .arg(&call.channel)
                        .arg(&call.session)
                        .arg(call.hold_ms);
                }),
            ),
            passes: Batcher::new(
                "session pass",
                runner(con, &PASS, "session pass", |invocation, call: &PassCall| {
                    invocation
                        .key(&call.keys[..])
                        .arg(call.sequence)
                        .arg(call.following)
                        .arg(call.lease_ms)
                        .arg(call.ttl_ms)
                        .arg(&call.channel)
                        .arg(&call.session);
                }),
            ),
        }
    }
}

/// Sends a batch as one call of `script`, each call adding its keys and
/// arguments with `add`; the script answers with one entry per call.
fn runner<Req, Resp>(
    con: &ConnectionManager,
    script: &'static Script,
    operation: &'static str,
    add: fn(&mut ScriptInvocation<'static>, &Req),
) -> Run<Req, Resp>
where
    Req: Send + 'static,
    Resp: FromRedisValue + Send + 'static,
{
    let con = con.clone();
    Box::new(move |calls: Vec<Req>| {
        let mut con = con.clone();
        let mut invocation = script.prepare_invoke();
        for call in &calls {
            add(&mut invocation, call);
        }
        Box::pin(async move {
            invocation
                .invoke_async::<Vec<Resp>>(&mut con)
                .await
                .map_err(|e| failed(operation, e))
        })
    })
}
