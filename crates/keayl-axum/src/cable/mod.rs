//! The `/cable` endpoint: Action Cable over WebSocket.
//!
//! [`CableServer`] wraps a [`Cable`] with the transport's settings and
//! serves it: [`CableServer::router`] gives an axum `Router` with the
//! WebSocket route (default `/cable`) and the HTTP broadcast API
//! (`POST /_broadcast`), to merge into any app.
//!
//! ```no_run
//! use keayl_axum::cable::{CableServer, ServerConfig};
//! use keayl_cable::{Cable, InMemory};
//!
//! # async fn run() -> std::io::Result<()> {
//! let cable = Cable::builder(InMemory::new()).build();
//! let server = CableServer::new(cable, ServerConfig::default());
//! let app = axum::Router::new().merge(server.router());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await
//! # }
//! ```
//!
//! Per connection: commands are handled strictly in order; frames for the
//! client go through one outbound queue bounded in bytes
//! ([`ServerConfig::outbound_queue_bytes`]), written in batches with one
//! flush; a client whose queue overflows is handled by
//! [`ServerConfig::slow_client`] without delaying anyone else.

mod broadcast_api;
mod origin;
mod outbox;
mod socket;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, State};
use axum::http::{HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use keayl_cable::Cable;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use broadcast_api::BroadcastAuth;
pub use origin::{AllowedOrigin, OriginPolicy};
pub use outbox::SlowClientPolicy;

/// Settings of the WebSocket transport, with their defaults.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Path of the WebSocket route. Default `/cable`.
    pub path: String,
    /// Which origins may connect. Default: same origin as host only.
    pub origins: OriginPolicy,
    /// Interval between `ping` messages. Default 3 s (the Rails client
    /// reconnects after 6 s of silence).
    pub ping_interval: Duration,
    /// Largest client message accepted, in bytes; a larger one closes the
    /// connection with code 1009. Default 64 KiB.
    pub max_message_bytes: usize,
    /// Bytes queued for one client before [`slow_client`](Self::slow_client)
    /// applies. Default 1 MiB.
    pub outbound_queue_bytes: usize,
    /// What happens to a client that cannot keep up. Default: disconnect.
    pub slow_client: SlowClientPolicy,
    /// How long one batched write may take before the client counts as too
    /// slow. Default 5 s.
    pub write_timeout: Duration,
    /// How long [`CableServer::shutdown`] waits for connections to close.
    /// Default 5 s.
    pub shutdown_deadline: Duration,
    /// Who may use `POST /_broadcast`. Default: [`BroadcastAuth::Disabled`].
    pub broadcast_auth: BroadcastAuth,
    /// How long a client has to complete the upgrade and `connect`.
    /// Default 10 s.
    pub handshake_timeout: Duration,
    /// Open connections one server accepts; beyond it, upgrades get HTTP
    /// 503. Default 19,500 (one process may hold 20,000 files here).
    pub max_connections: usize,
    /// A client that sends nothing (not even a WebSocket pong) for this long
    /// is considered gone (a half-open connection) and is closed. Half-way
    /// through, the server sends a WebSocket ping, which every browser and
    /// client library answers. Default 30 s.
    pub liveness_timeout: Duration,
    /// Log lines per second for refused connections and protocol errors;
    /// the rest are counted and summarised. Default 20.
    pub log_lines_per_second: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            path: "/cable".into(),
            origins: OriginPolicy::default(),
            ping_interval: Duration::from_secs(3),
            max_message_bytes: 64 * 1024,
            outbound_queue_bytes: 1024 * 1024,
            slow_client: SlowClientPolicy::Disconnect,
            write_timeout: Duration::from_secs(5),
            shutdown_deadline: Duration::from_secs(5),
            broadcast_auth: BroadcastAuth::Disabled,
            handshake_timeout: Duration::from_secs(10),
            max_connections: 19_500,
            liveness_timeout: Duration::from_secs(30),
            log_lines_per_second: 20,
        }
    }
}

