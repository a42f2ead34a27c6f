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
//! TLS (`rediss://`) runs on rustls with the ring crypto provider, which is
//! installed as the process's default provider unless the program chose
//! one. The server's certificate is checked against the system's trust
//! store, or against the CA certificates given to
//! [`RedisStore::connect_with_ca`].

use super::{
    Claim, ClaimToken, REMEMBERED_GAPS, SessionPosition, SessionTurn, Store, StoredReply, fresh_token,
};
use crate::error::{BrokerError, BrokerErrorKind};
use crate::redact::redact;
use crate::transport::BoxFuture;
use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{RedisError, Script};
use bytes::Bytes;
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

/// How long an idle session's state is kept before it is forgotten.
const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The key prefix unless [`RedisStore::with_prefix`] sets another.
const DEFAULT_PREFIX: &str = "wharf:";

/// One attempt to open a connection gives up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A command whose reply has not come after this long fails.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Further attempts after a failed connection attempt (with a growing
/// delay of 100 ms, 200 ms, 400 ms plus jitter), at start and when the
/// connection is lost.
const CONNECT_RETRIES: usize = 3;

/// The longest expiry sent (about 35,000 years): Redis rejects expiry times
/// that overflow its clock.
const MAX_MILLIS: u64 = 1 << 50;

/// Lua helpers the session scripts share. `cmp` compares two decimal
/// strings without leading zeros as the numbers they spell (a Lua number
/// holds only 53 bits); `touch` renews the session's hash and checkpoint.
macro_rules! session_script {
    ($body:literal) => {
        concat!(
            r#"
local function cmp(a, b)
  if #a ~= #b then
    if #a < #b then return -1 end
    return 1
  end
  for i = 1, #a do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then
      if x < y then return -1 end
      return 1
    end
  end
  return 0
end
local function touch(ttl)
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[3], ttl)
end
"#,
            $body
        )
    };
}

/// KEYS: record. ARGV: fresh token, lease (ms).
/// Returns {code, has reply, body, content type}: 0 acquired, 1 in progress,
/// 2 done. (No `false` in replies: RESP3 would turn it into a boolean.)
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local r = redis.call('HMGET', KEYS[1], 'state', 'body', 'type')
if r[1] == 'done' then
  if r[2] then return {2, 1, r[2], r[3] or ''} end
  return {2, 0, '', ''}
end
if r[1] then return {1, 0, '', ''} end
redis.call('HSET', KEYS[1], 'state', 'claimed', 'token', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {0, 0, '', ''}
"#,
    )
});

/// KEYS: record. ARGV: window (ms) [, reply body, content type].
/// A record already done keeps its first reply; any other (claimed by
/// whoever, or gone) becomes done.
static COMPLETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HGET', KEYS[1], 'state') == 'done' then return 0 end
redis.call('DEL', KEYS[1])
if #ARGV >= 3 then
  redis.call('HSET', KEYS[1], 'state', 'done', 'body', ARGV[2], 'type', ARGV[3])
else
  redis.call('HSET', KEYS[1], 'state', 'done')
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"#,
    )
});

/// KEYS: record. ARGV: token. Deletes the record only if this token still
/// holds the claim.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local r = redis.call('HMGET', KEYS[1], 'state', 'token')
if r[1] == 'claimed' and r[2] == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#,
    )
});

/// KEYS: record. ARGV: token, lease (ms). Extends the claim only if this
/// token still holds it; returns 1 if it did.
static RENEW_CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local r = redis.call('HMGET', KEYS[1], 'state', 'token')
if r[1] == 'claimed' and r[2] == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#,
    )
});

/// KEYS: lease. ARGV: sequence, lease (ms). Extends the session's lease
/// only if it is still held for this number; returns 1 if it was.
static RENEW_TURN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#,
    )
});

