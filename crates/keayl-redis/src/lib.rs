//! Redis pub/sub for Keayl's cable, wire-compatible with Rails' Action Cable
//! Redis adapter: a Rails app and Keayl processes can share one Redis and see
//! each other's broadcasts (Rails subscribers need raw messages: see
//! [reliable streams](#reliable-streams-history-in-redis) for the streams
//! that keep history, whose broadcasts carry a position).
//!
//! ```no_run
//! # async fn demo() -> Result<(), keayl_redis::ConfigError> {
//! use std::sync::Arc;
//! use keayl_redis::RedisPubSub;
//!
//! let redis = RedisPubSub::from_url("redis://127.0.0.1:6379/0?channel_prefix=myapp")?;
//! let health = redis.health(); // up/down, reconnects, lost broadcasts
//! let pubsub: Arc<dyn keayl_cable::PubSub> = Arc::new(redis);
//! # let _ = (health, pubsub); Ok(()) }
//! ```
//!
//! # Design
//!
//! * **One subscriber connection per process** (RESP2 `SUBSCRIBE` mode,
//!   `redis::aio::PubSub`) carries every stream. Local subscribers are
//!   multiplexed onto it by [`External`]: the first local subscriber of a
//!   stream makes the broker subscription, the last one to leave drops it.
//! * **Publishing uses a second connection** (a multiplexed connection with
//!   a response timeout), so `PUBLISH` never waits behind subscription
//!   traffic. Broadcasts from one task keep their order; messages of one
//!   stream arrive in publish order.
//! * One supervisor task owns the subscriber connection. It reconciles the
//!   wanted set of channels with the broker in batches (one `SUBSCRIBE` for
//!   many channels), dispatches messages, and sends a `PING` every
//!   [`BrokerConfig::health_check_interval`] to notice a silent network cut.
//!
//! # Naming (Rails compatible)
//!
//! The broker channel of stream `s` is `s`, or `"<channel_prefix>:s"` when a
//! prefix is configured — Rails' `ChannelPrefix`
//! (`[channel_prefix, broadcasting].compact.join(":")`). That covers the
//! internal channels too: a remote disconnect for user `alice` travels on
//! `"<prefix>:action_cable/alice"`, so `ActionCable.server.remote_connections`
//! in a Rails app disconnects Keayl clients and vice versa. Payloads of
//! streams without history are published verbatim (cable broadcasts are
//! JSON text, as Rails' coder produces); those of streams with history are
//! framed with their position (below). See [`BrokerConfig::prefixed`].
//!
//! # Confirmation
//!
//! A subscription's [`Subscribed::ready`] completes only after Redis
//! acknowledged the `SUBSCRIBE`, so the cable sends `confirm_subscription`
//! only when broadcasts from any process reach the client. When Redis is down
//! the readiness waits for the reconnection, at most
//! [`BrokerConfig::subscribe_timeout`], then fails with
//! [`PubSubError::Unavailable`] (the cable rejects that subscription). The
//! connection is not held meanwhile: the socket driver handles the client's
//! later commands and confirms the subscription when Redis acknowledges. Local subscribers of one stream
//! share its broker subscription ([`External`]): a later local subscriber of
//! a stream that is already live is confirmed at once.
//!
//! # Failure behaviour
//!
//! * When Redis goes away (restart, network cut, `CLIENT KILL`) the
//!   supervisor reconnects **forever** with exponential backoff and jitter
//!   ([`BrokerConfig::reconnect_min`] doubling to
//!   [`BrokerConfig::reconnect_max`]), then re-subscribes every live stream
//!   in one command. The outage is logged (`error` when it starts, `warn`
//!   with its duration and the number of lost broadcasts when it ends) and
//!   visible through [`Health`] (state, outage and reconnect counts).
//! * A broadcast attempted while Redis is down (or that fails or times out)
//!   returns [`PubSubError::Unavailable`] to its caller and is counted in
//!   [`Health::lost_broadcast_count`]. Nothing is dropped without trace.
//!   Messages published by others during the outage are not received (Redis
//!   pub/sub is at-most-once; the same holds for Rails).
//! * Local clients keep being served: connections, transmissions, timers
//!   and pings do not depend on Redis.
//! * No panics on broker errors; dropping the backend (or
//!   [`BrokerPubSub::shutdown`](keayl_broker::BrokerPubSub::shutdown)) ends the supervisor task, fails pending
//!   readiness futures with [`PubSubError::Closed`] and closes both
//!   connections.
//!
//! `subscriber_count(stream)` is Redis' `PUBSUB NUMSUB` of the stream's
//! channel: how many *connections* are subscribed (one per Keayl process,
//! one per Rails process), not how many local subscribers.
//!
//! # Reliable streams: history in Redis
//!
//! With [`BrokerConfig::history`] on (the default: 100 messages for 300 s
//! per stream, with per-stream overrides), every broadcast gets a
//! [`Position`] (the stream's epoch and an offset counting up by one) and
//! the stream's last messages are kept **in Redis**, so every process
//! shares one sequence of offsets and one history, and a client that
//! reconnects to any process gets what it missed
//! ([`PubSub::history`](keayl_cable::PubSub::history)).
//!
//! **Keys.** For a stream whose pub/sub channel is `C` (the stream under the
//! channel prefix, see above):
//!
//! | key              | type          | holds                                        | expires after    |
//! |------------------|---------------|----------------------------------------------|------------------|
//! | `C:keayl:hist`   | Redis Stream  | the last messages: fields `o` (offset), `m` (message) | `ttl` after the last broadcast |
//! | `C:keayl:seq`    | string (INCR) | the last offset given out                     | `2 × ttl`        |
//! | `C:keayl:epoch`  | string        | the epoch (random hex, made by a Keayl process) | `2 × ttl`      |
//!
//! Session snapshots (extended protocol session restore) are kept at
//! `<prefix>:keayl:session:<sid>` (`keayl:session:<sid>` without a prefix)
//! with `SET … PX ttl`, taken with `GETDEL` and forgotten with `DEL`; a
//! session saved by one process is restored by any. History and sessions
//! need Redis ≥ 6.2 (`XTRIM MINID`, `GETDEL`).
//!
//! These names cannot collide with Rails: Rails' Redis adapter uses only
//! pub/sub channels (`SUBSCRIBE`/`PUBLISH`), and channels are not keys —
//! they live outside Redis' keyspace, so no channel name, whatever it is,
//! can be one of these keys. Between themselves the keys are distinct:
//! every history key ends with one of the three suffixes, and a session id
//! that ends with one (only a client can make one up; Keayl's are hex) is
//! never looked up. Keys follow the channel name, so two processes share a
//! stream's history exactly when they share its channel (same prefix).
//! Keep other data of the application out of the `…:keayl:…` names.
//!
//! **A broadcast is one Lua script** (`EVALSHA`, loaded with `SCRIPT LOAD`
//! on every new connection; `EVAL` when Redis answers `NOSCRIPT`), one
//! round trip as a plain `PUBLISH` is, and atomic: it creates the epoch if
//! the stream has none (a random candidate passed by the caller; a new
//! history then starts at offset 1, also when the offset counter alone was
//! lost, e.g. evicted under `maxmemory`), `INCR`s the offset, `XADD`s the
//! message (`MAXLEN` the stream's `limit`, exact), drops entries older than
//! the `ttl` by Redis' own clock (`XTRIM MINID`, `TIME`), refreshes the
//! expiries, and `PUBLISH`es the message framed with its position:
//! `\x1ekeayl1 <offset> <epoch>\x1e<message>`. Positions are therefore
//! assigned once per broadcast, in publish order, whichever process
//! publishes. A JSON text never starts with the record separator `\x1e`,
//! so what arrives on a channel is either such a frame (delivered with its
//! position) or a raw message, e.g. from a Rails process (delivered as is,
//! without a position); a malformed frame is delivered raw.
//!
//! Streams without history publish raw `PUBLISH`es exactly as before and
//! write no key: streams whose [`HistoryConfig::limits_for`] limit (or ttl)
//! is 0, every stream under [`HistoryConfig::off`], and Action Cable's
//! internal `action_cable/…` streams (remote disconnects, which Rails
//! processes must be able to read).
//!
//! **Rails subscribers.** A Rails process *subscribed* to a stream that
//! keeps history receives the framed message, which its coder cannot
//! decode. Broadcasts from Rails to Keayl are unaffected. When Rails
//! processes also serve subscribers of some streams, give those streams a
//! limit of 0 ([`HistoryConfig::with_stream_override`]) or turn history
//! off.
//!
//! **Reads** ([`PubSub::history`](keayl_cable::PubSub::history)) are one
//! script too, on the publishing connection, within
//! [`BrokerConfig::command_timeout`]:
//!
//! * after `(offset, epoch)`: an epoch that is not the stream's current one
//!   (or none), or an offset beyond the last one, is
//!   [`HistoryError::UnknownEpoch`]; when the entry right after `offset` is
//!   gone (trimmed by the limit or older than the ttl) it is
//!   [`HistoryError::Evicted`]`(offset + 1)`; otherwise the entries after
//!   `offset`, oldest first;
//! * since a Unix time: the entries at or after it (by the time of their
//!   stream entry id, Redis' clock: keep the clocks in sync).
//!
//! Entries older than the ttl are never returned. A stream that keeps no
//! history answers [`HistoryError::Unsupported`]; Redis down, slow or
//! refusing is [`HistoryError::Unavailable`] (the client gets
//! `reject_history`, never a silent gap).
//!
//! **Bounds.** Per stream at most `limit` messages, each kept at most
//! `ttl`; an idle stream's keys vanish on their own (the history after
//! `ttl`, the epoch and offset after `2 × ttl`, so a client that saw the
//! last message is told "nothing missed" for a while after it expired).
//! After that the next broadcast starts a new epoch and old positions are
//! refused. [`HistoryConfig::max_bytes`] is an in-process bound and does
//! not apply: size Redis' memory for `limit ×` message size `×` active
//! streams. Every process should use the same history settings.
//!
//! **What survives a Redis restart.** With persistence (RDB/AOF) the keys
//! come back and history reads work across the restart (broadcasts made
//! while Redis was down were not sent: they failed loudly). Without
//! persistence the epochs are gone: the next broadcast of each stream
//! creates a new epoch, old positions get [`HistoryError::UnknownEpoch`]
//! (clients are told they may have missed messages), and saved sessions
//! are lost (clients start new sessions). Redis' script cache never
//! survives; the scripts are loaded again on reconnection.
//!
//! # Presence
//!
//! Presence sets ([`PubSub::presence_join`](keayl_cable::PubSub::presence_join)
//! and the rest) are kept **in Redis**, so every process sees one set per
//! stream. Under the channel prefix (`<prefix>:` as above, nothing without
//! one), stream `s` has these keys, each ending with its kind:
//!
//! | key                               | type       | holds                                   |
//! |-----------------------------------|------------|-----------------------------------------|
//! | `<prefix>:keayl:presence:s:sess`  | hash       | session → presence id                   |
//! | `<prefix>:keayl:presence:s:exp`   | sorted set | session → expiry (Unix ms, Redis' clock) |
//! | `<prefix>:keayl:presence:s:info`  | hash       | id → the info of its latest join        |
//! | `<prefix>:keayl:presence:s:count` | hash       | id → its sessions                       |
//! | `<prefix>:keayl:presence:s:order` | sorted set | id → join number (members in join order) |
//! | `<prefix>:keayl:presence:s:joins` | string     | the last join number (`INCR`)           |
//!
//! and one index per prefix, `<prefix>:keayl:presence:due`, a sorted set of
//! the streams with sessions by their earliest expiry, so a reap finds the
//! due streams without `SCAN`. No kind is `hist`, `seq` or `epoch`, so no
//! stream name makes a presence key that is a history key, and every
//! presence key starts with `keayl:presence:` where session keys start with
//! `keayl:session:`. (A channel prefix that itself holds `keayl:` could
//! still meet another prefix's keys: keep `keayl:` out of prefixes.)
//!
//! Every operation is **one Lua script** (like the history scripts), so it
//! is atomic whichever process runs it, and takes the time from Redis
//! (`TIME`), one clock for every process. A reap takes at most 100 due
//! streams and 1000 sessions per script run (and runs it again, up to 10
//! times, while more is due); each expired session is removed by exactly
//! one run, so each id that left is reported to one process. After each
//! operation the stream's index score is its earliest expiry, and its keys
//! (and the index) expire 60 s after its latest one: when every process is
//! gone, nothing is left behind. The last session to go deletes the
//! stream's keys. The scripts name every key they touch except in a reap,
//! which builds the keys of the due streams it reads from the index:
//! presence needs a single Redis (not Redis Cluster), like history.
//!
//! [`External`]: keayl_cable::pubsub::External
//! [`Subscribed::ready`]: keayl_cable::pubsub::Subscribed::ready
//! [`Position`]: keayl_cable::pubsub::Position
//! [`HistoryConfig::limits_for`]: keayl_cable::pubsub::HistoryConfig::limits_for
//! [`HistoryConfig::off`]: keayl_cable::pubsub::HistoryConfig::off
//! [`HistoryConfig::with_stream_override`]: keayl_cable::pubsub::HistoryConfig::with_stream_override
//! [`HistoryConfig::max_bytes`]: keayl_cable::pubsub::HistoryConfig::max_bytes
//! [`HistoryError::UnknownEpoch`]: keayl_cable::pubsub::HistoryError::UnknownEpoch
//! [`HistoryError::Evicted`]: keayl_cable::pubsub::HistoryError::Evicted
//! [`HistoryError::Unsupported`]: keayl_cable::pubsub::HistoryError::Unsupported
//! [`HistoryError::Unavailable`]: keayl_cable::pubsub::HistoryError::Unavailable

