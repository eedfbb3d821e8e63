//! Server-Sent Events on top of live responses.
//!
//! [`Sse`] starts a live response with `Content-Type: text/event-stream`,
//! `Cache-Control: no-cache` and `X-Accel-Buffering: no`, and hands the
//! writer an [`SseWriter`]. Each [`SseWriter::write`] emits one frame: the
//! `event`, `id` and `retry` lines, then one `data:` line per line of the
//! payload, then a blank line. Options given to [`Sse`] are defaults for every
//! frame; options given to one write override them for that frame.
//!
//! ```
//! use keayl_live::Sse;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let response = Sse::new().retry(5000).spawn(|sse| async move {
//!     sse.write("tick").await?;                // retry: 5000 applied
//!     sse.write("pong").retry(1000).await?;    // overridden for this frame
//!     sse.comment("keep-alive").await?;        // a heartbeat, no event
//!     Ok(())
//! });
//! # let _ = response.into_parts().1.await;
//! # }
//! ```
//!
//! [`Sse::spawn_blocking`] hands a blocking writer the same API, with
//! `.send()` in place of `.await`: `sse.write("pong").retry(1000).send()?`.
//!
//! The encoder itself is pure code in [`frame`]: no IO, usable and testable
//! on its own.

pub mod frame;
mod writer;

pub use frame::{Frame, SseOptions};
pub use writer::{BlockingSseWrite, BlockingSseWriter, Sse, SseWrite, SseWriter};
