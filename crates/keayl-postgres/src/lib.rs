//! PostgreSQL `LISTEN`/`NOTIFY` pub/sub for Keayl's cable, wire-compatible
//! with Rails' Action Cable PostgreSQL adapter: a Rails app and Keayl
//! processes sharing one database see each other's broadcasts.
//!
//! ```no_run
//! # async fn demo() -> Result<(), keayl_postgres::ConfigError> {
//! use std::sync::Arc;
//! use keayl_postgres::{PostgresConfig, PostgresPubSub};
//!
//! let pg = PostgresPubSub::new(PostgresConfig::from_url("postgres://app@127.0.0.1/app_production")?)?;
//! let spilled = pg.client().spill_stats().spilled; // this backend's own counters
//! let health = pg.health(); // up/down, reconnects, lost broadcasts
//! let pubsub: Arc<dyn keayl_cable::PubSub> = Arc::new(pg);
//! # let _ = (health, pubsub); Ok(()) }
//! ```
//!
//! # Design
//!
//! * **One connection per process** (`tokio-postgres`), owned by a
//!   supervisor task that drives it with `Connection::poll_message` — the
//!   only way to see notifications (spawning the `Connection` as a future
//!   silently discards them). The same connection `LISTEN`s to every stream
//!   of the process (local subscribers are multiplexed onto it by
//!   [`External`]: the first local subscriber of a stream makes the
//!   `LISTEN`, the last one to leave `UNLISTEN`s), and carries `NOTIFY`s
//!   from any task through prepared statements. `LISTEN`s and `UNLISTEN`s
//!   are batched into one round trip.
//! * A health-check `SELECT 1` every
//!   [`BrokerConfig::health_check_interval`] notices a silent network cut.
//!
//! # Naming (Rails compatible)
//!
//! The channel of stream `s` is `s`, or `"<channel_prefix>:s"` with a
//! prefix (Rails' `ChannelPrefix`); a name longer than 63 **bytes**
//! (PostgreSQL's identifier limit, `NAMEDATALEN - 1`) is replaced by the
//! lowercase hex SHA-1 of the whole prefixed name, as Rails main does (Rails
//! 8.1 counts characters, which differs only for non-ASCII names over 63
//! bytes but at most 63 characters). `LISTEN`/`UNLISTEN` quote the name as
//! an identifier and `NOTIFY` goes through `pg_notify(channel, payload)`,
//! exactly the channel Rails' `NOTIFY "<channel>"` uses. See
//! [`channel_name`].
//!
//! # Payloads over PostgreSQL's 8,000-byte `NOTIFY` limit: the spill table
//!
//! A payload of 8,000 bytes or more — or one `NOTIFY` cannot carry as text:
//! not UTF-8, containing NUL, starting with the marker below, or non-ASCII
//! on a database whose encoding is not UTF-8 — is inserted into the unlogged
//! table [`SPILL_TABLE`] (`id bigserial, payload bytea, created_at,
//! readers integer[]`), and the `NOTIFY` carries `__keayl_large_payload:<id>` instead
//! ([`SPILL_MARKER`]); insert and notify are one statement, so the row is
//! committed before any listener hears of it. Listeners fetch the row by id
//! on their own connection and deliver it **in order** with the stream's
//! other messages. The table is created on connect (`CREATE UNLOGGED TABLE
//! IF NOT EXISTS`, under an advisory lock). When it cannot be created (no
//! privilege), small payloads still work and a large broadcast fails with an
//! error; a spilled message that cannot be fetched (expired) is logged and
//! counted in [`Health::failed_delivery_count`]. Nothing fails silently.
//! (Rails' own adapter raises on large payloads; a Rails process listening
//! to the same channel receives the marker text instead of a large Keayl
//! payload.)
//!
//! ## The table is bounded in bytes, across processes
//!
//! Every process sharing the database spills into the same table, so the
//! bound is enforced by PostgreSQL, not by each process:
//!
//! * A payload longer than [`PostgresConfig::max_payload_bytes`] (default
//!   1 MiB) is refused before it reaches the database, with
//!   [`BroadcastError::PayloadTooLarge`].
//! * A spill runs the function `keayl_cable_spill_v1`, which takes a
//!   transaction-level advisory lock (one spill at a time per database),
//!   sums the lengths of the rows present, and inserts only if the new
//!   payload keeps the sum within [`PostgresConfig::max_spill_bytes`]
//!   (default 64 MiB of payload bytes). Under the lock every earlier spill
//!   of every process is visible (a PL/pgSQL statement takes a fresh
//!   snapshot in `READ COMMITTED`, which the backend sets on its session),
//!   so concurrent spills cannot overshoot the bound together.
//! * A row records which Keayl processes (backend pids) were listening to
//!   its channel when it was spilled (`readers`, from the
//!   `subscriber_count` registry below; a subscription is confirmed only
//!   once registered). Each of them removes itself when it fetches the row,
//!   and the last one deletes it: under normal operation the table holds
//!   only payloads still in flight, and a flood passes through without
//!   filling it. A listener that was not awaited (still subscribing) reads
//!   the row without using up anyone's turn.
//! * When a spill would exceed the bound, rows no live listener still needs
//!   are deleted first: read by all their readers, awaited only by backends
//!   that are gone, or older than [`PostgresConfig::spill_ttl`] (default
//!   30 s; listeners fetch right after the `NOTIFY`, so only a stuck
//!   listener leaves a row that long). If the payload still does not fit,
//!   the broadcast is refused with [`BroadcastError::SpillFull`]: a row a
//!   live listener has not read yet is never evicted early to make room,
//!   and a refused broadcast is never dropped silently. Refusals are
//!   counted ([`SpillStats`], and [`Health::lost_broadcast_count`]).
//! * Every process's periodic maintenance also deletes expired rows, in
//!   batches of at most 100 rows per statement and 1,000 per round.
//! * Deleted rows stay on disk as dead tuples until a vacuum, and
//!   autovacuum visits a database once a minute by default, while a flood
//!   churns the bound many times over in that time. So the function also
//!   counts the bytes spilled (across processes, in
//!   `keayl_cable_spill_state`), and after each quarter of the bound one
//!   process runs `VACUUM (SKIP_LOCKED)` of the table on a short-lived
//!   connection of its own (named `<application_name>-vacuum`).
//!
//! The bound counts payload bytes (`octet_length`, before PostgreSQL's TOAST
//! compression), and is strict. The table's disk size
//! (`pg_total_relation_size`) is the live payloads plus the dead ones the
//! latest vacuum could not yet reclaim: close to the bound at moderate
//! rates (measured: 112 MB spilled in 15 s left 12–18 MB on disk), but
//! limited by how fast vacuum keeps up under a flood (measured on 2 cores
//! at 150–300 MB/s of spills: 0.15–0.75 GB, not growing over a minute, with
//! the default 64 MiB bound), and unbounded only if vacuum cannot run (a role that does not own the table,
//! or a long-running transaction elsewhere in the database holding back
//! what vacuum may remove). Processes sharing a database should use the
//! same limits: each enforces its own `max_spill_bytes` on its own spills.
//! Versions of this crate without the bound still insert into the table
//! unchecked (their rows count towards the sum and are reclaimable at once
//! when the table is full). The spill needs PL/pgSQL (installed by
//! default).
//!
//! # subscriber_count
//!
//! PostgreSQL cannot tell who listens on a channel, so each process records
//! its `LISTEN`s in the unlogged table [`LISTENERS_TABLE`] (backend pid,
//! backend start, channel) and `subscriber_count(stream)` counts the
//! *processes* listening, ignoring rows of dead backends (checked against
//! `pg_stat_activity`). Rails processes do not register and are not counted.
//!
//! # Confirmation
//!
//! [`Subscribed::ready`] completes once the `LISTEN` executed (PostgreSQL
//! answered it), so `confirm_subscription` means broadcasts from any process
//! reach the client. While the database is down the readiness waits for the
//! reconnection, at most [`BrokerConfig::subscribe_timeout`], then fails
//! with [`PubSubError::Unavailable`]. Local subscribers of one stream share
//! its `LISTEN` ([`External`]): a later local subscriber of a stream that is
//! already live is confirmed at once.
//!
//! # Failure behaviour
//!
//! * When PostgreSQL goes away (restart, failover, network cut, backend
//!   terminated) the supervisor reconnects **forever** with exponential
//!   backoff and jitter, then re-`LISTEN`s every live stream. The outage is
//!   logged (`error` when it starts, `warn` with duration and lost broadcasts
//!   when it ends) and visible through [`Health`].
//! * A broadcast attempted while the database is down (or failing, or timing
//!   out) returns an error to its caller and is counted in
//!   [`Health::lost_broadcast_count`]. Notifications sent while this process
//!   was disconnected are not received (LISTEN/NOTIFY is at-most-once).
//! * Local clients keep being served meanwhile. No panics on database
//!   errors; dropping the backend (or [`BrokerPubSub::shutdown`](keayl_broker::BrokerPubSub::shutdown)) ends the
//!   task and closes the connection.
//!
//! [`External`]: keayl_cable::pubsub::External
//! [`Subscribed::ready`]: keayl_cable::pubsub::Subscribed::ready