mod history;
mod presence;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use keayl_broker::{
    Background, BrokerClient, BrokerConfig, Core, OpError, SessionEnd, health_check_interval,
    in_flight,
};
use keayl_cable::pubsub::{
    BoxFuture, ClientHealth, HistoryEntry, HistoryError, HistoryFrom, PresenceError,
    PresenceJoined, PresenceLeft, PresenceLimits, PresenceSet, PubSubClient, PubSubError,
    RemoteCallback, Subscribed, SubscriptionId,
};
use redis::AsyncConnectionConfig;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use tokio_util::sync::CancellationToken;

pub use keayl_broker::{ConfigError, Health, HealthStatus, LinkState, redact};

/// The Redis backend's configuration: the shared [`BrokerConfig`] (Redis
/// needs nothing more). Build it with [`config_from_url`].
pub type RedisConfig = BrokerConfig;

/// The Redis pub/sub backend: put it in an `Arc` and hand it to the cable.
pub type RedisPubSub = keayl_broker::BrokerPubSub<RedisClient>;

const BACKEND: &str = "redis";

/// The configuration for a Redis URL
/// (`redis://[user:password@]host[:port][/db]`, `rediss://`, `unix://`),
/// Rails' `channel_prefix` taken from its `channel_prefix` query parameter:
/// `redis://host:6379/0?channel_prefix=myapp`. The rest is checked as the
/// client will read it (nothing connects).
pub fn config_from_url(url: &str) -> Result<RedisConfig, ConfigError> {
    let config = BrokerConfig::from_url_unchecked(url);
    let url = &config.url;
    if !(url.starts_with("redis://")
        || url.starts_with("rediss://")
        || url.starts_with("unix://")
        || url.starts_with("redis+unix://"))
    {
        return Err(ConfigError::invalid_url(BACKEND, url, "expected redis://…"));
    }
    redis::Client::open(url.as_str()).map_err(|e| ConfigError::invalid_url(BACKEND, url, e))?;
    Ok(config)
}

