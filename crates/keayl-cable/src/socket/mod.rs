//! The connection driver: one client connection over any transport.
//!
//! A transport (the `/cable` WebSocket of `keayl-axum`, an in-memory pair in
//! tests) hands the driver a [`Stream`](futures_util::Stream) of
//! [`Incoming`] frames and a [`Sink`](futures_util::Sink) of [`Outgoing`]
//! ones; [`Hub::serve`] runs the [`Connection`](crate::Connection) over them
//! until either side closes. The [`Hub`] is shared by every connection of a
//! process: the cable, the settings, the counters, the server-wide pinger,
//! restart and shutdown.
//!
//! Inside one connection three loops run concurrently on one task:
//!
//! - the **reader** reads frames as they come and queues commands (bounded
//!   in count and bytes: [`SocketConfig::command_queue_len`],
//!   [`SocketConfig::command_queue_bytes`]; a client beyond it is
//!   disconnected);
//! - the **worker** runs `connect`, then each command in arrival order, and
//!   the periodic timers: each finishes before the next starts, however long
//!   user code awaits;
//! - the **writer** writes whatever the outbound queue holds (pings,
//!   broadcasts, transmits: feed every frame, one flush), bounded in bytes
//!   ([`SocketConfig::outbound_queue_bytes`]), and checks liveness.
//!
//! So a slow action never stops pings, broadcasts or reads, and a socket
//! that drains slowly never stops commands, unsubscribes or close frames.
//!
//! ```
//! use futures_util::{SinkExt, StreamExt};
//! use keayl_cable::socket::{Hub, Incoming, Outgoing, ReadError, SocketConfig};
//! use keayl_cable::{Cable, InMemory, Request};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let hub = Hub::new(Cable::builder(InMemory::new()).build(), SocketConfig::default()).unwrap();
//! // An in-memory transport: what the client sends, and what it receives.
//! let (to_server, mut from_client) = futures_channel::mpsc::unbounded::<Result<Incoming, ReadError>>();
//! let (to_client, mut from_server) = futures_channel::mpsc::unbounded::<Outgoing>();
//! let slot = hub.reserve().unwrap();
//! let server = tokio::spawn(async move {
//!     let mut to_client = to_client.sink_map_err(|e| e.to_string());
//!     hub.serve(slot, &mut from_client, &mut to_client, Request::default()).await
//! });
//! assert_eq!(from_server.next().await, Some(Outgoing::Text(r#"{"type":"welcome"}"#.into())));
//! to_server.unbounded_send(Ok(Incoming::Close)).unwrap();
//! drop(to_server);
//! server.await.unwrap();
//! # }
//! ```

mod commands;
mod driver;
mod frame;
mod outbox;
mod panics;
mod stats;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use frame::{Finished, Incoming, Outgoing, ReadError};
pub use outbox::SlowClientPolicy;
pub use panics::{limit_panic_reports, suppressed_panic_reports};
pub use stats::{LogLimit, SocketStats};

use crate::Cable;
use outbox::Outbox;

