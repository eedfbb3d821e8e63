//! Counters of the socket driver, and the rate limit for its log lines.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Counters of every connection a [`Hub`](super::Hub) serves (exported as
/// metrics by `keayl-axum`'s ops routes).
#[derive(Debug, Default)]
pub struct SocketStats {
    /// Open connections (welcomed or still in `connect`).
    pub connections: AtomicUsize,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Commands that failed (logged, no frame).
    pub command_errors: AtomicU64,
    /// Clients disconnected because their command queue overflowed.
    pub command_overflows: AtomicU64,
    /// Clients disconnected for being too slow (counted once per client).
    pub slow_disconnects: AtomicU64,
    /// Frames dropped under [`SlowClientPolicy::DropNewest`](super::SlowClientPolicy::DropNewest).
    pub dropped_frames: AtomicU64,
    /// Upgrades refused (origin, limit, not a WebSocket).
    pub refused: AtomicU64,
    /// Messages over the size limit.
    pub oversize: AtomicU64,
    /// Text frames that were not UTF-8.
    pub invalid_utf8: AtomicU64,
    /// Binary frames dropped.
    pub binary_frames: AtomicU64,
    /// Connections closed because the client stopped answering.
    pub liveness_timeouts: AtomicU64,
    /// Connections whose upgrade or `connect` took longer than the
    /// handshake timeout.
    pub handshake_timeouts: AtomicU64,
    /// Log lines suppressed by the rate limit.
    pub suppressed_logs: AtomicU64,
    /// Bytes queued for clients, over all connections.
    pub queued_bytes: AtomicUsize,
    command_errors_by_kind: Mutex<BTreeMap<&'static str, u64>>,
}

impl SocketStats {
    /// Count a failed command of `kind` (a rare path: a mutex is fine).
    pub fn command_error(&self, kind: &'static str) {
        self.command_errors.fetch_add(1, Ordering::Relaxed);
        *self
            .command_errors_by_kind
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kind)
            .or_default() += 1;
    }

    /// Failed commands by kind.
    pub fn command_errors_by_kind(&self) -> Vec<(&'static str, u64)> {
        self.command_errors_by_kind
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect()
    }
}

pub use crate::log_limit::LogLimit;