struct Shared {
    core: Core<RedisConfig>,
    client: redis::Client,
    publisher: Mutex<Option<MultiplexedConnection>>,
    publisher_broken: AtomicBool,
}

impl std::ops::Deref for Shared {
    type Target = Core<RedisConfig>;
    fn deref(&self) -> &Core<RedisConfig> {
        &self.core
    }
}

impl Shared {
    fn channel(&self, stream: &str) -> String {
        self.config.prefixed(stream)
    }

    fn publisher(&self) -> Option<MultiplexedConnection> {
        self.publisher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_publisher(&self, conn: Option<MultiplexedConnection>) {
        *self.publisher.lock().unwrap_or_else(|e| e.into_inner()) = conn;
    }

    /// A command on the publisher connection failed: when the connection is
    /// unusable, have the supervisor replace it.
    fn failed(&self, e: &redis::RedisError) {
        if is_fatal(e) {
            self.publisher_broken.store(true, Ordering::Relaxed);
            self.registry.poke();
        }
    }

    /// The history bounds of `stream`, `None` when it keeps none.
    fn bounds(&self, stream: &str) -> Option<history::Bounds> {
        history::bounds(&self.config.history, stream)
    }

    /// Where the session `sid` is kept.
    fn session_key(&self, sid: &str) -> String {
        self.config
            .prefixed(&format!("{}{sid}", history::SESSION_INFIX))
    }

    /// Run `op` on the publisher connection within the command timeout
    /// (the connection's response timeout applies to each command; this
    /// bounds the whole, a script's `NOSCRIPT` retry included).
    async fn on_publisher<T, F>(&self, what: &str, op: F) -> Result<T, String>
    where
        F: AsyncFnOnce(&mut MultiplexedConnection) -> redis::RedisResult<T>,
    {
        let Some(mut conn) = self.publisher() else {
            return Err(format!(
                "redis {} is unreachable (reconnecting)",
                self.broker
            ));
        };
        let timeout = self.config.command_timeout;
        match tokio::time::timeout(timeout + Duration::from_millis(100), op(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.failed(&e);
                Err(format!("{what} failed: {e}"))
            }
            Err(_) => Err(format!("{what}: no answer within {timeout:?}")),
        }
    }
}

/// The networked half: a [`PubSubClient`] over Redis, one subscriber
/// connection and one publisher connection, kept alive by a supervisor task.
/// Most applications use [`RedisPubSub`], which wraps it in
/// [`External`](keayl_cable::pubsub::External).
pub struct RedisClient {
    shared: Arc<Shared>,
    task: Background,
}

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClient")
            .field("broker", &self.shared.broker)
            .field("channel_prefix", &self.shared.config.channel_prefix)
            .field("health", &self.shared.health)
            .finish_non_exhaustive()
    }
}

