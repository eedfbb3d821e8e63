//! The per-connection queue of client commands waiting for the worker.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::Notify;

/// Client frames read but not yet handled, bounded in count and bytes. The
/// reader pushes; the connection's worker pops them one at a time, in order.
#[derive(Debug)]
pub(crate) struct CommandQueue {
    state: Mutex<QueueState>,
    notify: Notify,
    max_len: usize,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct QueueState {
    items: VecDeque<Bytes>,
    bytes: usize,
}

/// The queue is full: the frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Overflow {
    pub(crate) len: usize,
    pub(crate) bytes: usize,
}

impl CommandQueue {
    pub(crate) fn new(max_len: usize, max_bytes: usize) -> Self {
        CommandQueue {
            state: Mutex::new(QueueState::default()),
            notify: Notify::new(),
            max_len,
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue a frame, or refuse it when the queue is full.
    pub(crate) fn push(&self, frame: Bytes) -> Result<(), Overflow> {
        let mut st = self.lock();
        if st.items.len() >= self.max_len || st.bytes + frame.len() > self.max_bytes {
            return Err(Overflow {
                len: st.items.len(),
                bytes: st.bytes,
            });
        }
        st.bytes += frame.len();
        st.items.push_back(frame);
        drop(st);
        self.notify.notify_one();
        Ok(())
    }

    /// The next frame, waiting for one. Cancel-safe: the queue is checked
    /// first on every call, so a dropped wait loses nothing.
    pub(crate) async fn pop(&self) -> Bytes {
        loop {
            {
                let mut st = self.lock();
                if let Some(frame) = st.items.pop_front() {
                    st.bytes -= frame.len();
                    return frame;
                }
            }
            self.notify.notified().await;
        }
    }

    /// Frames waiting.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().items.len()
    }
}
