//! The Keayl demo server, as a library so tests can start it in-process.
//!
//! Routes:
//! - `GET /` — an index page showing `/clock` live through `EventSource`;
//! - `GET /numbers` — the spec's live example: `1\n` … `10\n`;
//! - `GET /events` — the spec's SSE example (`greeting`/`hello`, then
//!   `world`), retry default 5000;
//! - `GET /clock` — an SSE event every second plus heartbeat comments;
//! - `GET /cable` — Action Cable over WebSocket (`ChatChannel`,
//!   `BenchmarkChannel`), `POST /_broadcast`;
//! - `GET /chat` — a chat page on the official `@rails/actioncable` client;
//! - `GET /sse/{stream}` — every broadcast on a public cable stream, as SSE
//!   (never `action_cable/*` or a model's stream: [`is_public_stream`]);
//! - `GET /metrics` (Prometheus) and `GET /health`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use keayl_axum::cable::{BroadcastAuth, CableServer, OriginPolicy, ServerConfig};
use keayl_axum::listener::{Listener, ListenerConfig, ListenerStats};
use keayl_cable::PubSub;

pub mod cable_app;
pub mod fixture;
mod lenient;
mod live_routes;
pub mod startup;

pub use live_routes::{clock, events, is_public_stream, numbers, stream_events};

/// Options of the demo server.
#[derive(Clone)]
pub struct DemoConfig {
    /// Interval between `/clock` ticks. Default 1 s.
    pub clock_interval: Duration,
    /// Idle time after which `/clock` writes a heartbeat comment. Default 15 s.
    pub clock_heartbeat: Duration,
    /// The pub/sub backend. Default: in-memory.
    pub pubsub: Arc<dyn PubSub>,
    /// Bearer secret for `POST /_broadcast`; `None` leaves it open (the demo
    /// is a development server).
    pub broadcast_secret: Option<String>,
    /// Where `node_modules` with `@rails/actioncable` lives (for `/chat`).
    pub web_dir: PathBuf,
    /// Host names the server answers to (any port); empty: any host. A
    /// request for another host gets HTTP 421 (against DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// The HTTP listener's timeouts and connection budget.
    pub listener: ListenerConfig,
}

impl std::fmt::Debug for DemoConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoConfig")
            .field("clock_interval", &self.clock_interval)
            .field("web_dir", &self.web_dir)
            .finish_non_exhaustive()
    }
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            clock_interval: Duration::from_secs(1),
            clock_heartbeat: Duration::from_secs(15),
            pubsub: Arc::new(keayl_cable::InMemory::new()),
            broadcast_secret: None,
            web_dir: default_web_dir(),
            allowed_hosts: Vec::new(),
            listener: ListenerConfig::default(),
        }
    }
}

/// `apps/keayl-demo/web` in the source tree, unless `KEAYL_WEB_DIR` says
/// otherwise.
pub fn default_web_dir() -> PathBuf {
    std::env::var_os("KEAYL_WEB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/web")))
}

/// The demo's router and its cable server (for shutdown); `listener`'s
/// counters, when given, appear in `/metrics`.
pub fn app(config: DemoConfig, listener: Option<ListenerStats>) -> (Router, CableServer) {
    keayl_cable::set_cable_pubsub(config.pubsub.clone());
    let cable = cable_app::demo_cable(config.pubsub.clone());
    let server = CableServer::new(
        cable,
        ServerConfig {
            origins: OriginPolicy::development(),
            broadcast_auth: match &config.broadcast_secret {
                Some(s) => BroadcastAuth::Secret(s.clone()),
                None => BroadcastAuth::OpenForDevelopment,
            },
            ..ServerConfig::default()
        },
    )
    .expect("demo settings are valid");
    let clock_config = config.clone();
    let web_dir = config.web_dir.clone();
    let sse_pubsub = config.pubsub.clone();
    let router = Router::new()
        .route(
            "/",
            get(|| async { Html(include_str!("../static/index.html")) }),
        )
        .route(
            "/chat",
            get(|| async { Html(include_str!("../static/chat.html")) }),
        )
        .route(
            "/assets/actioncable.esm.js",
            get(move || actioncable_js(web_dir.clone())),
        )
        .route("/numbers", get(|| async { numbers() }))
        .route(
            "/events",
            get(|headers: HeaderMap| async move { events(&headers) }),
        )
        .route(
            "/clock",
            get(move |headers: HeaderMap| {
                let config = clock_config.clone();
                async move { clock(&headers, &config) }
            }),
        )
        .route(
            "/sse/{stream}",
            get(
                move |axum::extract::Path(stream): axum::extract::Path<String>| {
                    let pubsub = sse_pubsub.clone();
                    async move {
                        if is_public_stream(&stream) {
                            stream_events(pubsub, stream).into_response()
                        } else {
                            (StatusCode::NOT_FOUND, "no such public stream").into_response()
                        }
                    }
                },
            ),
        )
        .merge(server.router())
        .merge(server.broadcast_router())
        .merge(keayl_axum::ops::ops_router(vec![server.clone()], listener));
    let router = if config.allowed_hosts.is_empty() {
        router
    } else {
        let hosts = keayl_axum::hosts::AllowedHosts::new(config.allowed_hosts.iter().cloned());
        router.layer(axum::middleware::from_fn_with_state(
            hosts,
            keayl_axum::hosts::check_host,
        ))
    };
    (router, server)
}

/// The official client, served from the npm package installed in `web_dir`.
async fn actioncable_js(web_dir: PathBuf) -> Response {
    let path =
        web_dir.join("node_modules/@rails/actioncable/app/assets/javascripts/actioncable.esm.js");
    match tokio::fs::read(&path).await {
        Ok(js) => (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            js,
        )
            .into_response(),
        Err(_) => (
            StatusCode::NOT_FOUND,
            format!(
                "@rails/actioncable is not installed: run `npm ci` in {}",
                web_dir.display()
            ),
        )
            .into_response(),
    }
}

/// Serve the demo on `tcp` until `shutdown` completes, then close cable
/// connections gracefully and give open HTTP streams
/// [`ListenerConfig::shutdown_grace`] to end.
pub async fn serve_until(
    tcp: tokio::net::TcpListener,
    config: DemoConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = Listener::new(tcp, config.listener.clone())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let (router, server) = app(config, Some(listener.stats()));
    listener
        .serve_until(router, async move {
            shutdown.await;
            server.shutdown().await;
        })
        .await
}

/// Serve the demo on `tcp` until the process ends.
pub async fn serve(tcp: tokio::net::TcpListener, config: DemoConfig) -> std::io::Result<()> {
    serve_until(tcp, config, std::future::pending()).await
}
