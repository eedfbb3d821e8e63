//! # keayl-axum: the axum transport for Keayl
//!
//! The one crate of Keayl that knows a web framework.
//!
//! - **Live responses and SSE**: `keayl_live::LiveResponse::into_http()`
//!   yields an `http::Response<LiveBody>`, which an axum handler returns as
//!   is (axum serves any `http::Response` whose body is an
//!   `http_body::Body`). See [`live`] for an example.
//! - **Action Cable over WebSocket**: [`cable::CableServer`] serves a
//!   [`keayl_cable::Cable`] at `/cable` with the official protocol, and the
//!   HTTP broadcast API at `POST /_broadcast`.

pub mod cable;
pub mod hosts;
pub mod listener;
pub mod live;
pub mod ops;

pub use cable::{CableServer, ServerConfig};
