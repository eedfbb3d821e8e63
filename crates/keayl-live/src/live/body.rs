use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::stream::{self, Shared};

/// The body of a live response: an [`http_body::Body`] that yields the
/// writer's chunks as they arrive.
///
/// Dropping it before the end (the adapter does so when the client closes or
/// resets the connection) disconnects the stream, so the writer's next write
/// fails with [`LiveError::ClientDisconnected`](crate::LiveError::ClientDisconnected).
#[derive(Debug)]
pub struct LiveBody {
    shared: Arc<Shared>,
}

impl LiveBody {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        LiveBody { shared }
    }
}

impl Body for LiveBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.shared.poll_chunk(cx.waker()) {
            stream::Poll::Chunk(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
            stream::Poll::End => Poll::Ready(None),
            stream::Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.shared.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for LiveBody {
    fn drop(&mut self) {
        self.shared.body_dropped();
    }
}
