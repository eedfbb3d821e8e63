//! NATS pub/sub for Keayl's cable: processes sharing one NATS server (or
//! cluster) see each other's broadcasts.
//!
//! ```no_run
//! # async fn demo() -> Result<(), keayl_nats::ConfigError> {
//! use std::sync::Arc;
//! use keayl_nats::NatsPubSub;
//!
//! let nats = NatsPubSub::from_url("nats://127.0.0.1:4222?channel_prefix=myapp")?;
//! let health = nats.health(); // up/down, reconnects, lost broadcasts
//! let pubsub: Arc<dyn keayl_cable::PubSub> = Arc::new(nats);
//! # let _ = (health, pubsub); Ok(()) }
//! ```
//!
//! # Design
//!
//! Built on [`keayl_broker`], like the Redis and PostgreSQL backends; this
//! crate holds only what is NATS:
//!
//! * **One connection per process** (`async-nats`) carries every stream.
//!   Local subscribers share one NATS subscription per stream
//!   ([`External`]); each subscription has its own forwarding task, so the
//!   streams of a process are delivered on all the runtime's workers.
//! * **Subjects**: the stream, prefixed like every backend prefixes it
//!   ([`BrokerConfig::prefixed`]), as one literal subject token
//!   ([`subject_for`]: wildcards, dots, spaces and non-ASCII
//!   percent-encoded, long names hashed under the server's control-line
//!   limit). Payloads travel verbatim.
//! * **Confirmation**: NATS does not acknowledge a `SUB`, but it reads a
//!   connection in order; after a batch of `SUB`s the supervisor makes a
//!   request nobody answers, and the server's "no responders" reply proves
//!   the subscriptions are in place. Only then does [`Subscribed::ready`]
//!   complete (and the cable send `confirm_subscription`). The same round
//!   trip, every [`BrokerConfig::health_check_interval`], notices a silent
//!   network cut within [`BrokerConfig::command_timeout`].
//! * **Publishing** waits until the message is written to the server's
//!   socket (a flush), at most `command_timeout`; a broadcast while the
//!   connection is down fails with [`PubSubError::Unavailable`] and is
//!   counted in [`Health::lost_broadcast_count`]. NATS core delivery is
//!   at-most-once: what is published while a process is disconnected does
//!   not reach it (as with Redis pub/sub and Rails).
//! * **Reconnection**: the driver's own reconnect loop is cut short; a lost
//!   connection ends the session and the shared supervisor reconnects
//!   forever with backoff, subscribing every wanted stream again, logging
//!   and counting outages like the other backends ([`Health`]).
//! * **Slow subscriptions**: when a forwarding task falls behind the
//!   driver's buffer (65,536 messages per subscription) NATS drops
//!   messages; each such event is counted in
//!   [`Health::failed_delivery_count`] and logged, never silent.
//! * **`subscriber_count`** is a census: a request on
//!   `_keayl_census.<subject>` that every process with that subject
//!   subscribed answers, counted for [`NatsConfig::census_window`]. It
//!   counts processes (as Redis' `PUBSUB NUMSUB` counts connections), not
//!   local subscribers.
//!
//! [`External`]: keayl_cable::pubsub::External
//! [`Subscribed::ready`]: keayl_cable::pubsub::Subscribed::ready
//! [`BrokerConfig::prefixed`]: keayl_broker::BrokerConfig::prefixed
//! [`BrokerConfig::health_check_interval`]: keayl_broker::BrokerConfig::health_check_interval
//! [`BrokerConfig::command_timeout`]: keayl_broker::BrokerConfig::command_timeout
//! [`PubSubError::Unavailable`]: keayl_cable::pubsub::PubSubError::Unavailable

mod client;
mod config;
mod session;
mod subject;

pub use client::NatsClient;
pub use config::{NatsConfig, config_from_url};
pub use keayl_broker::{BrokerConfig, ConfigError, Health, HealthStatus, LinkState, redact};
pub use subject::{MAX_SUBJECT_LEN, subject_for};

/// The NATS pub/sub backend: put it in an `Arc` and hand it to the cable.
pub type NatsPubSub = keayl_broker::BrokerPubSub<NatsClient>;

const BACKEND: &str = "nats";