use std::collections::HashSet;
use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use keayl_broker::{
    BrokerClient, BrokerConfig, OpError, Registry, SessionEnd, Supervisor, health_check_interval,
    in_flight,
};
use keayl_cable::pubsub::{
    BoxFuture, ClientHealth, PubSubClient, PubSubError, RemoteCallback, Subscribed, SubscriptionId,
};
use sha1::{Digest, Sha1};
use tokio_postgres::{AsyncMessage, Client, NoTls, Statement};
use tokio_util::sync::CancellationToken;

pub use keayl_broker::{ConfigError, Health, HealthStatus, LinkState, redact};

/// The PostgreSQL pub/sub backend: put it in an `Arc` and hand it to the
/// cable. Spill-table specifics are on its [`client`](keayl_broker::BrokerPubSub::client).
pub type PostgresPubSub = keayl_broker::BrokerPubSub<PostgresClient>;

const BACKEND: &str = "postgres";

/// PostgreSQL's `NOTIFY` payload limit: payloads must be shorter than this
/// many bytes.
pub const NOTIFY_LIMIT: usize = 8000;

/// The prefix of a `NOTIFY` payload standing for a row of [`SPILL_TABLE`]:
/// `__keayl_large_payload:<id>`.
pub const SPILL_MARKER: &str = "__keayl_large_payload:";

/// The unlogged table holding payloads too large for `NOTIFY`.
pub const SPILL_TABLE: &str = "keayl_cable_large_payloads";

/// Default of [`PostgresConfig::max_spill_bytes`]: 64 MiB of payload.
pub const DEFAULT_MAX_SPILL_BYTES: usize = 64 * 1024 * 1024;

/// Default of [`PostgresConfig::max_payload_bytes`]: 1 MiB.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// The unlogged table recording which backend listens to which channel
/// (for `subscriber_count`).
pub const LISTENERS_TABLE: &str = "keayl_cable_listeners";

/// Rails' PostgreSQL channel for `stream`: the prefixed name
/// (`"<prefix>:<stream>"`), or its lowercase hex SHA-1 when it is longer
/// than 63 bytes.
///
/// ```
/// use keayl_postgres::channel_name;
/// assert_eq!(channel_name(None, "chat:1"), "chat:1");
/// assert_eq!(channel_name(Some("app"), "chat:1"), "app:chat:1");
/// let long = "x".repeat(64);
/// assert_eq!(channel_name(None, &long).len(), 40);
/// assert_eq!(channel_name(None, &"x".repeat(63)), "x".repeat(63));
/// ```
pub fn channel_name(prefix: Option<&str>, stream: &str) -> String {
    let full = match prefix {
        Some(p) => format!("{p}:{stream}"),
        None => stream.to_owned(),
    };
    if full.len() > 63 {
        hex::encode(Sha1::digest(full.as_bytes()))
    } else {
        full
    }
}

/// `name` quoted as an SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Why a broadcast was not published, for callers that branch on the
/// spill table's limits ([`PostgresClient::broadcast_checked`]). Through
/// the [`PubSub`](keayl_cable::PubSub) trait the same refusals arrive as
/// [`PubSubError::Failed`] carrying this error's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BroadcastError {
    /// The payload is longer than [`PostgresConfig::max_payload_bytes`] (or
    /// than [`PostgresConfig::max_spill_bytes`], so it could never fit);
    /// refused without reaching the database. Retrying cannot help.
    #[error("payload of {len} bytes refused: the limit is {max} bytes (max_payload_bytes)")]
    PayloadTooLarge {
        /// The payload's length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The spill table holds [`PostgresConfig::max_spill_bytes`] of payloads
    /// that listeners have not read yet (all processes sharing the database
    /// count); nothing was published. Space frees as listeners read their
    /// rows, or after [`PostgresConfig::spill_ttl`]: retrying later may work.
    #[error(
        "payload of {len} bytes refused: the spill table {SPILL_TABLE} is full ({max_spill_bytes} bytes of unread payloads, max_spill_bytes)"
    )]
    SpillFull {
        /// The payload's length in bytes.
        len: usize,
        /// The bound in bytes.
        max_spill_bytes: usize,
    },
    /// Any other failure (database unreachable, statement refused, …).
    #[error(transparent)]
    PubSub(#[from] PubSubError),
}

impl From<BroadcastError> for PubSubError {
    fn from(e: BroadcastError) -> Self {
        match e {
            BroadcastError::PubSub(e) => e,
            refused => PubSubError::Failed(refused.to_string()),
        }
    }
}

/// Counters of the spill table's use by this process (see the crate docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SpillStats {
    /// Payloads published through the spill table.
    pub spilled: u64,
    /// Broadcasts refused with [`BroadcastError::PayloadTooLarge`].
    pub refused_too_large: u64,
    /// Broadcasts refused with [`BroadcastError::SpillFull`].
    pub refused_spill_full: u64,
}

