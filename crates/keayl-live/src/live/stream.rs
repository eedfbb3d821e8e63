use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::Chunk;
use crate::LiveError;

/// Tuning for one live stream.
///
/// Every knob bounds how long a client that has gone away, or stopped
/// reading, keeps the stream (and the writer's resources) alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveConfig {
    /// Bytes the stream buffers between writer and socket before a write
    /// waits for the client to read. A single chunk larger than this is still
    /// accepted when the buffer is empty. Default: 256 KiB.
    pub buffer_bytes: usize,
    /// How long a write may wait for buffer space before the client counts as
    /// gone ([`LiveError::ClientDisconnected`]). `None` waits forever.
    /// Default: 10 s.
    pub write_timeout: Option<Duration>,
    /// How long data may wait in the stream's buffer without the HTTP adapter
    /// taking any of it before the client counts as gone: the stream is
    /// [disconnected](LiveStream::disconnect), the writer's next write (or a
    /// pending [`LiveStream::or_disconnected`]) fails with
    /// [`LiveError::ClientDisconnected`], and the body ends the next time the
    /// adapter polls it. `None` never cuts a stalled client. Default: 30 s.
    ///
    /// Unlike [`write_timeout`](Self::write_timeout) this needs no blocked
    /// writer: an idle writer with a few bytes stuck in the buffer (an SSE
    /// heartbeat comment counts) is cut as well.
    ///
    /// The clock starts only once data is *in this buffer*. Before that,
    /// what the writer produces is absorbed downstream: by the HTTP server's
    /// write buffer, the kernel's socket send buffer (autotuned up to 4 MiB
    /// on Linux) and the client's receive buffer. On Linux loopback that was
    /// about 60,000 small (~60 byte) SSE events before the first byte waited
    /// here; with the listener's `SO_SNDBUF` capped at 16 KiB, about 3,000
    /// (the client's receive buffer holds the rest, and no server setting
    /// caps that). A high-rate stream fills them quickly and is cut about
    /// this timeout after its client stops reading; a stream of one small
    /// event per second only this timeout after those buffers are full.
    ///
    /// The cut cannot make the HTTP server give up a socket it is blocked
    /// writing to (it stops polling the body meanwhile): that takes a write
    /// timeout in the server or its IO.
    pub stall_timeout: Option<Duration>,
    /// How long an async writer may run on after the client went away before
    /// its future is dropped (its task aborted, in effect).
    ///
    /// A writer that writes at least this often sees
    /// [`LiveError::ClientDisconnected`] from [`LiveStream::write`] and ends by
    /// itself; one that waits on something else should wrap the wait in
    /// [`LiveStream::or_disconnected`]. This limit is the safety net for a
    /// writer that does neither: when it expires the writer's future is
    /// dropped, so `Drop` impls run (put cleanup there) but code after the
    /// `.await` it was parked on does not, and its
    /// [`LiveHandle`](crate::LiveHandle) reports
    /// [`WriterError::Abandoned`](crate::WriterError::Abandoned). `None` lets
    /// such a writer run forever. Blocking writers
    /// ([`Live::spawn_blocking`](crate::Live::spawn_blocking)) cannot be
    /// interrupted and ignore this. Default: 30 s.
    pub disconnect_grace: Option<Duration>,
    /// End the stream this long after it started, as if the client had
    /// left: the writer's next write fails with
    /// [`LiveError::ClientDisconnected`] and the response ends. `None`
    /// (the default) lets it run for ever.
    ///
    /// For SSE this is how a client that reads nothing is bounded in time
    /// on a quiet stream: a trickle of small events never fills the kernel
    /// buffers that [`stall_timeout`](Self::stall_timeout) and the
    /// listener's stall watch depend on, but a browser's `EventSource`
    /// reconnects on its own (after the stream's `retry`) and resumes with
    /// `Last-Event-ID`, so a real reader loses nothing. Pick minutes.
    pub max_duration: Option<Duration>,
}

impl LiveConfig {
    /// Whether a watch must run beside the writer.
    pub(crate) fn needs_watch(&self) -> bool {
        self.stall_timeout.is_some() || self.max_duration.is_some()
    }

