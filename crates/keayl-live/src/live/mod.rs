//! Live responses: a writer pushes chunks, the adapter pulls them.
//!
//! [`Live::spawn`] runs an async writer on its own task;
//! [`Live::spawn_blocking`] runs blocking code on its own thread. Both return
//! a [`LiveResponse`] at once. The body closes when the writer returns, fails
//! or panics; the [`LiveHandle`] reports which.

mod body;
mod chunk;
mod response;
mod stream;

pub use body::LiveBody;
pub use chunk::Chunk;
pub use response::{Live, LiveHandle, LiveResponse, LiveState};
pub use stream::{BlockingLiveStream, LiveConfig, LiveStream};
