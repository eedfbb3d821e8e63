//! The `/cable` endpoint: Action Cable over WebSocket.
//!
//! [`CableServer`] wraps a [`Cable`] with the transport's settings and
//! serves it: [`CableServer::router`] gives an axum `Router<S>` with the
//! WebSocket route (default `/cable`) for an app of any state `S`, and
//! [`CableServer::broadcast_router`] the HTTP broadcast API
//! (`POST /_broadcast`) and [`CableServer::events_router`] the SSE
//! transport (`GET /events`, see [`events`]), each mounted on its own.
//!
//! ```no_run
//! use keayl_axum::cable::{CableServer, ServerConfig};
//! use keayl_cable::{Cable, InMemory};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let cable = Cable::builder(InMemory::new()).build();
//! let server = CableServer::new(cable, ServerConfig::default())?;
//! #[derive(Clone)]
//! struct AppState { name: &'static str }
//! let app = axum::Router::new()
//!     .route("/", axum::routing::get(|| async { "hello" }))
//!     .merge(server.router())
//!     .with_state(AppState { name: "demo" });
//! let tcp = keayl_axum::listener::bind("127.0.0.1:3000".parse()?)?;
//! let listener = keayl_axum::listener::Listener::new(tcp, Default::default())?;
//! listener.serve(app).await?;
//! # Ok(())
//! # }
//! ```
//!
//! This module is a thin adapter: it checks the upgrade request (origin,
//! subprotocol, connection limit), performs the WebSocket handshake with
//! tokio-tungstenite, and hands the socket to the core's connection driver
//! ([`keayl_cable::socket`]), which runs commands in order without ever
//! blocking reads, writes or pings.

mod broadcast_api;
pub mod events;
mod origin;
mod socket;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use keayl_cable::Cable;
use keayl_cable::socket::{ConfigError, Hub, Refused, SocketStats};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::task::TaskTracker;

pub use broadcast_api::BroadcastAuth;
pub use keayl_cable::socket::{SlowClientPolicy, SocketConfig};
pub use origin::{AllowedOrigin, OriginPolicy};

/// Settings of the WebSocket transport, with their defaults.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Path of the WebSocket route. Default `/cable`.
    pub path: String,
    /// Which origins may connect. Default: same origin as host only.
    pub origins: OriginPolicy,
    /// Largest client message accepted, in bytes; a larger one closes the
    /// connection with code 1009. Default 64 KiB.
    pub max_message_bytes: usize,
    /// How long [`CableServer::shutdown`] waits for connections to close.
    /// Default 5 s.
    pub shutdown_deadline: Duration,
    /// Who may use `POST /_broadcast`. Default: [`BroadcastAuth::Disabled`].
    pub broadcast_auth: BroadcastAuth,
    /// Largest `POST /_broadcast` body, in bytes (HTTP 413 beyond). Default
    /// 1 MiB.
    pub broadcast_body_bytes: usize,
    /// How long a `POST /_broadcast` body may take to arrive (HTTP 408
    /// beyond). Default 5 s.
    pub broadcast_body_timeout: Duration,
    /// The connection driver's settings: pings, queues, timeouts, the
    /// connection limit ([`SocketConfig`] lists them with their defaults).
    /// The SSE transport uses the same pings, outbound queue bound,
    /// handshake timeout and connection limit.
    pub socket: SocketConfig,
    /// Path of the SSE route ([`CableServer::events_router`]). Default
    /// `/events`.
    pub events_path: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            path: "/cable".into(),
            origins: OriginPolicy::default(),
            max_message_bytes: 64 * 1024,
            shutdown_deadline: Duration::from_secs(5),
            broadcast_auth: BroadcastAuth::Disabled,
            broadcast_body_bytes: 1024 * 1024,
            broadcast_body_timeout: Duration::from_secs(5),
            socket: SocketConfig::default(),
            events_path: "/events".into(),
        }
    }
}

/// The `/cable` transport around a [`Cable`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct CableServer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    hub: Hub,
    config: ServerConfig,
    tracker: TaskTracker,
    /// Restart and shutdown signal for SSE connections.
    events: events::Restarts,
}

