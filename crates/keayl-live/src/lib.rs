//! # keayl-live: live responses and Server-Sent Events
//!
//! A *live* response writes its body incrementally: a handler hands Keayl a
//! **writer** (an async closure run on its own task, or a blocking closure run
//! on its own thread), returns at once, and the HTTP adapter pulls the chunks
//! to the client while the writer produces them.
//!
//! | Concept | Type | Spec name |
//! |---|---|---|
//! | Start a live response | [`Live`] | `live` |
//! | The writer's end of the body | [`LiveStream`] / [`BlockingLiveStream`] | `$stream` |
//! | The response handed to the adapter | [`LiveResponse`] (`is_live`, `is_streaming`) | — |
//! | Completion of the writer | [`LiveHandle`] | `live-promise` |
//! | The body the adapter polls | [`LiveBody`] (an [`http_body::Body`]) | — |
//! | Server-Sent Events | [`Sse`], [`SseWriter`], [`sse::Frame`] | `sse` |
//! | Errors | [`LiveError`] (`StreamClosed`, `ClientDisconnected`, …) | `X::…::Live::*` |
//!
//! No web framework lives in this crate: [`LiveResponse::into_http`] yields an
//! [`http::Response`] whose body is a [`LiveBody`], which plain hyper serves as
//! is and which an axum handler can return directly.
//!
//! ## Example
//!
//! ```
//! use keayl_live::{Live, LiveResponse};
//!
//! fn numbers() -> LiveResponse {
//!     Live::new().spawn(|stream| async move {
//!         for n in 1..=10 {
//!             stream.write(format!("{n}\n")).await?;
//!         }
//!         Ok(())
//!     })
//! }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let response = numbers();
//! assert!(response.is_live() && response.is_streaming());
//! let (http_response, handle) = response.into_parts();
//! # drop(http_response); let _ = handle.await;
//! # }
//! ```
//!
//! ## Backpressure and disconnects
//!
//! The buffer between writer and socket is bounded in bytes
//! ([`LiveConfig::buffer_bytes`], default 256 KiB). A writer that fills it
//! waits until the client reads; if the client reads nothing for
//! [`LiveConfig::write_timeout`] (default 10 s) the stream counts as
//! disconnected. When the adapter drops the body (the client closed or reset
//! the connection), the stream is [disconnected](LiveStream::disconnect) and
//! the next write fails with [`LiveError::ClientDisconnected`], whether the
//! writer was idle or blocked on a full buffer.

mod error;
pub mod live;
pub mod sse;

pub use error::{BoxError, LiveError, SseField, WriterError};
pub use live::{
    BlockingLiveStream, Chunk, Live, LiveBody, LiveConfig, LiveHandle, LiveResponse, LiveStream,
};
pub use sse::{BlockingSseWriter, Sse, SseOptions, SseWriter};