/// Counters of the transport (exported as metrics by the demo).
#[derive(Debug, Default)]
pub struct Stats {
    /// Open WebSocket connections.
    pub connections: AtomicUsize,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Commands that failed (logged, no frame).
    pub command_errors: AtomicU64,
    /// Clients disconnected for being too slow.
    pub slow_disconnects: AtomicU64,
    /// Frames dropped under [`SlowClientPolicy::DropNewest`].
    pub dropped_frames: AtomicU64,
    /// Upgrades refused (origin, not a WebSocket).
    pub refused: AtomicU64,
    /// Messages over the size limit.
    pub oversize: AtomicU64,
    /// Binary frames dropped.
    pub binary_frames: AtomicU64,
    /// Connections closed because the client stopped answering.
    pub liveness_timeouts: AtomicU64,
    /// Log lines suppressed by the rate limit.
    pub suppressed_logs: AtomicU64,
    /// Bytes queued for clients, over all connections.
    pub queued_bytes: AtomicUsize,
    command_errors_by_kind: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

impl Stats {
    /// Count a failed command of `kind` (a rare path: a mutex is fine).
    pub(crate) fn command_error(&self, kind: &'static str) {
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

/// The `/cable` transport around a [`Cable`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct CableServer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cable: Cable,
    config: ServerConfig,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
    restart: tokio::sync::watch::Sender<u64>,
    tracker: TaskTracker,
    log_limit: LogLimit,
    /// Outboxes of open connections, for the server-wide pinger.
    open: std::sync::Mutex<std::collections::HashMap<u64, Arc<outbox::Outbox>>>,
    next_id: AtomicU64,
    pinger_started: std::sync::atomic::AtomicBool,
}

/// Removes a connection from the pinger's list when it ends.
pub(crate) struct Registered<'a> {
    inner: &'a Inner,
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

/// Allows a fixed number of log lines per second, counting the rest.
#[derive(Debug)]
pub(crate) struct LogLimit {
    per_second: u32,
    window: std::sync::Mutex<(u64, u32)>,
}

impl LogLimit {
    fn new(per_second: u32) -> Self {
        LogLimit {
            per_second,
            window: std::sync::Mutex::new((0, 0)),
        }
    }

