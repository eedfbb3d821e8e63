//! The per-connection outbound queue, bounded in bytes.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Notify;

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
    /// A message over the size limit: code 1009.
    TooBig,
    /// The client sent a close frame; only the library's reply goes out.
    ClientClosed,
    /// The socket failed; nothing more can be sent.
    Gone,
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
    /// Wakes the connection's task: frames to write, or closing.
    pub(crate) wake: Notify,
    pub(crate) stats: Arc<super::Stats>,
}

impl Outbox {
    pub(crate) fn new(limit: usize, policy: SlowClientPolicy, stats: Arc<super::Stats>) -> Self {
        Outbox {
            state: Mutex::new(State::default()),
            limit,
            policy,
            wake: Notify::new(),
            stats,
        }
    }

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
                    self.stats.slow_disconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        queued = st.bytes,
                        limit = self.limit,
                        "client too slow; disconnecting"
                    );
                    self.stats
                        .queued_bytes
                        .fetch_sub(st.bytes, Ordering::Relaxed);
                    st.queue.clear();
                    st.bytes = 0;
                    st.queue.push_back(keayl_cable::protocol::disconnect(
                        keayl_cable::protocol::DisconnectReason::TooSlow,
                        true,
                    ));
                    st.close = Some(CloseReason::TooSlow);
                    drop(st);
                    self.signal_closed();
                    return;
                }
            }
        }
        st.bytes += frame.len();
        self.stats
            .queued_bytes
            .fetch_add(frame.len(), Ordering::Relaxed);
        st.queue.push_back(frame);
        drop(st);
        self.wake.notify_one();
    }

    /// Close after what is queued: the writer sends the rest, then a close
    /// frame. `Gone` (the socket is unusable) overrides any earlier reason.
    pub(crate) fn close(&self, reason: CloseReason) {
        self.close_with(reason);
    }

    /// [`close`](Self::close), returning the reason the outbox had before.
    pub(crate) fn close_with(&self, reason: CloseReason) -> Option<CloseReason> {
        let mut st = self.lock();
        let before = st.close;
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
        self.signal_closed();
        before
    }

    fn signal_closed(&self) {
        self.wake.notify_one();
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
