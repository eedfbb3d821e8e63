use std::borrow::Cow;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http::header::{CONTENT_TYPE, HeaderValue};

use super::frame::{self, Frame, SseOptions};
use crate::{BlockingLiveStream, BoxError, Live, LiveConfig, LiveError, LiveResponse, LiveStream};

/// Builder for a Server-Sent Events response: per-stream defaults, an
/// optional automatic heartbeat, the client's `Last-Event-ID`, then
/// [`spawn`](Self::spawn) with the writer.
#[derive(Debug, Clone)]
pub struct Sse {
    live: Live,
    defaults: SseOptions,
    heartbeat: Option<Duration>,
    last_event_id: Option<String>,
}

impl Default for Sse {
    fn default() -> Self {
        Self::new()
    }
}

impl Sse {
    /// An SSE response: `Content-Type: text/event-stream`,
    /// `Cache-Control: no-cache`, `X-Accel-Buffering: no`, no defaults, no
    /// heartbeat.
    pub fn new() -> Self {
        Sse {
            live: Live::new().header(CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
            defaults: SseOptions::default(),
            heartbeat: None,
            last_event_id: None,
        }
    }

    /// Default `event:` for every frame.
    pub fn event(mut self, event: impl Into<String>) -> Self {
        self.defaults.event = Some(event.into());
        self
    }

    /// Default `id:` for every frame.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.defaults.id = Some(id.into());
        self
    }

    /// Default `retry:` (milliseconds) for every frame.
    pub fn retry(mut self, millis: u64) -> Self {
        self.defaults.retry = Some(millis);
        self
    }

    /// Replace all defaults at once.
    pub fn defaults(mut self, defaults: SseOptions) -> Self {
        self.defaults = defaults;
        self
    }

    /// Write a `: keep-alive` comment whenever the stream has been idle for
    /// `every`. Off by default.
    ///
    /// Heartbeats are data like any other: a client that reads none of them
    /// is cut by [`LiveConfig::stall_timeout`] once they back up into the
    /// stream's buffer, even if the writer itself never writes again.
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = Some(every);
        self
    }

    /// Take the client's `Last-Event-ID` from the request headers, for
    /// [`SseWriter::last_event_id`].
    ///
    /// The value is peer input and is taken only if it is well-formed: UTF-8
    /// (browsers send back the `id:` they received, which may be any text),
    /// not empty, and at most [`MAX_LAST_EVENT_ID_BYTES`](Self::MAX_LAST_EVENT_ID_BYTES)
    /// long. Anything else is ignored, as if the header were absent: the
    /// writer starts a fresh stream instead of resuming. Only the first
    /// `Last-Event-ID` header counts. Parsing the id (as a number, say) is
    /// the writer's business, and must refuse values it never issued.
    pub fn request_headers(mut self, headers: &HeaderMap) -> Self {
        self.last_event_id = headers
            .get("last-event-id")
            .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
            .filter(|id| acceptable_last_event_id(id))
            .map(str::to_owned);
        self
    }

    /// Set the `Last-Event-ID` the writer sees. The bounds of
    /// [`request_headers`](Self::request_headers) apply: an empty id, or one
    /// longer than [`MAX_LAST_EVENT_ID_BYTES`](Self::MAX_LAST_EVENT_ID_BYTES),
    /// is ignored.
    pub fn last_event_id(mut self, id: Option<String>) -> Self {
        self.last_event_id = id.filter(|id| acceptable_last_event_id(id));
        self
    }

    /// The longest `Last-Event-ID` accepted, in bytes: 1 KiB. Ids are
    /// counters, timestamps or keys; a longer one is not an id this server
    /// issued, and it would otherwise be kept for the stream's lifetime.
    pub const MAX_LAST_EVENT_ID_BYTES: usize = 1024;

    /// Replace the stream tuning (buffer bound, write and stall timeouts,
    /// disconnect grace).
    pub fn config(mut self, config: LiveConfig) -> Self {
        self.live = self.live.config(config);
        self
    }

    /// End the stream after `max` so the browser reconnects (and resumes
    /// with `Last-Event-ID`): bounds how long a client that reads nothing
    /// holds a stream; see [`LiveConfig::max_duration`].
    pub fn max_duration(mut self, max: Option<Duration>) -> Self {
        self.live = self.live.max_duration(max);
        self
    }

    /// Customise the underlying [`Live`] builder (status, extra headers).
    pub fn live(mut self, f: impl FnOnce(Live) -> Live) -> Self {
        self.live = f(self.live);
        self
    }

    /// Run `writer` on its own task; see [`Live::spawn`].
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn spawn<F, Fut>(self, writer: F) -> LiveResponse
    where
        F: FnOnce(SseWriter) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        let defaults = Arc::new(self.defaults);
        let last_event_id: Option<Arc<str>> = self.last_event_id.map(Into::into);
        let heartbeat = self.heartbeat;
        self.live.spawn(move |stream| {
            if let Some(every) = heartbeat {
                spawn_heartbeat(stream.clone(), every);
            }
            writer(SseWriter {
                stream,
                defaults,
                last_event_id,
            })
        })
    }

    /// Run blocking `writer` on its own thread; see [`Live::spawn_blocking`].
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn spawn_blocking<F>(self, writer: F) -> LiveResponse
    where
        F: FnOnce(BlockingSseWriter) -> Result<(), BoxError> + Send + 'static,
    {
        let defaults = Arc::new(self.defaults);
        let last_event_id: Option<Arc<str>> = self.last_event_id.map(Into::into);
        let heartbeat = self.heartbeat;
        self.live.spawn_blocking(move |stream| {
            if let Some(every) = heartbeat {
                let _rt = stream.runtime().enter();
                spawn_heartbeat(stream.as_async().clone(), every);
            }
            writer(BlockingSseWriter {
                inner: SseWriter {
                    stream: stream.as_async().clone(),
                    defaults,
                    last_event_id,
                },
                stream,
            })
        })
    }
}

