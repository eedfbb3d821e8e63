//! Live responses and Server-Sent Events in axum handlers.
//!
//! Nothing to adapt: return `LiveResponse::into_http()`.
//!
//! ```
//! use axum::{Router, routing::get, http::HeaderMap};
//! use keayl_live::{LiveBody, Sse};
//!
//! async fn events(headers: HeaderMap) -> http::Response<LiveBody> {
//!     Sse::new()
//!         .retry(5000)
//!         .request_headers(&headers)
//!         .spawn(|sse| async move {
//!             sse.write("hello").event("greeting").await?;
//!             sse.write("world").await?;
//!             Ok(())
//!         })
//!         .into_http()
//! }
//!
//! let app: Router = Router::new().route("/events", get(events));
//! ```

pub use keayl_live::{Live, LiveBody, LiveResponse, Sse};
