//! The Keayl demo server, as a library so tests can start it in-process.
//!
//! Routes:
//! - `GET /` — an index page showing `/clock` live through `EventSource`;
//! - `GET /numbers` — the spec's live example: `1\n` … `10\n`;
//! - `GET /events` — the spec's SSE example (`greeting`/`hello`, then
//!   `world`), retry default 5000;
//! - `GET /clock` — an SSE event every second plus heartbeat comments.

use std::time::Duration;

use axum::Router;
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse};
use axum::routing::get;

mod live_routes;

pub use live_routes::{clock, events, numbers};

/// Options of the demo server.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Interval between `/clock` ticks. Default 1 s.
    pub clock_interval: Duration,
    /// Idle time after which `/clock` writes a heartbeat comment. Default 15 s.
    pub clock_heartbeat: Duration,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            clock_interval: Duration::from_secs(1),
            clock_heartbeat: Duration::from_secs(15),
        }
    }
}

/// The demo's router.
pub fn router(config: DemoConfig) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/numbers", get(|| async { numbers() }))
        .route(
            "/events",
            get(|headers: HeaderMap| async move { events(&headers) }),
        )
        .route(
            "/clock",
            get(move |headers: HeaderMap| {
                let config = config.clone();
                async move { clock(&headers, &config) }
            }),
        )
}

async fn index() -> impl IntoResponse {
    Html(include_str!("../static/index.html"))
}

/// Serve the demo on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, config: DemoConfig) -> std::io::Result<()> {
    axum::serve(listener, router(config)).await
}
