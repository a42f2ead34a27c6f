//! The NATS JetStream key-value store ([`NatsKvStore`]), behind the `nats`
//! feature: buckets, keys, values, atomicity and clocks are described there.

use super::{
    Claim, ClaimToken, REMEMBERED_GAPS, SessionPosition, SessionTurn, Store, StoredReply, fresh_token,
};
use crate::error::{BrokerError, BrokerErrorKind};
use crate::timestamp::unix_millis as now_ms;
use crate::transport::BoxFuture;
use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::OnceCell;

/// The bucket prefix used unless [`NatsKvStore::with_bucket_prefix`] sets
/// another.
pub const DEFAULT_BUCKET_PREFIX: &str = "wharf";
/// The longest KV key (after encoding, with its `k.`, `s.` or `st.` prefix)
/// the store accepts; a longer key is an error. NATS limits the line that
/// carries a key's subject to 4 KiB.
pub const MAX_KV_KEY_LEN: usize = 2048;
const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often an operation starts again after concurrent writes before it
/// gives up.
const MAX_TRIES: usize = 64;
/// How long a connection attempt may take before `connect` fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest bucket prefix accepted.
const MAX_PREFIX_LEN: usize = 64;

/// Idempotency and session state in NATS JetStream key-value buckets, shared
/// by every worker that uses the same server (or cluster) and bucket prefix.
///
/// The buckets are created (or their `max_age` adjusted) on first use, or
/// up front with [`ensure_buckets`](NatsKvStore::ensure_buckets).
///
/// Leases and windows end by the workers' wall clocks: keep them in sync
/// (NTP) and keep leases much longer than the skew between them.
///
/// Limits: an idempotency window longer than
/// [`with_max_idempotency_window`](NatsKvStore::with_max_idempotency_window)
/// (default 7 days) is cut to it, with a warning logged once; a session
/// idle for longer than the session TTL is forgotten, as in
/// [`MemoryStore`](super::MemoryStore); keys longer than [`MAX_KV_KEY_LEN`]
/// once encoded are refused; a stored reply or checkpoint must fit the
/// server's `max_payload` (1 MiB by default).
///
/// A write whose acknowledgement is lost (the server or the connection
/// failed mid-way) is reported as an error although it may have been
/// applied: a claim or session turn taken that way stays taken until its
/// lease ends, as if its worker had crashed.
///
/// # Layout
///
/// | bucket | holds | history | `max_age` |
/// |---|---|---|---|
/// | `<prefix>_idempotency` | `k.<enc(key)>`: an idempotency record | 1 | the longest idempotency window (default 7 days) |
/// | `<prefix>_sessions` | `s.<enc(session)>`: a session's turn bookkeeping; `st.<enc(session)>`: its checkpoint | 1 | the session TTL (default 7 days) |
///
/// `enc` keeps ASCII letters, digits, `_`, `-` and `/` and writes every other
/// byte of the key's UTF-8 as `=XX` (upper-case hex), `=` and `.` included,
/// so different keys never share a KV key and no encoded key holds a `.`;
/// the empty key is `=`. An encoded KV key may be at most
/// [`MAX_KV_KEY_LEN`] bytes long.
///
/// Records are MessagePack: an idempotency record is `until_ms` (unix
/// milliseconds) and either the claim token or the stored reply; a session
/// record is `next`, the lease (sequence number, `until_ms`), the lowest
/// early number and up to [`REMEMBERED_GAPS`](super::REMEMBERED_GAPS) gaps. A
/// checkpoint is stored as the handler's bytes, in its own key so that
/// writing it never conflicts with turn bookkeeping.
///
/// # Atomicity
///
/// Every operation that changes a record reads its key with its revision,
/// decides, and writes with the revision it read as the expected last
/// revision (`0`: no message for the key). When another worker wrote in between, the write is refused
/// and the operation starts again from the read, up to 64 times. A deleted
/// or purged key (a tombstone) counts as absent and is overwritten at the
/// tombstone's revision. Operations that change nothing write nothing
/// (a [`SessionTurn::Stale`] or [`SessionTurn::Busy`] answer is one read).
/// A checkpoint is replaced with a plain put: the last one written wins.
///
/// # Expiry and clocks
///
/// nats-server 2.9 has no per-key TTL, so the end of a lease or of an
/// idempotency window is stored in the record as wall-clock unix
/// milliseconds, and a record past it counts as absent (and is taken over
/// with a write at its revision). The bucket's `max_age` removes records
/// nobody touches any more. Every worker compares its own clock with the
/// times other workers wrote: **keep the workers' clocks in sync (NTP), and
/// keep leases much longer than the clock skew**; a worker whose clock runs
/// ahead takes over leases early.
///
/// ```no_run
/// # async fn run() -> Result<(), wharf::BrokerError> {
/// use std::time::Duration;
/// use wharf::store::NatsKvStore;
///
/// let broker = wharf::Broker::connect("nats://127.0.0.1:4222").await?;
/// let store = NatsKvStore::connect("nats://127.0.0.1:4222")
///     .await?
///     .with_bucket_prefix("billing")
///     .with_session_ttl(Duration::from_secs(3 * 24 * 3600));
/// store.ensure_buckets().await?;
/// let app = wharf::App::new(broker).store(store);
/// # let _ = app;
/// # Ok(())
/// # }
/// ```
pub struct NatsKvStore {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    prefix: String,
    session_ttl: Duration,
    max_window: Duration,
    buckets: OnceCell<Buckets>,
    warned_window: AtomicBool,
    /// Session changes heard on the sessions bucket, while anyone listens.
    changes: std::sync::Mutex<Option<tokio::sync::broadcast::Sender<std::sync::Arc<str>>>>,
}

struct Buckets {
    keys: kv::Store,
    sessions: kv::Store,
}

impl std::fmt::Debug for NatsKvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsKvStore")
            .field("prefix", &self.prefix)
            .field("session_ttl", &self.session_ttl)
            .field("max_window", &self.max_window)
            .finish_non_exhaustive()
    }
}

impl NatsKvStore {
    /// Connects to NATS at `url`, written as for the transport (see
    /// `docs/nats.md`): `nats://` or `tls://`, with `user:password@` or
    /// `token@` (percent-encoded where needed), or several servers
    /// separated by commas. The credentials are never printed. The
    /// connection reconnects by itself; it fails within about 5 seconds
    /// when the server cannot be reached.
    pub async fn connect(url: &str) -> Result<NatsKvStore, BrokerError> {
        let (options, servers) = crate::nats::connect_options::NatsUrl::parse(url)?.into_parts();
        let client = options
            .name("wharf-store")
            .connection_timeout(CONNECT_TIMEOUT)
            .max_reconnects(None)
            .connect(servers)
            .await
            .map_err(|e| {
                BrokerError::new(
                    BrokerErrorKind::Connection,
                    format!("cannot connect to NATS at {}", crate::redact::redact(url)),
                )
                .with_source(e)
            })?;
        Ok(NatsKvStore::new(client))
    }