/// KEYS: session, lease, checkpoint, hold. ARGV: sequence, lease (ms), session TTL (ms).
/// Returns {code, next}: 0 run, 1 early, 2 stale, 3 skipped, 4 busy (the
/// session is then held for the number for the lease).
static BEGIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(session_script!(
        r#"
local seq = ARGV[1]
local nxt = redis.call('HGET', KEYS[1], 'next')
if not nxt then
  nxt = '1'
  redis.call('HSET', KEYS[1], 'next', nxt)
end
touch(ARGV[3])
local c = cmp(seq, nxt)
if c < 0 then
  local gaps = redis.call('HGET', KEYS[1], 'gaps')
  if gaps then
    for from, to in string.gmatch(gaps, '(%d+)-(%d+)') do
      if cmp(from, seq) <= 0 and cmp(seq, to) < 0 then return {3, nxt} end
    end
  end
  return {2, nxt}
end
if c > 0 then
  local early = redis.call('HGET', KEYS[1], 'early')
  if not early or cmp(early, nxt) <= 0 or cmp(seq, early) < 0 then
    redis.call('HSET', KEYS[1], 'early', seq)
  end
  local latest = redis.call('HGET', KEYS[1], 'latest')
  if not latest or cmp(latest, nxt) <= 0 or cmp(seq, latest) > 0 then
    redis.call('HSET', KEYS[1], 'latest', seq)
  end
  return {1, nxt}
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  if redis.call('PTTL', KEYS[4]) < tonumber(ARGV[2]) then
    redis.call('SET', KEYS[4], seq, 'PX', ARGV[2])
  end
  return {4, nxt}
end
redis.call('SET', KEYS[2], seq, 'PX', ARGV[2])
redis.call('DEL', KEYS[4])
return {0, nxt}
"#
    ))
});

/// KEYS: session, lease, checkpoint, hold. ARGV: sequence, sequence + 1
/// (empty for an abort), session TTL (ms), changes channel, session name,
/// hold (ms, aborts). Publishes the session's name when its lease ended or
/// it moved.
static END: LazyLock<Script> = LazyLock::new(|| {
    Script::new(session_script!(
        r#"
local changed = false
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
  changed = true
end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local waits_for_it = (redis.call('HGET', KEYS[1], 'next') or '1') == ARGV[1]
if ARGV[2] ~= '' then
  if waits_for_it then
    redis.call('HSET', KEYS[1], 'next', ARGV[2])
    changed = true
  end
  if redis.call('GET', KEYS[4]) == ARGV[1] then redis.call('DEL', KEYS[4]) end
elseif waits_for_it and tonumber(ARGV[6]) > 0 and redis.call('PTTL', KEYS[4]) < tonumber(ARGV[6]) then
  redis.call('SET', KEYS[4], ARGV[1], 'PX', ARGV[6])
end
touch(ARGV[3])
if changed then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return 1
"#
    ))
});

/// KEYS: session, lease, checkpoint, hold. ARGV: from, to, session TTL
/// (ms), gaps remembered, changes channel, session name. Returns 1 if the
/// session moved (and publishes its name).
static SKIP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(session_script!(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if (redis.call('HGET', KEYS[1], 'next') or '1') ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'next', ARGV[2])
if cmp(ARGV[1], ARGV[2]) < 0 then
  local gaps = {}
  local old = redis.call('HGET', KEYS[1], 'gaps')
  if old then
    for gap in string.gmatch(old, '[^,]+') do gaps[#gaps + 1] = gap end
  end
  gaps[#gaps + 1] = ARGV[1] .. '-' .. ARGV[2]
  local first = math.max(1, #gaps - tonumber(ARGV[4]) + 1)
  redis.call('HSET', KEYS[1], 'gaps', table.concat(gaps, ',', first))
end
touch(ARGV[3])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
"#
    ))
});

