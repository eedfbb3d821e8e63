//! Live responses and Server-Sent Events in axum handlers.
//!
//! Nothing to adapt: a handler returns the [`LiveResponse`] itself (this
//! crate turns on keayl-live's `axum` feature, which implements
//! `IntoResponse` for it), alone or in a tuple with a status or headers.
//! The response carries a [`LiveState`] extension, so a middleware reads
//! `is_live()`/`is_streaming()` from it.
//!
//! ```
//! use axum::{Router, http::HeaderMap, response::IntoResponse, routing::get};
//! use keayl_live::{Live, LiveResponse, Sse};
//!
//! async fn events(headers: HeaderMap) -> LiveResponse {
//!     Sse::new()
//!         .retry(5000)
//!         .request_headers(&headers)
//!         .spawn(|sse| async move {
//!             sse.write("hello").event("greeting").await?;
//!             sse.write("world").await?;
//!             Ok(())
//!         })
//! }
//!
//! async fn numbers() -> impl IntoResponse {
//!     Live::new().spawn(|stream| async move {
//!         for n in 1..=10 {
//!             stream.write(format!("{n}\n")).await?;
//!         }
//!         Ok(())
//!     })
//! }
//!
//! let app: Router = Router::new()
//!     .route("/events", get(events))
//!     .route("/numbers", get(numbers));
//! ```
//!
//! A middleware that sees live responses:
//!
//! ```
//! use axum::{extract::Request, middleware::Next, response::Response};
//! use keayl_live::LiveState;
//!
//! async fn log_live(req: Request, next: Next) -> Response {
//!     let response = next.run(req).await;
//!     if let Some(state) = LiveState::of(&response) {
//!         tracing::debug!(streaming = state.is_streaming(), "live response");
//!     }
//!     response
//! }
//! let app: axum::Router = axum::Router::new().layer(axum::middleware::from_fn(log_live));
//! ```

pub use keayl_live::{Live, LiveBody, LiveResponse, LiveState, Sse};
