//! The socket wrapper that carries a budget place, and the request body
//! wrapper that bounds how long a body may stall.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::budget::{ListenerStats, Permit};

pin_project_lite::pin_project! {
    /// A connection's socket with its place in the budget: the place is
    /// freed when the socket is dropped, which after a WebSocket upgrade is
    /// when the WebSocket closes.
    pub(crate) struct Metered<S> {
        #[pin]
        io: S,
        permit: Permit,
    }
}

impl<S> Metered<S> {
    pub(crate) fn new(io: S, permit: Permit) -> Self {
        Metered { io, permit }
    }
}

impl<S: AsyncRead> AsyncRead for Metered<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl<S: AsyncWrite> AsyncWrite for Metered<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// A request body that delivered nothing for longer than
/// [`ListenerConfig::body_read_timeout`](super::ListenerConfig::body_read_timeout)
/// while the handler was waiting for it.
#[derive(Debug, thiserror::Error)]
#[error("request body stalled for longer than {0:?}")]
pub struct BodyTimeout(pub Duration);

pin_project_lite::pin_project! {
    /// A request body whose reader gives up when no byte arrives for
    /// `timeout`. The clock only runs while the handler is waiting for the
    /// body, so a handler that reads late is not penalised.
    pub(crate) struct TimeoutBody<B> {
        #[pin]
        inner: B,
        #[pin]
        sleep: Sleep,
        waiting: bool,
        timeout: Duration,
        stats: ListenerStats,
    }
}

impl<B> TimeoutBody<B> {
    pub(crate) fn new(inner: B, timeout: Duration, stats: ListenerStats) -> Self {
        TimeoutBody {
            inner,
            sleep: tokio::time::sleep(timeout),
            waiting: false,
            timeout,
            stats,
        }
    }
}

impl<B> Body for TimeoutBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            *this.waiting = false;
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        if !*this.waiting {
            *this.waiting = true;
            this.sleep.as_mut().reset(Instant::now() + *this.timeout);
        }
        ready!(this.sleep.poll(cx));
        this.stats.body_timeout();
        Poll::Ready(Some(Err(Box::new(BodyTimeout(*this.timeout)))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