impl BrokerClient for RedisClient {
    const BACKEND: &'static str = BACKEND;
    type Config = RedisConfig;

    fn config_from_url(url: &str) -> Result<RedisConfig, ConfigError> {
        config_from_url(url)
    }

    fn start(config: RedisConfig) -> Result<Self, ConfigError> {
        let task = Background::current(BACKEND)?;
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| ConfigError::invalid_url(BACKEND, &config.url, e))?;
        let shared = Arc::new(Shared {
            core: Core::new(BACKEND, config),
            client,
            publisher: Mutex::new(None),
            publisher_broken: AtomicBool::new(false),
        });
        task.spawn(|cancel| supervise(shared.clone(), cancel));
        Ok(RedisClient { shared, task })
    }

    fn link(&self) -> Health {
        self.shared.health.clone()
    }

    fn shutdown(&self) {
        self.task.cancel();
    }
}

impl RedisClient {
    /// The configuration.
    pub fn config(&self) -> &RedisConfig {
        &self.shared.config
    }

    /// Number of broker channels this process wants subscribed.
    pub fn channel_count(&self) -> usize {
        self.shared.registry.channel_count()
    }
}

/// Whether a Redis error means the connection is unusable.
fn is_fatal(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}

impl PubSubClient for RedisClient {
    fn subscribe(&self, stream: &str, callback: RemoteCallback) -> Subscribed {
        self.shared
            .subscribe(self.shared.channel(stream), stream, callback)
    }