/// Whether a `Last-Event-ID` is worth handing to the writer. A NUL is
/// refused too: browsers ignore an `id:` containing one, so no browser sends
/// it back.
fn acceptable_last_event_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= Sse::MAX_LAST_EVENT_ID_BYTES && !id.contains('\0')
}

/// The heartbeat's comments go through the stream's buffer like any frame,
/// so they count as pending data for [`LiveConfig::stall_timeout`]: an idle
/// stream whose client reads nothing is cut once they pile up.
fn spawn_heartbeat(stream: LiveStream, every: Duration) {
    tokio::spawn(async move {
        let mut out = Vec::new();
        frame::encode_comment("keep-alive", &mut out);
        let comment = Bytes::from(out);
        loop {
            let wait = every.saturating_sub(stream.idle_for());
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stream.closed() => return,
            }
            if stream.idle_for() >= every && stream.write(comment.clone()).await.is_err() {
                return;
            }
        }
    });
}

/// The writer's end of an SSE response.
#[derive(Debug, Clone)]
pub struct SseWriter {
    stream: LiveStream,
    defaults: Arc<SseOptions>,
    last_event_id: Option<Arc<str>>,
}

impl SseWriter {
    /// Emit one event frame carrying `data`, with the stream's defaults.
    /// Chain [`event`](SseWrite::event), [`id`](SseWrite::id) or
    /// [`retry`](SseWrite::retry) to override them for this frame, then
    /// `.await`.
    pub fn write<'a>(&'a self, data: impl Into<Cow<'a, str>>) -> SseWrite<'a> {
        SseWrite {
            writer: self,
            data: data.into(),
            options: SseOptions::default(),
        }
    }

    /// Emit one frame with explicit per-write `options` (merged over the
    /// defaults).
    pub async fn write_with(&self, data: &str, options: &SseOptions) -> Result<(), LiveError> {
        let merged = options.or(&self.defaults);
        let mut out = Vec::with_capacity(data.len() + 32);
        Frame::with_options(data, &merged).encode(&mut out)?;
        self.stream.write(out).await
    }

    /// Write a comment line (`: text`): a heartbeat that delivers no event.
    pub async fn comment(&self, text: &str) -> Result<(), LiveError> {
        let mut out = Vec::with_capacity(text.len() + 4);
        frame::encode_comment(text, &mut out);
        self.stream.write(out).await
    }

    /// The `Last-Event-ID` the client sent, so the writer can resume; `None`
    /// when absent or refused (see [`Sse::request_headers`]).
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }

    /// Await `fut` unless the client goes away (or the stream closes) first;
    /// see [`LiveStream::or_disconnected`].
    pub async fn or_disconnected<F: Future>(&self, fut: F) -> Result<F::Output, LiveError> {
        self.stream.or_disconnected(fut).await
    }

    /// The live stream underneath (for [`LiveStream::disconnected`],
    /// [`LiveStream::is_disconnected`], …).
    pub fn stream(&self) -> &LiveStream {
        &self.stream
    }

    /// Whether the client has gone.
    pub fn is_disconnected(&self) -> bool {
        self.stream.is_disconnected()
    }
}

