//! What every connection of a process shares, below both the [`Cable`]
//! that builds it and the [`Connection`]s that use it: the pub/sub backend,
//! the subscribable channels, the limits and their process-wide budgets.
//! (The app's connection handler is the one part of a cable that acts on
//! connections; it is kept beside this, not in it, so that `connection`
//! needs nothing from `cable`.)
//!
//! [`Cable`]: crate::Cable
//! [`Connection`]: crate::connection::Connection

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::channel::ChannelFactory;
use crate::log_limit::LogLimit;
use crate::pubsub::PubSub;

/// Limits of a cable, with their defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CableConfig {
    /// Subscriptions one connection may hold; further subscribes are refused
    /// (logged, no frame). Default: 256.
    pub max_subscriptions: usize,
    /// Longest subscription identifier accepted, in bytes; a longer one is
    /// refused (logged, no frame), so no client can make the server keep
    /// megabytes of identifiers. Real identifiers, Turbo's signed names
    /// included, are a few hundred bytes. Default: 4 KiB.
    pub max_identifier_bytes: usize,
    /// Bytes of stream messages one subscription holds back while it waits
    /// for its confirmation (its streams going live in pub/sub); beyond it
    /// the client is disconnected as too slow, as a full outbound queue
    /// would. Default: 1 MiB.
    pub max_pending_bytes: usize,
    /// Memory the subscriptions of one connection may hold, estimated from
    /// what the client sent (each subscription: 7 bytes per identifier byte,
    /// 160 per JSON value of its params, 1 KiB; measured, release build).
    /// A subscribe beyond it is refused (logged, no frame). Default: 1 MiB.
    pub max_subscription_bytes: usize,
    /// The same estimate over every connection of the process: no number of
    /// connections can make subscriptions take more. Default: 1 GiB.
    pub max_total_subscription_bytes: usize,
    /// Log lines per second for what clients can trigger at will (a
    /// `subscribed` that fails or panics, a timer that fails); the rest are
    /// counted and summarised. Default: 20.
    pub log_lines_per_second: u32,
    /// How long a history request (extended protocol) may wait for the
    /// pub/sub backend; past it the client gets `reject_history` and its
    /// live messages flow again. Default: 5 s.
    pub history_timeout: std::time::Duration,
    /// How long a closed connection's session (extended protocol) can be
    /// restored by a client reconnecting with its `sid`: its identifiers
    /// and subscriptions come back without `connect`. Zero: no restore.
    /// Default: 300 s (AnyCable's).
    pub session_ttl: std::time::Duration,
    /// How long the live messages of restored subscriptions are held
    /// waiting for the client's `history` request (so what it missed comes
    /// first, in order); then they flow anyway. Default: 2 s.
    pub restore_hold: std::time::Duration,
    /// Extended protocol: disconnect (reason `no_pong`, reconnect allowed)
    /// a client that sent no `{"command":"pong"}` for this long. The
    /// `@anycable/core` client answers every ping, so set it above the
    /// ping interval (three intervals, say). `None` (the default): off.
    pub pong_timeout: Option<std::time::Duration>,
    /// Extended protocol: how long a presence session outlives its
    /// connection (a page reload within it does not make its user leave
    /// and join again), and how long the sessions of a process that died
    /// stay. Default: 15 s (AnyCable's).
    pub presence_ttl: std::time::Duration,
    /// Distinct presence ids one stream may hold; a join of a new id beyond
    /// it gets a presence error. Default: 1,000.
    pub max_presence_members: usize,
    /// Longest presence info (JSON) accepted from a client, in bytes.
    /// Default: 1 KiB.
    pub max_presence_info_bytes: usize,
    /// Presence and whisper commands (`join`, `leave`, `presence`,
    /// `whisper`) one connection may send per second; beyond it they are
    /// dropped (logged, rate-limited), so one page cannot flood a room or
    /// the broker. Default: 20.
    pub max_presence_commands_per_second: u32,
}

