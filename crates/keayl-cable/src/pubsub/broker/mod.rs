//! The toolkit for writing networked [`PubSubClient`] backends (Redis,
//! PostgreSQL, …): the broker-independent parts of a client that keeps one
//! connection to a broker alive and multiplexes every stream of the process
//! onto it.
//!
//! A backend built from it has two halves sharing a [`Registry`] and a
//! [`Health`]:
//!
//! * the **client** (its [`PubSubClient`] implementation):
//!   [`Registry::subscribe`] and [`Registry::remove`] record which broker
//!   channels are wanted, publishes go to the current connection, and a
//!   failed publish is counted with [`Health::record_lost`];
//! * a **supervisor task**, [`Supervisor::run`]: it connects, runs a
//!   session (the backend's own loop, which reconciles the connection with
//!   [`Registry::take_changes`] / [`Registry::applied`], delivers messages
//!   with [`Registry::dispatch`] and checks the link on a
//!   [`health_check_interval`]), and on failure reconnects forever with a
//!   [`Backoff`], re-subscribing everything ([`Registry::take_all`]).
//!
//! [`Health`] is the handle applications read (link state, reconnections,
//! outages, lost broadcasts); its transitions log every outage (`error` when
//! it starts, `warn` with its duration and lost broadcasts when it ends).
//!
//! [`PubSubClient`]: crate::pubsub::PubSubClient

mod health;
mod registry;
mod supervisor;
mod url;

pub use health::{Health, HealthStatus, LinkState};
pub use registry::{Backoff, Registry};
pub use supervisor::{OpError, SessionEnd, Supervisor, health_check_interval, in_flight};
pub use url::{percent_decode, take_query_param};