#[derive(Default)]
struct SpillCounters {
    spilled: AtomicU64,
    refused_too_large: AtomicU64,
    refused_spill_full: AtomicU64,
}

impl SpillCounters {
    fn snapshot(&self) -> SpillStats {
        SpillStats {
            spilled: self.spilled.load(Ordering::Relaxed),
            refused_too_large: self.refused_too_large.load(Ordering::Relaxed),
            refused_spill_full: self.refused_spill_full.load(Ordering::Relaxed),
        }
    }
}

/// Configuration of the PostgreSQL backend: the shared [`BrokerConfig`]
/// (reachable through `Deref`: `config.subscribe_timeout`) plus the spill
/// table's bounds.
#[derive(Clone, Debug)]
pub struct PostgresConfig {
    /// URL (`postgres://user[:password]@host[:port]/database[?…]`, or a
    /// `key=value` string, the `channel_prefix` parameter removed), Rails'
    /// `channel_prefix` (hashed with the stream when over 63 bytes, see
    /// [`channel_name`]), reconnect and timeouts. `command_timeout` is
    /// one statement's (`NOTIFY`, a `LISTEN` batch, a spill fetch, the
    /// health check `SELECT 1`; 10 s for spilled payloads); the health
    /// check interval also runs the spill table's maintenance.
    pub broker: BrokerConfig,
    /// How long a spilled payload is kept for a listener that has not
    /// fetched it yet (listeners fetch right after the `NOTIFY`, so only a
    /// stuck or dead listener needs more than milliseconds). Older rows are
    /// deleted by the periodic maintenance and whenever room is needed.
    /// Default 30 s.
    pub spill_ttl: Duration,
    /// Upper bound, in **bytes** of payload, of the spill table
    /// ([`SPILL_TABLE`]), shared by every process using the database and
    /// enforced by PostgreSQL. A large broadcast that does not fit (after
    /// reclaiming rows no listener still needs) fails with
    /// [`BroadcastError::SpillFull`]. Default 64 MiB (`64 * 1024 * 1024`).
    pub max_spill_bytes: usize,
    /// Longest payload, in **bytes**, that may be broadcast (spilled or
    /// not); a longer one fails with [`BroadcastError::PayloadTooLarge`]
    /// without reaching the database. Default 1 MiB (`1024 * 1024`).
    pub max_payload_bytes: usize,
}

impl std::ops::Deref for PostgresConfig {
    type Target = BrokerConfig;
    fn deref(&self) -> &BrokerConfig {
        &self.broker
    }
}

impl std::ops::DerefMut for PostgresConfig {
    fn deref_mut(&mut self) -> &mut BrokerConfig {
        &mut self.broker
    }
}

impl PostgresConfig {
    /// Defaults for `url` (taken verbatim).
    pub fn new(url: impl Into<String>) -> Self {
        Self::with_broker(BrokerConfig::new(url))
    }

    fn with_broker(broker: BrokerConfig) -> Self {
        PostgresConfig {
            broker,
            spill_ttl: Duration::from_secs(30),
            max_spill_bytes: DEFAULT_MAX_SPILL_BYTES,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
        }
    }

    /// Defaults for `url`, taking Rails' `channel_prefix` from the URL's
    /// `channel_prefix` query parameter (removed from the URL given to the
    /// driver): `postgres://app@db/app?channel_prefix=myapp`. The rest is
    /// checked as the driver will read it (nothing connects).
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        let broker = BrokerConfig::from_url_unchecked(url);
        tokio_postgres::Config::from_str(&broker.url)
            .map_err(|e| ConfigError::invalid_url(BACKEND, &broker.url, e))?;
        Ok(Self::with_broker(broker))
    }

    /// Set Rails' `channel_prefix`.
    pub fn with_channel_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.broker.channel_prefix = Some(prefix.into());
        self
    }
}

/// One live connection's statements, shared with publishers.
struct Conn {
    client: Arc<Client>,
    notify: Statement,
    /// `None` when the tables could not be created (see `setup_error`).
    tables: Option<TableStatements>,
    setup_error: Option<String>,
    /// Whether the database encoding is UTF-8 (else non-ASCII text spills).
    utf8: bool,
}

struct TableStatements {
    spill: Statement,
    fetch: Statement,
    count: Statement,
    register: Statement,
    unregister: Statement,
    expire: Statement,
}

struct Shared {
    config: PostgresConfig,
    pg_config: tokio_postgres::Config,
    broker: String,
    registry: Registry,
    health: Health,
    spill: SpillCounters,
    /// Whether this process runs a `VACUUM` of the spill table right now.
    vacuuming: AtomicBool,
    cancel: CancellationToken,
    conn: Mutex<Option<Arc<Conn>>>,
}

impl Shared {
    fn channel(&self, stream: &str) -> String {
        channel_name(self.config.channel_prefix.as_deref(), stream)
    }

    fn conn(&self) -> Option<Arc<Conn>> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_conn(&self, conn: Option<Arc<Conn>>) {
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = conn;
    }
}

/// The networked half: a [`PubSubClient`] over PostgreSQL, kept alive by a
/// supervisor task. Most applications use [`PostgresPubSub`].
pub struct PostgresClient {
    shared: Arc<Shared>,
    cancel: CancellationToken,
}

impl std::fmt::Debug for PostgresClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresClient")
            .field("broker", &self.shared.broker)
            .field("channel_prefix", &self.shared.config.channel_prefix)
            .field("health", &self.shared.health)
            .finish_non_exhaustive()
    }
}

impl Drop for PostgresClient {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl BrokerClient for PostgresClient {
    const BACKEND: &'static str = BACKEND;
    type Config = PostgresConfig;

    fn config_from_url(url: &str) -> Result<PostgresConfig, ConfigError> {
        PostgresConfig::from_url(url)
    }

    fn start(config: PostgresConfig) -> Result<Self, ConfigError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| ConfigError::NoRuntime { backend: BACKEND })?;
        let mut pg_config = tokio_postgres::Config::from_str(&config.url)
            .map_err(|e| ConfigError::invalid_url(BACKEND, &config.url, e))?;
        pg_config.connect_timeout(config.connect_timeout);
        if pg_config.get_application_name().is_none() {
            pg_config.application_name(format!("keayl-cable-{}", std::process::id()));
        }
        let cancel = CancellationToken::new();
        let shared = Arc::new(Shared {
            broker: config.redacted_url(),
            config,
            pg_config,
            registry: Registry::default(),
            health: Health::new(BACKEND),
            spill: SpillCounters::default(),
            vacuuming: AtomicBool::new(false),
            cancel: cancel.clone(),
            conn: Mutex::new(None),
        });
        runtime.spawn(supervise(shared.clone(), cancel.clone()));
        Ok(PostgresClient { shared, cancel })
    }

    fn link(&self) -> Health {
        self.shared.health.clone()
    }

    fn shutdown(&self) {
        self.cancel.cancel();
    }
}

