//! The cable server: the pub/sub backend, the registry of subscribable
//! channels, the app's connection handler and the limits, shared by every
//! connection of a process.
//!
//! ```
//! use keayl_cable::{Cable, channel::Channel, pubsub::InMemory};
//!
//! #[derive(Default)]
//! struct EchoChannel;
//! impl Channel for EchoChannel {
//!     const NAME: &'static str = "EchoChannel";
//!     type Action = keayl_cable::NoActions;
//! }
//!
//! let cable = Cable::builder(InMemory::new()).channel::<EchoChannel>().build();
//! assert!(cable.has_channel("EchoChannel"));
//! assert!(!cable.has_channel("String")); // only registered names subscribe
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use crate::channel::{Channel, ChannelFactory, DynChannel};
use crate::connection::{AcceptAll, Connection, ConnectionHandler, DynHandler, Identifiers, Sink};
use crate::naming::Streamable;
use crate::pubsub::{BoxFuture, PubSub, PubSubError};

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
        }
    }
}

/// The process-wide cable: cheap to clone (an `Arc`).
#[derive(Clone)]
pub struct Cable {
    inner: Arc<Inner>,
}

struct Inner {
    pubsub: Arc<dyn PubSub>,
    channels: HashMap<String, ChannelFactory>,
    handler: Arc<dyn DynHandler>,
    config: CableConfig,
    /// Estimated bytes held by every subscription of the process.
    subscription_bytes: Arc<std::sync::atomic::AtomicUsize>,
    log_limit: crate::socket::LogLimit,
    suppressed_logs: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Cable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<_> = self.inner.channels.keys().collect();
        names.sort();
        f.debug_struct("Cable")
            .field("channels", &names)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Cable`].
pub struct CableBuilder {
    pubsub: Arc<dyn PubSub>,
    channels: HashMap<String, ChannelFactory>,
    handler: Arc<dyn DynHandler>,
    config: CableConfig,
}

impl std::fmt::Debug for CableBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CableBuilder").finish_non_exhaustive()
    }
}

impl CableBuilder {
    /// Register channel `C` under [`C::NAME`](Channel::NAME); a fresh
    /// `C::default()` serves each subscription.
    pub fn channel<C: Channel + Default>(self) -> Self {
        self.channel_with(C::default)
    }

    /// Register channel `C` under [`C::NAME`](Channel::NAME), built by
    /// `factory` per subscription (give it the app's state):
    /// `.channel_with(move || ChatChannel { db: db.clone() })`.
    pub fn channel_with<C: Channel>(
        mut self,
        factory: impl Fn() -> C + Send + Sync + 'static,
    ) -> Self {
        let factory: ChannelFactory = Arc::new(move || Box::new(factory()) as Box<dyn DynChannel>);
        self.channels.insert(C::NAME.to_owned(), factory);
        self
    }

    /// The app's connection handler (authentication, identifiers).
    /// Default: [`AcceptAll`].
    pub fn connection_handler(mut self, handler: impl ConnectionHandler) -> Self {
        self.handler = Arc::new(handler);
        self
    }

    /// Replace the limits.
    pub fn config(mut self, config: CableConfig) -> Self {
        self.config = config;
        self
    }

    /// Finish.
    pub fn build(self) -> Cable {
        Cable {
            inner: Arc::new(Inner {
                pubsub: self.pubsub,
                channels: self.channels,
                handler: self.handler,
                subscription_bytes: Arc::default(),
                log_limit: crate::socket::LogLimit::new(self.config.log_lines_per_second),
                suppressed_logs: Default::default(),
                config: self.config,
            }),
        }
    }
}

/// The internal stream of a connection: `action_cable/<connection identifier>`.
pub fn internal_stream(connection_identifier: &str) -> String {
    format!("action_cable/{connection_identifier}")
}

impl Cable {
    /// Start building a cable on `pubsub`.
    pub fn builder(pubsub: impl PubSub) -> CableBuilder {
        CableBuilder {
            pubsub: Arc::new(pubsub),
            channels: HashMap::new(),
            handler: Arc::new(AcceptAll),
            config: CableConfig::default(),
        }
    }

    /// Start building a cable on a shared backend.
    pub fn builder_shared(pubsub: Arc<dyn PubSub>) -> CableBuilder {
        CableBuilder {
            pubsub,
            channels: HashMap::new(),
            handler: Arc::new(AcceptAll),
            config: CableConfig::default(),
        }
    }

    /// A new connection for a client reached through `sink`.
    pub fn connection(&self, sink: Sink, identifiers: Identifiers) -> Connection {
        Connection::with_cable(self.clone(), sink, identifiers)
    }

    /// The pub/sub backend.
    pub fn pubsub(&self) -> &Arc<dyn PubSub> {
        &self.inner.pubsub
    }

    /// The limits.
    pub fn config(&self) -> &CableConfig {
        &self.inner.config
    }

    /// Estimated bytes held by the subscriptions of every connection (see
    /// [`CableConfig::max_total_subscription_bytes`]).
    pub fn subscription_bytes(&self) -> usize {
        self.inner
            .subscription_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether one more line about a client-triggered failure may be logged
    /// now (see [`CableConfig::log_lines_per_second`]).
    pub fn log_allowed(&self) -> bool {
        self.inner.log_limit.allow(&self.inner.suppressed_logs)
    }

    /// Log lines suppressed by [`log_allowed`](Self::log_allowed).
    pub fn suppressed_logs(&self) -> u64 {
        self.inner
            .suppressed_logs
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn subscription_budget(&self) -> &Arc<std::sync::atomic::AtomicUsize> {
        &self.inner.subscription_bytes
    }

    /// Whether a channel of that name is registered.
    pub fn has_channel(&self, name: &str) -> bool {
        self.inner.channels.contains_key(name)
    }

    pub(crate) fn channel_factory(&self, name: &str) -> Option<ChannelFactory> {
        self.inner.channels.get(name).cloned()
    }

    pub(crate) fn handler(&self) -> Arc<dyn DynHandler> {
        self.inner.handler.clone()
    }

    /// The identifiers connections declare (`identified_by`).
    pub fn identified_by(&self) -> &'static [&'static str] {
        self.inner.handler.identified_by()
    }

    /// A handle that publishes through this cable's pub/sub from anywhere
    /// (axum state, jobs, models), with no global.
    pub fn broadcaster(&self) -> crate::Broadcaster {
        crate::Broadcaster::new(self.inner.pubsub.clone())
    }

    /// Publish `data`, JSON-encoded, to `stream` (Rails'
    /// `ActionCable.server.broadcast`).
    pub fn broadcast(
        &self,
        stream: &str,
        data: &impl Serialize,
    ) -> BoxFuture<'static, Result<(), PubSubError>> {
        self.broadcaster().broadcast(stream, data)
    }

    /// Publish pre-encoded JSON text to `stream`.
    pub fn broadcast_raw(
        &self,
        stream: &str,
        json: bytes::Bytes,
    ) -> BoxFuture<'static, Result<(), PubSubError>> {
        self.inner.pubsub.broadcast(stream, json)
    }

    /// Rails' remote connections: find connections by identifier, in every
    /// process sharing the pub/sub, and disconnect them.
    pub fn remote_connections(&self) -> RemoteConnections<'_> {
        RemoteConnections { cable: self }
    }
}

/// Error from [`RemoteConnections::where_`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("remote connections must be found by every declared identifier {declared:?}")]
pub struct InvalidIdentifiers {
    /// The identifiers the connection handler declares.
    pub declared: Vec<&'static str>,
}

/// Entry point for [`Cable::remote_connections`].
#[derive(Debug)]
pub struct RemoteConnections<'a> {
    cable: &'a Cable,
}

impl<'a> RemoteConnections<'a> {
    /// The connections identified by exactly these values. Every declared
    /// identifier must be given, as in Rails.
    pub fn where_(
        &self,
        identifiers: &[(&str, &dyn Streamable)],
    ) -> Result<RemoteConnection<'a>, InvalidIdentifiers> {
        let declared = self.cable.identified_by();
        let complete = !declared.is_empty()
            && declared
                .iter()
                .all(|d| identifiers.iter().any(|(n, _)| n == d))
            && identifiers.iter().all(|(n, _)| declared.contains(n))
            && identifiers.len() == declared.len();
        if !complete {
            return Err(InvalidIdentifiers {
                declared: declared.to_vec(),
            });
        }
        let mut params: Vec<String> = identifiers.iter().map(|(_, v)| v.to_param()).collect();
        params.sort();
        Ok(RemoteConnection {
            cable: self.cable,
            stream: internal_stream(&params.join(":")),
        })
    }
}

/// Connections matched by [`RemoteConnections::where_`].
#[derive(Debug)]
pub struct RemoteConnection<'a> {
    cable: &'a Cable,
    stream: String,
}

impl RemoteConnection<'_> {
    /// Disconnect them: each gets
    /// `{"type":"disconnect","reason":"remote","reconnect":…}` and is closed.
    pub fn disconnect(&self, reconnect: bool) -> BoxFuture<'static, Result<(), PubSubError>> {
        self.cable.broadcast(
            &self.stream,
            &serde_json::json!({"type": "disconnect", "reconnect": reconnect}),
        )
    }

    /// The internal stream these connections listen on.
    pub fn stream(&self) -> &str {
        &self.stream
    }
}