    /// A store over an existing connection (JetStream's default API prefix).
    pub fn new(client: async_nats::Client) -> NatsKvStore {
        let jetstream = jetstream::new(client.clone());
        NatsKvStore::from_jetstream(jetstream)
    }

    /// A store over an existing JetStream context (for a JetStream domain or
    /// API prefix).
    pub fn from_jetstream(jetstream: jetstream::Context) -> NatsKvStore {
        NatsKvStore {
            client: jetstream.client(),
            jetstream,
            prefix: DEFAULT_BUCKET_PREFIX.to_owned(),
            session_ttl: WEEK,
            max_window: WEEK,
            buckets: OnceCell::new(),
            changes: std::sync::Mutex::new(None),
            warned_window: AtomicBool::new(false),
        }
    }

    /// Names the buckets `<prefix>_idempotency` and `<prefix>_sessions`
    /// (default prefix `wharf`). The prefix may hold ASCII letters, digits,
    /// `_` and `-`, at most 64 of them; an invalid prefix fails the first
    /// operation with a configuration error.
    pub fn with_bucket_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self.buckets = OnceCell::new();
        self
    }

    /// Forgets sessions (and checkpoints) idle for longer than `ttl`
    /// (default 7 days): the sessions bucket's `max_age`. A record is kept
    /// alive by writes, and by reads once it is older than half of `ttl`.
    /// Zero keeps them for ever.
    pub fn with_session_ttl(mut self, ttl: Duration) -> Self {
        self.session_ttl = ttl;
        self.buckets = OnceCell::new();
        self
    }

    /// The longest idempotency window (and claim lease) the store keeps
    /// (default 7 days): the idempotency bucket's `max_age`. A route asking
    /// for a longer window gets this one, and a warning is logged once.
    /// Zero keeps records for ever (until the window in each has passed and
    /// the key is claimed again) and cuts nothing.
    pub fn with_max_idempotency_window(mut self, window: Duration) -> Self {
        self.max_window = window;
        self.buckets = OnceCell::new();
        self
    }

    /// Creates the buckets if they are missing, and sets their `max_age` if
    /// it differs from this store's settings; other settings of an existing
    /// bucket (replicas, storage, placement) are kept. Operations do this on
    /// first use; calling it at startup reports a problem early.
    pub async fn ensure_buckets(&self) -> Result<(), BrokerError> {
        self.buckets().await.map(|_| ())
    }

    fn bucket_names(&self) -> [String; 2] {
        [
            format!("{}_idempotency", self.prefix),
            format!("{}_sessions", self.prefix),
        ]
    }

    async fn buckets(&self) -> Result<&Buckets, BrokerError> {
        self.buckets
            .get_or_try_init(|| async {
                let valid = !self.prefix.is_empty()
                    && self.prefix.len() <= MAX_PREFIX_LEN
                    && self
                        .prefix
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if !valid {
                    return Err(BrokerError::new(
                        BrokerErrorKind::Config,
                        format!(
                            "{:?} cannot prefix NATS KV bucket names: use 1 to {MAX_PREFIX_LEN} ASCII letters, digits, '_' and '-'",
                            self.prefix
                        ),
                    ));
                }
                self.check_connected()?;
                let [keys, sessions] = self.bucket_names();
                let keys = self
                    .open_bucket(keys, self.max_window, "wharf idempotency records")
                    .await?;
                let sessions = self
                    .open_bucket(sessions, self.session_ttl, "wharf session turns and checkpoints")
                    .await?;
                Ok(Buckets { keys, sessions })
            })
            .await
    }

    async fn open_bucket(
        &self,
        name: String,
        max_age: Duration,
        description: &str,
    ) -> Result<kv::Store, BrokerError> {
        use jetstream::stream::{Config, DiscardPolicy, StorageType};
        // The stream a KV bucket is, as `create_key_value` would configure
        // it. Not `create_key_value` itself: it first asks for the
        // account's info, which async-nats 0.51 cannot parse from
        // nats-server 2.9.
        let config = Config {
            name: format!("KV_{name}"),
            description: Some(description.to_owned()),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            max_messages: -1,
            max_bytes: -1,
            max_message_size: -1,
            max_age,
            storage: StorageType::File,
            num_replicas: 1,
            discard: DiscardPolicy::New,
            allow_rollup: true,
            deny_delete: true,
            deny_purge: false,
            allow_direct: true,
            ..Default::default()
        };
        let failed = |e: &dyn std::fmt::Display| {
            BrokerError::new(
                BrokerErrorKind::Declare,
                format!("opening the NATS KV bucket {name} failed: {e}"),
            )
        };
        if let Err(created) = self.jetstream.create_stream(config).await {
            // It exists with other settings: keep them (replicas, storage,
            // placement), except `max_age`, which the records rely on.
            let stream = self
                .jetstream
                .get_stream(format!("KV_{name}"))
                .await
                .map_err(|e| failed(&format_args!("{created}; {e}")))?;
            let mut config = stream.cached_info().config.clone();
            if config.max_age != max_age {
                tracing::info!(
                    bucket = %name,
                    from = ?config.max_age,
                    to = ?max_age,
                    "setting the max_age of the NATS KV bucket"
                );
                config.max_age = max_age;
                if !max_age.is_zero() {
                    config.duplicate_window = config.duplicate_window.min(max_age);
                }
                self.jetstream
                    .update_stream(&config)
                    .await
                    .map_err(|e| failed(&e))?;
            }
        }
        self.jetstream.get_key_value(&name).await.map_err(|e| failed(&e))
    }

    fn check_connected(&self) -> Result<(), BrokerError> {
        // While disconnected, async-nats would buffer a write and send it
        // after the reconnect, long after the caller was told it failed.
        if self.client.connection_state() == async_nats::connection::State::Connected {
            Ok(())
        } else {
            Err(BrokerError::new(
                BrokerErrorKind::Connection,
                "not connected to NATS (reconnecting): the store cannot be used",
            ))
        }
    }

    /// `requested`, cut to the longest window the idempotency bucket keeps.
    fn window(&self, requested: Duration) -> Duration {
        if requested <= self.max_window || self.max_window.is_zero() {
            return requested;
        }
        if !self.warned_window.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                requested = ?requested,
                kept = ?self.max_window,
                "an idempotency window or lease is longer than the NATS KV store keeps records; \
                 it is cut (raise it with NatsKvStore::with_max_idempotency_window)"
            );
        }
        self.max_window
    }

    async fn load(&self, bucket: &kv::Store, key: &str) -> Result<Loaded, BrokerError> {
        match bucket.entry(key).await {
            Ok(None) => Ok(Loaded {
                revision: 0,
                value: None,
                created: None,
            }),
            Ok(Some(entry)) => Ok(Loaded {
                revision: entry.revision,
                value: (entry.operation == kv::Operation::Put).then_some(entry.value),
                created: Some(entry.created),
            }),
            Err(e) => Err(op_error("reading", bucket, key, e)),
        }
    }

    /// Writes `value` if `key` is still at `revision` (0: no message for
    /// it); `false` when another write came first.
    async fn write(
        &self,
        bucket: &kv::Store,
        key: &str,
        value: Bytes,
        revision: u64,
    ) -> Result<bool, BrokerError> {
        self.check_connected()?;
        // Not `kv::Store::create`: it tries revision 0, reads the key again
        // and retries at a tombstone's revision; the revision read here
        // already says which applies.
        match bucket.update(key, value, revision).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(op_error("writing", bucket, key, e)),
        }
    }

    /// Deletes `key` if it is still at `revision`.
    async fn delete(&self, bucket: &kv::Store, key: &str, revision: u64) -> Result<bool, BrokerError> {
        self.check_connected()?;
        match bucket.delete_expect_revision(key, Some(revision)).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(op_error("deleting", bucket, key, e)),
        }
    }

    /// Writes an unchanged session record or checkpoint again once it is
    /// older than half the session TTL, so that a session still in use is
    /// not forgotten. A failure only means it was not renewed this time.
    async fn renew(&self, bucket: &kv::Store, key: &str, loaded: &Loaded) {
        let (Some(created), Some(value)) = (loaded.created, &loaded.value) else {
            return;
        };
        if self.session_ttl.is_zero() {
            return;
        }
        let old = async_nats::datetime::add_std_duration(created, self.session_ttl / 2)
            .is_ok_and(|half| half < async_nats::datetime::now());
        if old && let Err(error) = self.write(bucket, key, value.clone(), loaded.revision).await {
            tracing::debug!(%error, "renewing a session record failed");
        }
    }

    fn contended(&self, key: &str) -> BrokerError {
        BrokerError::new(
            BrokerErrorKind::Store,
            format!(
                "NATS KV key {} changed under {MAX_TRIES} attempts in a row; gave up",
                shorten(key)
            ),
        )
    }

    async fn claim_now(&self, key: &str, lease: Duration) -> Result<Claim, BrokerError> {
        self.check_connected()?;
        let bucket = &self.buckets().await?.keys;
        let kv_key = kv_key("k.", key)?;
        let lease = self.window(lease);
        let token = fresh_token();
        for _ in 0..MAX_TRIES {
            let loaded = self.load(bucket, &kv_key).await?;
            let now = now_ms();
            if let Some(record) = loaded.decode::<KeyRecord>(&kv_key)?
                && record.until_ms > now
            {
                return Ok(match record.state {
                    KeyState::Claimed(_) => Claim::InProgress,
                    KeyState::Done(reply) => Claim::Done(reply.map(StoredReply::from)),
                });
            }
            // Absent, deleted, or past its lease or window.
            let record = KeyRecord {
                until_ms: after(now, lease),
                state: KeyState::Claimed(token.0),
            };
            if self
                .write(bucket, &kv_key, encode(&record)?, loaded.revision)
                .await?
            {
                return Ok(Claim::Acquired(token));
            }
        }
        Err(self.contended(&kv_key))
    }

    async fn complete_now(
        &self,
        key: &str,
        reply: Option<StoredReply>,
        ttl: Duration,
    ) -> Result<(), BrokerError> {
        self.check_connected()?;
        let bucket = &self.buckets().await?.keys;
        let kv_key = kv_key("k.", key)?;
        let ttl = self.window(ttl);
        let reply = reply.map(Reply::from);
        for _ in 0..MAX_TRIES {
            let loaded = self.load(bucket, &kv_key).await?;
            let now = now_ms();
            // Completing after the lease was taken over (another token)
            // still records the result: the handler did run. A record that
            // is already done keeps its first reply.
            if let Some(record) = loaded.decode::<KeyRecord>(&kv_key)?
                && record.until_ms > now
                && matches!(record.state, KeyState::Done(_))
            {
                return Ok(());
            }
            let record = KeyRecord {
                until_ms: after(now, ttl),
                state: KeyState::Done(reply.clone()),
            };
            if self
                .write(bucket, &kv_key, encode(&record)?, loaded.revision)
                .await?
            {
                return Ok(());
            }
        }
        Err(self.contended(&kv_key))
    }

    async fn release_now(&self, key: &str, token: ClaimToken) -> Result<(), BrokerError> {
        self.check_connected()?;
        let bucket = &self.buckets().await?.keys;
        let kv_key = kv_key("k.", key)?;
        for _ in 0..MAX_TRIES {
            let loaded = self.load(bucket, &kv_key).await?;
            let held = loaded
                .decode::<KeyRecord>(&kv_key)?
                .is_some_and(|r| matches!(r.state, KeyState::Claimed(t) if t == token.0));
            if !held || self.delete(bucket, &kv_key, loaded.revision).await? {
                return Ok(());
            }
        }
        Err(self.contended(&kv_key))
    }

    async fn renew_claim_now(
        &self,
        key: &str,
        token: ClaimToken,
        lease: Duration,
    ) -> Result<bool, BrokerError> {
        self.check_connected()?;
        let bucket = &self.buckets().await?.keys;
        let kv_key = kv_key("k.", key)?;
        let lease = self.window(lease);
        for _ in 0..MAX_TRIES {
            let loaded = self.load(bucket, &kv_key).await?;
            let now = now_ms();
            let Some(mut record) = loaded.decode::<KeyRecord>(&kv_key)? else {
                return Ok(false);
            };
            if record.until_ms <= now || !matches!(record.state, KeyState::Claimed(t) if t == token.0) {
                return Ok(false);
            }
            record.until_ms = after(now, lease);
            if self
                .write(bucket, &kv_key, encode(&record)?, loaded.revision)
                .await?
            {
                return Ok(true);
            }
        }
        Err(self.contended(&kv_key))
    }

    async fn renew_turn_now(
        &self,
        session: &str,
        sequence: u64,
        lease: Duration,
    ) -> Result<bool, BrokerError> {
        self.check_connected()?;
        let bucket = &self.buckets().await?.sessions;
        let kv_key = kv_key("s.", session)?;
        for _ in 0..MAX_TRIES {
            let loaded = self.load(bucket, &kv_key).await?;
            let now = now_ms();
            let Some(mut record) = loaded.decode::<SessionRecord>(&kv_key)? else {
                return Ok(false);
            };
            if !matches!(record.lease, Some((s, until)) if s == sequence && until > now) {
                return Ok(false);
            }
            record.lease = Some((sequence, after(now, lease)));
            if self
                .write(bucket, &kv_key, encode(&record)?, loaded.revision)
                .await?
            {
                return Ok(true);
            }
        }
        Err(self.contended(&kv_key))
    }

    async fn begin_now(
        &self,
        session: &str,
        sequence: u64,
        lease: Duration,
    ) -> Result<SessionTurn, BrokerError> {
        self.check_connected()?;
        let bucket = &self.buckets().await?.sessions;
        let kv_key = kv_key("s.", session)?;
        for _ in 0..MAX_TRIES {
            let loaded = self.load(bucket, &kv_key).await?;
            let mut record = loaded.decode::<SessionRecord>(&kv_key)?.unwrap_or_default();
            let before = (record.early, record.latest, record.hold);
            let now = now_ms();
            let next = record.next;
            let turn = if sequence < next {
                if record
                    .gaps
                    .iter()
                    .any(|&(from, to)| (from..to).contains(&sequence))
                {
                    SessionTurn::Skipped { next }
                } else {
                    SessionTurn::Stale { next }
                }
            } else if sequence > next {
                if record.early().is_none_or(|early| sequence < early) {
                    record.early = sequence;
                }
                if record.latest().is_none_or(|latest| sequence > latest) {
                    record.latest = sequence;
                }
                SessionTurn::Early { next }
            } else {
                match record.lease {
                    Some((_, until)) if until > now => {
                        // Held for the asker (its runner may have crashed).
                        let until = after(now, lease);
                        if record.hold.is_none_or(|(_, held)| held < until) {
                            record.hold = Some((sequence, until));
                        }
                        SessionTurn::Busy
                    }
                    _ => {
                        record.lease = Some((sequence, after(now, lease)));
                        record.hold = None;
                        SessionTurn::Run
                    }
                }
            };
            let changed =
                matches!(turn, SessionTurn::Run) || (record.early, record.latest, record.hold) != before;
            if !changed {
                self.renew(bucket, &kv_key, &loaded).await;
                return Ok(turn);
            }
            if self
                .write(bucket, &kv_key, encode(&record)?, loaded.revision)
                .await?
            {
                return Ok(turn);
            }
        }
        Err(self.contended(&kv_key))
    }

    /// Ends `sequence`'s lease: finished (`hold` none: the session moves
    /// on, its hold for the number ends) or to be tried again (held for
    /// `hold`).
    async fn end_now(&self, session: &str, sequence: u64, hold: Option<Duration>) -> Result<(), BrokerError> {
        self.check_connected()?;
        let bucket = &self.buckets().await?.sessions;
        let kv_key = kv_key("s.", session)?;
        for _ in 0..MAX_TRIES {
            let loaded = self.load(bucket, &kv_key).await?;
            let Some(mut record) = loaded.decode::<SessionRecord>(&kv_key)? else {
                return Ok(());
            };
            let mut changed = false;
            if matches!(record.lease, Some((s, _)) if s == sequence) {
                record.lease = None;
                changed = true;
            }
            match hold {
                None => {
                    if record.next == sequence {
                        record.next = sequence.saturating_add(1);
                        changed = true;
                    }
                    if matches!(record.hold, Some((s, _)) if s == sequence) {
                        record.hold = None;
                        changed = true;
                    }
                }
                Some(hold) if !hold.is_zero() && record.next == sequence => {
                    let until = after(now_ms(), hold);
                    if record.hold.is_none_or(|(_, held)| held < until) {
                        record.hold = Some((sequence, until));
                        changed = true;
                    }
                }
                Some(_) => {}
            }
            if !changed {
                self.renew(bucket, &kv_key, &loaded).await;
                return Ok(());
            }
            if self
                .write(bucket, &kv_key, encode(&record)?, loaded.revision)
                .await?
            {
                return Ok(());
            }
        }
        Err(self.contended(&kv_key))
    }

    async fn position_now(&self, session: &str) -> Result<SessionPosition, BrokerError> {
        self.check_connected()?;
        let bucket = &self.buckets().await?.sessions;
        let kv_key = kv_key("s.", session)?;
        let record = self
            .load(bucket, &kv_key)
            .await?
            .decode::<SessionRecord>(&kv_key)?
            .unwrap_or_default();
        Ok(SessionPosition {
            next: record.next,
            early: record.early(),
            latest: record.latest(),
        })
    }

    async fn skip_now(&self, session: &str, from: u64, to: u64) -> Result<bool, BrokerError> {
        self.check_connected()?;
        let bucket = &self.buckets().await?.sessions;
        let kv_key = kv_key("s.", session)?;
        for _ in 0..MAX_TRIES {
            let loaded = self.load(bucket, &kv_key).await?;
            let Some(mut record) = loaded.decode::<SessionRecord>(&kv_key)? else {
                return Ok(false);
            };
            let now = now_ms();
            let leased = matches!(record.lease, Some((_, until)) if until > now);
            let held = matches!(record.hold, Some((_, until)) if until > now);
            if record.next != from || leased || held {
                return Ok(false);
            }
            record.next = to;
            if from < to {
                if record.gaps.len() >= REMEMBERED_GAPS {
                    let excess = record.gaps.len() + 1 - REMEMBERED_GAPS;
                    record.gaps.drain(..excess);
                }
                record.gaps.push((from, to));
            }
            if self
                .write(bucket, &kv_key, encode(&record)?, loaded.revision)
                .await?
            {
                return Ok(true);
            }
        }
        Err(self.contended(&kv_key))
    }

    async fn state_now(&self, session: &str) -> Result<Option<Bytes>, BrokerError> {
        self.check_connected()?;
        let bucket = &self.buckets().await?.sessions;
        let kv_key = kv_key("st.", session)?;
        let loaded = self.load(bucket, &kv_key).await?;
        self.renew(bucket, &kv_key, &loaded).await;
        Ok(loaded.value)
    }

    async fn set_state_now(&self, session: &str, value: Bytes) -> Result<(), BrokerError> {
        self.check_connected()?;
        let bucket = &self.buckets().await?.sessions;
        let kv_key = kv_key("st.", session)?;
        bucket
            .put(&kv_key, value)
            .await
            .map(|_| ())
            .map_err(|e| op_error("writing", bucket, &kv_key, e))
    }
}