impl PostgresClient {
    /// The configuration.
    pub fn config(&self) -> &PostgresConfig {
        &self.shared.config
    }

    /// Number of channels this process wants to listen to.
    pub fn channel_count(&self) -> usize {
        self.shared.registry.channel_count()
    }

    /// This process's spill table counters.
    pub fn spill_stats(&self) -> SpillStats {
        self.shared.spill.snapshot()
    }

    /// A broadcast with the spill table's refusals typed
    /// ([`BroadcastError::PayloadTooLarge`], [`BroadcastError::SpillFull`]),
    /// for callers that branch on them (say, to tell a user a message is
    /// too large, or to retry later). Through the [`PubSub`](keayl_cable::PubSub)
    /// trait the same refusals arrive as [`PubSubError::Failed`].
    pub fn broadcast_checked(
        &self,
        stream: &str,
        message: Bytes,
    ) -> BoxFuture<'static, Result<(), BroadcastError>> {
        let shared = self.shared.clone();
        let channel = shared.channel(stream);
        Box::pin(async move {
            let result = publish(&shared, &channel, &message).await;
            match &result {
                Ok(Sent::Notified) => {}
                Ok(Sent::Spilled) => {
                    shared.spill.spilled.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    let counter = match e {
                        BroadcastError::PayloadTooLarge { .. } => {
                            Some(&shared.spill.refused_too_large)
                        }
                        BroadcastError::SpillFull { .. } => Some(&shared.spill.refused_spill_full),
                        _ => None,
                    };
                    if let Some(c) = counter {
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                    shared.health.record_lost(&e.to_string());
                }
            }
            result.map(|_| ())
        })
    }
}

/// How a payload travels.
enum Route<'a> {
    Notify(&'a str),
    Spill,
}

fn route(message: &[u8], utf8_db: bool) -> Route<'_> {
    match std::str::from_utf8(message) {
        Ok(text)
            if text.len() < NOTIFY_LIMIT
                && !text.contains('\0')
                && !text.starts_with(SPILL_MARKER)
                && (utf8_db || text.is_ascii()) =>
        {
            Route::Notify(text)
        }
        _ => Route::Spill,
    }
}

fn pg_error(e: &tokio_postgres::Error) -> PubSubError {
    if e.as_db_error().is_some() {
        PubSubError::Failed(e.to_string())
    } else {
        PubSubError::Unavailable(e.to_string())
    }
}

/// Vacuum the spill table on a short-lived connection of its own (the
/// listening connection must not stall behind it), at most one per process
/// at a time; `SKIP_LOCKED` skips it when another process is vacuuming.
/// Deleted payloads stay on disk as dead tuples until a vacuum, and
/// autovacuum visits a database only once a minute (by default): a flood
/// would grow the table by far more than the bound in that time.
fn spawn_vacuum(shared: &Arc<Shared>) {
    if shared.vacuuming.swap(true, Ordering::AcqRel) {
        return;
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        let mut pg_config = shared.pg_config.clone();
        let name = format!(
            "{}-vacuum",
            pg_config.get_application_name().unwrap_or("keayl-cable")
        );
        pg_config.application_name(name);
        let timeout = shared.config.connect_timeout + shared.config.command_timeout * 30;
        let vacuum = async {
            let (client, connection) = pg_config.connect(NoTls).await?;
            let driver = tokio::spawn(connection);
            let result = client
                .batch_execute("VACUUM (SKIP_LOCKED) keayl_cable_large_payloads")
                .await;
            drop(client);
            let _ = driver.await;
            result
        };
        let started = Instant::now();
        tokio::select! {
            _ = shared.cancel.cancelled() => {}
            result = tokio::time::timeout(timeout, vacuum) => match result {
                Ok(Ok(())) => tracing::debug!(
                    backend = "postgres",
                    took = ?started.elapsed(),
                    "vacuumed {SPILL_TABLE}"
                ),
                Ok(Err(e)) => tracing::warn!(
                    backend = "postgres",
                    error = %e,
                    "could not vacuum {SPILL_TABLE}; its disk size is left to autovacuum"
                ),
                Err(_) => tracing::warn!(
                    backend = "postgres",
                    "vacuuming {SPILL_TABLE} timed out after {timeout:?}"
                ),
            },
        }
        shared.vacuuming.store(false, Ordering::Release);
    });
}

/// How a published payload travelled.
enum Sent {
    Notified,
    Spilled,
}

/// Publish `message` on `channel` (no counting: the caller records the
/// outcome).
async fn publish(
    shared: &Arc<Shared>,
    channel: &str,
    message: &[u8],
) -> Result<Sent, BroadcastError> {
    let config = &shared.config;
    // A payload that could never fit the spill table is as hopeless as one
    // over the per-payload limit: refuse it the same way, up front.
    let max = config
        .max_payload_bytes
        .min(config.max_spill_bytes.max(NOTIFY_LIMIT - 1));
    if message.len() > max {
        return Err(BroadcastError::PayloadTooLarge {
            len: message.len(),
            max,
        });
    }
    if channel.contains('\0') {
        return Err(
            PubSubError::Failed("PostgreSQL channel names cannot contain NUL".into()).into(),
        );
    }
    let Some(conn) = shared.conn() else {
        return Err(PubSubError::Unavailable(format!(
            "postgres {} is unreachable (reconnecting); broadcast not sent",
            shared.broker
        ))
        .into());
    };
    let timeout = config.command_timeout;
    match route(message, conn.utf8) {
        Route::Notify(text) => {
            match tokio::time::timeout(
                timeout,
                conn.client.execute(&conn.notify, &[&channel, &text]),
            )
            .await
            {
                Ok(Ok(_)) => Ok(Sent::Notified),
                Ok(Err(e)) => Err(pg_error(&e).into()),
                Err(_) => Err(PubSubError::Unavailable(format!(
                    "NOTIFY timed out after {timeout:?}"
                ))
                .into()),
            }
        }
        Route::Spill => {
            let Some(tables) = &conn.tables else {
                return Err(PubSubError::Failed(format!(
                    "a payload of {} bytes needs the spill table {SPILL_TABLE}, which is unavailable: {}",
                    message.len(),
                    conn.setup_error.as_deref().unwrap_or("unknown error")
                ))
                .into());
            };
            let timeout = timeout * 5;
            let limit = i64::try_from(config.max_spill_bytes).unwrap_or(i64::MAX);
            let ttl = config.spill_ttl.as_secs_f64();
            // The server gives up waiting for the spill lock well before we
            // give up on the statement, so a timed-out spill is not published
            // later behind the caller's back.
            let lock_ms = i32::try_from(timeout.as_millis() / 2)
                .unwrap_or(i32::MAX)
                .max(1);
            let spilled = tokio::time::timeout(
                timeout,
                conn.client
                    .query_one(&tables.spill, &[&channel, &message, &limit, &ttl, &lock_ms]),
            )
            .await;
            match spilled {
                Ok(Ok(row)) => match row.get::<_, Option<i64>>(0) {
                    Some(_id) => {
                        if row.get::<_, Option<bool>>(1) == Some(true) {
                            spawn_vacuum(shared);
                        }
                        Ok(Sent::Spilled)
                    }
                    None => Err(BroadcastError::SpillFull {
                        len: message.len(),
                        max_spill_bytes: config.max_spill_bytes,
                    }),
                },
                Ok(Err(e)) => Err(pg_error(&e).into()),
                Err(_) => Err(PubSubError::Unavailable(format!(
                    "spilling a payload of {} bytes timed out after {timeout:?}",
                    message.len()
                ))
                .into()),
            }
        }
    }
}