    /// Whether one more line may be logged now.
    pub(crate) fn allow(&self, stats: &Stats) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if w.0 != now {
            let suppressed = w.1.saturating_sub(self.per_second);
            if suppressed > 0 {
                tracing::warn!(
                    suppressed,
                    "log lines suppressed by the rate limit in the last second"
                );
            }
            *w = (now, 0);
        }
        w.1 += 1;
        if w.1 <= self.per_second {
            true
        } else {
            stats.suppressed_logs.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

impl CableServer {
    /// Serve `cable` with `config`.
    pub fn new(cable: Cable, config: ServerConfig) -> Self {
        CableServer {
            inner: Arc::new(Inner {
                cable,
                log_limit: LogLimit::new(config.log_lines_per_second),
                config,
                stats: Arc::new(Stats::default()),
                shutdown: CancellationToken::new(),
                restart: tokio::sync::watch::channel(0).0,
                tracker: TaskTracker::new(),
                open: std::sync::Mutex::new(std::collections::HashMap::new()),
                next_id: AtomicU64::new(0),
                pinger_started: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Add an open connection's outbox to the pinger's list (starting the
    /// pinger on first use); the guard removes it.
    pub(crate) fn register(&self, outbox: &Arc<outbox::Outbox>) -> Registered<'_> {
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
                    let frame = keayl_cable::protocol::ping(socket::unix_secs());
                    targets.extend(
                        inner
                            .open
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .values()
                            .cloned(),
                    );
                    for outbox in targets.drain(..) {
                        outbox.push(frame.clone());
                    }
                }
            });
        }
        Registered {
            inner: &self.inner,
            id,
        }
    }

    /// The cable served.
    pub fn cable(&self) -> &Cable {
        &self.inner.cable
    }

    /// The settings.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// A router with the WebSocket route at [`ServerConfig::path`] and
    /// `POST /_broadcast`.
    pub fn router(&self) -> Router {
        Router::new()
            .route(&self.inner.config.path, get(ws_handler).post(not_found))
            .route("/_broadcast", post(broadcast_api::handler))
            .with_state(self.clone())
    }

    /// A router with only the WebSocket route, at `path` (for several
    /// mounts with different settings, build one server per mount).
    pub fn route_at(&self, path: &str) -> Router {
        Router::new()
            .route(path, get(ws_handler).post(not_found))
            .with_state(self.clone())
    }

    /// Close every connection as a restart does: each client gets
    /// `{"type":"disconnect","reason":"server_restart","reconnect":true}`
    /// and is closed; new connections are still accepted.
    pub fn restart(&self) {
        self.inner.restart.send_modify(|g| *g += 1);
    }

    /// Graceful shutdown: refuse new connections, send every client
    /// `server_restart`, and wait (up to [`ServerConfig::shutdown_deadline`])
    /// for connections to close. Stop the HTTP listener as well (axum's
    /// `with_graceful_shutdown`).
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tracker.close();
        let _ = tokio::time::timeout(
            self.inner.config.shutdown_deadline,
            self.inner.tracker.wait(),
        )
        .await;
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutdown.is_cancelled()
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.inner.stats.connections.load(Ordering::Relaxed)
    }
}

async fn not_found() -> Response {
    page_not_found()
}

pub(crate) fn page_not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        "Page not found",
    )
        .into_response()
}

const PROTOCOLS: [&str; 2] = ["actioncable-v1-json", "actioncable-unsupported"];

async fn ws_handler(State(server): State<CableServer>, req: Request<axum::body::Body>) -> Response {
    let (mut parts, _body) = req.into_parts();
    if server.is_shutting_down() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    if !server.inner.config.origins.allows(&parts.headers) {
        server.inner.stats.refused.fetch_add(1, Ordering::Relaxed);
        if server.inner.log_limit.allow(&server.inner.stats) {
            tracing::warn!(
                origin = ?parts.headers.get(http::header::ORIGIN),
                "request origin not allowed; refusing WebSocket upgrade"
            );
        }
        return page_not_found();
    }
    if server.connection_count() >= server.inner.config.max_connections {
        server.inner.stats.refused.fetch_add(1, Ordering::Relaxed);
        if server.inner.log_limit.allow(&server.inner.stats) {
            tracing::warn!(
                limit = server.inner.config.max_connections,
                "connection limit reached; refusing WebSocket upgrade"
            );
        }
        return (StatusCode::SERVICE_UNAVAILABLE, "connection limit reached").into_response();
    }
    // Client order matters (axum's accessor sorts), so read the header.
    let chosen = parts
        .headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find(|p| PROTOCOLS.contains(p))
        .and_then(|p| PROTOCOLS.iter().find(|s| **s == p))
        .map(|p| HeaderValue::from_static(p));
    let Ok(mut ws) = WebSocketUpgrade::from_request_parts(&mut parts, &()).await else {
        server.inner.stats.refused.fetch_add(1, Ordering::Relaxed);
        return page_not_found();
    };
    // The first protocol in the client's order that we support; none when
    // nothing matches (never one the client did not offer).
    if let Some(p) = chosen {
        ws.set_selected_protocol(p);
    }
    let config = &server.inner.config;
    let request = socket::request_info(&parts);
    let ws = ws
        .read_buffer_size(1024)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(config.outbound_queue_bytes + 64 * 1024)
        .max_message_size(config.max_message_bytes)
        .max_frame_size(config.max_message_bytes);
    let tracker = server.inner.tracker.clone();
    ws.on_upgrade(move |socket| tracker.track_future(socket::run(server, socket, request)))
}