/// Relays the names of sessions written in `bucket` (a KV write is a
/// publish on `$KV.<bucket>.<key>`, which a plain subscription sees) until
/// nobody listens.
async fn relay_changes(
    client: async_nats::Client,
    bucket: String,
    sender: tokio::sync::broadcast::Sender<std::sync::Arc<str>>,
) {
    use futures_util::StreamExt;
    let prefix = format!("$KV.{bucket}.s.");
    let mut subscription = match client.subscribe(format!("{prefix}>")).await {
        Ok(subscription) => subscription,
        Err(error) => {
            tracing::warn!(%error, "session changes: cannot subscribe; waiting sessions are re-checked on a timer");
            return;
        }
    };
    loop {
        let message = tokio::select! {
            message = subscription.next() => message,
            () = tokio::time::sleep(Duration::from_secs(5)) => {
                if sender.receiver_count() == 0 {
                    return;
                }
                continue;
            }
        };
        let Some(message) = message else { return };
        let Some(session) = message.subject.strip_prefix(prefix.as_str()).and_then(decode_key) else {
            continue;
        };
        if sender.send(session.into()).is_err() {
            return;
        }
    }
}

impl Store for NatsKvStore {
    fn session_changes(&self) -> Option<tokio::sync::broadcast::Receiver<std::sync::Arc<str>>> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let mut changes = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = changes.as_ref().filter(|s| s.receiver_count() > 0) {
            return Some(sender.subscribe());
        }
        let (sender, receiver) = tokio::sync::broadcast::channel(4096);
        let [_, bucket] = self.bucket_names();
        runtime.spawn(relay_changes(self.client.clone(), bucket, sender.clone()));
        *changes = Some(sender);
        Some(receiver)
    }

    fn claim(&self, key: &str, lease: Duration) -> BoxFuture<'_, Result<Claim, BrokerError>> {
        let key = key.to_owned();
        Box::pin(async move { self.claim_now(&key, lease).await })
    }

    fn complete(
        &self,
        key: &str,
        token: ClaimToken,
        reply: Option<StoredReply>,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        let _ = token;
        let key = key.to_owned();
        Box::pin(async move { self.complete_now(&key, reply, ttl).await })
    }

    fn release(&self, key: &str, token: ClaimToken) -> BoxFuture<'_, Result<(), BrokerError>> {
        let key = key.to_owned();
        Box::pin(async move { self.release_now(&key, token).await })
    }

    fn renew_claim(
        &self,
        key: &str,
        token: ClaimToken,
        lease: Duration,
    ) -> BoxFuture<'_, Result<bool, BrokerError>> {
        let key = key.to_owned();
        Box::pin(async move { self.renew_claim_now(&key, token, lease).await })
    }

    fn session_renew(
        &self,
        session: &str,
        sequence: u64,
        lease: Duration,
    ) -> BoxFuture<'_, Result<bool, BrokerError>> {
        let session = session.to_owned();
        Box::pin(async move { self.renew_turn_now(&session, sequence, lease).await })
    }

    fn session_begin(
        &self,
        session: &str,
        sequence: u64,
        lease: Duration,
    ) -> BoxFuture<'_, Result<SessionTurn, BrokerError>> {
        let session = session.to_owned();
        Box::pin(async move { self.begin_now(&session, sequence, lease).await })
    }

    fn session_finish(&self, session: &str, sequence: u64) -> BoxFuture<'_, Result<(), BrokerError>> {
        let session = session.to_owned();
        Box::pin(async move { self.end_now(&session, sequence, None).await })
    }

    fn session_abort(
        &self,
        session: &str,
        sequence: u64,
        hold: Duration,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        let session = session.to_owned();
        Box::pin(async move { self.end_now(&session, sequence, Some(hold)).await })
    }

    fn session_position(&self, session: &str) -> BoxFuture<'_, Result<SessionPosition, BrokerError>> {
        let session = session.to_owned();
        Box::pin(async move { self.position_now(&session).await })
    }

    fn session_skip(&self, session: &str, from: u64, to: u64) -> BoxFuture<'_, Result<bool, BrokerError>> {
        let session = session.to_owned();
        Box::pin(async move { self.skip_now(&session, from, to).await })
    }

    fn session_state(&self, session: &str) -> BoxFuture<'_, Result<Option<Bytes>, BrokerError>> {
        let session = session.to_owned();
        Box::pin(async move { self.state_now(&session).await })
    }

    fn set_session_state(&self, session: &str, value: Bytes) -> BoxFuture<'_, Result<(), BrokerError>> {
        let session = session.to_owned();
        Box::pin(async move { self.set_state_now(&session, value).await })
    }
}

