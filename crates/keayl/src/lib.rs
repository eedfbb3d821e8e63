//! # Keayl: real-time web toolkit for Rust
//!
//! This facade re-exports the parts:
//!
//! - [`live`] — live responses and Server-Sent Events (`keayl-live`);
//! - [`cable`] — the Action Cable-style core: connections, channels, streams,
//!   pub/sub (`keayl-cable`);
//! - `transport` — the axum transport: `/cable` over WebSocket and
//!   `POST /_broadcast` (`keayl-axum`, feature `axum`, on by default);
//! - [`pubsub`] — choosing the pub/sub backend from a URL (`memory`,
//!   `redis://…`, `postgres://…`, `nats://…`), with its health;
//! - `redis` — the Redis backend (`keayl-redis`, feature `redis`, off by
//!   default);
//! - `postgres` — the PostgreSQL backend (`keayl-postgres`, feature
//!   `postgres`, off by default);
//! - `nats` — the NATS backend (`keayl-nats`, feature `nats`, off by
//!   default).
//!
//! See the README for an example of each.

pub use keayl_cable as cable;
pub use keayl_live as live;

pub mod pubsub;

#[cfg(feature = "axum")]
pub use keayl_axum as transport;

#[cfg(feature = "nats")]
pub use keayl_nats as nats;
#[cfg(feature = "postgres")]
pub use keayl_postgres as postgres;
#[cfg(feature = "redis")]
pub use keayl_redis as redis;

/// The README's code blocks, compiled and run as doc tests
/// (`cargo test --doc -p keayl`) so they never go stale.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
