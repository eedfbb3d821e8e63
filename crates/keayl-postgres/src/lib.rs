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
//!   [`PostgresConfig::health_check_interval`] notices a silent network cut.
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
//! table [`SPILL_TABLE`] (`id bigserial, payload bytea, created_at`), and
//! the `NOTIFY` carries `__keayl_large_payload:<id>` instead
//! ([`SPILL_MARKER`]); insert and notify are one statement, so the row is
//! committed before any listener hears of it. Listeners fetch the row by id
//! on their own connection and deliver it **in order** with the stream's
//! other messages. Rows older than [`PostgresConfig::spill_ttl`] (default
//! 5 minutes) are deleted by every process's periodic maintenance. The
//! table is created on connect (`CREATE UNLOGGED TABLE IF NOT EXISTS`, under
//! an advisory lock). When it cannot be created (no privilege), small
//! payloads still work and a large broadcast fails with an error; a spilled
//! message that cannot be fetched (expired) is logged and counted in
//! [`Health::failed_delivery_count`]. Nothing fails silently. (Rails' own
//! adapter raises on large payloads; a Rails process listening to the same
//! channel receives the marker text instead of a large Keayl payload.)
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
//! reconnection, at most [`PostgresConfig::subscribe_timeout`], then fails
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
//!   errors; dropping the backend (or [`PostgresPubSub::shutdown`]) ends the
//!   task and closes the connection.
//!
//! [`External`]: keayl_cable::pubsub::External
//! [`Subscribed::ready`]: keayl_cable::pubsub::Subscribed::ready

use std::collections::HashSet;
use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use keayl_cable::pubsub::broker::{
    Backoff, OpError, Registry, SessionEnd, Supervisor, health_check_interval, in_flight,
    take_query_param,
};
use keayl_cable::pubsub::{
    BoxFuture, Callback, ClientHealth, External, PubSub, PubSubClient, PubSubError, PubSubStats,
    RemoteCallback, Subscribed, SubscriptionId,
};
use sha1::{Digest, Sha1};
use tokio_postgres::{AsyncMessage, Client, NoTls, Statement};
use tokio_util::sync::CancellationToken;

pub use keayl_cable::pubsub::broker::{Health, HealthStatus, LinkState};

/// PostgreSQL's `NOTIFY` payload limit: payloads must be shorter than this
/// many bytes.
pub const NOTIFY_LIMIT: usize = 8000;

/// The prefix of a `NOTIFY` payload standing for a row of [`SPILL_TABLE`]:
/// `__keayl_large_payload:<id>`.
pub const SPILL_MARKER: &str = "__keayl_large_payload:";

/// The unlogged table holding payloads too large for `NOTIFY`.
pub const SPILL_TABLE: &str = "keayl_cable_large_payloads";

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

/// Errors from configuring the backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Not a connection string `tokio-postgres` accepts.
    #[error("invalid PostgreSQL URL {url}: {reason}")]
    InvalidUrl {
        /// The URL, password redacted.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// [`PostgresPubSub::new`] was called outside a Tokio runtime.
    #[error("the PostgreSQL backend must be created inside a Tokio runtime")]
    NoRuntime,
}

/// Configuration of the PostgreSQL backend.
#[derive(Clone)]
pub struct PostgresConfig {
    /// `postgres://user[:password]@host[:port]/database[?…]` (or a
    /// `key=value` string), the `channel_prefix` parameter removed.
    pub url: String,
    /// Rails' `channel_prefix`: every channel becomes `"<prefix>:<stream>"`
    /// (hashed when over 63 bytes).
    pub channel_prefix: Option<String>,
    /// First reconnect delay. Default 100 ms.
    pub reconnect_min: Duration,
    /// Longest reconnect delay. Default 2 s.
    pub reconnect_max: Duration,
    /// How long a subscription waits for its `LISTEN` (across a
    /// reconnection) before its readiness fails. Default 3 s.
    pub subscribe_timeout: Duration,
    /// Timeout of one statement (`NOTIFY`, a `LISTEN` batch, a spill fetch,
    /// the health check). Default 2 s (10 s for spilled payloads).
    pub command_timeout: Duration,
    /// Timeout of establishing a connection. Default 2 s.
    pub connect_timeout: Duration,
    /// Interval of the health check (`SELECT 1`) and maintenance. Default 5 s.
    pub health_check_interval: Duration,
    /// How long spilled payloads are kept. Default 5 minutes.
    pub spill_ttl: Duration,
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &redact(&self.url))
            .field("channel_prefix", &self.channel_prefix)
            .field("reconnect_min", &self.reconnect_min)
            .field("reconnect_max", &self.reconnect_max)
            .field("subscribe_timeout", &self.subscribe_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("health_check_interval", &self.health_check_interval)
            .field("spill_ttl", &self.spill_ttl)
            .finish()
    }
}

