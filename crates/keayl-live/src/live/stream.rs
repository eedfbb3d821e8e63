use std::collections::VecDeque;
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
}

impl LiveConfig {
    /// Default [`buffer_bytes`](Self::buffer_bytes): 256 KiB.
    pub const DEFAULT_BUFFER_BYTES: usize = 256 * 1024;
    /// Default [`write_timeout`](Self::write_timeout): 10 s.
    pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            buffer_bytes: Self::DEFAULT_BUFFER_BYTES,
            write_timeout: Some(Self::DEFAULT_WRITE_TIMEOUT),
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
    /// Woken when buffer space frees up or the stream ends.
    changed: Notify,
    /// Set once the queue is empty and the stream closed: lets the body's
    /// `is_end_stream` answer without the lock.
    finished: AtomicBool,
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
}

pub(crate) enum Poll {
    Chunk(Bytes),
    End,
    Pending,
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
            }),
            changed: Notify::new(),
            finished: AtomicBool::new(false),
            config,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves the queue consistent (every
        // critical section is a few field updates), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called by the body: take the next chunk, or learn the body is done.
    pub(crate) fn poll_chunk(&self, waker: &Waker) -> Poll {
        let mut st = self.lock();
        if let Some(chunk) = st.queue.pop_front() {
            st.queued_bytes -= chunk.len();
            if st.queue.is_empty() && st.closed {
                self.finished.store(true, Ordering::Release);
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
        let st = self.lock();
        st.queue.is_empty() && (st.closed || st.disconnected)
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
    }

    pub(crate) fn disconnect(&self) {
        let reader = {
            let mut st = self.lock();
            st.disconnected = true;
            st.closed = true;
            st.queue.clear();
            st.queued_bytes = 0;
            st.write_waiters = 0;
            self.finished.store(true, Ordering::Release);
            st.reader.take()
        };
        if let Some(w) = reader {
            w.wake();
        }
        self.changed.notify_waiters();
    }

    /// Queue `bytes` if the buffer has room. `Ok(false)` means full; with
    /// `register`, the caller (which enabled a `changed` waiter first) is
    /// counted as waiting for space.
    fn try_push(&self, bytes: &mut Option<Bytes>, register: bool) -> Result<bool, LiveError> {
        let mut st = self.lock();
        if st.disconnected {
            return Err(LiveError::ClientDisconnected);
        }
        if st.closed {
            return Err(LiveError::StreamClosed);
        }
        let len = bytes.as_ref().map_or(0, Bytes::len);
        if len == 0 {
            return Ok(true);
        }
        if st.queued_bytes == 0 || st.queued_bytes + len <= self.config.buffer_bytes {
            st.queued_bytes += len;
            st.queue.extend(bytes.take());
            st.last_write = Instant::now();
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

    async fn wait_for(&self, done: impl Fn(&State) -> bool) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done(&self.lock()) {
                return;
            }
            notified.await;
        }
    }
}

/// The writer's end of a live response.
///
/// Cloning gives another handle to the same stream (for a heartbeat task,
/// say); the stream closes when the writer closure returns, however many
/// clones remain.
#[derive(Debug, Clone)]
pub struct LiveStream {
    pub(crate) shared: Arc<Shared>,
}

impl LiveStream {
    /// Write one chunk: text goes out as UTF-8, bytes unchanged.
    ///
    /// Waits while the buffer is full (backpressure). Fails with
    /// [`LiveError::ClientDisconnected`] once the client has gone (or did not
    /// read for the write timeout), and with [`LiveError::StreamClosed`] after
    /// [`close`](Self::close). An empty chunk writes nothing.
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
        self.shared.lock().disconnected
    }

    /// Whether the stream is closed (by the writer, or because the client
    /// went away).
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// Completes when the client goes away: lets an idle writer (one waiting
    /// on something other than a write) notice at once.
    pub async fn disconnected(&self) {
        self.shared.wait_for(|st| st.disconnected).await
    }

    /// Completes when the stream is closed or the client went away.
    pub async fn closed(&self) {
        self.shared.wait_for(|st| st.closed).await
    }

    /// Time since the last chunk was written (used for heartbeats).
    pub(crate) fn idle_for(&self) -> Duration {
        self.shared.lock().last_write.elapsed()
    }

    /// The configuration this stream runs with.
    pub fn config(&self) -> LiveConfig {
        self.shared.config
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