/// A key as read: its revision (0 when the bucket holds nothing for it), its
/// value (`None` when absent, deleted or purged) and when it was written.
struct Loaded {
    revision: u64,
    value: Option<Bytes>,
    created: Option<async_nats::datetime::DateTime>,
}

impl Loaded {
    fn decode<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, BrokerError> {
        self.value.as_deref().map(|v| decode(key, v)).transpose()
    }
}

/// An idempotency record.
#[derive(Serialize, Deserialize)]
struct KeyRecord {
    /// Unix milliseconds at which the lease or window ends.
    until_ms: u64,
    state: KeyState,
}

#[derive(Serialize, Deserialize)]
enum KeyState {
    /// Claimed with this token.
    Claimed(u64),
    /// Done, with its reply.
    Done(Option<Reply>),
}

#[derive(Clone, Serialize, Deserialize)]
struct Reply {
    #[serde(with = "raw_bytes")]
    body: Bytes,
    content_type: String,
}

impl From<StoredReply> for Reply {
    fn from(reply: StoredReply) -> Self {
        Reply {
            body: reply.body,
            content_type: reply.content_type.into_owned(),
        }
    }
}

impl From<Reply> for StoredReply {
    fn from(reply: Reply) -> Self {
        StoredReply {
            body: reply.body,
            content_type: Cow::Owned(reply.content_type),
        }
    }
}