impl PostgresConfig {
    /// Defaults for `url` (taken verbatim).
    pub fn new(url: impl Into<String>) -> Self {
        PostgresConfig {
            url: url.into(),
            channel_prefix: None,
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(2),
            subscribe_timeout: Duration::from_secs(3),
            command_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            health_check_interval: Duration::from_secs(5),
            spill_ttl: Duration::from_secs(300),
        }
    }

    /// Defaults for `url`, taking Rails' `channel_prefix` from the URL's
    /// `channel_prefix` query parameter (removed from the URL given to the
    /// driver): `postgres://app@db/app?channel_prefix=myapp`.
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        let (url, prefix) = take_query_param(url, "channel_prefix");
        tokio_postgres::Config::from_str(&url).map_err(|e| ConfigError::InvalidUrl {
            url: redact(&url),
            reason: e.to_string(),
        })?;
        let mut config = PostgresConfig::new(url);
        config.channel_prefix = prefix;
        Ok(config)
    }

    /// Set Rails' `channel_prefix`.
    pub fn with_channel_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.channel_prefix = Some(prefix.into());
        self
    }
}

/// `url` with the password replaced by `***`, for logs (URLs and
/// `password=` in key/value strings).
pub fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        return match rest[..authority_end].rfind('@') {
            Some(at) => match rest[..at].split_once(':') {
                Some((user, _password)) => format!("{scheme}://{user}:***@{}", &rest[at + 1..]),
                None => url.to_owned(),
            },
            None => url.to_owned(),
        };
    }
    url.split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=***"
            } else {
                kv
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
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

impl PostgresClient {
    /// Start the client: the supervisor task connects in the background.
    /// Must run inside a Tokio runtime.
    pub fn new(config: PostgresConfig) -> Result<Self, ConfigError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ConfigError::NoRuntime)?;
        let mut pg_config =
            tokio_postgres::Config::from_str(&config.url).map_err(|e| ConfigError::InvalidUrl {
                url: redact(&config.url),
                reason: e.to_string(),
            })?;
        pg_config.connect_timeout(config.connect_timeout);
        if pg_config.get_application_name().is_none() {
            pg_config.application_name(format!("keayl-cable-{}", std::process::id()));
        }
        let shared = Arc::new(Shared {
            broker: redact(&config.url),
            config,
            pg_config,
            registry: Registry::default(),
            health: Health::new("postgres"),
            conn: Mutex::new(None),
        });
        let cancel = CancellationToken::new();
        runtime.spawn(supervise(shared.clone(), cancel.clone()));
        Ok(PostgresClient { shared, cancel })
    }

    /// The health handle.
    pub fn health(&self) -> Health {
        self.shared.health.clone()
    }

    /// The configuration.
    pub fn config(&self) -> &PostgresConfig {
        &self.shared.config
    }

    /// Number of channels this process wants to listen to.
    pub fn channel_count(&self) -> usize {
        self.shared.registry.channel_count()
    }

    /// Stop: the supervisor ends, the connection closes, pending and later
    /// subscriptions fail with [`PubSubError::Closed`], broadcasts fail.
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }
}

fn lost(shared: &Shared, error: PubSubError) -> PubSubError {
    shared.health.record_lost(&error.to_string());
    error
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
        let shared = self.shared.clone();
        let channel = shared.channel(stream);
        let conn = shared.conn();
        Box::pin(async move {
            if channel.contains('\0') {
                return Err(lost(
                    &shared,
                    PubSubError::Failed("PostgreSQL channel names cannot contain NUL".into()),
                ));
            }
            let Some(conn) = conn else {
                return Err(lost(
                    &shared,
                    PubSubError::Unavailable(format!(
                        "postgres {} is unreachable (reconnecting); broadcast not sent",
                        shared.broker
                    )),
                ));
            };
            let timeout = shared.config.command_timeout;
            let result = match route(&message, conn.utf8) {
                Route::Notify(text) => {
                    tokio::time::timeout(
                        timeout,
                        conn.client.execute(&conn.notify, &[&channel, &text]),
                    )
                    .await
                }
                Route::Spill => {
                    let Some(tables) = &conn.tables else {
                        return Err(lost(
                            &shared,
                            PubSubError::Failed(format!(
                                "a payload of {} bytes needs the spill table {SPILL_TABLE}, which is unavailable: {}",
                                message.len(),
                                conn.setup_error.as_deref().unwrap_or("unknown error")
                            )),
                        ));
                    };
                    let payload: &[u8] = &message;
                    tokio::time::timeout(
                        timeout * 5,
                        conn.client.execute(&tables.spill, &[&channel, &payload]),
                    )
                    .await
                }
            };
            match result {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(lost(&shared, pg_error(&e))),
                Err(_) => Err(lost(
                    &shared,
                    PubSubError::Unavailable(format!("NOTIFY timed out after {timeout:?}")),
                )),
            }
        })
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

/// The PostgreSQL pub/sub backend: [`External`] over a [`PostgresClient`],
/// plus its [`Health`]. Put it in an `Arc` and hand it to the cable.
pub struct PostgresPubSub {
    external: External,
    client: Arc<PostgresClient>,
}

impl std::fmt::Debug for PostgresPubSub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresPubSub")
            .field("client", &self.client)
            .field("local", self.external.local())
            .finish()
    }
}