    /// Default [`buffer_bytes`](Self::buffer_bytes): 256 KiB.
    pub const DEFAULT_BUFFER_BYTES: usize = 256 * 1024;
    /// Default [`write_timeout`](Self::write_timeout): 10 s.
    pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default [`stall_timeout`](Self::stall_timeout): 30 s.
    pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default [`disconnect_grace`](Self::disconnect_grace): 30 s.
    pub const DEFAULT_DISCONNECT_GRACE: Duration = Duration::from_secs(30);
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            buffer_bytes: Self::DEFAULT_BUFFER_BYTES,
            write_timeout: Some(Self::DEFAULT_WRITE_TIMEOUT),
            stall_timeout: Some(Self::DEFAULT_STALL_TIMEOUT),
            disconnect_grace: Some(Self::DEFAULT_DISCONNECT_GRACE),
            max_duration: None,
        }
    }
}

/// State shared by the writer's [`LiveStream`] and the adapter's body.
///
/// A std `Mutex` is right here: it is held only for queue pushes and pops,
/// never across an await, and both sides touch it once per chunk.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Woken when buffer space frees up or the stream ends: what a blocked
    /// write waits on.
    changed: Notify,
    /// Woken only when the stream closes, the client goes away, or the body
    /// has delivered everything: what idle waiters (`disconnected()`,
    /// `or_disconnected`, the heartbeat, the stall watch) wait on, so that
    /// the per-chunk space notifications never wake them.
    ended: Notify,
    /// Set once the queue is empty and the stream closed: lets the body's
    /// `is_end_stream` answer without the lock.
    finished: AtomicBool,
    /// When the stream was created (for [`LiveConfig::max_duration`]).
    started: Instant,
    config: LiveConfig,
}

#[derive(Debug)]
struct State {
    queue: VecDeque<Bytes>,
    queued_bytes: usize,
    closed: bool,
    disconnected: bool,
    reader: Option<Waker>,
    /// Writers registered on `changed` waiting for space; the reader only
    /// notifies when this is non-zero (and resets it when it does).
    write_waiters: usize,
    last_write: Instant,
    /// Since when the oldest undelivered byte has waited for the adapter:
    /// set when data enters an empty queue, moved to "now" whenever the
    /// adapter takes a chunk and more remain, cleared when the queue empties.
    waiting_since: Option<Instant>,
}

impl State {
    /// The error a write would fail with now, if any.
    fn ended(&self) -> Option<LiveError> {
        if self.disconnected {
            Some(LiveError::ClientDisconnected)
        } else if self.closed {
            Some(LiveError::StreamClosed)
        } else {
            None
        }
    }

    fn is_finished(&self) -> bool {
        self.queue.is_empty() && (self.closed || self.disconnected)
    }
}

pub(crate) enum Poll {
    Chunk(Bytes),
    End,
    Pending,
}

/// How a [`Shared::watch`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Watched {
    /// The client went away (or was cut for stalling).
    Gone,
    /// Everything was delivered and the stream is closed.
    Finished,
}