/// KEYS: session, lease, checkpoint. ARGV: checkpoint, session TTL (ms).
/// Like any other write, it keeps the session alive (and starts it).
static SET_STATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
redis.call('HSETNX', KEYS[1], 'next', '1')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"#,
    )
});

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
    /// Connects to the Redis server at `url`:
    /// `redis://[user:password@]host[:port][/db]`, or `rediss://…` for TLS,
    /// with the server's certificate checked against the system's trust
    /// store (a server certified by a private CA needs
    /// [`connect_with_ca`](Self::connect_with_ca)).
    ///
    /// Fails within a few seconds when the server cannot be reached; once
    /// connected, a lost connection is re-established by itself.
    pub async fn connect(url: &str) -> Result<RedisStore, BrokerError> {
        let client = ::redis::Client::open(url).map_err(|e| invalid_url(url, e))?;
        RedisStore::open(url, client).await
    }

    /// Connects over TLS to the `rediss://` server at `url`, trusting the
    /// certificate authorities in `ca_pem` (one or more PEM certificates,
    /// the contents of a `ca.crt`) instead of the system's trust store: for
    /// a server whose certificate a private CA signed. The server's name or
    /// IP address in `url` must be one its certificate names.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use wharf::store::RedisStore;
    ///
    /// let ca = std::fs::read("/etc/wharf/store-ca/ca.crt")?;
    /// let store = RedisStore::connect_with_ca("rediss://redis.jobs.svc:6380", &ca).await?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_with_ca(url: &str, ca_pem: &[u8]) -> Result<RedisStore, BrokerError> {
        if !url.starts_with("rediss://") {
            return Err(BrokerError::new(
                BrokerErrorKind::Config,
                format!(
                    "a CA certificate applies to TLS: use a rediss:// URL, not {}",
                    redact(url)
                ),
            ));
        }
        // Text without a certificate would parse as an empty list of CAs,
        // and every connection would fail with an unknown issuer instead.
        if !String::from_utf8_lossy(ca_pem).contains("-----BEGIN CERTIFICATE-----") {
            return Err(BrokerError::new(
                BrokerErrorKind::Config,
                "the Redis CA certificate holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            ));
        }
        let certificates = ::redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca_pem.to_vec()),
        };
        let client = ::redis::Client::build_with_tls(url, certificates).map_err(|e| {
            if e.kind() == ::redis::ErrorKind::Io {
                // The PEM did not parse (the URL did, or it would say so).
                BrokerError::new(
                    BrokerErrorKind::Config,
                    "the Redis CA certificate is not a PEM certificate",
                )
                .with_source(e)
            } else {
                invalid_url(url, e)
            }
        })?;
        RedisStore::open(url, client).await
    }

    async fn open(url: &str, client: ::redis::Client) -> Result<RedisStore, BrokerError> {
        if url.starts_with("rediss://") {
            use_ring_unless_chosen();
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(CONNECT_RETRIES)
            .set_max_delay(Duration::from_secs(1));
        let con = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(|e| {
                // A TLS-only port drops a plain-text client without a word.
                let hint =
                    if url.starts_with("redis://") && e.is_connection_dropped() && !e.is_connection_refusal()
                    {
                        " (the server closed the connection: if it expects TLS, use rediss://)"
                    } else {
                        ""
                    };
                BrokerError::new(
                    BrokerErrorKind::Connection,
                    format!("cannot connect to Redis at {}{hint}", redact(url)),
                )
                .with_source(e)
            })?;
        Ok(RedisStore {
            client,
            changes: Mutex::new(None),
            con,
            prefix: DEFAULT_PREFIX.to_owned(),
            session_ttl: DEFAULT_SESSION_TTL,
        })
    }

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

    fn record_key(&self, key: &str) -> String {
        format!("{}k:{key}", self.prefix)
    }

    /// The session's hash, lease and checkpoint keys, in the order the
    /// scripts take them.
    fn session_keys(&self, session: &str) -> [String; 4] {
        let tag = hash_tag(session);
        let prefix = &self.prefix;
        [
            format!("{prefix}s:{{{tag}}}"),
            format!("{prefix}l:{{{tag}}}"),
            format!("{prefix}st:{{{tag}}}"),
            format!("{prefix}h:{{{tag}}}"),
        ]
    }

    fn con(&self) -> ConnectionManager {
        self.con.clone()
    }

    /// The pub/sub channel announcing session changes.
    fn changes_channel(&self) -> String {
        format!("{}changes", self.prefix)
    }
}

