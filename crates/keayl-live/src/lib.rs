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
//! | Is-live / is-streaming, read from the `http::Response` | [`LiveState`] (an extension) | `is-live`, `is-streaming` |
//! | Completion of the writer | [`LiveHandle`] | `live-promise` |
//! | The body the adapter polls | [`LiveBody`] (an [`http_body::Body`]) | — |
//! | Server-Sent Events | [`Sse`], [`SseWriter`], [`sse::Frame`] | `sse` |
//! | Errors | [`LiveError`] (`StreamClosed`, `ClientDisconnected`, …) | `X::…::Live::*` |
//!
//! No web framework lives in this crate: [`LiveResponse::into_http`] yields an
//! [`http::Response`] whose body is a [`LiveBody`], which plain hyper (or any
//! server taking an `http::Response`) serves as is. With the **`axum`**
//! feature (off by default; `keayl-axum` turns it on), [`LiveResponse`]
//! implements `axum_core::response::IntoResponse`, so an axum handler
//! returns it directly, no `into_http()` needed.
//!
//! Every converted response carries a [`LiveState`] in its extensions:
//! middleware and tests read `is_live()`/`is_streaming()` from the
//! `http::Response` itself, at any moment of the body's life.
//!
//! ## Example
//!
//! ```
//! use keayl_live::{Live, LiveResponse, LiveState};
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
//! let state = http_response.extensions().get::<LiveState>().unwrap();
//! assert!(state.is_live() && state.is_streaming());
//! # drop(http_response); let _ = handle.await;
//! # }
//! ```
//!
//! ## Backpressure and disconnects
//!
//! The buffer between writer and socket is bounded in bytes
//! ([`LiveConfig::buffer_bytes`], default 256 KiB). A writer that fills it
//! waits until the client reads. The client counts as gone, and the stream
//! is [disconnected](LiveStream::disconnect), when:
//!
//! - the adapter drops the body (the client closed or reset the connection);
//! - a write waits for space longer than [`LiveConfig::write_timeout`]
//!   (default 10 s);
//! - written data waits in the buffer longer than
//!   [`LiveConfig::stall_timeout`] (default 30 s) without the adapter taking
//!   any, even while the writer is idle (SSE heartbeats count as data).
//!
//! Then a pending or later write fails with [`LiveError::ClientDisconnected`],
//! and so does [`LiveStream::or_disconnected`], the combinator to wrap every
//! other wait of a writer in (a channel receive, a timer), so that an idle
//! writer ends, and runs its cleanup, as soon as its client leaves:
//!
//! ```
//! use keayl_live::Sse;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let (tx, mut rx) = tokio::sync::broadcast::channel::<String>(16);
//! let response = Sse::new().spawn(|sse| async move {
//!     while let Ok(text) = sse.or_disconnected(rx.recv()).await? {
//!         sse.write(text).await?;
//!     }
//!     Ok(())
//! });
//! # drop(tx); let _ = response.into_parts().1.await;
//! # }
//! ```
//!
//! As a safety net, an async writer that is still running
//! [`LiveConfig::disconnect_grace`] (default 30 s) after its client left is
//! dropped, so a forgotten wait leaks nothing for long; its `Drop` impls run,
//! the code after its pending `.await` does not.

mod error;
pub mod live;
pub mod sse;

pub use error::{BoxError, LiveError, SseField, WriterError};
pub use live::{
    BlockingLiveStream, Chunk, Live, LiveBody, LiveConfig, LiveHandle, LiveResponse, LiveState,
    LiveStream,
};
pub use sse::{BlockingSseWrite, BlockingSseWriter, Sse, SseOptions, SseWrite, SseWriter};