impl CableServer {
    /// Serve `cable` with `config` (checked: a setting that cannot work is
    /// an error here, not a failure later).
    pub fn new(cable: Cable, config: ServerConfig) -> Result<Self, ConfigError> {
        if config.max_message_bytes == 0 {
            return Err(ConfigError {
                field: "max_message_bytes",
                reason: "must be greater than zero",
            });
        }
        let hub = Hub::new(cable, config.socket.clone())?;
        Ok(CableServer {
            inner: Arc::new(Inner {
                hub,
                config,
                tracker: TaskTracker::new(),
                events: events::Restarts::new(),
            }),
        })
    }

    /// The connection driver shared by every connection of this server.
    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    /// The cable served.
    pub fn cable(&self) -> &Cable {
        self.inner.hub.cable()
    }

    /// The settings.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// The counters.
    pub fn stats(&self) -> &SocketStats {
        self.inner.hub.stats()
    }

    /// Whether one more rate-limited log line may be written now.
    pub(crate) fn log_allowed(&self) -> bool {
        self.inner.hub.log_allowed()
    }

    /// The WebSocket endpoint at [`ServerConfig::path`], as a router of
    /// any state `S`, to merge into the app's `Router<S>`. The app's state
    /// reaches `connect` as a request extension
    /// (`request.extension::<S>()`), next to whatever the app's tower
    /// layers put there (sessions, cookie jars, an authenticated user).
    /// `POST /_broadcast` is separate: [`broadcast_router`](Self::broadcast_router).
    pub fn router<S>(&self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let path = self.inner.config.path.clone();
        self.route_at(&path)
    }

