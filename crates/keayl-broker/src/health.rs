//! A networked backend's health signal: link state, counters, outage
//! logging.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use keayl_cable::pubsub::{ClientHealth, PubSubError};

/// The state of the link to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LinkState {
    /// The first connection is being made.
    Connecting,
    /// Connected; every live stream is subscribed.
    Up,
    /// The broker cannot be reached; the backend reconnects with backoff.
    Down,
    /// The backend was dropped or shut down; it will not reconnect.
    Closed,
}

impl LinkState {
    /// `"connecting"`, `"up"`, `"down"` or `"closed"`.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Connecting => "connecting",
            LinkState::Up => "up",
            LinkState::Down => "down",
            LinkState::Closed => "closed",
        }
    }
}

impl std::fmt::Display for LinkState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot of [`Health`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthStatus {
    /// The backend's name (`"redis"` or `"postgres"`).
    pub backend: &'static str,
    /// The link state.
    pub state: LinkState,
    /// Successful reconnections after an outage.
    pub reconnects: u64,
    /// Outages (transitions to [`LinkState::Down`], including a failed first
    /// connection).
    pub outages: u64,
    /// Broadcasts that were not published (broker down, timeout, error); each
    /// one also returned an error to its caller.
    pub lost_broadcasts: u64,
    /// Messages received from the broker that could not be delivered
    /// locally (for example a spilled payload that could not be fetched).
    pub failed_deliveries: u64,
    /// How long the current outage has lasted, when down.
    pub down_for: Option<Duration>,
    /// The last connection or publish error.
    pub last_error: Option<String>,
}

impl std::fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} (reconnects {}, outages {}, lost broadcasts {}, failed deliveries {})",
            self.backend,
            self.state,
            self.reconnects,
            self.outages,
            self.lost_broadcasts,
            self.failed_deliveries
        )
    }
}

/// A cloneable handle on a backend's health: whether the broker link is up,
/// and counters for reconnections, outages and lost broadcasts. Cheap to
/// read; suitable for a health endpoint or a metrics exporter.
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

struct Inner {
    backend: &'static str,
    state: watch::Sender<LinkState>,
    reconnects: AtomicU64,
    outages: AtomicU64,
    lost: AtomicU64,
    failed_deliveries: AtomicU64,
    lost_in_outage: AtomicU64,
    down_since: Mutex<Option<Instant>>,
    last_error: Mutex<Option<String>>,
    failed_log: Mutex<FailedLog>,
}

/// The rate limit of [`Health::count_failed_delivery`]'s log.
#[derive(Default)]
struct FailedLog {
    /// When the last line was logged.
    last: Option<Instant>,
    /// Calls since then that were not logged.
    suppressed: u64,
}

/// At most one failed-delivery line per this interval.
const FAILED_LOG_INTERVAL: Duration = Duration::from_secs(1);

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.status(), f)
    }
}

impl Health {
    /// A fresh handle for the backend named `backend` (`"redis"`,
    /// `"postgres"`…; it labels the logs), in [`LinkState::Connecting`].
    pub fn new(backend: &'static str) -> Self {
        Health {
            inner: Arc::new(Inner {
                backend,
                state: watch::Sender::new(LinkState::Connecting),
                reconnects: AtomicU64::new(0),
                outages: AtomicU64::new(0),
                lost: AtomicU64::new(0),
                failed_deliveries: AtomicU64::new(0),
                lost_in_outage: AtomicU64::new(0),
                down_since: Mutex::new(None),
                last_error: Mutex::new(None),
                failed_log: Mutex::new(FailedLog::default()),
            }),
        }
    }

    /// The current link state.
    pub fn state(&self) -> LinkState {
        *self.inner.state.borrow()
    }

    /// Whether the broker link is up.
    pub fn is_up(&self) -> bool {
        self.state() == LinkState::Up
    }

    /// Successful reconnections after an outage.
    pub fn reconnect_count(&self) -> u64 {
        self.inner.reconnects.load(Ordering::Relaxed)
    }

    /// Outages so far.
    pub fn outage_count(&self) -> u64 {
        self.inner.outages.load(Ordering::Relaxed)
    }