/// Settings of the connection driver, with their defaults.
#[derive(Debug, Clone)]
pub struct SocketConfig {
    /// Interval between `ping` messages. Default 3 s (the Rails client
    /// reconnects after 6 s of silence).
    pub ping_interval: Duration,
    /// Bytes queued for one client before [`slow_client`](Self::slow_client)
    /// applies. Default 1 MiB.
    pub outbound_queue_bytes: usize,
    /// What happens to a client that cannot keep up. Default: disconnect.
    pub slow_client: SlowClientPolicy,
    /// How long one batched write may take before the client counts as too
    /// slow and is dropped. Default 5 s.
    pub write_timeout: Duration,
    /// How long the handshake may take: from [`Hub::reserve`] (the transport
    /// reserves when the upgrade request arrives) to the end of `connect`.
    /// Default 10 s.
    pub handshake_timeout: Duration,
    /// A client that sends nothing (not even a WebSocket pong) for this long
    /// is considered gone (a half-open connection) and is closed. Half-way
    /// through, the server sends a WebSocket ping, which every browser and
    /// client library answers. Checked on every ping tick. Default 30 s.
    pub liveness_timeout: Duration,
    /// Client commands waiting while an earlier one runs. A client that
    /// sends more is disconnected
    /// (`{"type":"disconnect","reason":"too_many_commands","reconnect":true}`,
    /// close code 1008, one rate-limited log line). Default 1,024.
    pub command_queue_len: usize,
    /// Bytes of client commands waiting, with the same policy. Default 1 MiB.
    pub command_queue_bytes: usize,
    /// After the server's close frame, how long to wait for the client's
    /// (and, after an oversize message, to read and discard what it still
    /// sends). Default 2 s.
    pub close_grace: Duration,
    /// Open connections (in `connect` or welcomed) one hub accepts;
    /// [`Hub::reserve`] refuses beyond it. Default 19,500.
    pub max_connections: usize,
    /// Log lines per second for refused connections and protocol errors;
    /// the rest are counted and summarised. Default 20.
    pub log_lines_per_second: u32,
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            ping_interval: Duration::from_secs(3),
            outbound_queue_bytes: 1024 * 1024,
            slow_client: SlowClientPolicy::Disconnect,
            write_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            liveness_timeout: Duration::from_secs(30),
            command_queue_len: 1024,
            command_queue_bytes: 1024 * 1024,
            close_grace: Duration::from_secs(2),
            max_connections: 19_500,
            log_lines_per_second: 20,
        }
    }
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting {field}: {reason}")]
pub struct ConfigError {
    /// The setting.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl SocketConfig {
    /// Check that the settings can work (every duration and bound above
    /// zero, liveness longer than the ping interval).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let nonzero: [(&'static str, bool); 9] = [
            ("ping_interval", self.ping_interval.is_zero()),
            ("outbound_queue_bytes", self.outbound_queue_bytes == 0),
            ("write_timeout", self.write_timeout.is_zero()),
            ("handshake_timeout", self.handshake_timeout.is_zero()),
            ("liveness_timeout", self.liveness_timeout.is_zero()),
            ("command_queue_len", self.command_queue_len == 0),
            ("command_queue_bytes", self.command_queue_bytes == 0),
            ("max_connections", self.max_connections == 0),
            ("log_lines_per_second", self.log_lines_per_second == 0),
        ];
        if let Some((field, _)) = nonzero.iter().find(|(_, zero)| *zero) {
            return Err(ConfigError {
                field,
                reason: "must be greater than zero",
            });
        }
        if self.liveness_timeout <= self.ping_interval {
            return Err(ConfigError {
                field: "liveness_timeout",
                reason: "must be longer than ping_interval (liveness is checked on ping ticks)",
            });
        }
        Ok(())
    }
}

/// Every connection of a process: the cable, the driver's settings and
/// counters, the server-wide pinger, restart and shutdown. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Hub {
    inner: Arc<HubInner>,
}

#[derive(Debug)]
struct HubInner {
    cable: Cable,
    config: SocketConfig,
    stats: Arc<SocketStats>,
    log_limit: Arc<LogLimit>,
    shutdown: AtomicBool,
    /// Outboxes of every connection, for the server-wide pinger (welcomed
    /// ones only), restart and shutdown.
    open: Mutex<HashMap<u64, Arc<Outbox>>>,
    next_id: AtomicU64,
    pinger_started: AtomicBool,
}

/// Why [`Hub::reserve`] refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// [`SocketConfig::max_connections`] connections are open.
    #[error("connection limit reached")]
    Full,
    /// [`Hub::shutdown`] was called.
    #[error("shutting down")]
    ShuttingDown,
}

/// A reserved place for one connection, taken before the transport's
/// handshake so a storm of connections never overshoots the limit. Dropping
/// it frees the place.
#[derive(Debug)]
pub struct Slot {
    stats: Arc<SocketStats>,
    /// When the handshake began: `connect` must finish within
    /// [`SocketConfig::handshake_timeout`] of it.
    reserved_at: tokio::time::Instant,
}

