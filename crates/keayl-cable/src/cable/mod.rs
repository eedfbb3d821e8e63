//! The cable: what every connection of a process shares (the pub/sub
//! backend, the registry of subscribable channels, the app's connection
//! handler, the limits), how it is built, and what it does for the whole
//! process (broadcasts, remote connections). Rails' `ActionCable.server`.
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
use crate::naming::{Streamable, internal_stream};
use crate::pubsub::{BoxFuture, PubSub, PubSubError};
use crate::registry::Registry;

pub use crate::registry::CableConfig;

/// The process-wide cable: cheap to clone (two `Arc`s). It makes the
/// process's [`Connection`]s ([`connection`](Self::connection)), which
/// share its registry (pub/sub, channels, limits) and its connection
/// handler.
#[derive(Clone)]
pub struct Cable {
    registry: Arc<Registry>,
    handler: Arc<dyn DynHandler>,
}

impl std::fmt::Debug for Cable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cable")
            .field("channels", &self.registry.channel_names())
            .field("config", self.registry.config())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Cable`].
pub struct CableBuilder {
    pubsub: Arc<dyn PubSub>,
    channels: HashMap<String, ChannelFactory>,
    handler: Arc<dyn DynHandler>,
    config: CableConfig,
    jwt: Option<crate::jwt::JwtIdentifier>,
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

    /// Identify connections that bring a token signed by `jwt` without
    /// calling `connect` (see [`jwt`](crate::jwt)); the others connect as
    /// usual.
    pub fn jwt(mut self, jwt: crate::jwt::JwtIdentifier) -> Self {
        self.jwt = Some(jwt);
        self
    }

    /// Finish.
    pub fn build(self) -> Cable {
        Cable {
            registry: Arc::new(
                Registry::new(self.pubsub, self.channels, self.config).with_jwt(self.jwt),
            ),
            handler: self.handler,
        }
    }
}

impl Cable {
    /// Start building a cable on `pubsub`.
    pub fn builder(pubsub: impl PubSub) -> CableBuilder {
        CableBuilder {
            pubsub: Arc::new(pubsub),
            channels: HashMap::new(),
            handler: Arc::new(AcceptAll),
            config: CableConfig::default(),
            jwt: None,
        }
    }

    /// Start building a cable on a shared backend.
    pub fn builder_shared(pubsub: Arc<dyn PubSub>) -> CableBuilder {
        CableBuilder {
            pubsub,
            channels: HashMap::new(),
            handler: Arc::new(AcceptAll),
            config: CableConfig::default(),
            jwt: None,
        }
    }

    /// A new connection for a client reached through `sink`.
    pub fn connection(&self, sink: Sink, identifiers: Identifiers) -> Connection {
        Connection::from_parts(
            self.registry.clone(),
            self.handler.clone(),
            sink,
            identifiers,
        )
    }

    /// The pub/sub backend.
    pub fn pubsub(&self) -> &Arc<dyn PubSub> {
        self.registry.pubsub()
    }

    /// The limits.
    pub fn config(&self) -> &CableConfig {
        self.registry.config()
    }

    /// Estimated bytes held by the subscriptions of every connection (see
    /// [`CableConfig::max_total_subscription_bytes`]).
    pub fn subscription_bytes(&self) -> usize {
        self.registry.subscription_bytes()
    }

    /// Whether one more line about a client-triggered failure may be logged
    /// now (see [`CableConfig::log_lines_per_second`]).
    pub fn log_allowed(&self) -> bool {
        self.registry.log_allowed()
    }

    /// Log lines suppressed by [`log_allowed`](Self::log_allowed).
    pub fn suppressed_logs(&self) -> u64 {
        self.registry.suppressed_logs()
    }

    /// History requests (extended protocol) answered with `reject_history`:
    /// the gaps clients were told about.
    pub fn rejected_history(&self) -> u64 {
        self.registry.rejected_history()
    }

    /// History requests (extended protocol) answered with `confirm_history`:
    /// every missed message was sent.
    pub fn served_history(&self) -> u64 {
        self.registry.served_history()
    }

    /// Sessions restored from a client's `sid` (extended protocol).
    pub fn restored_sessions(&self) -> u64 {
        self.registry.restored_sessions()
    }

    /// Presence sessions of this process's live connections (extended
    /// protocol), kept alive by it.
    pub fn presence_sessions(&self) -> usize {
        self.registry.presence.sessions()
    }

    /// Who is on `stream`'s presence set, in every process sharing the
    /// pub/sub (to render the initial "who is online" list, say).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use keayl_cable::{Cable, InMemory};
    /// let cable = Cable::builder(InMemory::new()).build();
    /// let set = cable.presence("room:1").await.unwrap();
    /// assert_eq!(set.total, 0);
    /// # }
    /// ```
    pub fn presence(
        &self,
        stream: &str,
    ) -> BoxFuture<'static, Result<crate::pubsub::PresenceSet, crate::pubsub::PresenceError>> {
        self.registry.pubsub().presence_info(stream)
    }

    /// Whether a channel of that name is registered.
    pub fn has_channel(&self, name: &str) -> bool {
        self.registry.has_channel(name)
    }

    pub(crate) fn channel_factory(&self, name: &str) -> Option<ChannelFactory> {
        self.registry.channel_factory(name)
    }

    /// The identifiers connections declare (`identified_by`).
    pub fn identified_by(&self) -> &'static [&'static str] {
        self.handler.identified_by()
    }

    /// A handle that publishes through this cable's pub/sub from anywhere
    /// (axum state, jobs, models), with no global.
    pub fn broadcaster(&self) -> crate::Broadcaster {
        crate::Broadcaster::new(self.registry.pubsub().clone())
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
        self.broadcaster().broadcast_raw(stream, json)
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

impl Connection {
    /// A connection on `pubsub` with no registered channels and no
    /// authentication: the spec's `Connection.new(pubsub, sink, identifiers)`.
    /// Use [`Cable::connection`] for a connection that knows the app's
    /// channels and connection handler.
    pub fn new(pubsub: impl PubSub, sink: Sink, identifiers: Identifiers) -> Self {
        Cable::builder(pubsub).build().connection(sink, identifiers)
    }

    /// The cable this connection belongs to.
    pub fn cable(&self) -> Cable {
        let (registry, handler) = self.cable_parts();
        Cable { registry, handler }
    }
}
