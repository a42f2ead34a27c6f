//! The Lua scripts, one atomic step each, from `scripts/*.lua`. Each file
//! starts with what it takes (`KEYS`, `ARGV`) and returns; the session
//! scripts share the helpers of `session_prelude.lua` (`cmp` compares two
//! decimal strings as the numbers they spell, since a Lua number holds only
//! 53 bits; `touch` renews the session's hash and checkpoint; `begin` and
//! `finish` are a turn's start and end).

use ::redis::Script;
use std::sync::LazyLock;

/// A session script: the shared helpers, then `$file`.
macro_rules! session_script {
    ($file:literal) => {
        LazyLock::new(|| {
            Script::new(concat!(
                include_str!("scripts/session_prelude.lua"),
                include_str!($file)
            ))
        })
    };
}

/// KEYS: records (a batch). ARGV: per record, a fresh token and the lease
/// (ms). Returns per record {code, has reply, body, content type}: 0
/// acquired, 1 in progress, 2 done. (No `false` in replies: RESP3 would
/// turn it into a boolean.)
pub(super) static CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("scripts/claim.lua")));

/// KEYS: records (a batch). ARGV: per record, the window (ms), 1 or 0 (a
/// reply kept or not), reply body, content type. A record already done
/// keeps its first reply; any other (claimed by whoever, or gone) becomes
/// done (its claim token field stays). Returns per record 1 or 0.
pub(super) static COMPLETE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/complete.lua")));

/// KEYS: record. ARGV: token. Deletes the record only if this token still
/// holds the claim.
pub(super) static RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/release.lua")));

/// KEYS: record. ARGV: token, lease (ms). Extends the claim only if this
/// token still holds it; returns 1 if it did.
pub(super) static RENEW_CLAIM: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/renew_claim.lua")));

/// KEYS: lease. ARGV: sequence, lease (ms). Extends the session's lease
/// only if it is still held for this number; returns 1 if it was.
pub(super) static RENEW_TURN: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/session_renew.lua")));

/// KEYS: per session (a batch), its hash, lease, checkpoint and hold keys.
/// ARGV: per session, the sequence number, lease (ms), session TTL (ms).
/// Returns per session {code, next}: 0 run, 1 early, 2 stale, 3 skipped, 4
/// busy (the session is then held for the number for the lease).
pub(super) static BEGIN: LazyLock<Script> = session_script!("scripts/session_begin.lua");

/// KEYS: per session (a batch), its hash, lease, checkpoint and hold keys.
/// ARGV: per session, the sequence number, sequence + 1 (empty for an
/// abort), session TTL (ms), changes channel, session name, hold (ms,
/// aborts). Returns per session 1 (0: unknown session). Publishes the session's name when its lease ended or
/// it moved and another worker may wait for it (a number of it was ever
/// reported early, or it is held).
pub(super) static END: LazyLock<Script> = session_script!("scripts/session_end.lua");

/// KEYS: per session (a batch), its hash, lease, checkpoint and hold keys.
/// ARGV: per session, the number finished, the next number, its lease
/// (ms), session TTL (ms), changes channel, session name. Finishes the
/// number and asks for the next one's turn, as `END` then `BEGIN` would;
/// returns per session {code, next} as `BEGIN`.
pub(super) static PASS: LazyLock<Script> = session_script!("scripts/session_pass.lua");

/// KEYS: session, lease, checkpoint, hold. ARGV: from, to, session TTL
/// (ms), gaps remembered, changes channel, session name. Returns 1 if the
/// session moved (and publishes its name).
pub(super) static SKIP: LazyLock<Script> = session_script!("scripts/session_skip.lua");

/// KEYS: session, lease, checkpoint. ARGV: checkpoint, session TTL (ms).
/// Like any other write, it keeps the session alive (and starts it).
pub(super) static SET_STATE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/set_session_state.lua")));
