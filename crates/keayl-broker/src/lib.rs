//! The shared layer of Keayl's networked pub/sub backends (`keayl-redis`,
//! `keayl-postgres`, `keayl-nats`): everything a backend needs that does not
//! depend on its broker, so a broker crate holds only its driver calls.
//!
//! * [`BrokerConfig`]: URL, Rails' `channel_prefix`, reconnect and timeout
//!   settings, with one [`redact`] for every URL that reaches a log, and
//!   one [`ConfigError`].
//! * [`BrokerClient`] + [`BrokerPubSub`]: a broker crate implements
//!   [`PubSubClient`](keayl_cable::pubsub::PubSubClient) and
//!   [`BrokerClient`] for its client; `BrokerPubSub<ItsClient>` is the
//!   [`PubSub`](keayl_cable::pubsub::PubSub) an application hands to the
//!   cable (local subscribers of a stream share one broker subscription).
//! * The reconnecting client's parts, which keep one connection to the
//!   broker alive and multiplex every stream of the process onto it:
//!   - the **client half** records which broker channels are wanted
//!     ([`Registry::subscribe`], [`Registry::remove`]), publishes on the
//!     current connection, and counts a failed publish with
//!     [`Health::record_lost`] (or [`Health::lost`], which also makes the
//!     caller's error); it holds a [`Background`], which spawns the
//!     supervisor on the current runtime and cancels it on shutdown or drop;
//!   - a **supervisor task**, [`Supervisor::run`], connects, runs a session
//!     (the broker crate's loop, which reconciles the connection with
//!     [`Registry::take_changes`] / [`Registry::applied`], delivers messages
//!     with [`Registry::dispatch`] and checks the link on a
//!     [`health_check_interval`]), and on failure reconnects forever with a
//!     [`Backoff`], subscribing everything again ([`Registry::take_all`]).
//!   - [`Health`] is the handle applications read (link state,
//!     reconnections, outages, lost broadcasts); its transitions log every
//!     outage (`error` when it starts, `warn` with its duration and lost
//!     broadcasts when it ends).

mod backend;
mod background;
mod config;
mod health;
mod registry;
mod shared;
mod supervisor;
mod url;

pub use backend::{BrokerClient, BrokerPubSub};
pub use background::Background;
pub use config::{BrokerConfig, ConfigError, redact};
pub use health::{Health, HealthStatus, LinkState};
pub use registry::{Backoff, Registry};
pub use shared::Core;
pub use supervisor::{OpError, SessionEnd, Supervisor, health_check_interval, in_flight};
pub use url::{percent_decode, take_query_param};
