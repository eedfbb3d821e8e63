use std::fmt;

/// A boxed error returned by a writer closure.
///
/// Any error type converts into it with `?`, [`LiveError`] included.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors a live stream or SSE writer reports to the code writing to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LiveError {
    /// The stream was closed (by the writer, or because the writer returned);
    /// nothing more can be written.
    #[error("the live stream is closed")]
    StreamClosed,
    /// The client went away: it closed or reset the connection, a write
    /// waited longer than the write timeout, or written data waited longer
    /// than the stall timeout for the client to read it. The writer should
    /// release its resources and stop producing.
    #[error("the client disconnected from the live stream")]
    ClientDisconnected,
    /// An SSE field would break the frame (for example a line break in an
    /// `event` name). Nothing was written.
    #[error("invalid SSE {field} field: {reason}")]
    InvalidSseField {
        /// Which field was refused.
        field: SseField,
        /// Why it was refused.
        reason: &'static str,
    },
}

impl LiveError {
    /// True for [`LiveError::ClientDisconnected`].
    pub fn is_client_disconnected(&self) -> bool {
        matches!(self, LiveError::ClientDisconnected)
    }

    /// True for [`LiveError::StreamClosed`].
    pub fn is_stream_closed(&self) -> bool {
        matches!(self, LiveError::StreamClosed)
    }
}

/// The SSE field named by [`LiveError::InvalidSseField`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseField {
    /// The `event:` line.
    Event,
    /// The `id:` line.
    Id,
}

impl fmt::Display for SseField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SseField::Event => "event",
            SseField::Id => "id",
        })
    }
}

/// How a writer ended, as reported by its [`LiveHandle`](crate::LiveHandle)
/// when it did not return `Ok(())`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriterError {
    /// The writer returned an error.
    #[error("live writer failed: {0}")]
    Failed(#[source] BoxError),
    /// The writer panicked; the panic message is kept when it was a string.
    #[error("live writer panicked: {0}")]
    Panicked(String),
    /// The writer's task was cancelled (for example the runtime shut down).
    #[error("live writer was cancelled")]
    Cancelled,
    /// The client went away and the writer had neither returned nor noticed
    /// [`disconnect_grace`](crate::LiveConfig::disconnect_grace) later, so its
    /// future was dropped: its `Drop` impls ran, the code after the `.await`
    /// it was parked on did not.
    #[error("live writer ignored its client's disconnect and was dropped")]
    Abandoned,
}

impl WriterError {
    /// The [`LiveError`] the writer failed with, if it failed with one
    /// (for example [`LiveError::ClientDisconnected`] propagated with `?`).
    pub fn live_error(&self) -> Option<&LiveError> {
        match self {
            WriterError::Failed(e) => e.downcast_ref::<LiveError>(),
            _ => None,
        }
    }
}