    /// Broadcasts that could not be published (each also returned an error).
    pub fn lost_broadcast_count(&self) -> u64 {
        self.inner.lost.load(Ordering::Relaxed)
    }

    /// Received messages that could not be delivered locally.
    pub fn failed_delivery_count(&self) -> u64 {
        self.inner.failed_deliveries.load(Ordering::Relaxed)
    }

    /// The last connection or publish error.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.inner.last_error).clone()
    }

    /// A snapshot of everything above.
    pub fn status(&self) -> HealthStatus {
        HealthStatus {
            backend: self.inner.backend,
            state: self.state(),
            reconnects: self.reconnect_count(),
            outages: self.outage_count(),
            lost_broadcasts: self.lost_broadcast_count(),
            failed_deliveries: self.failed_delivery_count(),
            down_for: lock(&self.inner.down_since).map(|t| t.elapsed()),
            last_error: self.last_error(),
        }
    }

    /// A receiver that sees every link state change.
    pub fn watch(&self) -> watch::Receiver<LinkState> {
        self.inner.state.subscribe()
    }

    /// Wait until the link state satisfies `pred`, at most `timeout`;
    /// returns whether it did.
    pub async fn wait_for(&self, pred: impl Fn(LinkState) -> bool, timeout: Duration) -> bool {
        let mut rx = self.watch();
        tokio::time::timeout(timeout, rx.wait_for(|s| pred(*s)))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Wait until the link is up, at most `timeout`; returns whether it is.
    pub async fn wait_up(&self, timeout: Duration) -> bool {
        self.wait_for(|s| s == LinkState::Up, timeout).await
    }

    /// The backend's name, as given to [`new`](Self::new).
    pub fn backend(&self) -> &'static str {
        self.inner.backend
    }

    /// The link as [`External`](keayl_cable::pubsub::External) reports it to the
    /// cable's metrics and health hooks.
    pub fn client_health(&self) -> ClientHealth {
        ClientHealth {
            healthy: self.is_up(),
            reconnects: self.reconnect_count(),
            lost_broadcasts: self.lost_broadcast_count(),
        }
    }

    // ---- transitions, called by the backend's supervisor ----

    /// The link to `what` (the broker's redacted address) is up and every
    /// wanted channel subscribed. After an outage this counts a reconnection
    /// and logs the outage's duration and lost broadcasts (`warn`).
    pub fn set_up(&self, what: &str) {
        let previous = self.inner.state.send_replace(LinkState::Up);
        let since = lock(&self.inner.down_since).take();
        match previous {
            LinkState::Down => {
                self.inner.reconnects.fetch_add(1, Ordering::Relaxed);
                let lost = self.inner.lost_in_outage.swap(0, Ordering::Relaxed);
                let down_for = since.map(|t| t.elapsed()).unwrap_or_default();
                tracing::warn!(
                    backend = self.inner.backend,
                    broker = what,
                    down_for_ms = down_for.as_millis() as u64,
                    lost_broadcasts = lost,
                    "pub/sub broker connection restored after {down_for:.1?}; every live stream re-subscribed ({lost} broadcasts lost during the outage)"
                );
            }
            _ => {
                tracing::info!(
                    backend = self.inner.backend,
                    broker = what,
                    "pub/sub broker connected"
                );
            }
        }
    }

    /// The link to `what` failed with `error`. The first failure of an
    /// outage counts it and logs it (`error`); repeated failures only update
    /// [`last_error`](Self::last_error).
    pub fn set_down(&self, what: &str, error: &str) {
        *lock(&self.inner.last_error) = Some(error.to_owned());
        let previous = self.inner.state.send_replace(LinkState::Down);
        if previous != LinkState::Down {
            self.inner.outages.fetch_add(1, Ordering::Relaxed);
            *lock(&self.inner.down_since) = Some(Instant::now());
            if previous == LinkState::Connecting {
                tracing::error!(
                    backend = self.inner.backend,
                    broker = what,
                    error,
                    "pub/sub broker unreachable; serving local clients, broadcasts fail until it is reachable; retrying with backoff"
                );
            } else {
                tracing::error!(
                    backend = self.inner.backend,
                    broker = what,
                    error,
                    "pub/sub broker connection lost (outage); broadcasts fail until it is back; reconnecting with backoff"
                );
            }
        }
    }

    /// The backend shut down; it will not reconnect.
    pub fn set_closed(&self) {
        self.inner.state.send_replace(LinkState::Closed);
    }

    /// A broadcast was not published (`error` is also returned to its
    /// caller). Logged at `warn` once per outage (and every 1000th), the rest
    /// at `debug`.
    pub fn record_lost(&self, error: &str) {
        let n = self.inner.lost.fetch_add(1, Ordering::Relaxed) + 1;
        let in_outage = self.inner.lost_in_outage.fetch_add(1, Ordering::Relaxed) + 1;
        *lock(&self.inner.last_error) = Some(error.to_owned());
        // One warning per outage (and every 1000th), the rest at debug: the
        // counter and the caller's error carry every single one.
        if in_outage == 1 || n.is_multiple_of(1000) {
            tracing::warn!(
                backend = self.inner.backend,
                error,
                lost_broadcasts = n,
                "broadcast not published"
            );
        } else {
            tracing::debug!(
                backend = self.inner.backend,
                error,
                "broadcast not published"
            );
        }
    }

    /// A broadcast was not published because the broker is unavailable
    /// (down, timed out, failed): [`record_lost`](Self::record_lost)s
    /// `what` and returns it as the caller's
    /// [`PubSubError::Unavailable`].
    ///
    /// ```
    /// use keayl_broker::Health;
    /// use keayl_cable::pubsub::PubSubError;
    ///
    /// let health = Health::new("redis");
    /// let err = health.lost("PUBLISH failed");
    /// assert_eq!(err, PubSubError::Unavailable("PUBLISH failed".into()));
    /// assert_eq!(health.lost_broadcast_count(), 1);
    /// ```
    pub fn lost(&self, what: impl Into<String>) -> PubSubError {
        let what = what.into();
        self.record_lost(&what);
        PubSubError::Unavailable(what)
    }

    /// A message received from the broker could not be delivered locally
    /// (logged at `error`).
    pub fn record_failed_delivery(&self, error: &str) {
        self.inner.failed_deliveries.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            backend = self.inner.backend,
            error,
            "message from the broker could not be delivered"
        );
    }

    /// Messages from the broker were dropped (`reason`: for example a
    /// subscription that fell behind). Counted in
    /// [`failed_delivery_count`](Self::failed_delivery_count) on every call;
    /// logged at `warn` at most once a second, with how many calls since
    /// the previous line were not logged (for events that can come in
    /// floods).
    pub fn count_failed_delivery(&self, reason: &str) {
        let total = self.inner.failed_deliveries.fetch_add(1, Ordering::Relaxed) + 1;
        let suppressed = {
            let mut log = lock(&self.inner.failed_log);
            let now = Instant::now();
            if log
                .last
                .is_some_and(|t| now.duration_since(t) < FAILED_LOG_INTERVAL)
            {
                log.suppressed += 1;
                return;
            }
            log.last = Some(now);
            std::mem::take(&mut log.suppressed)
        };
        tracing::warn!(
            backend = self.inner.backend,
            reason,
            failed_deliveries = total,
            suppressed,
            "messages from the broker dropped ({suppressed} more such reports suppressed since the last line)"
        );
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_deliveries_are_all_counted_but_logged_at_most_once_a_second() {
        let health = Health::new("test");
        for _ in 0..1000 {
            health.count_failed_delivery("slow consumer");
        }
        assert_eq!(health.failed_delivery_count(), 1000);
        assert_eq!(health.status().failed_deliveries, 1000);
        // A line was logged; the calls after it (within the second) wait,
        // counted, for the next one.
        let log = lock(&health.inner.failed_log);
        assert!(log.last.is_some());
        assert!(
            log.suppressed > 0 && log.suppressed < 1000,
            "{}",
            log.suppressed
        );
    }
}