impl PubSubClient for PostgresClient {
    fn subscribe(&self, stream: &str, callback: RemoteCallback) -> Subscribed {
        if stream.contains('\0') {
            return self.shared.registry.refuse(PubSubError::Failed(
                "PostgreSQL channel names cannot contain NUL".into(),
            ));
        }
        self.shared.registry.subscribe(
            self.shared.channel(stream),
            stream,
            callback,
            self.shared.config.subscribe_timeout,
        )
    }

    fn unsubscribe(&self, id: SubscriptionId) {
        self.shared.registry.remove(id);
    }

    fn publish(&self, stream: &str, message: Bytes) -> BoxFuture<'static, Result<(), PubSubError>> {
        let published = self.broadcast_checked(stream, message);
        Box::pin(async move { published.await.map_err(PubSubError::from) })
    }

    fn subscriber_count(&self, stream: &str) -> BoxFuture<'static, Result<usize, PubSubError>> {
        let shared = self.shared.clone();
        let channel = shared.channel(stream);
        let conn = shared.conn();
        Box::pin(async move {
            let Some(conn) = conn else {
                return Err(PubSubError::Unavailable(format!(
                    "postgres {} is unreachable (reconnecting)",
                    shared.broker
                )));
            };
            let Some(tables) = &conn.tables else {
                return Err(PubSubError::Failed(format!(
                    "the listener registry {LISTENERS_TABLE} is unavailable: {}",
                    conn.setup_error.as_deref().unwrap_or("unknown error")
                )));
            };
            let timeout = shared.config.command_timeout;
            match tokio::time::timeout(timeout, conn.client.query_one(&tables.count, &[&channel]))
                .await
            {
                Ok(Ok(row)) => Ok(row.get::<_, i64>(0).max(0) as usize),
                Ok(Err(e)) => Err(pg_error(&e)),
                Err(_) => Err(PubSubError::Unavailable(format!(
                    "subscriber count timed out after {timeout:?}"
                ))),
            }
        })
    }

    fn health(&self) -> ClientHealth {
        self.shared.health.client_health()
    }
}

// ---------------------------------------------------------------------------
// The supervisor.

async fn supervise(shared: Arc<Shared>, cancel: CancellationToken) {
    let (shared, cancel) = (&shared, &cancel);
    Supervisor {
        registry: &shared.registry,
        health: &shared.health,
        broker: &shared.broker,
        backoff: shared.config.backoff(),
    }
    .run(
        || cancel.cancelled(),
        || connect(shared),
        |(client, connection)| run_session(shared, client, connection, cancel),
        || shared.set_conn(None),
    )
    .await;
}

type Connection =
    tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>;

async fn connect(shared: &Shared) -> Result<(Client, Connection), String> {
    let timeout = shared.config.connect_timeout;
    match tokio::time::timeout(
        timeout + Duration::from_millis(100),
        shared.pg_config.connect(NoTls),
    )
    .await
    {
        Ok(Ok(pair)) => Ok(pair),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("connecting timed out after {timeout:?}")),
    }
}

/// The one operation in flight on the connection (besides publishers' and
/// spill fetches, which the driver interleaves).
enum Op {
    Setup(Result<Arc<Conn>, OpError>),
    Changed {
        sub: Vec<String>,
        unsub: Vec<String>,
        result: Result<(), OpError>,
    },
    Check(Result<(), OpError>),
}

fn op_error(e: tokio_postgres::Error) -> OpError {
    if e.as_db_error().is_some() && !e.is_closed() {
        OpError::Refused(e.to_string())
    } else {
        OpError::Fatal(e.to_string())
    }
}

