//! The broker-independent half of a backend's supervisor task: the
//! reconnect loop, and small pieces of the session loop.

use std::future::Future;
use std::time::Duration;

use crate::{Backoff, Health, Registry};
use keayl_cable::pubsub::BoxFuture;

/// How a session (one connection to the broker) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// The backend is shutting down.
    Cancelled,
    /// The connection failed (the error); reconnect.
    Lost(String),
}

/// Why a broker operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpError {
    /// The connection is unusable: reconnect.
    Fatal(String),
    /// The broker refused the command; the connection is fine.
    Refused(String),
}

/// What a supervisor keeps alive: the wanted channels, the health handle,
/// and the broker's address (redacted, for logs), plus the reconnect
/// backoff. [`run`](Self::run) is the reconnect loop.
#[derive(Debug)]
pub struct Supervisor<'a> {
    /// The wanted channels.
    pub registry: &'a Registry,
    /// The health handle the loop reports to.
    pub health: &'a Health,
    /// The broker's address, password redacted.
    pub broker: &'a str,
    /// The delay between connection attempts.
    pub backoff: Backoff,
}

impl Supervisor<'_> {
    /// Connect and run sessions until `cancelled()` completes, reconnecting
    /// **forever** with the backoff.
    ///
    /// `connect` makes one attempt; `session` runs a connected session to its
    /// end (it should watch for cancellation itself and return
    /// [`SessionEnd::Cancelled`]); `disconnected` forgets the connection's
    /// state shared with publishers (called after every session and at the
    /// end). Between them, the loop keeps the [`Registry`] (no channel live
    /// after a session, every waiter failed at the end) and the [`Health`]
    /// (outages, closed) up to date and logs failed attempts (`warn` on the
    /// 1st, 2nd, 4th… attempt, `debug` otherwise).
    pub async fn run<S, X, XF, C, CF, R, RF>(
        mut self,
        cancelled: X,
        mut connect: C,
        mut session: R,
        mut disconnected: impl FnMut(),
    ) where
        X: Fn() -> XF,
        XF: Future<Output = ()>,
        C: FnMut() -> CF,
        CF: Future<Output = Result<S, String>>,
        R: FnMut(S) -> RF,
        RF: Future<Output = SessionEnd>,
    {
        let backend = self.health.backend();
        loop {
            let attempt = tokio::select! {
                _ = cancelled() => break,
                r = connect() => r,
            };
            match attempt {
                Ok(s) => {
                    self.backoff.reset();
                    let end = session(s).await;
                    disconnected();
                    self.registry.mark_all_down();
                    match end {
                        SessionEnd::Cancelled => break,
                        SessionEnd::Lost(e) => self.health.set_down(self.broker, &e),
                    }
                }
                Err(e) => {
                    self.health.set_down(self.broker, &e);
                    let n = self.backoff.attempt() + 1;
                    if n.is_power_of_two() {
                        tracing::warn!(backend, broker = %self.broker, attempt = n, error = %e, "reconnect attempt failed; retrying");
                    } else {
                        tracing::debug!(backend, broker = %self.broker, attempt = n, error = %e, "reconnect attempt failed; retrying");
                    }
                }
            }
            let delay = self.backoff.next_delay();
            tokio::select! {
                _ = cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        disconnected();
        self.registry.close();
        self.health.set_closed();
        tracing::debug!(backend, "pub/sub supervisor stopped");
    }
}

/// The outcome of the operation in flight, if any; never completes when
/// there is none. For a session loop's `select!`, which keeps one broker
/// operation in flight at a time.
pub async fn in_flight<T>(op: &mut Option<BoxFuture<'static, T>>) -> T {
    match op.as_mut() {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// An interval ticking every `period`, first after one `period`, delaying
/// (not bursting) after a missed tick: the session loop's health check.
pub fn health_check_interval(period: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}
