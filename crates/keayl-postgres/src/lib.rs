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

// One file per concern: `config` (PostgresConfig), `channel` (Rails'
// naming), `schema` (DDL, statements, a fresh connection's setup), `spill`
// (payloads NOTIFY cannot carry: refusals, counters, fetch, expiry,
// vacuum), `publish` (NOTIFY or spill), `client` (PostgresClient and the
// state it shares), `session` (the supervisor task and its session loop).
mod channel;
mod client;
mod config;
mod publish;
mod schema;
mod session;
mod spill;

pub use channel::channel_name;
pub use client::PostgresClient;
pub use config::{DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_MAX_SPILL_BYTES, PostgresConfig};
pub use schema::{LISTENERS_TABLE, SPILL_TABLE};
pub use spill::{BroadcastError, NOTIFY_LIMIT, SPILL_MARKER, SpillStats};

pub use keayl_broker::{ConfigError, Health, HealthStatus, LinkState, redact};

#[cfg(doc)]
use keayl_broker::BrokerConfig;
#[cfg(doc)]
use keayl_cable::pubsub::PubSubError;

/// The PostgreSQL pub/sub backend: put it in an `Arc` and hand it to the
/// cable. Spill-table specifics are on its [`client`](keayl_broker::BrokerPubSub::client).
pub type PostgresPubSub = keayl_broker::BrokerPubSub<PostgresClient>;

const BACKEND: &str = "postgres";