async fn timed<T>(
    timeout: Duration,
    what: &str,
    f: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, OpError> {
    match tokio::time::timeout(timeout, f).await {
        Ok(r) => r.map_err(op_error),
        Err(_) => Err(OpError::Fatal(format!(
            "{what} timed out after {timeout:?}"
        ))),
    }
}

/// Creates (or upgrades) the tables and functions, under an advisory lock
/// so that processes starting together do not race on the DDL. Functions
/// are versioned by name and created only when missing: a body never
/// changes (a new behaviour gets a new name), and `CREATE OR REPLACE` would
/// fail for a role that does not own the function.
///
/// `keayl_cable_spill_v1` (see the crate docs) serializes spills on a
/// second advisory lock, held until its statement commits; as a `VOLATILE`
/// function its statements each take a fresh snapshot, so under the lock
/// (and in `READ COMMITTED`, set by [`SESSION`]) the sum it computes
/// includes every spill committed before. It returns the new row's id, or
/// NULL when the payload does not fit, and whether the caller should vacuum
/// the table (once per quarter of a bound of spilled bytes, counted in
/// `keayl_cable_spill_state` across processes).
///
/// `keayl_cable_spill_take_v1` is a listener's fetch: it removes the
/// reader's backend from the row's `readers` (the backends registered for
/// the channel at spill time) and deletes the row once all have read it;
/// NULL when the row is gone. A reader that was not awaited only reads, so
/// it cannot use up another listener's turn.
const SCHEMA: &str = r#"
BEGIN;
SELECT pg_advisory_xact_lock(7310585338293450066);
CREATE UNLOGGED TABLE IF NOT EXISTS keayl_cable_large_payloads (
    id bigserial PRIMARY KEY,
    payload bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    readers integer[] NOT NULL DEFAULT '{}'
);
CREATE UNLOGGED TABLE IF NOT EXISTS keayl_cable_spill_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    spilled_since_vacuum bigint NOT NULL DEFAULT 0
);
CREATE UNLOGGED TABLE IF NOT EXISTS keayl_cable_listeners (
    pid integer NOT NULL,
    backend_start timestamptz,
    channel text NOT NULL,
    PRIMARY KEY (pid, channel)
);
DO $do$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_attribute
        WHERE attrelid = 'keayl_cable_large_payloads'::regclass
          AND attname = 'readers' AND NOT attisdropped
    ) THEN
        ALTER TABLE keayl_cable_large_payloads ADD COLUMN readers integer[] NOT NULL DEFAULT '{}';
    END IF;
    IF to_regprocedure('keayl_cable_spill_v1(text,bytea,bigint,double precision,integer)') IS NULL THEN
        CREATE FUNCTION keayl_cable_spill_v1(
            p_channel text, p_payload bytea, p_max_bytes bigint, p_ttl_secs double precision, p_lock_ms integer,
            OUT spill_id bigint, OUT vacuum_due boolean
        ) LANGUAGE plpgsql VOLATILE AS $fn$
        DECLARE
            v_len bigint := octet_length(p_payload);
            v_used bigint;
            v_readers integer[];
            v_churn bigint;
        BEGIN
            vacuum_due := false;
            PERFORM set_config('lock_timeout', p_lock_ms || 'ms', true);
            PERFORM pg_advisory_xact_lock(7310585338293450067);
            SELECT coalesce(sum(octet_length(t.payload)), 0) INTO v_used
                FROM keayl_cable_large_payloads t;
            IF v_used + v_len > p_max_bytes THEN
                -- Room is made only from rows no live listener still needs:
                -- read by all, expired, or awaited only by dead backends.
                -- Rows being read right now are skipped, not waited for.
                DELETE FROM keayl_cable_large_payloads d WHERE d.id IN (
                    SELECT t.id FROM keayl_cable_large_payloads t
                    WHERE cardinality(t.readers) = 0
                       OR t.created_at < now() - make_interval(secs => p_ttl_secs)
                       OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = ANY (t.readers))
                    FOR UPDATE SKIP LOCKED);
                SELECT coalesce(sum(octet_length(t.payload)), 0) INTO v_used
                    FROM keayl_cable_large_payloads t;
                IF v_used + v_len > p_max_bytes THEN
                    RETURN;
                END IF;
            END IF;
            v_readers := ARRAY(
                SELECT DISTINCT l.pid FROM keayl_cable_listeners l
                JOIN pg_stat_activity a ON a.pid = l.pid
                  AND (a.backend_start IS NULL OR a.backend_start IS NOT DISTINCT FROM l.backend_start)
                WHERE l.channel = p_channel);
            INSERT INTO keayl_cable_large_payloads (payload, readers)
                VALUES (p_payload, v_readers) RETURNING id INTO spill_id;
            PERFORM pg_notify(p_channel, '__keayl_large_payload:' || spill_id);
            -- Every spilled byte becomes a dead tuple once read; after a quarter of
            -- the bound, one caller is told to vacuum.
            INSERT INTO keayl_cable_spill_state AS s (singleton, spilled_since_vacuum) VALUES (true, v_len)
                ON CONFLICT (singleton) DO UPDATE SET spilled_since_vacuum = s.spilled_since_vacuum + v_len
                RETURNING s.spilled_since_vacuum INTO v_churn;
            IF v_churn >= p_max_bytes / 4 THEN
                UPDATE keayl_cable_spill_state SET spilled_since_vacuum = 0;
                vacuum_due := true;
            END IF;
        END
        $fn$;
    END IF;
    IF to_regprocedure('keayl_cable_spill_take_v1(bigint)') IS NULL THEN
        CREATE FUNCTION keayl_cable_spill_take_v1(p_id bigint)
        RETURNS bytea LANGUAGE plpgsql VOLATILE AS $fn$
        DECLARE
            v_payload bytea;
            v_left integer;
        BEGIN
            UPDATE keayl_cable_large_payloads t SET readers = array_remove(t.readers, pg_backend_pid())
                WHERE t.id = p_id AND pg_backend_pid() = ANY (t.readers)
                RETURNING t.payload, cardinality(t.readers) INTO v_payload, v_left;
            IF NOT FOUND THEN
                -- A reader not awaited (it was not registered yet): read only.
                SELECT t.payload INTO v_payload FROM keayl_cable_large_payloads t WHERE t.id = p_id;
            ELSIF v_left = 0 THEN
                DELETE FROM keayl_cable_large_payloads t WHERE t.id = p_id;
            END IF;
            RETURN v_payload;
        END
        $fn$;
    END IF;
END
$do$;
DELETE FROM keayl_cable_listeners l WHERE l.pid = pg_backend_pid() OR NOT EXISTS (
    SELECT 1 FROM pg_stat_activity a
    WHERE a.pid = l.pid AND (a.backend_start IS NULL OR a.backend_start IS NOT DISTINCT FROM l.backend_start)
);
COMMIT;
"#;

/// Session settings the spill function relies on (see [`SCHEMA`]): a
/// database or role defaulting to `REPEATABLE READ` would let concurrent
/// spills miss each other.
const SESSION: &str = "SET default_transaction_isolation TO 'read committed'";

/// Rows the periodic maintenance deletes per statement, and statements per
/// round: expiry stays within the statement timeout, and keeps the
/// connection's one maintenance slot for a bounded time, however much has
/// expired (a table filled by a version without the bound, say).
const EXPIRE_BATCH: i64 = 100;
const EXPIRE_ROUNDS: usize = 10;

/// How often a process deletes expired spilled rows: twice per TTL, at most
/// every 30 s. (Rows are also reclaimed when a spill needs the room.)
fn expiry_interval(ttl: Duration) -> Duration {
    (ttl / 2).min(Duration::from_secs(30))
}

async fn expire_spilled(
    client: &Client,
    expire: &Statement,
    ttl_secs: f64,
    timeout: Duration,
) -> Result<(), OpError> {
    for _ in 0..EXPIRE_ROUNDS {
        let deleted = timed(
            timeout,
            "expiring spilled payloads",
            client.execute(expire, &[&ttl_secs, &EXPIRE_BATCH]),
        )
        .await?;
        if deleted < EXPIRE_BATCH as u64 {
            break;
        }
    }
    Ok(())
}