/// A session's turn bookkeeping.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct SessionRecord {
    next: u64,
    /// The sequence number running and the unix milliseconds its lease ends.
    lease: Option<(u64, u64)>,
    /// The number the session is held for (it comes back), and until when.
    #[serde(default)]
    hold: Option<(u64, u64)>,
    /// Lowest number reported early (meaningful only while above `next`).
    early: u64,
    /// Highest number reported early (likewise).
    #[serde(default)]
    latest: u64,
    /// Ranges the gap policy skipped, newest last.
    gaps: Vec<(u64, u64)>,
}

impl Default for SessionRecord {
    fn default() -> Self {
        SessionRecord {
            next: 1,
            lease: None,
            hold: None,
            early: 0,
            latest: 0,
            gaps: Vec::new(),
        }
    }
}

impl SessionRecord {
    fn early(&self) -> Option<u64> {
        (self.early > self.next).then_some(self.early)
    }

    fn latest(&self) -> Option<u64> {
        (self.latest > self.next).then_some(self.latest)
    }
}

/// Bytes as a MessagePack `bin`, not an array of numbers.
mod raw_bytes {
    use bytes::Bytes;
    use serde::de::{Deserializer, Error, SeqAccess, Visitor};
    use serde::ser::Serializer;

    pub(super) fn serialize<S: Serializer>(bytes: &Bytes, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
        struct Raw;
        impl<'de> Visitor<'de> for Raw {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes::copy_from_slice(v))
            }
            fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes::from(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(Bytes::from(out))
            }
        }
        deserializer.deserialize_byte_buf(Raw)
    }
}

fn encode<T: Serialize>(record: &T) -> Result<Bytes, BrokerError> {
    rmp_serde::to_vec(record).map(Bytes::from).map_err(|e| {
        BrokerError::new(BrokerErrorKind::Store, "encoding a NATS KV store record failed").with_source(e)
    })
}

fn decode<T: DeserializeOwned>(key: &str, value: &[u8]) -> Result<T, BrokerError> {
    rmp_serde::from_slice(value).map_err(|e| {
        BrokerError::new(
            BrokerErrorKind::Store,
            format!(
                "the NATS KV store record {} is not one this version of wharf wrote",
                shorten(key)
            ),
        )
        .with_source(e)
    })
}

