//! A store shared by workers in several processes: idempotency records and
//! session state in Redis.
//!
//! Every [`Store`] method is one atomic step on the server: a single command
//! or a Lua script (sent as `EVALSHA`, loaded on a `NOSCRIPT` reply). Leases
//! and idempotency windows are key expiries (`PX`/`PEXPIRE`), so the claim of
//! a worker that crashed runs out on the server by itself.
//!
//! Sequence numbers and claim tokens are `u64`, more than a Lua number holds
//! exactly: the scripts keep them as decimal strings and compare them as
//! such, and `sequence + 1` is computed here.
//!
//! Key layout (`P` is the prefix, `wharf:` unless set):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `Pk:<key>` | hash, expires | idempotency record: `state` (`claimed`/`done`), `token`, `body`, `type` |
//! | `Ps:{<session>}` | hash, session TTL | `next`, `early` and `latest` (lowest and highest early numbers), `gaps` (`from-to,…`, newest last) |
//! | `Pl:{<session>}` | string, expires | the session lease: the sequence number being handled |
//! | `Pst:{<session>}` | string, session TTL | the handler's checkpoint |
//! | `Ph:{<session>}` | string, expires | the session is held for this number (a retry or a busy number is coming back): no gap policy may move it |
//!
//! The session id between the braces is a Redis hash tag, so that the three
//! keys of one session share a cluster slot; `%` and `}` in it are written
//! `%25` and `%7D` (and an empty id as `%`) so that the tag is never cut short.
//!
//! Claims, completions and session turns made at the same time go to the
//! server together, as one script call over a list of keys (`batch.rs`),
//! each still its own atomic step. That needs one server holding every
//! key: Redis Cluster (keys spread over nodes) is not supported; one
//! server (or the primary of a replicated pair, at one address) is.
//!
//! TLS (`rediss://`) runs on rustls with the ring crypto provider, which is
//! installed as the process's default provider unless the program chose
//! one. The server's certificate is checked against the system's trust
//! store, or against the CA certificates given to
//! [`RedisStore::connect_with_ca`].

mod batch;
mod batches;
mod changes;
mod connect;
mod keys;
mod scripts;
#[cfg(test)]
mod tests;

use self::batches::{Batches, BeginCall, ClaimCall, CompleteCall, EndCall, PassCall};
use self::changes::Changes;
use self::keys::millis;
use self::scripts::{RELEASE, RENEW_CLAIM, RENEW_TURN, SET_STATE, SKIP};
use super::{
    Claim, ClaimToken, REMEMBERED_GAPS, SessionPosition, SessionTurn, Store, StoredReply, fresh_token,
};
use crate::error::{BrokerError, BrokerErrorKind};
use crate::util::future::BoxFuture;
use ::redis::aio::ConnectionManager;
use ::redis::{FromRedisValue, RedisError, Script, ToRedisArgs};
use bytes::Bytes;
use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

/// How long an idle session's state is kept before it is forgotten.
const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The key prefix unless [`RedisStore::with_prefix`] sets another.
const DEFAULT_PREFIX: &str = "wharf:";

/// Idempotency and session state in Redis, shared by every worker that
/// connects to the same server with the same prefix.
///
/// Needs a Tokio runtime. The connection is multiplexed and re-established
/// by itself when it is lost; an operation that fails meanwhile returns a
/// [`BrokerError`] whose [`is_connection`](BrokerError::is_connection) holds.
///
/// ```no_run
/// # async fn run() -> Result<(), wharf::BrokerError> {
/// use std::time::Duration;
/// use wharf::store::RedisStore;
///
/// let store = RedisStore::connect("redis://127.0.0.1:6379")
///     .await?
///     .with_prefix("orders:")
///     .with_session_ttl(Duration::from_secs(24 * 3600));
/// # let _ = store;
/// # Ok(())
/// # }
/// ```
pub struct RedisStore {
    client: ::redis::Client,
    con: ConnectionManager,
    /// Claims, completions and session begins and ends, sent in batches.
    batches: Batches,
    /// Sessions changed, from the changes channel, while anyone listens.
    changes: Mutex<Option<Changes>>,
    prefix: String,
    session_ttl: Duration,
}