    fn unsubscribe(&self, id: SubscriptionId) {
        self.shared.registry.remove(id);
    }

    fn publish(&self, stream: &str, message: Bytes) -> BoxFuture<'static, Result<(), PubSubError>> {
        let shared = self.shared.clone();
        let channel = shared.channel(stream);
        let bounds = shared.bounds(stream);
        let conn = shared.publisher();
        Box::pin(async move {
            let Some(mut conn) = conn else {
                return Err(shared.health.lost(format!(
                    "redis {} is unreachable (reconnecting); broadcast not sent",
                    shared.broker
                )));
            };
            let result: redis::RedisResult<()> = match bounds {
                // No history: a plain PUBLISH of the raw message, as Rails
                // publishes.
                None => redis::cmd("PUBLISH")
                    .arg(&channel)
                    .arg(message.as_ref())
                    .query_async::<i64>(&mut conn)
                    .await
                    .map(drop),
                // History: append and publish the positioned frame, one
                // script.
                Some(bounds) => history::publish(&mut conn, &channel, bounds, &message)
                    .await
                    .map(drop),
            };
            result.map_err(|e| {
                shared.failed(&e);
                let what = if bounds.is_some() {
                    "broadcast (history script)"
                } else {
                    "PUBLISH"
                };
                shared
                    .health
                    .lost(format!("{what} to {channel:?} failed: {e}"))
            })
        })
    }

    fn subscriber_count(&self, stream: &str) -> BoxFuture<'static, Result<usize, PubSubError>> {
        let shared = self.shared.clone();
        let channel = shared.channel(stream);
        let conn = shared.publisher();
        Box::pin(async move {
            let Some(mut conn) = conn else {
                return Err(PubSubError::Unavailable(format!(
                    "redis {} is unreachable (reconnecting)",
                    shared.broker
                )));
            };
            let result: redis::RedisResult<(String, usize)> = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&channel)
                .query_async(&mut conn)
                .await;
            result.map(|(_, n)| n).map_err(|e| {
                shared.failed(&e);
                PubSubError::Unavailable(format!("PUBSUB NUMSUB failed: {e}"))
            })
        })
    }

    fn health(&self) -> ClientHealth {
        self.shared.health.client_health()
    }

    fn history(
        &self,
        stream: &str,
        from: &HistoryFrom,
    ) -> BoxFuture<'static, Result<Vec<HistoryEntry>, HistoryError>> {
        let Some(bounds) = self.shared.bounds(stream) else {
            return Box::pin(std::future::ready(Err(HistoryError::Unsupported)));
        };
        let shared = self.shared.clone();
        let channel = shared.channel(stream);
        let from = from.clone();
        Box::pin(async move {
            let reply = shared
                .on_publisher("history read", async |conn| {
                    history::read(conn, &channel, bounds, &from).await
                })
                .await
                .map_err(HistoryError::Unavailable)?;
            history::decode_read(reply, &from)
        })
    }

    fn save_session(
        &self,
        sid: &str,
        snapshot: Bytes,
        ttl: Duration,
    ) -> BoxFuture<'static, Result<(), PubSubError>> {
        if history::is_reserved_sid(sid) {
            return Box::pin(std::future::ready(Err(PubSubError::Failed(format!(
                "session id {sid:?} is reserved"
            )))));
        }
        let shared = self.shared.clone();
        let key = shared.session_key(sid);
        Box::pin(async move {
            shared
                .on_publisher("saving a session", async |conn| {
                    if ttl.is_zero() {
                        return redis::cmd("DEL")
                            .arg(&key)
                            .query_async::<i64>(conn)
                            .await
                            .map(drop);
                    }
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(snapshot.as_ref())
                        .arg("PX")
                        .arg(history::millis(ttl))
                        .query_async::<()>(conn)
                        .await
                })
                .await
                .map_err(PubSubError::Unavailable)
        })
    }

    fn take_session(&self, sid: &str) -> BoxFuture<'static, Result<Option<Bytes>, PubSubError>> {
        if history::is_reserved_sid(sid) {
            return Box::pin(std::future::ready(Ok(None)));
        }
        let shared = self.shared.clone();
        let key = shared.session_key(sid);
        Box::pin(async move {
            shared
                .on_publisher("taking a session", async |conn| {
                    redis::cmd("GETDEL")
                        .arg(&key)
                        .query_async::<Option<Vec<u8>>>(conn)
                        .await
                })
                .await
                .map(|v| v.map(Bytes::from))
                .map_err(PubSubError::Unavailable)
        })
    }

    fn remove_session(&self, sid: &str) -> BoxFuture<'static, Result<(), PubSubError>> {
        if history::is_reserved_sid(sid) {
            return Box::pin(std::future::ready(Ok(())));
        }
        let shared = self.shared.clone();
        let key = shared.session_key(sid);
        Box::pin(async move {
            shared
                .on_publisher("removing a session", async |conn| {
                    redis::cmd("DEL")
                        .arg(&key)
                        .query_async::<i64>(conn)
                        .await
                        .map(drop)
                })
                .await
                .map_err(PubSubError::Unavailable)
        })
    }

    fn presence_join(
        &self,
        stream: &str,
        session: &str,
        id: &str,
        info: Bytes,
        limits: PresenceLimits,
    ) -> BoxFuture<'static, Result<PresenceJoined, PresenceError>> {
        let shared = self.shared.clone();
        let keys = presence::Keys::of(&shared.config, stream);
        let (session, id) = (session.to_owned(), id.to_owned());
        Box::pin(async move {
            let reply = shared
                .on_publisher("presence join", async |conn| {
                    presence::join(conn, &keys, &session, &id, &info, limits).await
                })
                .await
                .map_err(PresenceError::Unavailable)?;
            presence::decode_join(reply, limits.max_members)
        })
    }

    fn presence_leave(
        &self,
        stream: &str,
        session: &str,
    ) -> BoxFuture<'static, Result<Option<String>, PresenceError>> {
        let shared = self.shared.clone();
        let keys = presence::Keys::of(&shared.config, stream);
        let session = session.to_owned();
        Box::pin(async move {
            let reply = shared
                .on_publisher("presence leave", async |conn| {
                    presence::leave(conn, &keys, &session).await
                })
                .await
                .map_err(PresenceError::Unavailable)?;
            presence::decode_leave(reply)
        })
    }

    fn presence_touch(
        &self,
        stream: &str,
        sessions: Vec<String>,
        ttl: Duration,
    ) -> BoxFuture<'static, Result<Vec<String>, PresenceError>> {
        let shared = self.shared.clone();
        let keys = presence::Keys::of(&shared.config, stream);
        Box::pin(async move {
            // Each batch is one script (atomic); long lists take several.
            let mut missing = Vec::new();
            for batch in sessions.chunks(presence::TOUCH_BATCH) {
                let reply = shared
                    .on_publisher("presence touch", async |conn| {
                        presence::touch(conn, &keys, batch, ttl).await
                    })
                    .await
                    .map_err(PresenceError::Unavailable)?;
                missing.extend(presence::decode_missing(reply)?);
            }
            Ok(missing)
        })
    }

    fn presence_info(
        &self,
        stream: &str,
    ) -> BoxFuture<'static, Result<PresenceSet, PresenceError>> {
        let shared = self.shared.clone();
        let keys = presence::Keys::of(&shared.config, stream);
        Box::pin(async move {
            let reply = shared
                .on_publisher("presence info", async |conn| {
                    presence::info(conn, &keys).await
                })
                .await
                .map_err(PresenceError::Unavailable)?;
            presence::decode_info(reply)
        })
    }

    fn presence_reap(&self) -> BoxFuture<'static, Result<Vec<PresenceLeft>, PresenceError>> {
        let shared = self.shared.clone();
        let index = presence::index(&shared.config);
        let base = presence::base(&shared.config);
        Box::pin(async move {
            let mut left = Vec::new();
            // One script per run (atomic, bounded); more runs while it
            // reports more due work, up to a bound (the rest is for the
            // next reap).
            for round in 0..presence::REAP_ROUNDS {
                let reply = shared
                    .on_publisher("presence reap", async |conn| {
                        presence::reap(conn, &index, &base).await
                    })
                    .await
                    .map_err(PresenceError::Unavailable)
                    .and_then(presence::decode_reap);
                match reply {
                    Ok((more, got)) => {
                        left.extend(got);
                        if !more {
                            break;
                        }
                    }
                    Err(e) if round == 0 => return Err(e),
                    // Earlier runs removed sessions: report their ids.
                    Err(e) => {
                        tracing::warn!(backend = "redis", error = %e, "presence reap stopped early");
                        break;
                    }
                }
            }
            Ok(left)
        })
    }
}