fn op_error(
    what: &str,
    bucket: &kv::Store,
    key: &str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> BrokerError {
    BrokerError::new(
        BrokerErrorKind::Store,
        format!(
            "{what} NATS KV key {} in bucket {} failed",
            shorten(key),
            bucket.name
        ),
    )
    .with_source(e)
}

/// `key`, cut for an error message.
fn shorten(key: &str) -> String {
    const MAX: usize = 120;
    match key.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &key[..at]),
        None => key.to_owned(),
    }
}

fn after(now_ms: u64, duration: Duration) -> u64 {
    now_ms.saturating_add(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

/// The KV key for `key` under `kind` (`k.`, `s.` or `st.`).
fn kv_key(kind: &str, key: &str) -> Result<String, BrokerError> {
    let mut out = String::with_capacity(kind.len() + key.len());
    out.push_str(kind);
    encode_key_into(key, &mut out);
    if out.len() > MAX_KV_KEY_LEN {
        return Err(BrokerError::new(
            BrokerErrorKind::Store,
            format!(
                "the key {} is too long for the NATS KV store: {} bytes encoded, at most {MAX_KV_KEY_LEN}",
                shorten(key),
                out.len()
            ),
        ));
    }
    Ok(out)
}

/// Appends `key` encoded for a KV key: `[A-Za-z0-9_/-]` kept, every other
/// byte `=XX`; the empty key is `=` (an escape always has two digits, so a
/// lone `=` stands for nothing else).
fn encode_key_into(key: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    if key.is_empty() {
        out.push('=');
        return;
    }
    for &b in key.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'/') {
            out.push(char::from(b));
        } else {
            out.push('=');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xF)]));
        }
    }
}

