use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use tokio::task::JoinHandle;

use super::stream::Shared;
use super::{BlockingLiveStream, LiveBody, LiveConfig, LiveStream};
use crate::{BoxError, WriterError};

/// Builder for a live response: status, headers and stream tuning, then
/// [`spawn`](Self::spawn) or [`spawn_blocking`](Self::spawn_blocking) with the
/// writer.
///
/// Defaults: status 200, `Content-Type: text/plain; charset=utf-8`,
/// `Cache-Control: no-cache`, `X-Accel-Buffering: no` (so nginx-style
/// proxies pass chunks through instead of buffering them), and
/// [`LiveConfig::default`].
#[derive(Debug, Clone)]
pub struct Live {
    status: StatusCode,
    headers: HeaderMap,
    config: LiveConfig,
}

impl Default for Live {
    fn default() -> Self {
        Self::new()
    }
}

pub(crate) static X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

impl Live {
    /// A live response with the defaults above.
    pub fn new() -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(X_ACCEL_BUFFERING.clone(), HeaderValue::from_static("no"));
        Live {
            status: StatusCode::OK,
            headers,
            config: LiveConfig::default(),
        }
    }

    /// Set the response status.
    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Set (replace) a response header.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// Set the `Content-Type` header.
    pub fn content_type(self, value: &'static str) -> Self {
        self.header(CONTENT_TYPE, HeaderValue::from_static(value))
    }

    /// Replace the stream tuning.
    pub fn config(mut self, config: LiveConfig) -> Self {
        self.config = config;
        self
    }

    /// Set [`LiveConfig::buffer_bytes`].
    pub fn buffer_bytes(mut self, bytes: usize) -> Self {
        self.config.buffer_bytes = bytes;
        self
    }

    /// Set [`LiveConfig::write_timeout`].
    pub fn write_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.write_timeout = timeout;
        self
    }

    /// Set [`LiveConfig::stall_timeout`].
    pub fn stall_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.stall_timeout = timeout;
        self
    }

    /// Set [`LiveConfig::disconnect_grace`].
    pub fn disconnect_grace(mut self, grace: Option<Duration>) -> Self {
        self.config.disconnect_grace = grace;
        self
    }

    /// Set [`LiveConfig::max_duration`].
    pub fn max_duration(mut self, max: Option<Duration>) -> Self {
        self.config.max_duration = max;
        self
    }

    /// Run `writer` on its own Tokio task and return the response at once.
    ///
    /// The stream closes when the writer returns, fails or panics; chunks it
    /// wrote are still delivered. Beside the writer, on the same task, a
    /// watch enforces [`LiveConfig::stall_timeout`] and
    /// [`LiveConfig::disconnect_grace`]: a writer that has not returned a
    /// grace period after its client left is dropped (see [`LiveStream`]).
    ///
    /// # Panics
    /// Outside a Tokio runtime (every axum or hyper handler runs inside one).
    /// The runtime needs its time driver (on with `#[tokio::main]`) unless
    /// every timeout in [`LiveConfig`] is `None`.
    pub fn spawn<F, Fut>(self, writer: F) -> LiveResponse
    where
        F: FnOnce(LiveStream) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        let shared = Shared::new(self.config);
        let stream = LiveStream {
            shared: shared.clone(),
        };
        let guard = CloseOnDrop(shared.clone());
        let task = tokio::spawn(async move {
            let guard = guard;
            let outcome = tokio::select! {
                // The writer first: the watch only ever matters once the
                // writer is parked.
                biased;
                result = writer(stream) => Outcome::Returned(result),
                () = guard.0.abandon_after_grace() => {
                    tracing::warn!(
                        grace = ?guard.0.config().disconnect_grace,
                        "live writer still running after its client left; dropping it \
                         (wait with LiveStream::or_disconnected to end it cleanly)"
                    );
                    Outcome::Abandoned
                }
            };
            let shared = guard.0.clone();
            drop(guard);
            shared.watch_rest();
            outcome
        });
        self.respond(shared, task)
    }

    /// Run blocking `writer` on its own thread (Tokio's blocking pool) and
    /// return the response at once. See [`spawn`](Self::spawn).
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn spawn_blocking<F>(self, writer: F) -> LiveResponse
    where
        F: FnOnce(BlockingLiveStream) -> Result<(), BoxError> + Send + 'static,
    {
        let shared = Shared::new(self.config);
        let stream = BlockingLiveStream::new(
            LiveStream {
                shared: shared.clone(),
            },
            tokio::runtime::Handle::current(),
        );
        let guard = CloseOnDrop(shared.clone());
        // A blocking writer cannot be interrupted, but a stalled client can
        // still be cut (which fails its next write): the watch runs on its
        // own task, for as long as there is something to deliver.
        if self.config.needs_watch() {
            let watched = shared.clone();
            tokio::spawn(async move {
                watched.watch().await;
            });
        }
        let task = tokio::task::spawn_blocking(move || {
            let _guard = guard;
            Outcome::Returned(writer(stream))
        });
        self.respond(shared, task)
    }

    fn respond(self, shared: Arc<Shared>, task: JoinHandle<Outcome>) -> LiveResponse {
        let mut response = http::Response::new(LiveBody::new(shared.clone()));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        response.extensions_mut().insert(LiveState {
            shared: shared.clone(),
        });
        LiveResponse {
            response,
            handle: LiveHandle { task },
            stream: LiveStream { shared },
        }
    }
}