/// The listener of the changes channel, shared by every route of the
/// process.
struct Changes {
    sender: broadcast::Sender<Arc<str>>,
    /// Cleared by the listener when it ends (nobody listens any more, or
    /// its runtime went away).
    alive: Arc<AtomicBool>,
}

/// Relays session names from the changes channel to `sender` until nobody
/// listens. Reconnects after a failure; since names may have been missed
/// meanwhile, it then sends an empty name: anything may have changed.
async fn relay_changes(
    client: ::redis::Client,
    channel: String,
    sender: broadcast::Sender<Arc<str>>,
    alive: Arc<AtomicBool>,
) {
    struct Ended(Arc<AtomicBool>);
    impl Drop for Ended {
        fn drop(&mut self) {
            self.0.store(false, Ordering::Release);
        }
    }
    let _ended = Ended(alive);
    let mut delay = Duration::from_millis(100);
    let mut first = true;
    while sender.receiver_count() > 0 {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, RedisError>(pubsub)
        };
        let pubsub = match tokio::time::timeout(CONNECT_TIMEOUT, subscribed).await {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(error)) => {
                tracing::warn!(%error, "session changes: cannot subscribe; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                continue;
            }
            Err(_) => {
                tracing::warn!("session changes: subscribing timed out; retrying");
                continue;
            }
        };
        delay = Duration::from_millis(100);
        if !first {
            let _ = sender.send(Arc::from(""));
        }
        first = false;
        let mut messages = pubsub.into_on_message();
        loop {
            let message = tokio::select! {
                message = futures_util::StreamExt::next(&mut messages) => message,
                () = tokio::time::sleep(Duration::from_secs(5)) => {
                    if sender.receiver_count() == 0 {
                        return;
                    }
                    continue;
                }
            };
            let Some(message) = message else { break };
            if let Ok(session) = message.get_payload::<String>()
                && sender.send(Arc::from(session)).is_err()
            {
                return;
            }
        }
    }
}

fn invalid_url(url: &str, error: RedisError) -> BrokerError {
    BrokerError::new(
        BrokerErrorKind::Config,
        format!("invalid Redis URL {}", redact(url)),
    )
    .with_source(error)
}

/// Makes ring the process's rustls crypto provider unless one was chosen:
/// the redis crate builds its TLS configuration from the process default,
/// and rustls cannot pick one by itself when a program's dependencies
/// enable more than one (it panics).
fn use_ring_unless_chosen() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine: a provider is set.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// `session` as the inside of a hash tag: never empty, no `}`, one-to-one.
fn hash_tag(session: &str) -> Cow<'_, str> {
    if session.is_empty() {
        return Cow::Borrowed("%");
    }
    if !session.contains(['%', '}']) {
        return Cow::Borrowed(session);
    }
    Cow::Owned(session.replace('%', "%25").replace('}', "%7D"))
}