/// The per-write overrides of a pending write (`event:`, `id:`,
/// `retry:`), the same for the async and the blocking writer.
macro_rules! per_write_overrides {
    ($write:ident) => {
        impl $write<'_> {
            /// Override the `event:` for this frame.
            pub fn event(mut self, event: impl Into<String>) -> Self {
                self.options.event = Some(event.into());
                self
            }

            /// Override the `id:` for this frame.
            pub fn id(mut self, id: impl Into<String>) -> Self {
                self.options.id = Some(id.into());
                self
            }

            /// Override the `retry:` (milliseconds) for this frame.
            pub fn retry(mut self, millis: u64) -> Self {
                self.options.retry = Some(millis);
                self
            }
        }
    };
}

/// One pending SSE write; see [`SseWriter::write`]. Does nothing until
/// awaited.
#[derive(Debug)]
#[must_use = "an SSE write does nothing until awaited"]
pub struct SseWrite<'a> {
    writer: &'a SseWriter,
    data: Cow<'a, str>,
    options: SseOptions,
}

per_write_overrides!(SseWrite);

impl<'a> IntoFuture for SseWrite<'a> {
    type Output = Result<(), LiveError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<(), LiveError>> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { self.writer.write_with(&self.data, &self.options).await })
    }
}

/// The writer's end of an SSE response for blocking code; see
/// [`Sse::spawn_blocking`]. Every method blocks the calling thread.
///
/// The same API as [`SseWriter`], with [`send`](BlockingSseWrite::send) in
/// place of `.await`:
///
/// ```
/// use keayl_live::Sse;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let response = Sse::new().retry(5000).spawn_blocking(|sse| {
///     sse.write("tick").send()?;                            // retry: 5000 applied
///     sse.write("pong").event("reply").retry(1000).send()?; // overridden for this frame
///     sse.write(42.to_string()).id("42").send()?;
///     sse.comment("keep-alive")?;
///     Ok(())
/// });
/// # let _ = response.into_parts().1.await;
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct BlockingSseWriter {
    inner: SseWriter,
    stream: BlockingLiveStream,
}

impl BlockingSseWriter {
    /// One event frame carrying `data`, with the stream's defaults. Chain
    /// [`event`](BlockingSseWrite::event), [`id`](BlockingSseWrite::id) or
    /// [`retry`](BlockingSseWrite::retry) to override them for this frame,
    /// then [`send`](BlockingSseWrite::send) it; see [`SseWriter::write`].
    pub fn write<'a>(&'a self, data: impl Into<Cow<'a, str>>) -> BlockingSseWrite<'a> {
        BlockingSseWrite {
            writer: self,
            data: data.into(),
            options: SseOptions::default(),
        }
    }

    /// Emit one frame with per-write `options` over the defaults, blocking
    /// while the buffer is full.
    pub fn write_with(&self, data: &str, options: &SseOptions) -> Result<(), LiveError> {
        self.stream
            .runtime()
            .block_on(self.inner.write_with(data, options))
    }

    /// Write a comment line.
    pub fn comment(&self, text: &str) -> Result<(), LiveError> {
        self.stream.runtime().block_on(self.inner.comment(text))
    }

    /// The client's `Last-Event-ID`.
    pub fn last_event_id(&self) -> Option<&str> {
        self.inner.last_event_id()
    }

    /// Whether the client has gone.
    pub fn is_disconnected(&self) -> bool {
        self.stream.is_disconnected()
    }

    /// The blocking live stream underneath.
    pub fn stream(&self) -> &BlockingLiveStream {
        &self.stream
    }
}

/// One pending blocking SSE write; see [`BlockingSseWriter::write`]. Does
/// nothing until [`send`](Self::send).
#[derive(Debug)]
#[must_use = "a blocking SSE write does nothing until `.send()`"]
pub struct BlockingSseWrite<'a> {
    writer: &'a BlockingSseWriter,
    data: Cow<'a, str>,
    options: SseOptions,
}

per_write_overrides!(BlockingSseWrite);

impl BlockingSseWrite<'_> {
    /// Emit the frame, blocking while the buffer is full. Fails like
    /// [`SseWrite`]'s `.await`: [`LiveError::ClientDisconnected`],
    /// [`LiveError::StreamClosed`], or [`LiveError::InvalidSseField`] for an
    /// `event` or `id` that would break the frame (nothing is written then).
    pub fn send(self) -> Result<(), LiveError> {
        self.writer.write_with(&self.data, &self.options)
    }
}