/// Closes the stream when the writer ends, including by panic or
/// cancellation, since the guard lives inside the writer's task.
struct CloseOnDrop(Arc<Shared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// How a writer's task ended, when it did not panic or get cancelled.
#[derive(Debug)]
pub(crate) enum Outcome {
    Returned(Result<(), BoxError>),
    /// Dropped after [`LiveConfig::disconnect_grace`].
    Abandoned,
}

/// A live response: the HTTP response to hand to the adapter, and the
/// [`LiveHandle`] of its writer.
///
/// Hand it to the adapter with [`into_http`](Self::into_http) (plain hyper,
/// or any framework serving an `http::Response`), or, with the `axum`
/// feature, return it from an axum handler as is: it implements
/// `axum_core::response::IntoResponse`. Either way the response carries a
/// [`LiveState`] extension, so `is_live`/`is_streaming` stay readable after
/// the conversion.
#[derive(Debug)]
pub struct LiveResponse {
    response: http::Response<LiveBody>,
    handle: LiveHandle,
    stream: LiveStream,
}

impl LiveResponse {
    /// Always true: the body is produced by a live writer.
    pub fn is_live(&self) -> bool {
        true
    }

    /// Whether the body is still streaming; see [`LiveState::is_streaming`].
    pub fn is_streaming(&self) -> bool {
        !self.stream.shared.is_finished()
    }

    /// Whether the client went away (see [`LiveStream::is_disconnected`]).
    pub fn is_disconnected(&self) -> bool {
        self.stream.is_disconnected()
    }

    /// A handle reporting this response's state for as long as it is held;
    /// the same one the converted response carries as an extension.
    pub fn state(&self) -> LiveState {
        LiveState {
            shared: self.stream.shared.clone(),
        }
    }

    /// The response status and headers.
    pub fn headers(&self) -> &HeaderMap {
        self.response.headers()
    }

    /// The response, for the adapter; the writer runs on, detached.
    ///
    /// Its extensions hold a [`LiveState`].
    pub fn into_http(self) -> http::Response<LiveBody> {
        self.response
    }

    /// The response (with its [`LiveState`] extension) and the writer's
    /// handle.
    pub fn into_parts(self) -> (http::Response<LiveBody>, LiveHandle) {
        (self.response, self.handle)
    }
}

impl From<LiveResponse> for http::Response<LiveBody> {
    fn from(r: LiveResponse) -> Self {
        r.into_http()
    }
}

/// An axum handler returns a [`LiveResponse`] as is (feature `axum`).
///
/// The same response as [`LiveResponse::into_http`], its [`LiveState`]
/// extension included, with the body boxed into axum's `Body`; the writer
/// runs on, detached. Dropping the body still disconnects the stream.
///
/// ```
/// use axum_core::response::IntoResponse;
/// use keayl_live::{LiveResponse, LiveState, Sse};
///
/// // An axum handler: `get(events)` routes to it.
/// async fn events() -> LiveResponse {
///     Sse::new().spawn(|sse| async move {
///         sse.write("hello").event("greeting").await?;
///         Ok(())
///     })
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let response = events().await.into_response();
/// assert!(response.extensions().get::<LiveState>().unwrap().is_live());
/// # }
/// ```
#[cfg(feature = "axum")]
impl axum_core::response::IntoResponse for LiveResponse {
    fn into_response(self) -> axum_core::response::Response {
        self.into_http().map(axum_core::body::Body::new)
    }
}

/// Whether a response is live and still streaming, readable after the
/// [`LiveResponse`] was converted: [`LiveResponse::into_http`],
/// [`into_parts`](LiveResponse::into_parts) and (feature `axum`)
/// `into_response` insert it into the response's extensions.
///
/// A cheap handle (one `Arc`) onto the stream's shared state: every call
/// reads the state at that moment. Holding it keeps neither the stream open
/// nor any chunk buffered; only the stream's small bookkeeping outlives the
/// body while a clone is held.
///
/// ```
/// use keayl_live::{Live, LiveState};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let response = Live::new()
///     .spawn(|stream| async move { Ok(stream.write("hi").await?) })
///     .into_http();
/// // In a middleware, after the handler:
/// let state = LiveState::of(&response).expect("a live response").clone();
/// assert!(state.is_live());
/// drop(response); // the client went away
/// assert!(!state.is_streaming() && state.is_disconnected());
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct LiveState {
    shared: Arc<Shared>,
}

impl LiveState {
    /// The state of `response`, if it is a live response:
    /// `response.extensions().get::<LiveState>()`.
    pub fn of<B>(response: &http::Response<B>) -> Option<&LiveState> {
        response.extensions().get::<LiveState>()
    }

    /// Always true: a response carrying a `LiveState` is live (its body is
    /// produced by a live writer), streaming or not. A response without one
    /// is not live.
    pub fn is_live(&self) -> bool {
        true
    }

    /// Whether the body is still streaming: true while the writer may still
    /// write (the stream is open) or chunks it wrote still wait in the
    /// stream's buffer for the adapter to take them.
    ///
    /// It turns false, for good, once the stream is closed (the writer
    /// returned, failed, panicked or called [`LiveStream::close`]) *and*
    /// the adapter has taken every chunk, or as soon as the client went away
    /// ([`is_disconnected`](Self::is_disconnected): undelivered chunks are
    /// dropped then). "Taken" means handed to the HTTP server, which may
    /// still be writing the last bytes to the socket. An async writer may run
    /// on for a moment after a disconnect; its
    /// [`LiveHandle`] tells when it has finished.
    pub fn is_streaming(&self) -> bool {
        !self.shared.is_finished()
    }

    /// Whether the client went away (or was cut by a timeout); see
    /// [`LiveStream::is_disconnected`].
    pub fn is_disconnected(&self) -> bool {
        self.shared.is_disconnected()
    }
}

/// Completes when the writer finishes, with its outcome (the spec's
/// `live-promise`).
///
/// `Ok(())` when the writer returned `Ok(())`; otherwise a [`WriterError`]:
/// the writer's error, its panic, its cancellation, or its being dropped
/// after [`LiveConfig::disconnect_grace`]. Dropping the handle does not stop
/// the writer.
#[derive(Debug)]
pub struct LiveHandle {
    task: JoinHandle<Outcome>,
}

impl LiveHandle {
    /// Whether the writer has finished.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Future for LiveHandle {
    type Output = Result<(), WriterError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.task)
            .poll(cx)
            .map(|joined| match joined {
                Ok(Outcome::Returned(Ok(()))) => Ok(()),
                Ok(Outcome::Returned(Err(e))) => Err(WriterError::Failed(e)),
                Ok(Outcome::Abandoned) => Err(WriterError::Abandoned),
                Err(e) if e.is_panic() => {
                    let payload = e.into_panic();
                    let msg = payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "non-string panic payload".to_owned());
                    Err(WriterError::Panicked(msg))
                }
                Err(_) => Err(WriterError::Cancelled),
            })
    }
}
