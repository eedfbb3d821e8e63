//! PostgreSQL `LISTEN`/`NOTIFY` pub/sub for Keayl's cable, wire-compatible
//! with Rails' Action Cable PostgreSQL adapter: a Rails app and Keayl
//! processes sharing one database see each other's broadcasts. Reliable
//! streams (stream history with positions) and session snapshots are kept
//! in PostgreSQL tables shared by every process, the approach of Rails'
//! Solid Cable (see [Reliable streams](#reliable-streams-history-and-sessions-in-tables)).
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
//!   from any task through prepared statements (as well as the history
//!   reads and session statements). `LISTEN`s and `UNLISTEN`s are batched
//!   into one round trip.
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
//! # Reliable streams: history and sessions in tables
//!
//! Every process sharing the database reads and writes the same three
//! tables, so a position is assigned once per broadcast whichever process
//! publishes it, and a client may reconnect to any process:
//!
//! * [`STREAMS_TABLE`] (`stream text PRIMARY KEY, epoch, last_offset,
//!   updated_at, expires_at`): per stream (keyed by its channel name, see
//!   [`channel_name`], so `channel_prefix`es do not mix) the epoch, the
//!   last offset given, and when its history expires (the last message's
//!   time plus the stream's TTL).
//! * [`MESSAGES_TABLE`] (`stream, "offset", epoch, created_at, payload
//!   bytea`, primary key `(stream, "offset")`): the messages. Each row
//!   keeps its epoch, so a row left from an earlier epoch is never served
//!   as part of the current one.
//! * [`SESSIONS_TABLE`] (`sid text PRIMARY KEY, snapshot bytea,
//!   expires_at`, indexed on `expires_at`): session snapshots of the
//!   extended protocol's session restore.
//!
//! They are `UNLOGGED`, created on connect (`CREATE … IF NOT EXISTS`, under
//! the same advisory lock as the spill table) in a transaction of their
//! own: a role that cannot create them keeps the spill table and the
//! listener registry, the failure is logged, broadcasts then carry no
//! positions, and history and session calls fail with
//! [`HistoryError::Unavailable`] / [`PubSubError::Unavailable`].
//!
//! ## A broadcast is one statement
//!
//! On a stream whose [`HistoryConfig::limits_for`] keeps history (the
//! default: the last 100 messages for 300 s, from
//! [`BrokerConfig::history`]), a broadcast is one statement (a CTE, one
//! round trip, one transaction) that upserts the stream's row (its row lock
//! serializes the publishes of a stream across processes; a new random
//! 64-bit epoch, offsets from 1, when the row is new or its history expired
//! — its last message older than its TTL), increments the offset, inserts
//! the message, trims the stream's other rows (of other epochs, beyond the
//! limit, older than the TTL: **trimming happens in the publishing
//! statement**), and `NOTIFY`s `__keayl_position:<epoch>:<offset>:<message>`
//! ([`POSITION_MARKER`]). Listeners parse the position and deliver the
//! message with it; since a notification is sent at commit and the row lock
//! orders the commits, every process hears a stream's messages in offset
//! order. A payload that does not parse as positioned (or a raw `NOTIFY`,
//! from Rails say) is delivered as it came, without a position.
//!
//! A positioned payload too large for `NOTIFY` with its position (a
//! message within [`NOTIFY_LIMIT`] minus about 100 bytes fits) goes through
//! the spill table as above (`keayl_cable_spill_v2`: the same bound and
//! readers, minus the `NOTIFY`), and the same statement notifies
//! `__keayl_position:<epoch>:<offset>:__keayl_large_payload:<id>`: the
//! position survives the spill. A spill refused as full
//! ([`BroadcastError::SpillFull`]) takes no offset and records nothing. The
//! history itself holds the payload (not the marker).
//!
//! On a stream without history (`limit` 0 or a zero TTL: a
//! [`HistoryConfig::with_stream_override`] with limit 0, or
//! [`HistoryConfig::off`]) a broadcast is the plain `NOTIFY` (or spill) it
//! always was: no table is written, no position. A message starting with
//! either marker always spills, so a listener never misreads it.
//!
//! **Rails and older Keayl versions** listening to a stream that keeps
//! history receive the marker-prefixed payload, not the bare message (Rails
//! → Keayl is unaffected: it arrives without a position). To keep
//! Keayl → Rails broadcasts verbatim, turn history off for those streams
//! (an override with limit 0, or [`HistoryConfig::off`]); upgrade every
//! Keayl process before turning it on.
//!
//! ## Reading
//!
//! [`PubSub::history`](keayl_cable::PubSub::history) is one statement
//! (one snapshot: the stream's row and its messages agree), within
//! [`BrokerConfig::command_timeout`]. After `(offset, epoch)`: a stream
//! unknown, another epoch, or an offset beyond the last one →
//! [`HistoryError::UnknownEpoch`]; the next offset no longer held →
//! [`HistoryError::Evicted`]`(offset + 1)`; else every message after it,
//! in order (none after the last). `Since(t)`: the messages created at or
//! after Unix time `t` (by the database's clock). Rows older than the TTL
//! or beyond the limit (the reader's [`HistoryConfig`]) are never returned,
//! whether or not they were deleted yet. The database unreachable, failing
//! or slow → [`HistoryError::Unavailable`]. Processes sharing a database
//! should use the same `HistoryConfig` (the publisher trims by its
//! limits, the reader filters by its own).
//!
//! Sessions: `save_session` upserts (`expires_at = now() + ttl`),
//! `take_session` is `DELETE … RETURNING` (so a session is restored once;
//! `None` when absent or expired), `remove_session` deletes. Failures are
//! [`PubSubError::Unavailable`].
//!
//! ## Bounds
//!
//! * Per stream at most `limit` messages (trimmed by every broadcast), none
//!   older than the TTL when read.
//! * Every 30 s, each process's maintenance (on its listening connection,
//!   beside the health check) purges: the rows of streams whose history
//!   expired, and streams expired for a second TTL (forgotten: until then a
//!   client holding the epoch is told there is nothing new, or what was
//!   evicted, rather than that its epoch is unknown); and expired sessions.
//!   Each in bounded batches: 100 streams (or sessions) per `DELETE … FOR
//!   UPDATE SKIP LOCKED`, at most 10 statements per round; live streams are
//!   skipped (their broadcasts trim them), and a broadcast on a stream being
//!   purged waits for it.
//! * [`HistoryConfig::max_bytes`] (the in-process bound) does not apply:
//!   the messages table holds at most `limit` ×
//!   [`PostgresConfig::max_payload_bytes`] per stream with recent
//!   broadcasts. Sessions hold one row per saved session until taken,
//!   removed or purged.
//!
//! ## Restarts
//!
//! The tables persist across Keayl restarts and a clean PostgreSQL restart:
//! epochs and offsets survive, and clients resume where they were. That is
//! correct, since positions come from the database and not from any
//! process. PostgreSQL empties `UNLOGGED` tables in crash recovery and does
//! not replicate them to standbys. After a crash or a failover every stream
//! starts a new epoch, and a client resuming from an old position gets
//! [`HistoryError::UnknownEpoch`] (the cable answers `reject_history`), not
//! a wrong message. Logged tables with asynchronous replication could
//! instead hand out an offset of a surviving epoch a second time. Sessions
//! lost that way mean a new session for the client.
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
// vacuum), `history` (the position marker, history reads, sessions, the
// purge), `presence` (presence sets: table, functions, calls), `publish` (NOTIFY or spill, positioned or not), `client`
// (PostgresClient and the state it shares), `session` (the supervisor task
// and its session loop).
mod channel;
mod client;
mod config;
mod history;
mod presence;
mod publish;
mod schema;
mod session;
mod spill;

pub use channel::channel_name;
pub use client::PostgresClient;
pub use config::{DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_MAX_SPILL_BYTES, PostgresConfig};
pub use history::POSITION_MARKER;
pub use schema::{LISTENERS_TABLE, MESSAGES_TABLE, SESSIONS_TABLE, SPILL_TABLE, STREAMS_TABLE};
pub use spill::{BroadcastError, NOTIFY_LIMIT, SPILL_MARKER, SpillStats};

pub use keayl_broker::{ConfigError, Health, HealthStatus, LinkState, redact};

#[cfg(doc)]
use keayl_broker::BrokerConfig;
#[cfg(doc)]
use keayl_cable::pubsub::{HistoryConfig, HistoryError, PubSubError};

/// The PostgreSQL pub/sub backend: put it in an `Arc` and hand it to the
/// cable. Spill-table specifics are on its [`client`](keayl_broker::BrokerPubSub::client).
pub type PostgresPubSub = keayl_broker::BrokerPubSub<PostgresClient>;

const BACKEND: &str = "postgres";