/// The key [`encode_key_into`] wrote; `None` for what it cannot have written.
fn decode_key(encoded: &str) -> Option<String> {
    if encoded == "=" {
        return Some(String::new());
    }
    let mut bytes = Vec::new();
    let mut rest = encoded.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'=' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn encoded(key: &str) -> String {
        let mut out = String::new();
        encode_key_into(key, &mut out);
        out
    }

    /// What the KV client accepts: `[-/_=.a-zA-Z0-9]`, no `.` at either end.
    fn valid_kv_key(key: &str) -> bool {
        !key.is_empty()
            && !key.starts_with('.')
            && !key.ends_with('.')
            && !key.contains("..")
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b))
    }

    #[test]
    fn keys_are_encoded_injectively_into_the_kv_charset() {
        let tricky = [
            "", "=", "==", "=3D", "=2E", ".", "..", "a.b", "a_b", "a b", "a=2Eb", "a*b>c", "ä=b", "ä",
            "=C3=A4", ".lead", "trail.", "a..b", "q/h", "q//h", "/", "-", "_", "\u{0}", "\u{7f}", "日本",
            "A", "a", "%41", "\t", "=41",
        ];
        let mut seen = HashSet::new();
        for key in tricky {
            let enc = encoded(key);
            assert!(!enc.contains('.'), "{key:?} → {enc}");
            for kind in ["k.", "s.", "st."] {
                let full = format!("{kind}{enc}");
                assert!(valid_kv_key(&full), "{key:?} → {full}");
            }
            assert_eq!(decode_key(&enc).as_deref(), Some(key), "{key:?} → {enc}");
            assert!(seen.insert(enc.clone()), "{key:?} → {enc} collides");
        }
        assert_eq!(encoded("orders/ab-C_9"), "orders/ab-C_9");
        assert_eq!(encoded("a.b"), "a=2Eb");
        assert_eq!(encoded("a=b"), "a=3Db");
        assert_eq!(encoded("ä"), "=C3=A4");
        assert_eq!(encoded(""), "=");
        // Session records and checkpoints never share a key.
        assert_ne!(kv_key("s.", "t.x").unwrap(), kv_key("st.", "x").unwrap());
    }

    #[test]
    fn overlong_keys_are_refused() {
        let fits = "x".repeat(MAX_KV_KEY_LEN - 3);
        assert_eq!(kv_key("st.", &fits).unwrap().len(), MAX_KV_KEY_LEN);
        let error = kv_key("st.", &format!("{fits}.")).unwrap_err();
        assert_eq!(error.kind(), BrokerErrorKind::Store);
        assert!(error.to_string().contains("too long"), "{error}");
    }

    #[test]
    fn records_round_trip_compactly() {
        let record = KeyRecord {
            until_ms: 1_700_000_000_000,
            state: KeyState::Done(Some(Reply {
                body: Bytes::from_static(&[1, 2, 200]),
                content_type: "application/msgpack".into(),
            })),
        };
        let bytes = encode(&record).unwrap();
        assert!(bytes.len() < 64, "{} bytes", bytes.len());
        let back: KeyRecord = decode("k", &bytes).unwrap();
        assert_eq!(back.until_ms, record.until_ms);
        let KeyState::Done(Some(reply)) = back.state else {
            panic!("a done record")
        };
        assert_eq!(&reply.body[..], &[1, 2, 200]);
        let session = SessionRecord {
            next: 9,
            lease: Some((9, 1_700_000_000_000)),
            hold: Some((9, 1_700_000_000_500)),
            early: 12,
            latest: 15,
            gaps: vec![(2, 5), (6, 8)],
        };
        assert_eq!(
            decode::<SessionRecord>("s", &encode(&session).unwrap()).unwrap(),
            session
        );
        assert!(decode::<SessionRecord>("s", b"\xc1").is_err());
    }

    // Against nats-server on 127.0.0.1 (`WHARF_TEST_NATS_URL` overrides).

    fn nats_url() -> String {
        std::env::var("WHARF_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
    }

    fn nanos() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    }

    /// Bucket prefixes of test runs: `wharftest_<pid>_<nanos>_<n>`.
    const TEST_PREFIX: &str = "wharftest_";

    fn unique(what: &str) -> String {
        use std::sync::atomic::AtomicUsize;
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        format!("{TEST_PREFIX}{}_{}_{n}_{what}", std::process::id(), nanos())
    }

    /// A connection, or `None` (said loudly; a failure with `CI=true`)
    /// when NATS cannot be reached.
    async fn connect_or_skip(test: &str) -> Option<NatsKvStore> {
        match NatsKvStore::connect(&nats_url()).await {
            Ok(store) => Some(store),
            Err(error) => {
                crate::test_support::skip(test, &format!("NATS is not reachable ({error})"));
                None
            }
        }
    }

    /// Deletes buckets test runs left behind (a failed run) over an hour ago.
    async fn sweep_leftovers(store: &NatsKvStore) {
        use futures_util::TryStreamExt;
        let Ok(names) = store.jetstream.stream_names().try_collect::<Vec<String>>().await else {
            return;
        };
        let hour_ago = nanos().saturating_sub(3600 * 1_000_000_000);
        for name in names {
            let Some(rest) = name.strip_prefix("KV_").and_then(|n| n.strip_prefix(TEST_PREFIX)) else {
                continue;
            };
            let started = rest.split('_').nth(1).and_then(|n| n.parse::<u128>().ok());
            if started.is_some_and(|started| started < hour_ago) {
                let _ = store.jetstream.delete_stream(&name).await;
            }
        }
    }

    /// Deletes the buckets of a test's store when the test ends, passed or
    /// failed (on a thread of its own: the test's runtime may be unwinding).
    struct Cleanup(Vec<String>);

    impl Cleanup {
        fn of(store: &NatsKvStore) -> Cleanup {
            Cleanup(store.bucket_names().to_vec())
        }
    }

    impl Drop for Cleanup {
        fn drop(&mut self) {
            let buckets = std::mem::take(&mut self.0);
            let deleting = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    let Ok(client) = async_nats::connect(nats_url()).await else {
                        return;
                    };
                    let jetstream = jetstream::new(client);
                    for bucket in buckets {
                        let _ = jetstream.delete_key_value(&bucket).await;
                    }
                });
            });
            let _ = deleting.join();
        }
    }

    /// A store on buckets of its own (deleted when the guard drops), or
    /// `None` without NATS.
    async fn fresh_store(test: &str) -> Option<(NatsKvStore, Cleanup)> {
        let store = connect_or_skip(test).await?.with_bucket_prefix(unique(test));
        sweep_leftovers(&store).await;
        let cleanup = Cleanup::of(&store);
        store.ensure_buckets().await.unwrap();
        Some((store, cleanup))
    }

    /// A second connection onto `store`'s buckets.
    async fn second_instance(store: &NatsKvStore) -> NatsKvStore {
        let other = NatsKvStore::connect(&nats_url())
            .await
            .unwrap()
            .with_bucket_prefix(store.prefix.clone())
            .with_session_ttl(store.session_ttl)
            .with_max_idempotency_window(store.max_window);
        other.ensure_buckets().await.unwrap();
        other
    }

    #[tokio::test]
    async fn conforms() {
        let Some((store, _cleanup)) = fresh_store("conforms").await else {
            return;
        };
        let ns = format!("natskv-{}-{}", std::process::id(), nanos());
        crate::store::conformance::all(&store, &ns).await;
        // Opening the buckets again (another worker starting) is harmless.
        second_instance(&store).await;
    }

    #[tokio::test]
    async fn session_changes_reach_other_connections() {
        let Some((writer, _cleanup)) = fresh_store("changes").await else {
            return;
        };
        writer.ensure_buckets().await.unwrap();
        let listener = second_instance(&writer).await;
        crate::store::conformance::announces_session_changes(&writer, &listener, "q/odd.key").await;
    }

    #[tokio::test]
    async fn instances_share_claims_sessions_and_checkpoints() {
        let Some((a, _cleanup)) = fresh_store("shared").await else {
            return;
        };
        let b = second_instance(&a).await;
        let lease = Duration::from_secs(30);
        let Claim::Acquired(token) = a.claim("q/k1", lease).await.unwrap() else {
            panic!("a new key is acquired")
        };
        assert_eq!(b.claim("q/k1", lease).await.unwrap(), Claim::InProgress);
        a.release("q/k1", token).await.unwrap();
        let tombstone = a
            .buckets()
            .await
            .unwrap()
            .keys
            .entry("k.q/k1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            tombstone.operation,
            kv::Operation::Delete,
            "a release leaves a tombstone"
        );
        let Claim::Acquired(token) = b.claim("q/k1", lease).await.unwrap() else {
            panic!("a tombstone counts as absent")
        };
        assert_eq!(a.claim("q/k1", lease).await.unwrap(), Claim::InProgress);
        let reply = StoredReply {
            body: Bytes::from_static(b"\x00\xffok"),
            content_type: "application/octet-stream".into(),
        };
        b.complete("q/k1", token, Some(reply.clone()), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(a.claim("q/k1", lease).await.unwrap(), Claim::Done(Some(reply)));

        assert_eq!(a.session_begin("q/s", 1, lease).await.unwrap(), SessionTurn::Run);
        assert_eq!(b.session_begin("q/s", 1, lease).await.unwrap(), SessionTurn::Busy);
        assert_eq!(
            b.session_begin("q/s", 3, lease).await.unwrap(),
            SessionTurn::Early { next: 1 }
        );
        a.session_finish("q/s", 1).await.unwrap();
        assert_eq!(
            b.session_position("q/s").await.unwrap(),
            SessionPosition {
                next: 2,
                early: Some(3),
                latest: Some(3)
            }
        );
        assert!(b.session_skip("q/s", 2, 3).await.unwrap());
        assert_eq!(
            a.session_begin("q/s", 2, lease).await.unwrap(),
            SessionTurn::Skipped { next: 3 }
        );
        a.set_session_state("q/s", Bytes::from_static(b"cp"))
            .await
            .unwrap();
        assert_eq!(
            b.session_state("q/s").await.unwrap(),
            Some(Bytes::from_static(b"cp"))
        );
        b.set_session_state("q/s", Bytes::new()).await.unwrap();
        assert_eq!(
            a.session_state("q/s").await.unwrap(),
            Some(Bytes::new()),
            "an empty checkpoint is still a checkpoint"
        );
    }

    #[tokio::test]
    async fn one_of_sixteen_claims_from_two_instances_wins() {
        let Some((a, _cleanup)) = fresh_store("race").await else {
            return;
        };
        let b = second_instance(&a).await;
        let lease = Duration::from_secs(30);
        for round in 0..5 {
            let key = format!("q/race-{round}");
            let claims = futures_util::future::join_all((0..16).map(|i| {
                if i % 2 == 0 {
                    a.claim(&key, lease)
                } else {
                    b.claim(&key, lease)
                }
            }))
            .await;
            let won = claims
                .iter()
                .filter(|c| matches!(c, Ok(Claim::Acquired(_))))
                .count();
            let waiting = claims
                .iter()
                .filter(|c| matches!(c, Ok(Claim::InProgress)))
                .count();
            assert_eq!((won, waiting), (1, 15), "{claims:?}");
            let session = format!("q/race-s{round}");
            let turns = futures_util::future::join_all((0..16).map(|i| {
                if i % 2 == 0 {
                    a.session_begin(&session, 1, lease)
                } else {
                    b.session_begin(&session, 1, lease)
                }
            }))
            .await;
            let run = turns.iter().filter(|t| matches!(t, Ok(SessionTurn::Run))).count();
            let busy = turns
                .iter()
                .filter(|t| matches!(t, Ok(SessionTurn::Busy)))
                .count();
            assert_eq!((run, busy), (1, 15), "{turns:?}");
            // Early numbers from both: the lowest is kept.
            futures_util::future::join_all((2..18u64).map(|n| {
                if n % 2 == 0 {
                    a.session_begin(&session, n, lease)
                } else {
                    b.session_begin(&session, n, lease)
                }
            }))
            .await;
            assert_eq!(a.session_position(&session).await.unwrap().early, Some(2));
        }
    }

    #[tokio::test]
    async fn another_session_ttl_updates_the_bucket_and_keeps_its_records() {
        let Some((a, _cleanup)) = fresh_store("reconf").await else {
            return;
        };
        a.set_session_state("q/s", Bytes::from_static(b"cp"))
            .await
            .unwrap();
        let hour = Duration::from_secs(3600);
        let b = NatsKvStore::connect(&nats_url())
            .await
            .unwrap()
            .with_bucket_prefix(a.prefix.clone())
            .with_session_ttl(hour);
        b.ensure_buckets().await.unwrap();
        let sessions = &b.buckets().await.unwrap().sessions;
        assert_eq!(sessions.stream.cached_info().config.max_age, hour);
        assert_eq!(sessions.stream.cached_info().config.max_messages_per_subject, 1);
        assert_eq!(
            b.session_state("q/s").await.unwrap(),
            Some(Bytes::from_static(b"cp"))
        );
        // The first settings again: back to 7 days.
        let c = second_instance(&a).await;
        assert_eq!(
            c.buckets()
                .await
                .unwrap()
                .sessions
                .stream
                .cached_info()
                .config
                .max_age,
            WEEK
        );
    }

    #[tokio::test]
    async fn an_unreachable_server_fails_fast_without_printing_credentials() {
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(
            Duration::from_secs(10),
            NatsKvStore::connect("nats://wharf:s3cr3t@127.0.0.1:1"),
        )
        .await
        .expect("connect gives up by itself");
        let error = result.unwrap_err();
        assert_eq!(error.kind(), BrokerErrorKind::Connection);
        let text = error.to_string();
        assert!(text.contains("127.0.0.1:1"), "{text}");
        assert!(
            !text.contains("s3cr3t") && !format!("{error:?}").contains("s3cr3t"),
            "{text}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_bad_prefix_is_a_configuration_error() {
        let Some(store) = connect_or_skip("a_bad_prefix_is_a_configuration_error").await else {
            return;
        };
        let store = store.with_bucket_prefix("no.dots");
        let error = store.claim("k", Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(error.kind(), BrokerErrorKind::Config, "{error}");
    }

    #[tokio::test]
    async fn the_longest_keys_fit_and_longer_ones_are_refused() {
        let Some((store, _cleanup)) = fresh_store("long").await else {
            return;
        };
        let longest = "x".repeat(MAX_KV_KEY_LEN - "st.".len());
        store
            .set_session_state(&longest, Bytes::from_static(b"cp"))
            .await
            .unwrap();
        assert_eq!(
            store.session_state(&longest).await.unwrap(),
            Some(Bytes::from_static(b"cp"))
        );
        let longest = "x".repeat(MAX_KV_KEY_LEN - "k.".len());
        assert!(matches!(
            store.claim(&longest, Duration::from_secs(30)).await.unwrap(),
            Claim::Acquired(_)
        ));
        let error = store
            .claim(&format!("{longest}x"), Duration::from_secs(30))
            .await
            .unwrap_err();
        assert_eq!(error.kind(), BrokerErrorKind::Store, "{error}");
    }

    #[tokio::test]
    async fn windows_longer_than_the_bucket_keeps_are_cut() {
        let Some(store) = connect_or_skip("windows_longer_than_the_bucket_keeps_are_cut").await else {
            return;
        };
        let store = store
            .with_bucket_prefix(unique("window"))
            .with_max_idempotency_window(Duration::from_secs(1));
        let _cleanup = Cleanup::of(&store);
        let Claim::Acquired(token) = store.claim("q/w", Duration::from_secs(30)).await.unwrap() else {
            panic!("a new key is acquired")
        };
        store
            .complete("q/w", token, None, Duration::from_secs(3600))
            .await
            .unwrap();
        assert_eq!(
            store.claim("q/w", Duration::from_secs(30)).await.unwrap(),
            Claim::Done(None)
        );
        tokio::time::sleep(Duration::from_millis(1300)).await;
        assert!(matches!(
            store.claim("q/w", Duration::from_secs(30)).await.unwrap(),
            Claim::Acquired(_)
        ));
    }

    #[tokio::test]
    async fn sessions_in_use_are_renewed_and_idle_ones_forgotten() {
        let Some(store) = connect_or_skip("sessions_in_use_are_renewed_and_idle_ones_forgotten").await else {
            return;
        };
        let ttl = Duration::from_secs(2);
        let store = store.with_bucket_prefix(unique("ttl")).with_session_ttl(ttl);
        let _cleanup = Cleanup::of(&store);
        let lease = Duration::from_secs(30);
        assert_eq!(
            store.session_begin("q/t", 1, lease).await.unwrap(),
            SessionTurn::Run
        );
        store.session_finish("q/t", 1).await.unwrap();
        store
            .set_session_state("q/t", Bytes::from_static(b"cp"))
            .await
            .unwrap();
        // Only reads for twice the TTL: a redelivered copy and the checkpoint.
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert_eq!(
                store.session_begin("q/t", 1, lease).await.unwrap(),
                SessionTurn::Stale { next: 2 }
            );
            assert_eq!(
                store.session_state("q/t").await.unwrap(),
                Some(Bytes::from_static(b"cp"))
            );
        }
        let deadline = std::time::Instant::now() + ttl * 4;
        while store.session_position("q/t").await.unwrap().next != 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "an idle session is forgotten"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Prints the time per operation (run with `--nocapture` to see it).
    #[tokio::test]
    async fn round_trip_times() {
        let Some((store, _cleanup)) = fresh_store("timing").await else {
            return;
        };
        let lease = Duration::from_secs(30);
        let n = 200u32;
        let started = std::time::Instant::now();
        for i in 0..n {
            assert!(matches!(
                store.claim(&format!("q/t{i}"), lease).await.unwrap(),
                Claim::Acquired(_)
            ));
        }
        let claim = started.elapsed() / n;
        let started = std::time::Instant::now();
        for i in 0..n {
            assert_eq!(
                store.claim(&format!("q/t{i}"), lease).await.unwrap(),
                Claim::InProgress
            );
        }
        let claim_held = started.elapsed() / n;
        let started = std::time::Instant::now();
        for i in 1..=u64::from(n) {
            assert_eq!(
                store.session_begin("q/s", i, lease).await.unwrap(),
                SessionTurn::Run
            );
            store.session_finish("q/s", i).await.unwrap();
        }
        let turn = started.elapsed() / n;
        let started = std::time::Instant::now();
        for _ in 0..n {
            assert!(matches!(
                store.session_begin("q/s", 1, lease).await.unwrap(),
                SessionTurn::Stale { .. }
            ));
        }
        let stale = started.elapsed() / n;
        eprintln!(
            "NATS KV store round trips: claim (acquired: read + write) {claim:?}, claim (in progress: read) \
             {claim_held:?}, session_begin Run + session_finish {turn:?}, session_begin Stale (read) {stale:?}"
        );
    }
}