impl Shared {
    pub(crate) fn new(config: LiveConfig) -> Arc<Self> {
        Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                queued_bytes: 0,
                closed: false,
                disconnected: false,
                reader: None,
                write_waiters: 0,
                last_write: Instant::now(),
                waiting_since: None,
            }),
            changed: Notify::new(),
            ended: Notify::new(),
            finished: AtomicBool::new(false),
            started: Instant::now(),
            config,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves the queue consistent (every
        // critical section is a few field updates), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn config(&self) -> LiveConfig {
        self.config
    }

    /// Called by the body: take the next chunk, or learn the body is done.
    pub(crate) fn poll_chunk(&self, waker: &Waker) -> Poll {
        let mut st = self.lock();
        if let Some(chunk) = st.queue.pop_front() {
            st.queued_bytes -= chunk.len();
            let mut delivered_all = false;
            if st.queue.is_empty() {
                st.waiting_since = None;
                if st.closed {
                    self.finished.store(true, Ordering::Release);
                    delivered_all = true;
                }
            } else if self.config.stall_timeout.is_some() {
                // The adapter is reading: the stall clock restarts.
                st.waiting_since = Some(Instant::now());
            }
            // Wake blocked writers once the buffer has drained to half (or
            // empty), not on every chunk: one writer wake-up refills many
            // chunks instead of ping-ponging one chunk per wake-up.
            let wake = st.write_waiters > 0
                && (st.queue.is_empty() || st.queued_bytes <= self.config.buffer_bytes / 2);
            if wake {
                st.write_waiters = 0;
            }
            drop(st);
            if wake {
                self.changed.notify_waiters();
            }
            if delivered_all {
                // Lets a stall watch that outlived its writer end now.
                self.ended.notify_waiters();
            }
            return Poll::Chunk(chunk);
        }
        if st.closed || st.disconnected {
            self.finished.store(true, Ordering::Release);
            return Poll::End;
        }
        match &st.reader {
            Some(w) if w.will_wake(waker) => {}
            _ => st.reader = Some(waker.clone()),
        }
        Poll::Pending
    }

    /// Lock-free `is_finished` for the body's `is_end_stream`.
    pub(crate) fn is_end_stream(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.lock().is_finished()
    }

    pub(crate) fn is_disconnected(&self) -> bool {
        self.lock().disconnected
    }

    /// Called when the body is dropped: unless everything was delivered, the
    /// client went away.
    pub(crate) fn body_dropped(&self) {
        if !self.is_finished() {
            self.disconnect();
        }
    }

    pub(crate) fn close(&self) {
        let reader = {
            let mut st = self.lock();
            st.closed = true;
            st.write_waiters = 0;
            if st.queue.is_empty() {
                self.finished.store(true, Ordering::Release);
            }
            st.reader.take()
        };
        if let Some(w) = reader {
            w.wake();
        }
        self.changed.notify_waiters();
        self.ended.notify_waiters();
    }

    pub(crate) fn disconnect(&self) {
        let reader = {
            let mut st = self.lock();
            st.disconnected = true;
            st.closed = true;
            st.queue.clear();
            st.queued_bytes = 0;
            st.waiting_since = None;
            st.write_waiters = 0;
            self.finished.store(true, Ordering::Release);
            st.reader.take()
        };
        if let Some(w) = reader {
            w.wake();
        }
        self.changed.notify_waiters();
        self.ended.notify_waiters();
    }

    /// Whether data has waited for the adapter for the whole stall timeout.
    fn stalled(&self, st: &State, now: Instant) -> bool {
        match (self.config.stall_timeout, st.waiting_since) {
            (Some(limit), Some(since)) => now.saturating_duration_since(since) >= limit,
            _ => false,
        }
    }

    fn cut_stalled(&self) {
        tracing::debug!(
            stall_timeout = ?self.config.stall_timeout,
            "live stream: the client took nothing for the stall timeout; treating it as gone"
        );
        self.disconnect();
    }

    /// Queue `bytes` if the buffer has room. `Ok(false)` means full; with
    /// `register`, the caller (which enabled a `changed` waiter first) is
    /// counted as waiting for space.
    fn try_push(&self, bytes: &mut Option<Bytes>, register: bool) -> Result<bool, LiveError> {
        let mut st = self.lock();
        if let Some(e) = st.ended() {
            return Err(e);
        }
        let now = Instant::now();
        if self.stalled(&st, now) {
            drop(st);
            self.cut_stalled();
            return Err(LiveError::ClientDisconnected);
        }
        let len = bytes.as_ref().map_or(0, Bytes::len);
        if len == 0 {
            return Ok(true);
        }
        if st.queued_bytes == 0 || st.queued_bytes + len <= self.config.buffer_bytes {
            if st.queue.is_empty() && self.config.stall_timeout.is_some() {
                st.waiting_since = Some(now);
            }
            st.queued_bytes += len;
            st.queue.extend(bytes.take());
            st.last_write = now;
            let reader = st.reader.take();
            drop(st);
            if let Some(w) = reader {
                w.wake();
            }
            return Ok(true);
        }
        if register {
            st.write_waiters += 1;
        }
        Ok(false)
    }

    async fn write_bytes(&self, bytes: Bytes) -> Result<(), LiveError> {
        let mut bytes = Some(bytes);
        // Fast path: room in the buffer, no waiter registration, no deadline.
        if self.try_push(&mut bytes, false)? {
            return Ok(());
        }
        let deadline = self.config.write_timeout.map(|t| Instant::now() + t);
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Register before checking, so a wake-up between check and await
            // is not lost.
            notified.as_mut().enable();
            if self.try_push(&mut bytes, true)? {
                return Ok(());
            }
            match deadline {
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        tracing::debug!("live stream write timed out; treating client as gone");
                        self.disconnect();
                        return Err(LiveError::ClientDisconnected);
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Completes with the error a write would fail with, once there is one.
    async fn ended_error(&self, only_disconnect: bool) -> LiveError {
        loop {
            let notified = self.ended.notified();
            tokio::pin!(notified);
            // Register before checking, so a wake-up in between is not lost.
            notified.as_mut().enable();
            match self.lock().ended() {
                Some(LiveError::StreamClosed) if only_disconnect => {}
                Some(e) => return e,
                None => {}
            }
            notified.await;
        }
    }

    /// Watch the stream until the client is gone or everything is delivered,
    /// cutting the client once data has waited for the stall timeout.
    ///
    /// Without data pending it still wakes once per stall timeout, so data
    /// that became pending meanwhile (no push ever wakes the watch: that
    /// would cost every chunk a wake-up) is cut on time: at the latest one
    /// stall timeout after it started to wait.
    pub(crate) async fn watch(&self) -> Watched {
        loop {
            let notified = self.ended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next_check = {
                let st = self.lock();
                if st.disconnected {
                    return Watched::Gone;
                }
                if st.is_finished() {
                    return Watched::Finished;
                }
                let now = Instant::now();
                if self.stalled(&st, now) {
                    drop(st);
                    self.cut_stalled();
                    return Watched::Gone;
                }
                let end = self.config.max_duration.map(|max| self.started + max);
                if end.is_some_and(|end| now >= end) {
                    drop(st);
                    self.disconnect();
                    return Watched::Gone;
                }
                let stall = self
                    .config
                    .stall_timeout
                    .map(|limit| st.waiting_since.unwrap_or(now) + limit);
                match (stall, end) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            };
            match next_check {
                Some(at) => {
                    tokio::select! {
                        () = notified.as_mut() => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Runs beside an async writer, in its task: completes once the client
    /// has been gone for the disconnect grace (never, without one).
    pub(crate) async fn abandon_after_grace(&self) {
        loop {
            if self.watch().await == Watched::Gone {
                break;
            }
            // Closed and delivered while the writer runs on: nothing to cut
            // any more; a body dropped from now on is not a disconnect.
            self.ended_error(true).await;
        }
        match self.config.disconnect_grace {
            Some(grace) => tokio::time::sleep(grace).await,
            None => std::future::pending().await,
        }
    }

    /// After the writer returned: keep cutting a stalled client while its
    /// last chunks wait for delivery, so their memory is not held forever.
    pub(crate) fn watch_rest(self: &Arc<Self>) {
        if !self.config.needs_watch() || self.is_finished() {
            return;
        }
        let shared = self.clone();
        tokio::spawn(async move {
            shared.watch().await;
        });
    }
}

/// The writer's end of a live response.
///
/// Cloning gives another handle to the same stream (for a heartbeat task,
/// say); the stream closes when the writer closure returns, however many
/// clones remain.
///
/// # When the client goes away
///
/// The stream is disconnected when the adapter drops the body before the
/// end (the client closed or reset the connection), when a write waits
/// longer than [`LiveConfig::write_timeout`], or when written data waits
/// longer than [`LiveConfig::stall_timeout`] for the adapter. Then, at once:
/// undelivered chunks are dropped, a pending or later [`write`](Self::write)
/// fails with [`LiveError::ClientDisconnected`], and so does a pending
/// [`or_disconnected`](Self::or_disconnected). A writer waiting on anything
/// else (a channel, a timer) does not notice: wrap that wait in
/// `or_disconnected`. If an async writer still has not returned
/// [`LiveConfig::disconnect_grace`] after the disconnect, its future is
/// dropped.
#[derive(Debug, Clone)]
pub struct LiveStream {
    pub(crate) shared: Arc<Shared>,
}

impl LiveStream {
    /// Write one chunk: text goes out as UTF-8, bytes unchanged.
    ///
    /// Waits while the buffer is full (backpressure). Fails with
    /// [`LiveError::ClientDisconnected`] once the client has gone (or was cut
    /// by [`LiveConfig::write_timeout`] or [`LiveConfig::stall_timeout`]),
    /// and with [`LiveError::StreamClosed`] after [`close`](Self::close). An
    /// empty chunk writes nothing.
    pub async fn write(&self, chunk: impl Into<Chunk>) -> Result<(), LiveError> {
        self.shared.write_bytes(chunk.into().into_bytes()).await
    }

    /// Close the stream: chunks already written are still delivered, then the
    /// body ends. Later writes fail with [`LiveError::StreamClosed`].
    pub fn close(&self) {
        self.shared.close();
    }

    /// Mark the client as gone and close the stream, discarding undelivered
    /// chunks. The HTTP adapter calls this when the connection goes away;
    /// later writes fail with [`LiveError::ClientDisconnected`].
    pub fn disconnect(&self) {
        self.shared.disconnect();
    }

    /// Whether the client has gone.
    pub fn is_disconnected(&self) -> bool {
        self.shared.is_disconnected()
    }

    /// Whether the stream is closed (by the writer, or because the client
    /// went away).
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// Completes when the client goes away: lets an idle writer (one waiting
    /// on something other than a write) notice at once. See also
    /// [`or_disconnected`](Self::or_disconnected), which does the racing.
    pub async fn disconnected(&self) {
        self.shared.ended_error(true).await;
    }

    /// Completes when the stream is closed or the client went away.
    pub async fn closed(&self) {
        self.shared.ended_error(false).await;
    }

    /// Await `fut` unless the stream ends first: the way for a writer to wait
    /// on anything other than a write (a channel, a timer, a query) without
    /// outliving its client.
    ///
    /// Resolves to `Ok` with `fut`'s output if it completes first. Once the
    /// client is gone (closed or reset the connection, or was cut by the
    /// write or stall timeout) it resolves to
    /// `Err(`[`LiveError::ClientDisconnected`]`)` at once and drops `fut`;
    /// once the stream is [closed](Self::close) it resolves to
    /// `Err(`[`LiveError::StreamClosed`]`)`: the same error the next
    /// [`write`](Self::write) would return, so `?` ends the writer the same
    /// way. When both are ready the error wins: a writer never gets another
    /// item to handle for a client that has left. `fut` is polled on the
    /// writer's task; dropping it must be harmless (true of channel
    /// receives, sleeps and most I/O).
    ///
    /// ```
    /// use keayl_live::Sse;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(16);
    /// let response = Sse::new().spawn(|sse| async move {
    ///     // Ends with ClientDisconnected as soon as the client leaves, even
    ///     // if nothing is ever sent on `tx`.
    ///     while let Some(text) = sse.or_disconnected(rx.recv()).await? {
    ///         sse.write(text).await?;
    ///     }
    ///     Ok(())
    /// });
    /// # drop(tx); let _ = response.into_parts().1.await;
    /// # }
    /// ```
    pub async fn or_disconnected<F: Future>(&self, fut: F) -> Result<F::Output, LiveError> {
        tokio::select! {
            biased;
            e = self.shared.ended_error(false) => Err(e),
            out = fut => Ok(out),
        }
    }

    /// Time since the last chunk was written (used for heartbeats).
    pub(crate) fn idle_for(&self) -> Duration {
        self.shared.lock().last_write.elapsed()
    }

    /// The configuration this stream runs with.
    pub fn config(&self) -> LiveConfig {
        self.shared.config()
    }
}

/// The writer's end of a live response for blocking code, run on its own
/// thread by [`Live::spawn_blocking`](crate::Live::spawn_blocking).
///
/// Every method blocks the calling thread; never use it from async code.
#[derive(Debug, Clone)]
pub struct BlockingLiveStream {
    inner: LiveStream,
    runtime: tokio::runtime::Handle,
}

impl BlockingLiveStream {
    pub(crate) fn new(inner: LiveStream, runtime: tokio::runtime::Handle) -> Self {
        BlockingLiveStream { inner, runtime }
    }

    /// Write one chunk, blocking while the buffer is full.
    /// See [`LiveStream::write`].
    pub fn write(&self, chunk: impl Into<Chunk>) -> Result<(), LiveError> {
        self.runtime.block_on(self.inner.write(chunk))
    }

    /// See [`LiveStream::close`].
    pub fn close(&self) {
        self.inner.close();
    }

    /// See [`LiveStream::disconnect`].
    pub fn disconnect(&self) {
        self.inner.disconnect();
    }

    /// See [`LiveStream::is_disconnected`].
    pub fn is_disconnected(&self) -> bool {
        self.inner.is_disconnected()
    }

    /// See [`LiveStream::is_closed`].
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// The async stream underneath.
    pub fn as_async(&self) -> &LiveStream {
        &self.inner
    }

    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stalling(limit: Duration) -> Arc<Shared> {
        Shared::new(LiveConfig {
            stall_timeout: Some(limit),
            write_timeout: None,
            ..LiveConfig::default()
        })
    }

    fn pull(shared: &Shared) -> Option<Bytes> {
        match shared.poll_chunk(Waker::noop()) {
            Poll::Chunk(b) => Some(b),
            _ => None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stall_clock_restarts_on_every_pull() {
        let shared = stalling(Duration::from_secs(1));
        shared.write_bytes(Bytes::from_static(b"a")).await.unwrap();
        shared.write_bytes(Bytes::from_static(b"b")).await.unwrap();
        tokio::time::advance(Duration::from_millis(900)).await;
        assert!(pull(&shared).is_some(), "the adapter reads one chunk");
        tokio::time::advance(Duration::from_millis(900)).await;
        // 1.8 s since the first byte waited, but only 0.9 s without a pull.
        shared.write_bytes(Bytes::from_static(b"c")).await.unwrap();
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(
            shared.write_bytes(Bytes::from_static(b"d")).await,
            Err(LiveError::ClientDisconnected)
        );
        assert!(
            pull(&shared).is_none(),
            "the cut dropped the undelivered chunks"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_buffer_never_stalls() {
        let shared = stalling(Duration::from_secs(1));
        shared.write_bytes(Bytes::from_static(b"a")).await.unwrap();
        assert!(pull(&shared).is_some());
        let watch = tokio::spawn({
            let shared = shared.clone();
            async move { shared.watch().await }
        });
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!watch.is_finished());
        assert!(!shared.lock().disconnected);
        shared.write_bytes(Bytes::from_static(b"b")).await.unwrap();
        assert!(pull(&shared).is_some());
        shared.close();
        assert_eq!(watch.await.unwrap(), Watched::Finished);
    }

    #[tokio::test(start_paused = true)]
    async fn the_watch_cuts_an_idle_stream_exactly_one_stall_timeout_after_data_waits() {
        let limit = Duration::from_secs(30);
        let shared = stalling(limit);
        let watch = tokio::spawn({
            let shared = shared.clone();
            async move { shared.watch().await }
        });
        // Data starts waiting in the middle of the watch's idle period.
        tokio::time::sleep(Duration::from_secs(17)).await;
        shared
            .write_bytes(Bytes::from_static(b": keep-alive\n\n"))
            .await
            .unwrap();
        let waiting_from = Instant::now();
        assert_eq!(watch.await.unwrap(), Watched::Gone);
        assert_eq!(waiting_from.elapsed(), limit);
        assert!(shared.lock().disconnected);
    }

    #[tokio::test(start_paused = true)]
    async fn a_writer_parked_after_its_client_left_is_abandoned_after_the_grace() {
        let shared = Shared::new(LiveConfig {
            disconnect_grace: Some(Duration::from_secs(5)),
            ..LiveConfig::default()
        });
        let net = tokio::spawn({
            let shared = shared.clone();
            async move { shared.abandon_after_grace().await }
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(
            !net.is_finished(),
            "nothing happens while the client is there"
        );
        shared.disconnect();
        let gone_at = Instant::now();
        net.await.unwrap();
        assert_eq!(gone_at.elapsed(), Duration::from_secs(5));
    }
}