// ---------------------------------------------------------------------------
// The supervisor.

struct Session {
    sink: PubSubSink,
    stream: PubSubStream,
    publisher: MultiplexedConnection,
}

async fn supervise(shared: Arc<Shared>, cancel: CancellationToken) {
    let (shared, cancel) = (&shared, &cancel);
    shared
        .supervisor()
        .run(
            || cancel.cancelled(),
            || connect(shared),
            |session| run_session(shared, session, cancel),
            || shared.set_publisher(None),
        )
        .await;
}

async fn connect(shared: &Shared) -> Result<Session, String> {
    let timeout = shared.config.connect_timeout;
    let pubsub = tokio::time::timeout(timeout, shared.client.get_async_pubsub())
        .await
        .map_err(|_| format!("connecting timed out after {timeout:?}"))?
        .map_err(|e| e.to_string())?;
    let publisher = new_publisher(shared).await?;
    let (sink, stream) = pubsub.split();
    Ok(Session {
        sink,
        stream,
        publisher,
    })
}

async fn new_publisher(shared: &Shared) -> Result<MultiplexedConnection, String> {
    let timeout = shared.config.connect_timeout;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(shared.config.command_timeout));
    let mut conn = tokio::time::timeout(
        timeout + Duration::from_millis(100),
        shared
            .client
            .get_multiplexed_async_connection_with_config(&config),
    )
    .await
    .map_err(|_| format!("connecting timed out after {timeout:?}"))?
    .map_err(|e| e.to_string())?;
    if shared.config.history.is_on() {
        // Broadcasts run the history script with EVALSHA from the first.
        let timeout = shared.config.command_timeout;
        match tokio::time::timeout(timeout, history::load_scripts(&mut conn)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if is_fatal(&e) => return Err(format!("SCRIPT LOAD: {e}")),
            Ok(Err(e)) => {
                tracing::warn!(backend = "redis", error = %e, "Redis refused SCRIPT LOAD; broadcasts with history send the script with EVAL");
            }
            Err(_) => return Err(format!("SCRIPT LOAD timed out after {timeout:?}")),
        }
    }
    Ok(conn)
}