impl std::fmt::Debug for RedisStore {
    // The connection's own Debug shows its connection info, password included.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("session_ttl", &self.session_ttl)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Puts every key under `prefix` (default `wharf:`), so that several
    /// applications can share one database. It should not contain `{` or
    /// `}`, which would move the hash tag that keeps a session's keys in one
    /// cluster slot.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Forgets sessions idle for longer than `ttl` (default 7 days): every
    /// write to a session renews its expiry.
    pub fn with_session_ttl(mut self, ttl: Duration) -> Self {
        self.session_ttl = ttl;
        self
    }

    fn con(&self) -> ConnectionManager {
        self.con.clone()
    }

    /// Runs `script` with `keys` and `args` (each a value or a tuple of
    /// them, in the order the script takes them); a failure names
    /// `operation`.
    async fn eval<T: FromRedisValue>(
        &self,
        operation: &str,
        script: &Script,
        keys: impl ToRedisArgs,
        args: impl ToRedisArgs,
    ) -> Result<T, BrokerError> {
        script
            .key(keys)
            .arg(args)
            .invoke_async(&mut self.con())
            .await
            .map_err(|e| failed(operation, e))
    }
}

impl RedisStore {
    fn end_call(&self, session: &str, sequence: u64, after: Option<u64>, hold_ms: u64) -> EndCall {
        EndCall {
            keys: self.session_keys(session),
            sequence,
            after,
            ttl_ms: millis(self.session_ttl),
            channel: self.changes_channel(),
            session: session.to_owned(),
            hold_ms,
        }
    }
}

/// A session turn as the begin script codes it.
fn turn(code: u8, next: u64) -> Result<SessionTurn, BrokerError> {
    match code {
        0 => Ok(SessionTurn::Run),
        1 => Ok(SessionTurn::Early { next }),
        2 => Ok(SessionTurn::Stale { next }),
        3 => Ok(SessionTurn::Skipped { next }),
        4 => Ok(SessionTurn::Busy),
        other => Err(unexpected("session begin", (other, next))),
    }
}

fn failed(operation: &str, error: RedisError) -> BrokerError {
    let kind = if error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
    {
        BrokerErrorKind::Connection
    } else {
        BrokerErrorKind::Store
    };
    BrokerError::new(kind, format!("Redis store: {operation} failed")).with_source(error)
}

fn unexpected(operation: &str, reply: impl std::fmt::Debug) -> BrokerError {
    BrokerError::new(
        BrokerErrorKind::Store,
        format!("Redis store: {operation} got an unexpected reply {reply:?}"),
    )
}

