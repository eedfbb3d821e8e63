//! # Keayl: real-time web toolkit for Rust
//!
//! This facade re-exports the parts:
//!
//! - [`live`] — live responses and Server-Sent Events (`keayl-live`);
//! - [`cable`] — the Action Cable-style core: connections, channels, streams,
//!   pub/sub (`keayl-cable`);
//! - [`transport`] — the axum transport: `/cable` over WebSocket and
//!   `POST /_broadcast` (`keayl-axum`, feature `axum`, on by default).
//!
//! See the README for an example of each.

pub use keayl_cable as cable;
pub use keayl_live as live;

#[cfg(feature = "axum")]
pub use keayl_axum as transport;
