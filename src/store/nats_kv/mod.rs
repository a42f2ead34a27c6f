//! The NATS JetStream key-value store ([`NatsKvStore`]), behind the `nats`
//! feature: buckets, keys, values, atomicity and clocks are described there.

mod buckets;
mod changes;
mod claims;
mod keys;
mod known;
mod kv;
mod records;
mod sessions;
#[cfg(test)]
mod tests;
mod turns;

use self::buckets::Buckets;
use super::{Claim, ClaimToken, SessionPosition, SessionTurn, Store, StoredReply};
use crate::error::{BrokerError, BrokerErrorKind};
use crate::transport::topology::StreamStorage;
use crate::util::future::BoxFuture;
use async_nats::jetstream;
use bytes::Bytes;
use std::sync::atomic::AtomicBool;
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
/// How long a connection attempt may take before `connect` fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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
/// The read is skipped where the process can guess the record: a claim of
/// a key it does not know first writes at revision 0 (a new key), and a
/// write to a record this process wrote last goes out at that revision (a
/// claim's completion, the next turn of a session it ran). The guess is
/// checked by the write itself; a wrong one costs the refused write and the
/// read. So a new key's claim and completion, and a session's begin and
/// finish in the worker that ran its previous number, are one round trip
/// each.
///
/// # Change notifications
///
/// A worker that ends a turn or moves a session another worker may wait
/// for (a number of it was ever reported early, or the session is held for
/// a busy one) publishes the encoded session on the core NATS subject
/// `wharf.store.<prefix>_sessions.changed`; waiting workers subscribe to it
/// and look again at once. Nothing is published for turns nobody waits
/// for. A worker that misses one looks again on its gap watcher's timer.
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
    /// The buckets' replicas and storage, where chosen.
    replicas: Option<usize>,
    storage: Option<StreamStorage>,
    buckets: OnceCell<Buckets>,
    warned_window: AtomicBool,
    /// What this process last wrote, to write again without reading first.
    known: known::KnownRecords,
    /// Reads every key from its stream's leader, not only on replicated
    /// buckets (`kv.rs`): for the tests of that path on one server.
    leader_reads_always: bool,
    /// Session changes heard on the changes subject, while anyone listens.
    changes: std::sync::Mutex<Option<tokio::sync::broadcast::Sender<std::sync::Arc<str>>>>,
}

impl std::fmt::Debug for NatsKvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsKvStore")
            .field("prefix", &self.prefix)
            .field("session_ttl", &self.session_ttl)
            .field("max_window", &self.max_window)
            .field("replicas", &self.replicas)
            .field("storage", &self.storage)
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
        NatsKvStore::connect_with(&crate::BrokerOptions::new(url)).await
    }

    /// Connects with typed options, as [`Broker::connect_with`](crate::Broker::connect_with)
    /// does: the store of a TLS-secured cluster takes the broker's options.
    pub async fn connect_with(options: &crate::BrokerOptions) -> Result<NatsKvStore, BrokerError> {
        let (connect, servers) = crate::transport::nats::connect_options::NatsUrl::connect_options(options)?;
        let name = format!("{}-store", options.connection_name.as_deref().unwrap_or("wharf"));
        let client = connect
            .name(name)
            .connection_timeout(CONNECT_TIMEOUT)
            .max_reconnects(None)
            .connect(servers)
            .await
            .map_err(|e| {
                BrokerError::new(
                    BrokerErrorKind::Connection,
                    format!("cannot connect to NATS at {}", options.shown()),
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
            replicas: None,
            storage: None,
            buckets: OnceCell::new(),
            known: known::KnownRecords::default(),
            leader_reads_always: false,
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

    /// Keeps the buckets' records on `replicas` JetStream servers, 1 to
    /// [`MAX_STREAM_REPLICAS`](crate::MAX_STREAM_REPLICAS) (typically 1 or
    /// 3; more than one needs a JetStream cluster of at least as many
    /// servers). Unset, new buckets get one replica and existing ones are
    /// used as they are. A bucket that exists with other replicas fails the
    /// first operation with a [`Config`](BrokerErrorKind::Config) error
    /// saying how to change it (`nats stream edit KV_<bucket> --replicas N`);
    /// so does a value out of range. `WHARF_STORE_REPLICAS`
    /// ([`Config::store_replicas`](crate::Config::store_replicas)) is the
    /// environment's way to set it.
    pub fn with_replicas(mut self, replicas: usize) -> Self {
        self.replicas = Some(replicas);
        self.buckets = OnceCell::new();
        self
    }

    /// Keeps the buckets on `storage` (file unless set). Unset, existing
    /// buckets are used as they are; a bucket that exists with the other
    /// storage fails the first operation with a
    /// [`Config`](BrokerErrorKind::Config) error. Memory storage loses
    /// every idempotency record and session position when the servers
    /// holding the bucket restart.
    pub fn with_storage(mut self, storage: StreamStorage) -> Self {
        self.storage = Some(storage);
        self.buckets = OnceCell::new();
        self
    }

    /// Creates the buckets if they are missing, and sets their `max_age` if
    /// it differs from this store's settings; other settings of an existing
    /// bucket (placement; replicas and storage unless
    /// [`with_replicas`](Self::with_replicas) or
    /// [`with_storage`](Self::with_storage) ask for others, which is an
    /// error) are kept. Operations do this on first use; calling it at
    /// startup reports a problem early.
    pub async fn ensure_buckets(&self) -> Result<(), BrokerError> {
        self.buckets().await.map(|_| ())
    }
}

impl Store for NatsKvStore {
    fn session_changes(&self) -> Option<tokio::sync::broadcast::Receiver<std::sync::Arc<str>>> {
        self.subscribe_changes()
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

    fn session_finish_and_begin(
        &self,
        session: &str,
        sequence: u64,
        lease: Duration,
    ) -> BoxFuture<'_, Result<Option<SessionTurn>, BrokerError>> {
        let session = session.to_owned();
        Box::pin(async move { self.pass_now(&session, sequence, lease).await })
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