    /// [`router`](Self::router) at `path` (for several mounts with
    /// different settings, build one server per mount).
    pub fn route_at<S>(&self, path: &str) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let server = self.clone();
        Router::new().route(
            path,
            get(
                move |State(state): State<S>, mut req: Request<axum::body::Body>| {
                    req.extensions_mut().insert(state);
                    ws_handler(server.clone(), req)
                },
            )
            .post(not_found),
        )
    }

    /// The HTTP broadcast API, `POST /_broadcast` (see
    /// [`BroadcastAuth`]), as a router of any state.
    pub fn broadcast_router<S>(&self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let server = self.clone();
        Router::new().route(
            "/_broadcast",
            post(move |req: Request<axum::body::Body>| broadcast_api::handler(server.clone(), req)),
        )
    }

    /// AnyCable's SSE transport, `GET` [`ServerConfig::events_path`]
    /// (default `/events`): one channel subscription per request, over
    /// Server-Sent Events, resumable with `Last-Event-ID` (see [`events`]).
    /// A router of any state `S`, which reaches `connect` as a request
    /// extension, as with [`router`](Self::router).
    pub fn events_router<S>(&self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let server = self.clone();
        Router::new().route(
            &self.inner.config.events_path,
            get(
                move |State(state): State<S>, mut req: Request<axum::body::Body>| {
                    req.extensions_mut().insert(state);
                    events::handler(server.clone(), req)
                },
            ),
        )
    }

    /// Close every connection as a restart does: each client gets
    /// `{"type":"disconnect","reason":"server_restart","reconnect":true}`
    /// and is closed; new connections are still accepted.
    pub fn restart(&self) {
        self.inner.hub.restart();
        self.inner.events.restart();
    }

    /// Graceful shutdown: refuse new connections, send every client
    /// `server_restart`, and wait (up to [`ServerConfig::shutdown_deadline`])
    /// for connections to close. Stop the HTTP listener as well (axum's
    /// `with_graceful_shutdown`).
    pub async fn shutdown(&self) {
        self.inner.hub.shutdown();
        self.inner.events.restart();
        self.inner.tracker.close();
        let _ = tokio::time::timeout(
            self.inner.config.shutdown_deadline,
            self.inner.tracker.wait(),
        )
        .await;
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.hub.is_shutting_down()
    }

    /// Open connections (including upgrades in progress).
    pub fn connection_count(&self) -> usize {
        self.inner.hub.connection_count()
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

/// The subprotocols `/cable` speaks: Rails' JSON protocol, AnyCable's
/// extended one, and `actioncable-unsupported` (which Rails' client offers
/// last, so an old server can tell it to upgrade).
const PROTOCOLS: [&str; 3] = [
    "actioncable-v1-json",
    "actioncable-v1-ext-json",
    "actioncable-unsupported",
];

/// Whether a header holds `token` in its comma-separated list
/// (case-insensitive).
fn has_token(headers: &http::HeaderMap, name: http::header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

async fn ws_handler(server: CableServer, mut req: Request<axum::body::Body>) -> Response {
    let stats = server.stats();
    let headers = req.headers();
    let key = headers.get(http::header::SEC_WEBSOCKET_KEY).cloned();
    let is_upgrade = req.method() == http::Method::GET
        && has_token(headers, http::header::CONNECTION, "upgrade")
        && has_token(headers, http::header::UPGRADE, "websocket")
        && key.is_some();
    if !is_upgrade {
        stats
            .refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return page_not_found();
    }
    if headers
        .get(http::header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v != "13")
    {
        stats
            .refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return (
            StatusCode::UPGRADE_REQUIRED,
            [(http::header::SEC_WEBSOCKET_VERSION, "13")],
            "unsupported WebSocket version",
        )
            .into_response();
    }
    if !server.inner.config.origins.allows(headers) {
        stats
            .refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if server.log_allowed() {
            tracing::warn!(
                origin = ?headers.get(http::header::ORIGIN),
                allowed = ?server.inner.config.origins,
                "request origin not allowed; refusing WebSocket upgrade"
            );
        }
        return page_not_found();
    }
    // The place is taken before the handshake: a storm of upgrades never
    // overshoots the limit.
    let slot = match server.hub().reserve() {
        // The handshake timeout counts from the TCP accept when served by
        // [`crate::listener::Listener`]: a trickled upgrade request uses it up.
        Ok(slot) => match req.extensions().get::<crate::listener::AcceptedAt>() {
            Some(at) => slot.since(at.0),
            None => slot,
        },
        Err(Refused::ShuttingDown) => {
            return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
        }
        Err(_) => {
            if server.log_allowed() {
                tracing::warn!(
                    limit = server.hub().config().max_connections,
                    "connection limit reached; refusing WebSocket upgrade"
                );
            }
            return (StatusCode::SERVICE_UNAVAILABLE, "connection limit reached").into_response();
        }
    };
    // The first protocol in the client's order that we support; none when
    // nothing matches (never one the client did not offer).
    let chosen = headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|p| PROTOCOLS.iter().find(|s| **s == p));
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(
        key.as_ref().map(HeaderValue::as_bytes).unwrap_or_default(),
    );
    let on_upgrade = hyper::upgrade::on(&mut req);
    let (parts, _body) = req.into_parts();
    let protocol = chosen
        .and_then(|p| keayl_cable::protocol::Protocol::from_subprotocol(p))
        .unwrap_or_default();
    let request = keayl_cable::Request::from_parts(parts).with_protocol(protocol);
    let config = &server.inner.config;
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(config.socket.outbound_queue_bytes + 64 * 1024)
        .max_message_size(Some(config.max_message_bytes))
        .max_frame_size(Some(config.max_message_bytes));
    let handshake = config.socket.handshake_timeout;
    let tracker = server.inner.tracker.clone();
    let task_server = server.clone();
    tracker.spawn(async move {
        // The upgrade must complete within the handshake timeout too.
        let upgraded = match tokio::time::timeout(handshake, on_upgrade).await {
            Ok(Ok(upgraded)) => upgraded,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "websocket upgrade failed");
                return;
            }
            Err(_) => {
                task_server
                    .stats()
                    .handshake_timeouts
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return;
            }
        };
        let io = hyper_util::rt::TokioIo::new(upgraded);
        let ws =
            tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config))
                .await;
        socket::run(task_server, slot, ws, request).await;
    });
    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::CONNECTION, "upgrade")
        .header(http::header::UPGRADE, "websocket")
        .header(http::header::SEC_WEBSOCKET_ACCEPT, accept);
    if let Some(p) = chosen {
        response = response.header(http::header::SEC_WEBSOCKET_PROTOCOL, *p);
    }
    response
        .body(axum::body::Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
