//! [`BrokerPubSub`]: a broker crate's client as the cable's [`PubSub`].

use std::sync::Arc;

use bytes::Bytes;
use keayl_cable::pubsub::{
    BoxFuture, Callback, External, PubSub, PubSubClient, PubSubError, PubSubStats, Subscribed,
    SubscriptionId,
};

use crate::{ConfigError, Health};

/// What a broker crate implements besides [`PubSubClient`]: how its client
/// is configured and started, and its health handle. [`BrokerPubSub`] does
/// the rest.
pub trait BrokerClient: PubSubClient + Sized {
    /// The backend's name in logs, metrics and errors (`redis`).
    const BACKEND: &'static str;

    /// The client's configuration.
    type Config: Clone + std::fmt::Debug + Send + Sync + 'static;

    /// The configuration for `url`, checked as the driver will read it
    /// (nothing connects).
    fn config_from_url(url: &str) -> Result<Self::Config, ConfigError>;

    /// Start the client: its supervisor task connects in the background (no
    /// waiting; see [`Health::wait_up`]). Fails outside a Tokio runtime.
    fn start(config: Self::Config) -> Result<Self, ConfigError>;

    /// The health handle of the broker link.
    fn link(&self) -> Health;

    /// Stop: the supervisor ends, connections close, pending and later
    /// subscriptions fail with [`PubSubError::Closed`], broadcasts fail.
    fn shutdown(&self);
}

/// A networked backend: [`External`] (local subscribers of a stream share
/// one broker subscription) over a broker crate's [`BrokerClient`], plus
/// its [`Health`]. Put it in an `Arc` and hand it to the cable.
pub struct BrokerPubSub<C> {
    external: External,
    client: Arc<C>,
}

impl<C: BrokerClient + std::fmt::Debug> std::fmt::Debug for BrokerPubSub<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerPubSub")
            .field("client", &self.client)
            .field("local", self.external.local())
            .finish()
    }
}

impl<C: BrokerClient> BrokerPubSub<C> {
    /// Start the backend (connects in the background). Must run inside a
    /// Tokio runtime.
    pub fn new(config: C::Config) -> Result<Self, ConfigError> {
        let client = Arc::new(C::start(config)?);
        Ok(BrokerPubSub {
            external: External::from_arc(client.clone()),
            client,
        })
    }

    /// The configuration for `url` ([`BrokerClient::config_from_url`]), then
    /// [`new`](Self::new).
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        Self::new(C::config_from_url(url)?)
    }

    /// The health handle (clone it freely).
    pub fn health(&self) -> Health {
        self.client.link()
    }

    /// The networked client (for what is specific to its broker).
    pub fn client(&self) -> &C {
        &self.client
    }

    /// The [`External`] wrapper (local subscriber registry).
    pub fn external(&self) -> &External {
        &self.external
    }

    /// See [`BrokerClient::shutdown`].
    pub fn shutdown(&self) {
        self.client.shutdown();
    }
}

impl<C: BrokerClient> PubSub for BrokerPubSub<C> {
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

    keayl_cable::forward_pubsub_extras!(|s| s.external);

    /// Local counters plus the broker link from [`Health`] (for `/metrics`
    /// and `/health`).
    fn stats(&self) -> PubSubStats {
        self.external.stats()
    }
}
