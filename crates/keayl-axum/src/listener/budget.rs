//! The process-wide connection budget and the listener's counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Which part of the budget a connection holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// One of [`ListenerConfig::max_connections`](super::ListenerConfig::max_connections):
    /// any request, upgrades included.
    Regular,
    /// One of the [`ListenerConfig::ops_headroom`](super::ListenerConfig::ops_headroom)
    /// places kept for operations: only the ops paths are served, one
    /// request, no upgrade.
    Ops,
}

/// Counters of one listener, shared with whoever renders them (`/metrics`).
#[derive(Debug, Clone, Default)]
pub struct ListenerStats {
    inner: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    regular: AtomicUsize,
    ops: AtomicUsize,
    accepted: AtomicU64,
    refused: AtomicU64,
    ops_only_refusals: AtomicU64,
    header_timeouts: AtomicU64,
    body_timeouts: AtomicU64,
    client_stalls: AtomicU64,
    accept_errors: AtomicU64,
    suppressed_logs: AtomicU64,
}

/// A copy of a listener's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenerSnapshot {
    /// Open TCP connections holding a regular place (WebSocket, SSE, live
    /// responses, keep-alive and requests in progress, handshakes).
    pub open: usize,
    /// Open connections holding an ops place.
    pub ops_open: usize,
    /// TCP connections accepted since start.
    pub accepted: u64,
    /// Connections refused with HTTP 503 because the whole budget was taken.
    pub refused: u64,
    /// Requests on an ops place for a path other than the ops paths (503).
    pub ops_only_refusals: u64,
    /// Connections closed because request headers did not arrive in time
    /// (including idle keep-alive connections).
    pub header_timeouts: u64,
    /// Request bodies that stalled longer than the body-read timeout.
    pub body_timeouts: u64,
    /// Connections cut because the client read nothing for the stall
    /// timeout while a response waited for it.
    pub client_stalls: u64,
    /// Errors from `accept` (typically running out of file descriptors).
    pub accept_errors: u64,
    /// Refusal log lines left out by the rate limit.
    pub suppressed_logs: u64,
}

impl ListenerStats {
    /// The counters now.
    pub fn snapshot(&self) -> ListenerSnapshot {
        let c = &self.inner;
        ListenerSnapshot {
            open: c.regular.load(Ordering::Acquire),
            ops_open: c.ops.load(Ordering::Acquire),
            accepted: c.accepted.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            ops_only_refusals: c.ops_only_refusals.load(Ordering::Relaxed),
            header_timeouts: c.header_timeouts.load(Ordering::Relaxed),
            body_timeouts: c.body_timeouts.load(Ordering::Relaxed),
            client_stalls: c.client_stalls.load(Ordering::Relaxed),
            accept_errors: c.accept_errors.load(Ordering::Relaxed),
            suppressed_logs: c.suppressed_logs.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn accepted(&self) {
        self.inner.accepted.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn refused(&self) {
        self.inner.refused.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn ops_only_refusal(&self) {
        self.inner.ops_only_refusals.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn header_timeout(&self) {
        self.inner.header_timeouts.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn body_timeout(&self) {
        self.inner.body_timeouts.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn client_stall(&self) {
        self.inner.client_stalls.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn accept_error(&self) {
        self.inner.accept_errors.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn suppressed(&self) -> &AtomicU64 {
        &self.inner.suppressed_logs
    }
}

/// The budget of one listener: `limit` regular places and `headroom` ops
/// places. Every accepted TCP connection takes a place before anything is
/// read from it and keeps it until the socket closes, through a WebSocket
/// upgrade too, so every kind of connection counts and a storm never
/// overshoots.
#[derive(Debug, Clone)]
pub struct ConnectionBudget {
    limit: usize,
    headroom: usize,
    stats: ListenerStats,
}

/// A place in the budget, freed on drop.
#[derive(Debug)]
pub struct Permit {
    place: Place,
    stats: ListenerStats,
}

impl Permit {
    /// Which place this is.
    pub fn place(&self) -> Place {
        self.place
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let counter = match self.place {
            Place::Regular => &self.stats.inner.regular,
            Place::Ops => &self.stats.inner.ops,
        };
        counter.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConnectionBudget {
    /// A budget of `limit` regular and `headroom` ops places, counted in
    /// `stats`.
    pub fn new(limit: usize, headroom: usize, stats: ListenerStats) -> Self {
        ConnectionBudget {
            limit,
            headroom,
            stats,
        }
    }

    /// A regular place if one is free, else an ops place, else `None`.
    pub fn try_acquire(&self) -> Option<Permit> {
        let c = &self.stats.inner;
        if take(&c.regular, self.limit) {
            return Some(Permit {
                place: Place::Regular,
                stats: self.stats.clone(),
            });
        }
        if take(&c.ops, self.headroom) {
            return Some(Permit {
                place: Place::Ops,
                stats: self.stats.clone(),
            });
        }
        None
    }
}

fn take(counter: &AtomicUsize, max: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_then_ops_then_none() {
        let stats = ListenerStats::default();
        let budget = ConnectionBudget::new(2, 1, stats.clone());
        let a = budget.try_acquire().unwrap();
        let b = budget.try_acquire().unwrap();
        let c = budget.try_acquire().unwrap();
        assert_eq!(
            [a.place(), b.place(), c.place()],
            [Place::Regular, Place::Regular, Place::Ops]
        );
        assert!(budget.try_acquire().is_none());
        drop(a);
        assert_eq!(budget.try_acquire().unwrap().place(), Place::Regular);
        assert_eq!(stats.snapshot().open, 1, "the permit above was dropped");
    }

    #[test]
    fn budget_holds_under_contention() {
        let stats = ListenerStats::default();
        let budget = ConnectionBudget::new(100, 10, stats.clone());
        let held = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..100 {
                        if let Some(p) = budget.try_acquire() {
                            held.lock().unwrap().push(p);
                        }
                    }
                });
            }
        });
        let held = held.into_inner().unwrap();
        let regular = held.iter().filter(|p| p.place() == Place::Regular).count();
        assert_eq!((regular, held.len()), (100, 110));
        assert_eq!(stats.snapshot().open, 100);
        assert_eq!(stats.snapshot().ops_open, 10);
        drop(held);
        assert_eq!(stats.snapshot().open, 0);
    }
}
