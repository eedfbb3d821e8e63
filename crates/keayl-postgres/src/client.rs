//! [`PostgresClient`]: the client half, the state it shares with its
//! supervisor, and its [`PubSubClient`] and [`BrokerClient`] impls.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use keayl_broker::{Background, BrokerClient, ConfigError, Core, Health};
use keayl_cable::pubsub::{
    BoxFuture, ClientHealth, HistoryEntry, HistoryError, HistoryFrom, PresenceError,
    PresenceJoined, PresenceLeft, PresenceLimits, PresenceSet, PubSubClient, PubSubError,
    RemoteCallback, Subscribed, SubscriptionId,
};
use tokio_util::sync::CancellationToken;

use crate::history;
use crate::presence;
use crate::publish::{Sent, pg_error, publish};
use crate::schema::Conn;
use crate::session::supervise;
use crate::spill::SpillCounters;
use crate::{BACKEND, BroadcastError, LISTENERS_TABLE, PostgresConfig, SpillStats, channel_name};

/// What the client shares with its supervisor task (and the vacuums it
/// spawns).
pub(crate) struct Shared {
    /// Configuration, redacted URL, wanted channels, health.
    pub(crate) core: Core<PostgresConfig>,
    /// The driver's configuration, application name set.
    pub(crate) pg_config: tokio_postgres::Config,
    pub(crate) spill: SpillCounters,
    /// Whether this process runs a `VACUUM` of the spill table right now.
    pub(crate) vacuuming: AtomicBool,
    /// The client's [`Background`] token: cancelled at shutdown.
    pub(crate) cancel: CancellationToken,
    /// The live connection's statements, while there is one.
    conn: Mutex<Option<Arc<Conn>>>,
}

impl std::ops::Deref for Shared {
    type Target = Core<PostgresConfig>;
    fn deref(&self) -> &Core<PostgresConfig> {
        &self.core
    }
}

impl Shared {
    /// The channel of `stream`.
    pub(crate) fn channel(&self, stream: &str) -> String {
        channel_name(self.config.channel_prefix.as_deref(), stream)
    }

    /// The live connection, if any.
    pub(crate) fn conn(&self) -> Option<Arc<Conn>> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Set (or forget) the live connection.
    pub(crate) fn set_conn(&self, conn: Option<Arc<Conn>>) {
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = conn;
    }
}

/// The networked half: a [`PubSubClient`] over PostgreSQL, kept alive by a
/// supervisor task. Most applications use [`PostgresPubSub`](crate::PostgresPubSub).
pub struct PostgresClient {
    shared: Arc<Shared>,
    task: Background,
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

impl BrokerClient for PostgresClient {
    const BACKEND: &'static str = BACKEND;
    type Config = PostgresConfig;

    fn config_from_url(url: &str) -> Result<PostgresConfig, ConfigError> {
        PostgresConfig::from_url(url)
    }

    fn start(config: PostgresConfig) -> Result<Self, ConfigError> {
        let task = Background::current(BACKEND)?;
        let mut pg_config = tokio_postgres::Config::from_str(&config.url)
            .map_err(|e| ConfigError::invalid_url(BACKEND, &config.url, e))?;
        pg_config.connect_timeout(config.connect_timeout);
        if pg_config.get_application_name().is_none() {
            pg_config.application_name(format!("keayl-cable-{}", std::process::id()));
        }
        let shared = Arc::new(Shared {
            core: Core::new(BACKEND, config),
            pg_config,
            spill: SpillCounters::default(),
            vacuuming: AtomicBool::new(false),
            cancel: task.token().clone(),
            conn: Mutex::new(None),
        });
        task.spawn(|cancel| supervise(shared.clone(), cancel));
        Ok(PostgresClient { shared, task })
    }

    fn link(&self) -> Health {
        self.shared.health.clone()
    }