async fn prepare_tables(client: &Client, timeout: Duration) -> Result<TableStatements, OpError> {
    timed(timeout, "session settings", client.batch_execute(SESSION)).await?;
    timed(timeout, "creating tables", client.batch_execute(SCHEMA)).await?;
    let prep = |sql: &'static str| timed(timeout, "prepare", client.prepare(sql));
    Ok(TableStatements {
        spill: prep(
            "SELECT spill_id, vacuum_due FROM keayl_cable_spill_v1($1, $2, $3, $4, $5)",
        )
        .await?,
        fetch: prep("SELECT keayl_cable_spill_take_v1($1)").await?,
        count: prep(
            "SELECT count(DISTINCT l.pid) FROM keayl_cable_listeners l \
             JOIN pg_stat_activity a ON a.pid = l.pid \
               AND (a.backend_start IS NULL OR a.backend_start IS NOT DISTINCT FROM l.backend_start) \
             WHERE l.channel = $1",
        )
        .await?,
        register: prep(
            "INSERT INTO keayl_cable_listeners (pid, backend_start, channel) \
             SELECT pg_backend_pid(), (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()), c \
             FROM unnest($1::text[]) AS c ON CONFLICT DO NOTHING",
        )
        .await?,
        unregister: prep(
            "DELETE FROM keayl_cable_listeners WHERE pid = pg_backend_pid() AND channel = ANY($1::text[])",
        )
        .await?,
        // SKIP LOCKED: expiry never waits for (nor deadlocks with) a spill
        // making room or a listener reading.
        expire: prep(
            "DELETE FROM keayl_cable_large_payloads WHERE id IN ( \
               SELECT id FROM keayl_cable_large_payloads \
               WHERE created_at < now() - make_interval(secs => $1::float8) \
               LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .await?,
    })
}

/// Prepare a fresh connection: encoding, statements, tables. (The
/// `LISTEN`s follow as an ordinary change, once the session has the
/// statements a spilled notification needs.)
async fn setup(shared: Arc<Shared>, client: Arc<Client>) -> Result<Arc<Conn>, OpError> {
    let timeout = shared.config.command_timeout;
    let encoding = timed(
        timeout,
        "SHOW server_encoding",
        client.simple_query("SHOW server_encoding"),
    )
    .await?;
    let utf8 = encoding.iter().any(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0) == Some("UTF8"),
        _ => false,
    });
    if !utf8 {
        tracing::warn!(
            backend = "postgres",
            "database encoding is not UTF8: non-ASCII payloads go through the spill table"
        );
    }
    let notify = timed(
        timeout,
        "prepare",
        client.prepare("SELECT pg_notify($1, $2)"),
    )
    .await?;
    let (tables, setup_error) = match prepare_tables(&client, timeout).await {
        Ok(t) => (Some(t), None),
        Err(OpError::Fatal(e)) => return Err(OpError::Fatal(e)),
        Err(OpError::Refused(e)) => {
            let _ = client.batch_execute("ROLLBACK").await;
            tracing::error!(
                backend = "postgres",
                error = %e,
                "cannot create {SPILL_TABLE}/{LISTENERS_TABLE}: payloads of {NOTIFY_LIMIT} bytes or more will fail and subscriber_count is unavailable"
            );
            (None, Some(e))
        }
    };
    Ok(Arc::new(Conn {
        client,
        notify,
        tables,
        setup_error,
        utf8,
    }))
}

async fn listen(
    client: &Client,
    conn: &Conn,
    sub: &[String],
    unsub: &[String],
    timeout: Duration,
) -> Result<(), OpError> {
    if !sub.is_empty() {
        let sql: String = sub
            .iter()
            .map(|c| format!("LISTEN {};", quote_ident(c)))
            .collect();
        timed(timeout, "LISTEN", client.batch_execute(&sql)).await?;
        if let Some(t) = &conn.tables {
            match timed(
                timeout,
                "registering listeners",
                client.execute(&t.register, &[&sub]),
            )
            .await
            {
                Ok(_) => {}
                Err(OpError::Fatal(e)) => return Err(OpError::Fatal(e)),
                Err(OpError::Refused(e)) => tracing::warn!(
                    backend = "postgres",
                    error = %e,
                    "could not record listeners in {LISTENERS_TABLE}; subscriber_count will miss them"
                ),
            }
        }
    }
    if !unsub.is_empty() {
        let sql: String = unsub
            .iter()
            .map(|c| format!("UNLISTEN {};", quote_ident(c)))
            .collect();
        timed(timeout, "UNLISTEN", client.batch_execute(&sql)).await?;
        if let Some(t) = &conn.tables {
            match timed(
                timeout,
                "unregistering listeners",
                client.execute(&t.unregister, &[&unsub]),
            )
            .await
            {
                Ok(_) => {}
                Err(OpError::Fatal(e)) => return Err(OpError::Fatal(e)),
                Err(OpError::Refused(e)) => tracing::warn!(
                    backend = "postgres",
                    error = %e,
                    "could not remove listeners from {LISTENERS_TABLE}"
                ),
            }
        }
    }
    Ok(())
}

type Delivery = BoxFuture<'static, Result<(String, Bytes), String>>;

fn delivery(shared: &Shared, conn: Option<&Arc<Conn>>, channel: &str, payload: &str) -> Delivery {
    let channel = channel.to_owned();
    let Some(id) = payload.strip_prefix(SPILL_MARKER) else {
        let payload = Bytes::copy_from_slice(payload.as_bytes());
        return Box::pin(std::future::ready(Ok((channel, payload))));
    };
    let id: Option<i64> = id.parse().ok();
    let tables = conn.filter(|c| c.tables.is_some()).cloned();
    let timeout = shared.config.command_timeout * 5;
    Box::pin(async move {
        let id = id.ok_or_else(|| format!("malformed spill marker on channel {channel:?}"))?;
        let conn = tables.ok_or_else(|| {
            format!("spilled payload {id} on {channel:?}: {SPILL_TABLE} unavailable")
        })?;
        let Some(t) = &conn.tables else {
            unreachable!()
        };
        match tokio::time::timeout(timeout, conn.client.query_one(&t.fetch, &[&id])).await {
            Ok(Ok(row)) => match row.get::<_, Option<Vec<u8>>>(0) {
                Some(payload) => Ok((channel, Bytes::from(payload))),
                None => Err(format!(
                    "spilled payload {id} on {channel:?} not found (expired?)"
                )),
            },
            Ok(Err(e)) => Err(format!("fetching spilled payload {id} on {channel:?}: {e}")),
            Err(_) => Err(format!(
                "fetching spilled payload {id} on {channel:?} timed out"
            )),
        }
    })
}

