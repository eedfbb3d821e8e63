//! [`Core`]: the state every broker client shares with its supervisor.

use crate::{BrokerConfig, Health, Registry, Supervisor};
use keayl_cable::pubsub::{PubSubError, RemoteCallback, Subscribed};

/// What a broker client and its supervisor task share, whatever the
/// broker: the configuration, the broker's address for logs (password
/// redacted), the wanted channels and the health handle. A broker crate
/// keeps one in its shared state (beside its driver's handles) and reaches
/// it through `Deref`.
#[derive(Debug)]
pub struct Core<C> {
    /// The client's configuration (a [`BrokerConfig`], or a broker crate's
    /// configuration holding one).
    pub config: C,
    /// The broker's URL, password redacted.
    pub broker: String,
    /// The wanted broker channels.
    pub registry: Registry,
    /// The link's health.
    pub health: Health,
}

impl<C: AsRef<BrokerConfig>> Core<C> {
    /// A fresh core for `backend` (its name in logs and metrics).
    pub fn new(backend: &'static str, config: C) -> Self {
        Core {
            broker: config.as_ref().redacted_url(),
            config,
            registry: Registry::default(),
            health: Health::new(backend),
        }
    }

    /// Register a subscriber of `stream` on broker channel `channel`, live
    /// within the configured
    /// [`subscribe_timeout`](BrokerConfig::subscribe_timeout) (see
    /// [`Registry::subscribe`]).
    pub fn subscribe(&self, channel: String, stream: &str, callback: RemoteCallback) -> Subscribed {
        let timeout = self.config.as_ref().subscribe_timeout;
        self.registry.subscribe(channel, stream, callback, timeout)
    }

    /// A failed broadcast: counted in [`Health`], returned as
    /// [`PubSubError::Unavailable`] (see [`Health::lost`]).
    pub fn lost(&self, what: impl Into<String>) -> PubSubError {
        self.health.lost(what)
    }

    /// The reconnect loop over this core, with the configured backoff.
    pub fn supervisor(&self) -> Supervisor<'_> {
        Supervisor {
            registry: &self.registry,
            health: &self.health,
            broker: &self.broker,
            backoff: self.config.as_ref().backoff(),
        }
    }
}