    fn shutdown(&self) {
        self.task.cancel();
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
        let stream = stream.to_owned();
        Box::pin(async move {
            let result = publish(&shared, &stream, &channel, &message).await;
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

impl PubSubClient for PostgresClient {
    fn subscribe(&self, stream: &str, callback: RemoteCallback) -> Subscribed {
        if stream.contains('\0') {
            return self.shared.registry.refuse(PubSubError::Failed(
                "PostgreSQL channel names cannot contain NUL".into(),
            ));
        }
        self.shared
            .subscribe(self.shared.channel(stream), stream, callback)
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

    /// From [`STREAMS_TABLE`](crate::STREAMS_TABLE) and
    /// [`MESSAGES_TABLE`](crate::MESSAGES_TABLE), shared by every process
    /// (see the crate docs).
    fn history(
        &self,
        stream: &str,
        from: &HistoryFrom,
    ) -> BoxFuture<'static, Result<Vec<HistoryEntry>, HistoryError>> {
        let limits = self.shared.config.history.limits_for(stream);
        let channel = self.shared.channel(stream);
        Box::pin(history::read(
            self.shared.clone(),
            channel,
            limits,
            from.clone(),
        ))
    }

    /// In [`SESSIONS_TABLE`](crate::SESSIONS_TABLE).
    fn save_session(
        &self,
        sid: &str,
        snapshot: Bytes,
        ttl: std::time::Duration,
    ) -> BoxFuture<'static, Result<(), PubSubError>> {
        Box::pin(history::save_session(
            self.shared.clone(),
            sid.to_owned(),
            snapshot,
            ttl,
        ))
    }

    fn take_session(&self, sid: &str) -> BoxFuture<'static, Result<Option<Bytes>, PubSubError>> {
        Box::pin(history::take_session(self.shared.clone(), sid.to_owned()))
    }

    fn remove_session(&self, sid: &str) -> BoxFuture<'static, Result<(), PubSubError>> {
        Box::pin(history::remove_session(self.shared.clone(), sid.to_owned()))
    }

    /// In the unlogged table `keayl_cable_presence`, shared by every
    /// process using the database (with the same `channel_prefix`): one
    /// statement, serialized per stream by an advisory lock, so concurrent
    /// joins of one id report one join. Expiry follows the database clock.
    fn presence_join(
        &self,
        stream: &str,
        session: &str,
        id: &str,
        info: Bytes,
        limits: PresenceLimits,
    ) -> BoxFuture<'static, Result<PresenceJoined, PresenceError>> {
        Box::pin(presence::join(
            self.shared.clone(),
            stream.to_owned(),
            session.to_owned(),
            id.to_owned(),
            info,
            limits,
        ))
    }

    fn presence_leave(
        &self,
        stream: &str,
        session: &str,
    ) -> BoxFuture<'static, Result<Option<String>, PresenceError>> {
        Box::pin(presence::leave(
            self.shared.clone(),
            stream.to_owned(),
            session.to_owned(),
        ))
    }

    fn presence_touch(
        &self,
        stream: &str,
        sessions: Vec<String>,
        ttl: std::time::Duration,
    ) -> BoxFuture<'static, Result<Vec<String>, PresenceError>> {
        Box::pin(presence::touch(
            self.shared.clone(),
            stream.to_owned(),
            sessions,
            ttl,
        ))
    }

    fn presence_info(
        &self,
        stream: &str,
    ) -> BoxFuture<'static, Result<PresenceSet, PresenceError>> {
        Box::pin(presence::info(self.shared.clone(), stream.to_owned()))
    }

    /// Every stream of this process's `channel_prefix`, in batches of 100
    /// streams (one transaction each, at most 20 per call): each left id
    /// is reported by the one reap whose `DELETE` removed its last session.
    fn presence_reap(&self) -> BoxFuture<'static, Result<Vec<PresenceLeft>, PresenceError>> {
        Box::pin(presence::reap(self.shared.clone()))
    }
}
