//! What crosses between the driver and a transport: frames in, frames out,
//! and why reading failed.

use bytes::Bytes;

/// One frame read from the client, as the transport decoded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A text frame (valid UTF-8: the transport checks it, and reports
    /// [`ReadError::InvalidUtf8`] otherwise).
    Text(Bytes),
    /// A binary frame (Action Cable frames are text: dropped and counted).
    Binary(Bytes),
    /// A WebSocket ping (the transport answers it) or pong: proof the client
    /// is there.
    Ping,
    /// A WebSocket pong.
    Pong,
    /// The client's close frame.
    Close,
}

/// Why reading from the client failed. A transport classifies its own error
/// type into these (never by matching message text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// A message over the transport's size limit: the client gets close code
    /// 1009, and the transport should read and discard what the client is
    /// still sending for a short while (see [`Finished::unread_input`]).
    #[error("message over the size limit")]
    TooBig,
    /// A text frame that is not valid UTF-8: close code 1007.
    #[error("text frame is not valid UTF-8")]
    InvalidUtf8,
    /// The socket failed or the peer broke the protocol; nothing more can be
    /// read.
    #[error("read failed: {0}")]
    Other(String),
}

/// One frame the driver asks the transport to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// A text frame: a complete Action Cable message (JSON, UTF-8).
    Text(Bytes),
    /// A WebSocket ping (the liveness check of half-open clients).
    Ping,
    /// A close frame with this code (1000 normal, 1007 invalid data, 1008
    /// policy violation, 1009 too big).
    Close(u16),
}

/// How a connection ended, for what the transport does after the driver
/// returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    /// The client may still be sending (it sent an oversize message): read
    /// and discard its input for a short, bounded time before closing the
    /// socket, so the kernel does not reset the connection before the client
    /// has read the close frame.
    pub unread_input: bool,
    /// The close code sent to the client, if any.
    pub close_code: Option<u16>,
}