/// The one broker operation in flight on the subscriber connection.
enum Op {
    Changed {
        sub: Vec<String>,
        unsub: Vec<String>,
        result: Result<(), OpError>,
    },
    Ping(Result<(), OpError>),
    Publisher(Result<MultiplexedConnection, String>),
}

fn op_error(e: redis::RedisError) -> OpError {
    if is_fatal(&e) {
        OpError::Fatal(e.to_string())
    } else {
        OpError::Refused(e.to_string())
    }
}

fn change_op(
    mut sink: PubSubSink,
    sub: Vec<String>,
    unsub: Vec<String>,
    timeout: Duration,
) -> BoxFuture<'static, Op> {
    Box::pin(async move {
        let work = async {
            if !sub.is_empty() {
                sink.subscribe(&sub).await.map_err(op_error)?;
            }
            if !unsub.is_empty() {
                sink.unsubscribe(&unsub).await.map_err(op_error)?;
            }
            Ok(())
        };
        let result = match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(OpError::Fatal(format!(
                "SUBSCRIBE/UNSUBSCRIBE not acknowledged within {timeout:?}"
            ))),
        };
        Op::Changed { sub, unsub, result }
    })
}

fn ping_op(mut sink: PubSubSink, timeout: Duration) -> BoxFuture<'static, Op> {
    Box::pin(async move {
        let result = match tokio::time::timeout(timeout, sink.ping::<redis::Value>()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(OpError::Fatal(e.to_string())),
            Err(_) => Err(OpError::Fatal(format!("no PING reply within {timeout:?}"))),
        };
        Op::Ping(result)
    })
}