impl PostgresPubSub {
    /// Start the backend (connects in the background). Must run inside a
    /// Tokio runtime.
    pub fn new(config: PostgresConfig) -> Result<Self, ConfigError> {
        let client = Arc::new(PostgresClient::new(config)?);
        Ok(PostgresPubSub {
            external: External::from_arc(client.clone()),
            client,
        })
    }

    /// [`PostgresConfig::from_url`] then [`new`](Self::new).
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        Self::new(PostgresConfig::from_url(url)?)
    }

    /// The health handle (clone it freely).
    pub fn health(&self) -> Health {
        self.client.health()
    }

    /// The networked client.
    pub fn client(&self) -> &PostgresClient {
        &self.client
    }

    /// The [`External`] wrapper (local subscriber registry).
    pub fn external(&self) -> &External {
        &self.external
    }

    /// See [`PostgresClient::shutdown`].
    pub fn shutdown(&self) {
        self.client.shutdown();
    }
}

impl PubSub for PostgresPubSub {
    fn subscribe(&self, stream: &str, callback: Callback) -> Subscribed {
        self.external.subscribe(stream, callback)
    }

    fn unsubscribe(&self, id: SubscriptionId) {
        self.external.unsubscribe(id)
    }

    fn broadcast(
        &self,
        stream: &str,
        message: Bytes,
    ) -> BoxFuture<'static, Result<(), PubSubError>> {
        self.external.broadcast(stream, message)
    }

    fn subscriber_count(&self, stream: &str) -> BoxFuture<'static, Result<usize, PubSubError>> {
        self.external.subscriber_count(stream)
    }

    /// Local counters plus the broker link from [`Health`] (for `/metrics`
    /// and `/health`).
    fn stats(&self) -> PubSubStats {
        self.external.stats()
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
        backoff: Backoff::new(shared.config.reconnect_min, shared.config.reconnect_max),
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

const SCHEMA: &str = "
BEGIN;
SELECT pg_advisory_xact_lock(7310585338293450066);
CREATE UNLOGGED TABLE IF NOT EXISTS keayl_cable_large_payloads (
    id bigserial PRIMARY KEY,
    payload bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNLOGGED TABLE IF NOT EXISTS keayl_cable_listeners (
    pid integer NOT NULL,
    backend_start timestamptz,
    channel text NOT NULL,
    PRIMARY KEY (pid, channel)
);
DELETE FROM keayl_cable_listeners l WHERE l.pid = pg_backend_pid() OR NOT EXISTS (
    SELECT 1 FROM pg_stat_activity a
    WHERE a.pid = l.pid AND (a.backend_start IS NULL OR a.backend_start IS NOT DISTINCT FROM l.backend_start)
);
COMMIT;
";

async fn prepare_tables(client: &Client, timeout: Duration) -> Result<TableStatements, OpError> {
    timed(timeout, "creating tables", client.batch_execute(SCHEMA)).await?;
    let prep = |sql: &'static str| timed(timeout, "prepare", client.prepare(sql));
    Ok(TableStatements {
        spill: prep(
            "WITH ins AS (INSERT INTO keayl_cable_large_payloads (payload) VALUES ($2) RETURNING id) \
             SELECT pg_notify($1, '__keayl_large_payload:' || ins.id) FROM ins",
        )
        .await?,
        fetch: prep("SELECT payload FROM keayl_cable_large_payloads WHERE id = $1").await?,
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
        expire: prep(
            "DELETE FROM keayl_cable_large_payloads WHERE created_at < now() - make_interval(secs => $1::float8)",
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
        match tokio::time::timeout(timeout, conn.client.query_opt(&t.fetch, &[&id])).await {
            Ok(Ok(Some(row))) => Ok((channel, Bytes::from(row.get::<_, Vec<u8>>(0)))),
            Ok(Ok(None)) => Err(format!(
                "spilled payload {id} on {channel:?} not found (expired?)"
            )),
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
                let expire = (last_expiry.elapsed() >= Duration::from_secs(30))
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
                            timed(timeout, "expiring spilled payloads", client.execute(&t.expire, &[&ttl])).await?;
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