impl Default for CableConfig {
    fn default() -> Self {
        CableConfig {
            max_subscriptions: 256,
            max_identifier_bytes: 4 * 1024,
            max_pending_bytes: 1024 * 1024,
            max_subscription_bytes: 1024 * 1024,
            max_total_subscription_bytes: 1024 * 1024 * 1024,
            log_lines_per_second: 20,
            history_timeout: std::time::Duration::from_secs(5),
            session_ttl: std::time::Duration::from_secs(300),
            restore_hold: std::time::Duration::from_secs(2),
            pong_timeout: None,
            presence_ttl: std::time::Duration::from_secs(15),
            max_presence_members: 1_000,
            max_presence_info_bytes: 1024,
            max_presence_commands_per_second: 20,
        }
    }
}

pub(crate) struct Registry {
    pubsub: Arc<dyn PubSub>,
    channels: HashMap<String, ChannelFactory>,
    config: CableConfig,
    /// Estimated bytes held by every subscription of the process.
    subscription_bytes: Arc<AtomicUsize>,
    log_limit: LogLimit,
    suppressed_logs: AtomicU64,
    /// History requests answered with `reject_history`.
    rejected_history: AtomicU64,
    /// History requests answered with `confirm_history`.
    served_history: AtomicU64,
    /// Sessions restored (extended protocol).
    restored_sessions: AtomicU64,
    /// JWT identification, when enabled.
    jwt: Option<crate::jwt::JwtIdentifier>,
    /// The presence sessions of this process's live connections, touched
    /// so they do not expire; and whether the task doing it runs.
    pub(crate) presence: crate::connection::PresenceTracker,
    /// Numbers this process's connections (whisper senders).
    next_socket: AtomicU64,
}

impl Registry {
    pub(crate) fn new(
        pubsub: Arc<dyn PubSub>,
        channels: HashMap<String, ChannelFactory>,
        config: CableConfig,
    ) -> Self {
        Registry {
            pubsub,
            channels,
            subscription_bytes: Arc::default(),
            log_limit: LogLimit::new(config.log_lines_per_second),
            suppressed_logs: AtomicU64::new(0),
            rejected_history: AtomicU64::new(0),
            served_history: AtomicU64::new(0),
            restored_sessions: AtomicU64::new(0),
            jwt: None,
            presence: Default::default(),
            next_socket: AtomicU64::new(1),
            config,
        }
    }

    pub(crate) fn with_jwt(mut self, jwt: Option<crate::jwt::JwtIdentifier>) -> Self {
        self.jwt = jwt;
        self
    }

    pub(crate) fn jwt(&self) -> Option<&crate::jwt::JwtIdentifier> {
        self.jwt.as_ref()
    }

    /// A number for a new connection, unique in the process.
    pub(crate) fn next_socket(&self) -> u64 {
        self.next_socket.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn pubsub(&self) -> &Arc<dyn PubSub> {
        &self.pubsub
    }

    pub(crate) fn config(&self) -> &CableConfig {
        &self.config
    }

    pub(crate) fn subscription_bytes(&self) -> usize {
        self.subscription_bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn subscription_budget(&self) -> &Arc<AtomicUsize> {
        &self.subscription_bytes
    }

    /// Whether one more line about a client-triggered failure may be logged
    /// now (see [`CableConfig::log_lines_per_second`]).
    pub(crate) fn log_allowed(&self) -> bool {
        self.log_limit.allow(&self.suppressed_logs)
    }

    pub(crate) fn suppressed_logs(&self) -> u64 {
        self.suppressed_logs.load(Ordering::Relaxed)
    }

    pub(crate) fn count_rejected_history(&self) {
        self.rejected_history.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn rejected_history(&self) -> u64 {
        self.rejected_history.load(Ordering::Relaxed)
    }

    pub(crate) fn count_served_history(&self) {
        self.served_history.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn served_history(&self) -> u64 {
        self.served_history.load(Ordering::Relaxed)
    }

    pub(crate) fn count_restored_session(&self) {
        self.restored_sessions.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn restored_sessions(&self) -> u64 {
        self.restored_sessions.load(Ordering::Relaxed)
    }

    pub(crate) fn has_channel(&self, name: &str) -> bool {
        self.channels.contains_key(name)
    }

    pub(crate) fn channel_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.channels.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    pub(crate) fn channel_factory(&self, name: &str) -> Option<ChannelFactory> {
        self.channels.get(name).cloned()
    }
}
