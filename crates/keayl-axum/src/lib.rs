//! # keayl-axum: the axum transport for Keayl
//!
//! The one crate of Keayl that knows a web framework.
//!
//! - **Live responses and SSE**: a handler returns
//!   [`keayl_live::LiveResponse`] directly (it implements `IntoResponse`);
//!   see [`live`].
//! - **Action Cable over WebSocket**: [`cable::CableServer`] serves a
//!   [`keayl_cable::Cable`] at `/cable` with the official protocol
//!   ([`CableServer::router`], a `Router<S>` for an app of any state), and
//!   the HTTP broadcast API at `POST /_broadcast`
//!   ([`CableServer::broadcast_router`]), each mounted on its own.
//! - **Operations**: [`ops::ops_router`] (`/metrics`, `/health`).
//! - **The listener**: [`listener::Listener`] serves any `Router` like
//!   `axum::serve`, with timeouts, a connection budget and stalled-client
//!   detection.
//! - **Hosts**: [`hosts::check_host`] refuses unlisted `Host`s (DNS
//!   rebinding).

pub mod cable;
pub mod hosts;
pub mod listener;
pub mod live;
pub mod ops;

pub use cable::{CableServer, ServerConfig};