async fn run_session(
    shared: &Arc<Shared>,
    client: Client,
    mut connection: Connection,
    cancel: &CancellationToken,
) -> SessionEnd {
    let client = Arc::new(client);
    let timeout = shared.config.command_timeout;
    let mut conn: Option<Arc<Conn>> = None;
    let mut actual: HashSet<String> = HashSet::new();
    let mut op: Option<BoxFuture<'static, Op>> = {
        let (shared, client) = (shared.clone(), client.clone());
        Some(Box::pin(
            async move { Op::Setup(setup(shared, client).await) },
        ))
    };
    let mut announced = false;
    let mut deliveries: FuturesOrdered<Delivery> = FuturesOrdered::new();
    let mut tick = health_check_interval(shared.config.health_check_interval);
    let mut last_expiry = Instant::now();
    loop {
        let busy = op.is_some();
        tokio::select! {
            _ = cancel.cancelled() => return SessionEnd::Cancelled,
            message = std::future::poll_fn(|cx| connection.poll_message(cx)) => match message {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    deliveries.push_back(delivery(shared, conn.as_ref(), n.channel(), n.payload()));
                }
                Some(Ok(AsyncMessage::Notice(n))) => {
                    tracing::debug!(backend = "postgres", severity = n.severity(), "{}", n.message());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return SessionEnd::Lost(e.to_string()),
                None => return SessionEnd::Lost("connection closed".into()),
            },
            Some(d) = deliveries.next(), if !deliveries.is_empty() => match d {
                Ok((channel, payload)) => {
                    shared.registry.dispatch(&channel, payload);
                }
                Err(e) => shared.health.record_failed_delivery(&e),
            },
            done = in_flight(&mut op) => {
                op = None;
                match done {
                    Op::Setup(Ok(c)) => {
                        shared.set_conn(Some(c.clone()));
                        // Everything wanted is listened to again (a no-op
                        // batch when nothing is).
                        let (client, c2) = (client.clone(), c.clone());
                        let sub = shared.registry.take_all();
                        op = Some(Box::pin(async move {
                            let result = listen(&client, &c2, &sub, &[], timeout).await;
                            Op::Changed { sub, unsub: Vec::new(), result }
                        }));
                        conn = Some(c);
                        continue;
                    }
                    Op::Setup(Err(OpError::Fatal(e) | OpError::Refused(e))) => {
                        return SessionEnd::Lost(format!("setting up the listener: {e}"));
                    }
                    Op::Changed { sub, unsub, result: Ok(()) } => {
                        shared.registry.applied(&mut actual, &sub, &unsub);
                    }
                    Op::Changed { sub, unsub, result: Err(OpError::Refused(e)) } => {
                        tracing::error!(backend = "postgres", channels = sub.len() + unsub.len(), error = %e, "PostgreSQL refused LISTEN/UNLISTEN");
                        shared.registry.fail(&sub, &PubSubError::Failed(e));
                    }
                    Op::Changed { result: Err(OpError::Fatal(e)), .. } | Op::Check(Err(OpError::Fatal(e))) => {
                        return SessionEnd::Lost(e);
                    }
                    Op::Check(Err(OpError::Refused(e))) => {
                        tracing::warn!(backend = "postgres", error = %e, "maintenance statement failed");
                    }
                    Op::Check(Ok(())) => {}
                }
                if !announced && conn.is_some() {
                    announced = true;
                    shared.health.set_up(&shared.broker);
                }
            }
            _ = tick.tick(), if !busy => {
                let client = client.clone();
                let expire = (last_expiry.elapsed() >= expiry_interval(shared.config.spill_ttl))
                    .then(|| conn.clone())
                    .flatten();
                if expire.is_some() {
                    last_expiry = Instant::now();
                }
                let ttl = shared.config.spill_ttl.as_secs_f64();
                op = Some(Box::pin(async move {
                    let result = async {
                        timed(timeout, "health check", client.simple_query("SELECT 1")).await?;
                        if let Some(c) = expire
                            && let Some(t) = &c.tables
                        {
                            expire_spilled(&client, &t.expire, ttl, timeout * 5).await?;
                        }
                        Ok(())
                    }
                    .await;
                    Op::Check(result)
                }));
            }
            _ = shared.registry.changed(), if !busy => {}
        }
        if op.is_none()
            && let Some(c) = &conn
            && shared.registry.has_changes()
        {
            let (sub, unsub) = shared.registry.take_changes(&actual);
            if !sub.is_empty() || !unsub.is_empty() {
                let (client, c) = (client.clone(), c.clone());
                op = Some(Box::pin(async move {
                    let result = listen(&client, &c, &sub, &unsub, timeout).await;
                    Op::Changed { sub, unsub, result }
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_rails() {
        assert_eq!(channel_name(None, "room:1"), "room:1");
        assert_eq!(channel_name(Some("p"), "room:1"), "p:room:1");
        let s63 = "a".repeat(63);
        assert_eq!(channel_name(None, &s63), s63);
        let s64 = "a".repeat(64);
        assert_eq!(
            channel_name(None, &s64),
            hex::encode(Sha1::digest(s64.as_bytes()))
        );
        // The prefix counts, and is hashed with the name.
        let s60 = "b".repeat(60);
        assert_eq!(
            channel_name(Some("pfx"), &s60),
            hex::encode(Sha1::digest(format!("pfx:{s60}").as_bytes()))
        );
        // Bytes, not characters: 32 two-byte characters are 64 bytes.
        let cyr = "ж".repeat(32);
        assert_eq!(channel_name(None, &cyr).len(), 40);
        // Known value: SHA1("a" * 64).
        assert_eq!(
            channel_name(None, &s64),
            "0098ba824b5c16427bd7a1122a5a442a25ec644d"
        );
    }

    #[test]
    fn routes() {
        assert!(matches!(route(b"\"hi\"", true), Route::Notify(_)));
        assert!(matches!(route(&[b'a'; 7999], true), Route::Notify(_)));
        assert!(matches!(route(&[b'a'; 8000], true), Route::Spill));
        assert!(matches!(route(b"a\0b", true), Route::Spill));
        assert!(matches!(route(&[0xff, 0xfe], true), Route::Spill));
        assert!(matches!(
            route(b"__keayl_large_payload:1", true),
            Route::Spill
        ));
        assert!(matches!(route("é".as_bytes(), false), Route::Spill));
        assert!(matches!(route("é".as_bytes(), true), Route::Notify(_)));
    }

    #[test]
    fn limits_and_their_errors() {
        let c = PostgresConfig::new("postgres://h/db");
        assert_eq!(c.max_spill_bytes, 64 * 1024 * 1024);
        assert_eq!(c.max_payload_bytes, 1024 * 1024);
        assert_eq!(c.spill_ttl, Duration::from_secs(30));
        let too_large = BroadcastError::PayloadTooLarge { len: 11, max: 10 };
        let full = BroadcastError::SpillFull {
            len: 9000,
            max_spill_bytes: 8000,
        };
        for (e, words) in [
            (too_large, ["11 bytes", "10 bytes", "max_payload_bytes"]),
            (full, ["9000 bytes", SPILL_TABLE, "max_spill_bytes"]),
        ] {
            match PubSubError::from(e) {
                PubSubError::Failed(text) => {
                    assert!(words.iter().all(|w| text.contains(w)), "{text}")
                }
                other => panic!("{other:?}"),
            }
        }
        // Other failures keep their kind.
        let down = PubSubError::Unavailable("down".into());
        assert_eq!(PubSubError::from(BroadcastError::from(down.clone())), down);
    }

    #[test]
    fn expiry_runs_twice_per_ttl_at_most_every_30_s() {
        assert_eq!(
            expiry_interval(Duration::from_secs(300)),
            Duration::from_secs(30)
        );
        assert_eq!(
            expiry_interval(Duration::from_secs(30)),
            Duration::from_secs(15)
        );
        assert_eq!(
            expiry_interval(Duration::from_secs(1)),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn quoting_and_urls() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        let c =
            PostgresConfig::from_url("postgres://u:pw@h/db?channel_prefix=x&application_name=y")
                .unwrap();
        assert_eq!(c.url, "postgres://u:pw@h/db?application_name=y");
        assert_eq!(c.channel_prefix.as_deref(), Some("x"));
        assert!(!format!("{c:?}").contains("pw"));
        assert_eq!(
            redact("host=h password=secret user=u"),
            "host=h password=*** user=u"
        );
        assert!(PostgresConfig::from_url("postgres://h/db?nonsense_option=1").is_err());
    }
}