async fn run_session(
    shared: &Arc<Shared>,
    session: Session,
    cancel: &CancellationToken,
) -> SessionEnd {
    let Session {
        sink,
        mut stream,
        publisher,
    } = session;
    shared.set_publisher(Some(publisher));
    shared.publisher_broken.store(false, Ordering::Relaxed);
    let timeout = shared.config.command_timeout;
    // Everything wanted is subscribed again (a no-op batch when nothing is).
    let mut actual: HashSet<String> = HashSet::new();
    let mut op: Option<BoxFuture<'static, Op>> = Some(change_op(
        sink.clone(),
        shared.registry.take_all(),
        Vec::new(),
        timeout,
    ));
    let mut announced = false;
    let mut tick = health_check_interval(shared.config.health_check_interval);
    loop {
        let busy = op.is_some();
        tokio::select! {
            _ = cancel.cancelled() => return SessionEnd::Cancelled,
            message = stream.next() => match message {
                Some(m) => {
                    let payload = Bytes::copy_from_slice(m.get_payload_bytes());
                    // A positioned frame (a Keayl broadcast with history)
                    // or a raw message (Rails, or no history).
                    let (message, position) = history::unframe(payload);
                    shared.registry.dispatch_at(m.get_channel_name(), message, position);
                }
                None => return SessionEnd::Lost("connection closed".into()),
            },
            done = in_flight(&mut op) => {
                op = None;
                match done {
                    Op::Changed { sub, unsub, result: Ok(()) } => {
                        shared.registry.applied(&mut actual, &sub, &unsub);
                    }
                    Op::Changed { sub, result: Err(OpError::Refused(e)), .. } => {
                        tracing::error!(backend = "redis", channels = sub.len(), error = %e, "Redis refused SUBSCRIBE/UNSUBSCRIBE");
                        shared.registry.fail(&sub, &PubSubError::Failed(e));
                    }
                    Op::Changed { result: Err(OpError::Fatal(e)), .. } | Op::Ping(Err(OpError::Fatal(e))) => {
                        return SessionEnd::Lost(e);
                    }
                    Op::Ping(Err(OpError::Refused(e))) => return SessionEnd::Lost(e),
                    Op::Ping(Ok(())) => {}
                    Op::Publisher(Ok(conn)) => shared.set_publisher(Some(conn)),
                    Op::Publisher(Err(e)) => return SessionEnd::Lost(format!("publisher connection: {e}")),
                }
                if !announced {
                    announced = true;
                    shared.health.set_up(&shared.broker);
                }
            }
            _ = tick.tick(), if !busy => {
                op = Some(ping_op(sink.clone(), timeout));
            }
            _ = shared.registry.changed(), if !busy => {}
        }
        if op.is_none() {
            if shared.publisher_broken.swap(false, Ordering::Relaxed) {
                shared.set_publisher(None);
                let shared = shared.clone();
                op = Some(Box::pin(async move {
                    Op::Publisher(new_publisher(&shared).await)
                }));
            } else if shared.registry.has_changes() {
                let (sub, unsub) = shared.registry.take_changes(&actual);
                if !sub.is_empty() || !unsub.is_empty() {
                    op = Some(change_op(sink.clone(), sub, unsub, timeout));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parsing_takes_the_prefix() {
        let c = config_from_url("redis://127.0.0.1:6379/0?channel_prefix=my%20app&protocol=resp2")
            .unwrap();
        assert_eq!(c.url, "redis://127.0.0.1:6379/0?protocol=resp2");
        assert_eq!(c.channel_prefix.as_deref(), Some("my app"));
        let c = config_from_url("redis://h/?channel_prefix=").unwrap();
        assert_eq!(c.url, "redis://h/");
        assert_eq!(c.channel_prefix.as_deref(), Some(""));
        let c = config_from_url("redis://h").unwrap();
        assert_eq!(c.channel_prefix, None);
        assert!(config_from_url("postgres://h").is_err());
        assert!(config_from_url("redis://h:port/0").is_err());
    }

    #[test]
    fn redaction_hides_passwords() {
        assert_eq!(redact("redis://:s3cret@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(redact("redis://h:1/0"), "redis://h:1/0");
        let c = RedisConfig::new("redis://u:pw@h");
        assert!(!format!("{c:?}").contains("pw"));
    }
}