impl Slot {
    /// Count the handshake from `at` (when the transport accepted the
    /// connection) if that is earlier, so the handshake timeout covers the
    /// upgrade request too.
    pub fn since(mut self, at: tokio::time::Instant) -> Self {
        self.reserved_at = self.reserved_at.min(at);
        self
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.stats.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Removes a connection from the pinger's list when it ends.
struct Registered<'a> {
    inner: &'a HubInner,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.inner
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

impl Hub {
    /// A hub serving `cable` with `config` (validated).
    pub fn new(cable: Cable, config: SocketConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Hub {
            inner: Arc::new(HubInner {
                cable,
                log_limit: Arc::new(LogLimit::new(config.log_lines_per_second)),
                config,
                stats: Arc::new(SocketStats::default()),
                shutdown: AtomicBool::new(false),
                open: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(0),
                pinger_started: AtomicBool::new(false),
            }),
        })
    }

    /// The cable served.
    pub fn cable(&self) -> &Cable {
        &self.inner.cable
    }

    /// The settings.
    pub fn config(&self) -> &SocketConfig {
        &self.inner.config
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<SocketStats> {
        &self.inner.stats
    }

    /// Whether one more rate-limited log line may be written now.
    pub fn log_allowed(&self) -> bool {
        self.inner
            .log_limit
            .allow(&self.inner.stats.suppressed_logs)
    }

    /// Open connections (including those still in `connect`).
    pub fn connection_count(&self) -> usize {
        self.inner.stats.connections.load(Ordering::Acquire)
    }

    /// Reserve a place for a connection (before the transport's handshake).
    pub fn reserve(&self) -> Result<Slot, Refused> {
        if self.is_shutting_down() {
            return Err(Refused::ShuttingDown);
        }
        let max = self.inner.config.max_connections;
        let stats = &self.inner.stats;
        let mut n = stats.connections.load(Ordering::Acquire);
        loop {
            if n >= max {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                return Err(Refused::Full);
            }
            match stats.connections.compare_exchange_weak(
                n,
                n + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(current) => n = current,
            }
        }
        Ok(Slot {
            stats: stats.clone(),
            reserved_at: tokio::time::Instant::now(),
        })
    }

    /// Close every connection as a restart does: each client gets
    /// `{"type":"disconnect","reason":"server_restart","reconnect":true}`
    /// and is closed; new connections are still accepted.
    pub fn restart(&self) {
        let frame =
            crate::protocol::disconnect(crate::protocol::DisconnectReason::ServerRestart, true);
        let all: Vec<Arc<Outbox>> = self
            .inner
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for outbox in all {
            outbox.push_and_close(frame.clone(), outbox::CloseReason::Normal);
        }
    }

    /// Begin shutting down: refuse new connections and close every open one
    /// as [`restart`](Self::restart) does. The transport waits for its
    /// connection tasks.
    pub fn shutdown(&self) {
        self.inner.shutdown.store(true, Ordering::SeqCst);
        self.restart();
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutdown.load(Ordering::SeqCst)
    }

    /// Add a connection's outbox to the list (starting the pinger on first
    /// use); the guard removes it. A shutdown that began meanwhile closes it.
    fn register(&self, outbox: &Arc<Outbox>) -> Registered<'_> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, outbox.clone());
        if !self.inner.pinger_started.swap(true, Ordering::AcqRel) {
            let weak = Arc::downgrade(&self.inner);
            let every = self.inner.config.ping_interval;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut targets = Vec::new();
                loop {
                    tick.tick().await;
                    let Some(inner) = weak.upgrade() else { return };
                    // One encode per tick; the same bytes go to everyone.
                    let frame = crate::protocol::ping(unix_secs());
                    targets.extend(
                        inner
                            .open
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .values()
                            .cloned(),
                    );
                    drop(inner);
                    for outbox in targets.drain(..) {
                        if outbox.is_welcomed() {
                            outbox.push(frame.clone());
                        }
                    }
                }
            });
        }
        if self.is_shutting_down() {
            outbox.push_and_close(
                crate::protocol::disconnect(crate::protocol::DisconnectReason::ServerRestart, true),
                outbox::CloseReason::Normal,
            );
        }
        Registered {
            inner: &self.inner,
            id,
        }
    }
}

pub(crate) fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
