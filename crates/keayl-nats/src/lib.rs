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
//! * **Round trips**: NATS acknowledges nothing, but it reads a connection
//!   in order and delivers in order. Each session first subscribes to a
//!   private subject, `_keayl_ack.<random id>`; a round trip publishes the
//!   next value of a counter there and waits until the server echoes it
//!   back, which proves the server has read everything sent before it (an
//!   echo of `n` completes every round trip up to `n`). No request and no
//!   "no responders" reply is involved, so another application's
//!   subscriber to `>` neither answers nor stalls them.
//! * **Subscribing**: after a batch of `SUB`s (and `UNSUB`s) the
//!   supervisor makes a round trip; only when it is echoed (on the same
//!   connection: a reconnection by the driver meanwhile fails the batch)
//!   does [`Subscribed::ready`] complete (and the cable send
//!   `confirm_subscription`). A round trip every
//!   [`BrokerConfig::health_check_interval`] notices a silent network cut
//!   within [`BrokerConfig::command_timeout`].
//! * **Publishing** waits, at most `command_timeout`, until a round trip
//!   queued after the message is echoed (concurrent broadcasts share one).
//!   A broadcast while the connection is down, one not confirmed in time,
//!   and one confirmed only after the driver re-established the connection
//!   (it may have been lost in between) fail with
//!   [`PubSubError::Unavailable`] and are counted in
//!   [`Health::lost_broadcast_count`]. NATS core delivery is at-most-once:
//!   what is published while a process is disconnected does not reach it
//!   (as with Redis pub/sub and Rails).
//! * **Reconnection**: the driver's own reconnect loop is cut short; a lost
//!   connection ends the session and the shared supervisor reconnects
//!   forever with backoff, subscribing every wanted stream again, logging
//!   and counting outages like the other backends ([`Health`]).
//! * **Slow subscriptions**: when a forwarding task falls behind the
//!   driver's buffer (65,536 messages per subscription) NATS drops
//!   messages; each such event is counted in
//!   [`Health::failed_delivery_count`] and logged (at most once a second,
//!   with how many events the log skipped), never silent.
//! * **`subscriber_count`** is a census: a message on
//!   `_keayl_census.<subject>` with a reply inbox, which every process with
//!   that subject subscribed answers (each session subscribes to the census
//!   before its first subscribe batch); the answers are counted for
//!   [`NatsConfig::census_window`], the server's status messages (such as
//!   "no responders") ignored. It counts processes (as Redis'
//!   `PUBSUB NUMSUB` counts connections), not local subscribers.
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