/// `duration` in whole milliseconds for `PX`/`PEXPIRE`: rounded up, at least
/// 1 (Redis rejects 0), at most [`MAX_MILLIS`].
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos().div_ceil(1_000_000))
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_MILLIS)
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
            let (code, has_reply, body, content_type): (u8, u8, Bytes, String) = CLAIM
                .key(key)
                .arg(token.0.to_string())
                .arg(millis(lease))
                .invoke_async(&mut self.con())
                .await
                .map_err(|e| failed("claim", e))?;
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
        let key = self.record_key(key);
        Box::pin(async move {
            let mut invocation = COMPLETE.key(key);
            invocation.arg(millis(ttl));
            if let Some(reply) = &reply {
                invocation.arg(&reply.body[..]).arg(&*reply.content_type);
            }
            let _: i64 = invocation
                .invoke_async(&mut self.con())
                .await
                .map_err(|e| failed("complete", e))?;
            Ok(())
        })
    }

    fn release(&self, key: &str, token: ClaimToken) -> BoxFuture<'_, Result<(), BrokerError>> {
        let key = self.record_key(key);
        Box::pin(async move {
            let _: i64 = RELEASE
                .key(key)
                .arg(token.0.to_string())
                .invoke_async(&mut self.con())
                .await
                .map_err(|e| failed("release", e))?;
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
            let renewed: i64 = RENEW_CLAIM
                .key(key)
                .arg(token.0.to_string())
                .arg(millis(lease))
                .invoke_async(&mut self.con())
                .await
                .map_err(|e| failed("claim renewal", e))?;
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
            let renewed: i64 = RENEW_TURN
                .key(lease_key)
                .arg(sequence.to_string())
                .arg(millis(lease))
                .invoke_async(&mut self.con())
                .await
                .map_err(|e| failed("session lease renewal", e))?;
            Ok(renewed == 1)
        })
    }

    fn session_begin(
        &self,
        session: &str,
        sequence: u64,
        lease: Duration,
    ) -> BoxFuture<'_, Result<SessionTurn, BrokerError>> {
        let keys = self.session_keys(session);
        Box::pin(async move {
            let (code, next): (u8, u64) = BEGIN
                .key(&keys[..])
                .arg(sequence.to_string())
                .arg(millis(lease))
                .arg(millis(self.session_ttl))
                .invoke_async(&mut self.con())
                .await
                .map_err(|e| failed("session begin", e))?;
            match code {
                0 => Ok(SessionTurn::Run),
                1 => Ok(SessionTurn::Early { next }),
                2 => Ok(SessionTurn::Stale { next }),
                3 => Ok(SessionTurn::Skipped { next }),
                4 => Ok(SessionTurn::Busy),
                other => Err(unexpected("session begin", (other, next))),
            }
        })
    }

    fn session_finish(&self, session: &str, sequence: u64) -> BoxFuture<'_, Result<(), BrokerError>> {
        let keys = self.session_keys(session);
        let session = session.to_owned();
        Box::pin(async move {
            let _: i64 = END
                .key(&keys[..])
                .arg(sequence.to_string())
                .arg(sequence.saturating_add(1).to_string())
                .arg(millis(self.session_ttl))
                .arg(self.changes_channel())
                .arg(&session)
                .invoke_async(&mut self.con())
                .await
                .map_err(|e| failed("session finish", e))?;
            Ok(())
        })
    }

    fn session_abort(
        &self,
        session: &str,
        sequence: u64,
        hold: Duration,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        let keys = self.session_keys(session);
        let session = session.to_owned();
        Box::pin(async move {
            let _: i64 = END
                .key(&keys[..])
                .arg(sequence.to_string())
                .arg("")
                .arg(millis(self.session_ttl))
                .arg(self.changes_channel())
                .arg(&session)
                .arg(if hold.is_zero() { 0 } else { millis(hold) })
                .invoke_async(&mut self.con())
                .await
                .map_err(|e| failed("session abort", e))?;
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
            let moved: i64 = SKIP
                .key(&keys[..])
                .arg(from.to_string())
                .arg(to.to_string())
                .arg(millis(self.session_ttl))
                .arg(REMEMBERED_GAPS)
                .arg(self.changes_channel())
                .arg(&session)
                .invoke_async(&mut self.con())
                .await
                .map_err(|e| failed("session skip", e))?;
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
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let mut changes = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(changes) = changes
            .as_ref()
            .filter(|c| c.alive.load(Ordering::Acquire) && c.sender.receiver_count() > 0)
        {
            return Some(changes.sender.subscribe());
        }
        let (sender, receiver) = broadcast::channel(4096);
        let alive = Arc::new(AtomicBool::new(true));
        runtime.spawn(relay_changes(
            self.client.clone(),
            self.changes_channel(),
            sender.clone(),
            alive.clone(),
        ));
        *changes = Some(Changes { sender, alive });
        Some(receiver)
    }

    fn set_session_state(&self, session: &str, value: Bytes) -> BoxFuture<'_, Result<(), BrokerError>> {
        let keys = self.session_keys(session);
        Box::pin(async move {
            let _: i64 = SET_STATE
                .key(&keys[..])
                .arg(&value[..])
                .arg(millis(self.session_ttl))
                .invoke_async(&mut self.con())
                .await
                .map_err(|e| failed("set session state", e))?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Instant, SystemTime, UNIX_EPOCH};

    const URL: &str = "redis://127.0.0.1:6379";

    /// Session TTL in tests: what a failed run leaves behind expires soon.
    const TEST_SESSION_TTL: Duration = Duration::from_secs(600);

    /// `<pid>-<nanos>`: no other run, here or in another process, has it.
    fn unique() -> String {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
        format!("{}-{nanos:x}", std::process::id())
    }

    /// A store under a prefix of its own, or `None` (a loud skip) when Redis
    /// cannot be reached and `CI` is not `true`.
    async fn store_or_skip(test: &str, prefix: &str) -> Option<RedisStore> {
        match RedisStore::connect(URL).await {
            Ok(store) => Some(store.with_prefix(prefix).with_session_ttl(TEST_SESSION_TTL)),
            Err(error) => {
                crate::test_support::skip(test, &format!("Redis is unreachable at {URL} ({error})"));
                None
            }
        }
    }

    /// `text` with the glob characters of `SCAN MATCH` escaped.
    fn glob_escape(text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
        out
    }

    /// Deletes every key under `prefix`; returns how many there were.
    async fn delete_prefix(store: &RedisStore, prefix: &str) -> usize {
        let mut con = store.con();
        let pattern = format!("{}*", glob_escape(prefix));
        let mut cursor = 0u64;
        let mut deleted = 0;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = ::redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut con)
                .await
                .unwrap();
            if !keys.is_empty() {
                let _: i64 = ::redis::cmd("DEL")
                    .arg(&keys)
                    .query_async(&mut con)
                    .await
                    .unwrap();
                deleted += keys.len();
            }
            if next == 0 {
                return deleted;
            }
            cursor = next;
        }
    }

    /// Runs `test` against a store with a prefix no other run uses (the
    /// prefix is passed on, for a second connection), then deletes the keys
    /// under it whether it passed or not. Skips (loudly) without Redis.
    async fn with_store<F>(name: &str, test: impl FnOnce(Arc<RedisStore>, String) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let prefix = format!("wharf-test:{}:", unique());
        let Some(store) = store_or_skip(name, &prefix).await else {
            return;
        };
        let store = Arc::new(store);
        let outcome = tokio::spawn(test(store.clone(), prefix.clone())).await;
        delete_prefix(&store, &prefix).await;
        if let Err(error) = outcome {
            std::panic::resume_unwind(error.into_panic());
        }
        assert_eq!(delete_prefix(&store, &prefix).await, 0, "nothing left behind");
    }

    /// A second store on its own connection, over the same keys.
    async fn another_connection(prefix: &str) -> RedisStore {
        RedisStore::connect(URL)
            .await
            .unwrap()
            .with_prefix(prefix)
            .with_session_ttl(TEST_SESSION_TTL)
    }

    #[tokio::test]
    async fn conforms() {
        with_store("store::redis::conforms", |store, prefix| async move {
            crate::store::conformance::all(&*store, &prefix).await;
        })
        .await;
    }

    #[tokio::test]
    async fn session_changes_reach_other_connections() {
        with_store(
            "store::redis::session_changes_reach_other_connections",
            |writer, prefix| async move {
                let listener = another_connection(&prefix).await;
                crate::store::conformance::announces_session_changes(&*writer, &listener, "q").await;
            },
        )
        .await;
    }

    #[tokio::test]
    async fn state_is_shared_between_connections() {
        with_store(
            "store::redis::state_is_shared_between_connections",
            |first, prefix| async move {
                let second = another_connection(&prefix).await;
                let lease = Duration::from_secs(30);
                let Claim::Acquired(token) = first.claim("q/job", lease).await.unwrap() else {
                    panic!("a new key is acquired")
                };
                assert_eq!(second.claim("q/job", lease).await.unwrap(), Claim::InProgress);
                second.release("q/job", ClaimToken(token.0 ^ 1)).await.unwrap();
                assert_eq!(
                    second.claim("q/job", lease).await.unwrap(),
                    Claim::InProgress,
                    "another token releases nothing"
                );
                let reply = StoredReply {
                    body: Bytes::from_static(b"\x00\xffok"),
                    content_type: "application/octet-stream".into(),
                };
                first
                    .complete("q/job", token, Some(reply.clone()), Duration::from_secs(60))
                    .await
                    .unwrap();
                assert_eq!(
                    second.claim("q/job", lease).await.unwrap(),
                    Claim::Done(Some(reply))
                );

                assert_eq!(
                    first.session_begin("q/s", 1, lease).await.unwrap(),
                    SessionTurn::Run
                );
                assert_eq!(
                    second.session_begin("q/s", 1, lease).await.unwrap(),
                    SessionTurn::Busy
                );
                first.session_finish("q/s", 1).await.unwrap();
                assert_eq!(
                    second.session_position("q/s").await.unwrap(),
                    SessionPosition {
                        next: 2,
                        early: None,
                        latest: None
                    }
                );
            },
        )
        .await;
    }

    #[tokio::test]
    async fn numbers_beyond_lua_precision_stay_exact() {
        with_store(
            "store::redis::numbers_beyond_lua_precision_stay_exact",
            |store, _| async move {
                let lease = Duration::from_secs(30);
                // 2^53 + 1 is the first integer a Lua number cannot hold.
                let big = (1u64 << 53) + 1;
                assert_eq!(
                    store.session_begin("q/s", 1, lease).await.unwrap(),
                    SessionTurn::Run
                );
                store.session_abort("q/s", 1, Duration::ZERO).await.unwrap();
                assert!(store.session_skip("q/s", 1, big).await.unwrap());
                assert_eq!(
                    store.session_begin("q/s", big - 1, lease).await.unwrap(),
                    SessionTurn::Skipped { next: big }
                );
                assert_eq!(
                    store.session_begin("q/s", big + 1, lease).await.unwrap(),
                    SessionTurn::Early { next: big }
                );
                assert_eq!(
                    store.session_begin("q/s", big, lease).await.unwrap(),
                    SessionTurn::Run
                );
                store.session_finish("q/s", big).await.unwrap();
                assert_eq!(
                    store.session_position("q/s").await.unwrap(),
                    SessionPosition {
                        next: big + 1,
                        early: None,
                        latest: None
                    }
                );
                assert!(store.session_skip("q/s", big + 1, u64::MAX).await.unwrap());
                assert_eq!(
                    store.session_begin("q/s", u64::MAX - 1, lease).await.unwrap(),
                    SessionTurn::Skipped { next: u64::MAX }
                );
                assert_eq!(
                    store.session_begin("q/s", u64::MAX, lease).await.unwrap(),
                    SessionTurn::Run
                );
                store.session_finish("q/s", u64::MAX).await.unwrap();
                assert_eq!(store.session_position("q/s").await.unwrap().next, u64::MAX);
            },
        )
        .await;
    }

    #[tokio::test]
    async fn only_the_last_gaps_are_remembered() {
        with_store(
            "store::redis::only_the_last_gaps_are_remembered",
            |store, _| async move {
                let lease = Duration::from_secs(30);
                assert_eq!(
                    store.session_begin("q/s", 1, lease).await.unwrap(),
                    SessionTurn::Run
                );
                store.session_finish("q/s", 1).await.unwrap();
                // Gaps 2..3, 4..5, …: one more than remembered.
                for i in 0..=REMEMBERED_GAPS as u64 {
                    let from = 2 + 2 * i;
                    assert!(store.session_skip("q/s", from, from + 1).await.unwrap());
                    assert_eq!(
                        store.session_begin("q/s", from + 1, lease).await.unwrap(),
                        SessionTurn::Run
                    );
                    store.session_finish("q/s", from + 1).await.unwrap();
                }
                let next = store.session_position("q/s").await.unwrap().next;
                assert_eq!(
                    store.session_begin("q/s", 2, lease).await.unwrap(),
                    SessionTurn::Stale { next },
                    "the oldest gap is forgotten"
                );
                assert_eq!(
                    store.session_begin("q/s", 4, lease).await.unwrap(),
                    SessionTurn::Skipped { next }
                );
            },
        )
        .await;
    }

    #[tokio::test]
    async fn a_lost_connection_is_reestablished() {
        with_store(
            "store::redis::a_lost_connection_is_reestablished",
            |store, _| async move {
                let id: i64 = ::redis::cmd("CLIENT")
                    .arg("ID")
                    .query_async(&mut store.con())
                    .await
                    .unwrap();
                let killer = RedisStore::connect(URL).await.unwrap();
                let killed: i64 = ::redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("ID")
                    .arg(id)
                    .query_async(&mut killer.con())
                    .await
                    .unwrap();
                assert_eq!(killed, 1);
                let started = Instant::now();
                // The first command may see the dead connection; a later one
                // runs on the new connection.
                let claim = loop {
                    match store.claim("q/after-kill", Duration::from_secs(30)).await {
                        Ok(claim) => break claim,
                        Err(error) => {
                            assert!(error.is_connection(), "{error}");
                            assert!(
                                started.elapsed() < Duration::from_secs(10),
                                "still failing: {error}"
                            );
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                };
                assert!(matches!(claim, Claim::Acquired(_)), "{claim:?}");
            },
        )
        .await;
    }

    #[tokio::test]
    async fn an_unreachable_server_fails_quickly_without_the_password() {
        let started = Instant::now();
        let result = tokio::time::timeout(
            Duration::from_secs(10),
            RedisStore::connect("redis://user:hunter2@127.0.0.1:1"),
        )
        .await
        .expect("connecting to a closed port does not hang");
        let elapsed = started.elapsed();
        let error = result.expect_err("nothing listens on port 1");
        assert_eq!(error.kind(), BrokerErrorKind::Connection);
        assert!(error.is_connection());
        let shown = format!("{error} {error:?}");
        assert!(shown.contains("127.0.0.1:1"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");

        let error = RedisStore::connect("http://:hunter2@127.0.0.1:6379")
            .await
            .unwrap_err();
        assert_eq!(error.kind(), BrokerErrorKind::Config);
        assert!(!format!("{error} {error:?}").contains("hunter2"), "{error}");
    }

    #[test]
    fn a_session_id_is_kept_whole_inside_its_hash_tag() {
        assert_eq!(hash_tag("q/s"), "q/s");
        assert_eq!(hash_tag(""), "%");
        assert_eq!(hash_tag("a}b%7D{c"), "a%7Db%257D{c");
        assert_ne!(hash_tag("a}"), hash_tag("a%7D"));
        assert_ne!(hash_tag("%"), hash_tag(""));
    }

    #[test]
    fn expiries_are_rounded_up_to_whole_milliseconds() {
        assert_eq!(millis(Duration::ZERO), 1);
        assert_eq!(millis(Duration::from_micros(1)), 1);
        assert_eq!(millis(Duration::from_micros(1500)), 2);
        assert_eq!(millis(Duration::from_millis(300)), 300);
        assert_eq!(millis(Duration::MAX), MAX_MILLIS);
    }
}