impl Store for RedisStore {
    fn claim(&self, key: &str, lease: Duration) -> BoxFuture<'_, Result<Claim, BrokerError>> {
        let key = self.record_key(key);
        Box::pin(async move {
            let token = fresh_token();
            let call = ClaimCall {
                key,
                token: token.0,
                lease_ms: millis(lease),
            };
            let (code, has_reply, body, content_type) = self.batches.claims.call(call).await?;
            match (code, has_reply) {
                (0, _) => Ok(Claim::Acquired(token)),
                (1, _) => Ok(Claim::InProgress),
                (2, 0) => Ok(Claim::Done(None)),
                (2, _) => Ok(Claim::Done(Some(StoredReply {
                    body,
                    content_type: Cow::Owned(content_type),
                }))),
                other => Err(unexpected("claim", other)),
            }
        })
    }

    fn complete(
        &self,
        key: &str,
        token: ClaimToken,
        reply: Option<StoredReply>,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        // Like the in-memory store, the token is not checked: a handler that
        // ran after its lease was taken over did run, and its result counts.
        let _ = token;
        let call = CompleteCall {
            key: self.record_key(key),
            window_ms: millis(ttl),
            reply: reply.map(|r| (r.body, r.content_type.into_owned())),
        };
        Box::pin(async move {
            self.batches.completions.call(call).await?;
            Ok(())
        })
    }

    fn release(&self, key: &str, token: ClaimToken) -> BoxFuture<'_, Result<(), BrokerError>> {
        let key = self.record_key(key);
        Box::pin(async move {
            let _: i64 = self.eval("release", &RELEASE, key, token.0.to_string()).await?;
            Ok(())
        })
    }

    fn renew_claim(
        &self,
        key: &str,
        token: ClaimToken,
        lease: Duration,
    ) -> BoxFuture<'_, Result<bool, BrokerError>> {
        let key = self.record_key(key);
        Box::pin(async move {
            let args = (token.0.to_string(), millis(lease));
            let renewed: i64 = self.eval("claim renewal", &RENEW_CLAIM, key, args).await?;
            Ok(renewed == 1)
        })
    }

    fn session_renew(
        &self,
        session: &str,
        sequence: u64,
        lease: Duration,
    ) -> BoxFuture<'_, Result<bool, BrokerError>> {
        let [_, lease_key, ..] = self.session_keys(session);
        Box::pin(async move {
            let args = (sequence.to_string(), millis(lease));
            let renewed: i64 = self
                .eval("session lease renewal", &RENEW_TURN, lease_key, args)
                .await?;
            Ok(renewed == 1)
        })
    }

    fn session_begin(
        &self,
        session: &str,
        sequence: u64,
        lease: Duration,
    ) -> BoxFuture<'_, Result<SessionTurn, BrokerError>> {
        let call = BeginCall {
            keys: self.session_keys(session),
            sequence,
            lease_ms: millis(lease),
            ttl_ms: millis(self.session_ttl),
        };
        Box::pin(async move {
            let (code, next) = self.batches.begins.call(call).await?;
            turn(code, next)
        })
    }

    fn session_finish_and_begin(
        &self,
        session: &str,
        sequence: u64,
        lease: Duration,
    ) -> BoxFuture<'_, Result<Option<SessionTurn>, BrokerError>> {
        let Some(following) = sequence.checked_add(1) else {
            let finish = self.session_finish(session, sequence);
            return Box::pin(async move { finish.await.map(|()| None) });
        };
        let call = PassCall {
            keys: self.session_keys(session),
            sequence,
            following,
            lease_ms: millis(lease),
            ttl_ms: millis(self.session_ttl),
            channel: self.changes_channel(),
            session: session.to_owned(),
        };
        Box::pin(async move {
            let (code, next) = self.batches.passes.call(call).await?;
            turn(code, next).map(Some)
        })
    }

    fn session_finish(&self, session: &str, sequence: u64) -> BoxFuture<'_, Result<(), BrokerError>> {
        let call = self.end_call(session, sequence, Some(sequence.saturating_add(1)), 0);
        Box::pin(async move {
            self.batches.ends.call(call).await?;
            Ok(())
        })
    }

    fn session_abort(
        &self,
        session: &str,
        sequence: u64,
        hold: Duration,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        let hold = if hold.is_zero() { 0 } else { millis(hold) };
        let call = self.end_call(session, sequence, None, hold);
        Box::pin(async move {
            self.batches.ends.call(call).await?;
            Ok(())
        })
    }

    fn session_position(&self, session: &str) -> BoxFuture<'_, Result<SessionPosition, BrokerError>> {
        let [hash, ..] = self.session_keys(session);
        Box::pin(async move {
            let (next, early, latest): (Option<u64>, Option<u64>, Option<u64>) = ::redis::cmd("HMGET")
                .arg(hash)
                .arg("next")
                .arg("early")
                .arg("latest")
                .query_async(&mut self.con())
                .await
                .map_err(|e| failed("session position", e))?;
            let next = next.unwrap_or(1);
            Ok(SessionPosition {
                next,
                early: early.filter(|&early| early > next),
                latest: latest.filter(|&latest| latest > next),
            })
        })
    }

    fn session_skip(&self, session: &str, from: u64, to: u64) -> BoxFuture<'_, Result<bool, BrokerError>> {
        let keys = self.session_keys(session);
        let session = session.to_owned();
        Box::pin(async move {
            let args = (
                from.to_string(),
                to.to_string(),
                millis(self.session_ttl),
                REMEMBERED_GAPS,
                self.changes_channel(),
                &session,
            );
            let moved: i64 = self.eval("session skip", &SKIP, &keys[..], args).await?;
            Ok(moved == 1)
        })
    }

    fn session_state(&self, session: &str) -> BoxFuture<'_, Result<Option<Bytes>, BrokerError>> {
        let [_, _, state, _] = self.session_keys(session);
        Box::pin(async move {
            ::redis::cmd("GET")
                .arg(state)
                .query_async(&mut self.con())
                .await
                .map_err(|e| failed("session state", e))
        })
    }

    fn session_changes(&self) -> Option<broadcast::Receiver<Arc<str>>> {
        self.subscribe_changes()
    }

    fn set_session_state(&self, session: &str, value: Bytes) -> BoxFuture<'_, Result<(), BrokerError>> {
        let keys = self.session_keys(session);
        Box::pin(async move {
            let args = (&value[..], millis(self.session_ttl));
            let _: i64 = self
                .eval("set session state", &SET_STATE, &keys[..], args)
                .await?;
            Ok(())
        })
    }
}
