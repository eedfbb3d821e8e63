//! The per-connection outbound queue, bounded in bytes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Notify;

use super::{LogLimit, SocketStats};

/// What to do when a client's outbound queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowClientPolicy {
    /// Disconnect the client: it gets
    /// `{"type":"disconnect","reason":"too_slow","reconnect":true}` (if the
    /// socket still takes it) and is closed. The default (as AnyCable does).
    #[default]
    Disconnect,
    /// Drop the frame that does not fit and count it; the client stays.
    DropNewest,
}

/// Why a connection's outbox was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The server closes normally (after a disconnect message): code 1000.
    Normal,
    /// The client fell behind; code 1000 after the `too_slow` message.
    TooSlow,
    /// The client sent more commands than the queue holds: code 1008 after a
    /// `disconnect` message.
    Flooded,
    /// A message over the size limit: code 1009.
    TooBig,
    /// A text frame that is not UTF-8: code 1007.
    InvalidUtf8,
    /// The client sent a close frame; only the transport's reply goes out.
    ClientClosed,
    /// The socket failed; nothing more can be sent.
    Gone,
}

impl CloseReason {
    /// The close frame to send, if one is sent.
    pub(crate) fn code(self) -> Option<u16> {
        match self {
            CloseReason::Normal | CloseReason::TooSlow => Some(1000),
            CloseReason::InvalidUtf8 => Some(1007),
            CloseReason::Flooded => Some(1008),
            CloseReason::TooBig => Some(1009),
            CloseReason::ClientClosed | CloseReason::Gone => None,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Bytes>,
    bytes: usize,
    close: Option<CloseReason>,
}

/// Frames waiting for one socket. Fan-out pushes without waiting; the
/// connection's writer drains everything queued at once, writes it, and
/// flushes once.
#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    limit: usize,
    policy: SlowClientPolicy,
    /// Wakes the connection's writer: frames to write, or closing.
    pub(crate) wake: Notify,
    pub(crate) stats: Arc<SocketStats>,
    log_limit: Arc<LogLimit>,
    /// `welcome` was sent: the pinger may ping.
    welcomed: AtomicBool,
}

impl Outbox {
    pub(crate) fn new(
        limit: usize,
        policy: SlowClientPolicy,
        stats: Arc<SocketStats>,
        log_limit: Arc<LogLimit>,
    ) -> Self {
        Outbox {
            state: Mutex::new(State::default()),
            limit,
            policy,
            wake: Notify::new(),
            stats,
            log_limit,
            welcomed: AtomicBool::new(false),
        }
    }

    // A std mutex: held for a push or a drain, never across an await.
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue a frame, applying the slow-client policy when it does not fit.
    pub(crate) fn push(&self, frame: Bytes) {
        let mut st = self.lock();
        if st.close.is_some() {
            return;
        }
        if st.bytes + frame.len() > self.limit && !st.queue.is_empty() {
            match self.policy {
                SlowClientPolicy::DropNewest => {
                    self.stats.dropped_frames.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                SlowClientPolicy::Disconnect => {
                    // Counted here, once: the close below makes every later
                    // push a no-op.
                    self.stats.slow_disconnects.fetch_add(1, Ordering::Relaxed);
                    if self.log_limit.allow(&self.stats.suppressed_logs) {
                        tracing::warn!(
                            queued = st.bytes,
                            limit = self.limit,
                            "client too slow; disconnecting"
                        );
                    }
                    self.stats
                        .queued_bytes
                        .fetch_sub(st.bytes, Ordering::Relaxed);
                    st.queue.clear();
                    st.bytes = 0;
                    st.queue.push_back(crate::protocol::disconnect(
                        crate::protocol::DisconnectReason::TooSlow,
                        true,
                    ));
                    st.close = Some(CloseReason::TooSlow);
                    drop(st);
                    self.wake.notify_one();
                    return;
                }
            }
        }
        self.enqueue(&mut st, frame);
        drop(st);
        self.wake.notify_one();
    }

    /// Append `frame`, counted in the queue's bytes and the shared stats.
    fn enqueue(&self, st: &mut State, frame: Bytes) {
        st.bytes += frame.len();
        self.stats
            .queued_bytes
            .fetch_add(frame.len(), Ordering::Relaxed);
        st.queue.push_back(frame);
    }

    /// Queue `frame` (a `disconnect` message), then close with `reason`,
    /// unless the outbox is already closing.
    pub(crate) fn push_and_close(&self, frame: Bytes, reason: CloseReason) {
        let mut st = self.lock();
        if st.close.is_some() {
            return;
        }
        self.enqueue(&mut st, frame);
        st.close = Some(reason);
        drop(st);
        self.wake.notify_one();
    }

    /// Close after what is queued: the writer sends the rest, then a close
    /// frame. `Gone` (the socket is unusable) overrides any earlier reason
    /// and drops what is queued.
    pub(crate) fn close(&self, reason: CloseReason) {
        let mut st = self.lock();
        if st.close.is_none() || reason == CloseReason::Gone {
            st.close = Some(reason);
        }
        if reason == CloseReason::Gone {
            self.stats
                .queued_bytes
                .fetch_sub(st.bytes, Ordering::Relaxed);
            st.queue.clear();
            st.bytes = 0;
        }
        drop(st);
        self.wake.notify_one();
    }

    /// The connection was welcomed: pings may follow.
    pub(crate) fn set_welcomed(&self) {
        self.welcomed.store(true, Ordering::Release);
    }

    pub(crate) fn is_welcomed(&self) -> bool {
        self.welcomed.load(Ordering::Acquire)
    }

    /// Why the outbox is closing now, if it is.
    pub(crate) fn closing(&self) -> Option<CloseReason> {
        self.lock().close
    }

    /// Take everything queued; also says whether the outbox is closing.
    pub(crate) fn drain(&self, into: &mut Vec<Bytes>) -> Option<CloseReason> {
        let mut st = self.lock();
        into.extend(st.queue.drain(..));
        self.stats
            .queued_bytes
            .fetch_sub(st.bytes, Ordering::Relaxed);
        st.bytes = 0;
        st.close
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        self.stats
            .queued_bytes
            .fetch_sub(st.bytes, Ordering::Relaxed);
    }
}
