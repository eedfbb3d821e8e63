//! The Keayl demo server, as a library so tests can start it in-process.
//!
//! Routes:
//! - `GET /` — an index page showing `/clock` live through `EventSource`,
//!   and the cable's `TickerChannel` over the SSE transport, resuming from
//!   `Last-Event-ID`;
//! - `GET /numbers` — the spec's live example: `1\n` … `10\n`;
//! - `GET /events` — the spec's SSE example (`greeting`/`hello`, then
//!   `world`), retry default 5000;
//! - `GET /clock` — an SSE event every second plus heartbeat comments;
//! - `GET /cable` — Action Cable over WebSocket (`ChatChannel`,
//!   `TickerChannel`, `BenchmarkChannel`, `$pubsub` for signed stream
//!   names; Rails' protocol or AnyCable's extended one, with session
//!   restore, stream history, presence and whispers), `POST /_broadcast`;
//! - `GET /cable/events` — the same channels over AnyCable's SSE transport
//!   (`?channel=…`, resumable with `Last-Event-ID`);
//! - `GET /chat` — a chat page on AnyCable's `@anycable/web` client over the
//!   extended protocol: who is online (presence, shared by every process
//!   on the pub/sub backend), typing notices (whispers), and a "network
//!   blip" button that shows what a reconnect restores;
//! - `GET /signed` — a page streaming `announcements` by its signed name
//!   (`cable.streamFromSigned`), signed by the server into the page (see
//!   [`cable_app::STREAM_KEY_ENV`]); publish with
//!   `POST /_broadcast {"stream":"announcements","data":…}`;
//! - `GET /assets/npm/{package}/{path}` — the `.js` files of the npm
//!   packages the pages import ([`NPM_PACKAGES`]), from `web_dir`;
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
use keayl_cable::signing::StreamVerifier;

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
    /// Where `node_modules` with `@anycable/web` lives (for `/chat`).
    pub web_dir: PathBuf,
    /// Host names the server answers to (any port); empty: any host. A
    /// request for another host gets HTTP 421 (against DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// The HTTP listener's timeouts and connection budget.
    pub listener: ListenerConfig,
    /// How long a presence session outlives its connection (a reload
    /// within it does not make its user leave the chat's online list).
    /// Default 15 s.
    pub presence_ttl: Duration,
    /// The key signing stream names for `$pubsub` and the `/signed` page.
    /// Default: [`cable_app::default_stream_key`] (`KEAYL_DEMO_STREAM_KEY`,
    /// else a public development key).
    pub stream_key: String,
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
            presence_ttl: Duration::from_secs(15),
            stream_key: cable_app::default_stream_key(),
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
    let verifier = StreamVerifier::new(config.stream_key.clone());
    let cable = cable_app::demo_cable_with_options(
        config.pubsub.clone(),
        &cable_app::DemoCableOptions {
            presence_ttl: config.presence_ttl,
            stream_verifier: verifier.clone(),
        },
    );
    // Signed once: the page carries the name, never the key.
    let signed_page = include_str!("../static/signed.html").replace(
        "__SIGNED_STREAM__",
        &html_attribute_escape(&verifier.generate(cable_app::ANNOUNCEMENTS_STREAM)),
    );
    let server = CableServer::new(
        cable,
        ServerConfig {
            origins: OriginPolicy::development(),
            broadcast_auth: match &config.broadcast_secret {
                Some(s) => BroadcastAuth::Secret(s.clone()),
                None => BroadcastAuth::OpenForDevelopment,
            },
            events_path: "/cable/events".into(),
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
            "/signed",
            get(move || {
                let page = signed_page.clone();
                async move { Html(page) }
            }),
        )
        .route(
            "/assets/npm/{*path}",
            get(
                move |axum::extract::Path(path): axum::extract::Path<String>| {
                    npm_js(web_dir.clone(), path)
                },
            ),
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
        .merge(server.events_router())
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

/// `text` for a double- or single-quoted HTML attribute value.
fn html_attribute_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// The npm packages whose files `/assets/npm/{package}/{path}` serves:
/// `@anycable/web` and what it imports.
pub const NPM_PACKAGES: &[&str] = &["@anycable/web", "@anycable/core", "nanoevents"];

/// The package and the file inside it that `path` names, when it is a
/// `.js` file of one of [`NPM_PACKAGES`] given as plain relative segments
/// (no `.`, `..`, empty segment, backslash or absolute path).
fn npm_asset(path: &str) -> Option<(&'static str, &str)> {
    let package = NPM_PACKAGES.iter().copied().find(|p| {
        path.strip_prefix(p)
            .is_some_and(|rest| rest.starts_with('/'))
    })?;
    let file = &path[package.len() + 1..];
    let plain = |segment: &str| {
        !segment.is_empty()
            && segment != "."
            && segment != ".."
            && !segment.contains(['\\', ':', '\0'])
    };
    (file.ends_with(".js") && file.split('/').all(plain)).then_some((package, file))
}

/// `GET /assets/npm/{*path}`: a file of [`npm_asset`], read from
/// `web_dir/node_modules` (and still inside its package once symbolic
/// links are resolved); 404 for anything else.
async fn npm_js(web_dir: PathBuf, path: String) -> Response {
    let not_found = |why: String| (StatusCode::NOT_FOUND, why).into_response();
    let Some((package, file)) = npm_asset(&path) else {
        return not_found("not a served file\n".into());
    };
    let root = web_dir.join("node_modules").join(package);
    let Ok(root) = tokio::fs::canonicalize(&root).await else {
        return not_found(format!(
            "{package} is not installed: run `npm ci` in {}\n",
            web_dir.display()
        ));
    };
    let read = async {
        let real = tokio::fs::canonicalize(root.join(file)).await.ok()?;
        if !real.starts_with(&root) {
            return None;
        }
        tokio::fs::read(&real).await.ok()
    };
    match read.await {
        Some(js) => (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            js,
        )
            .into_response(),
        None => not_found("no such file\n".into()),
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

#[cfg(test)]
mod tests {
    #[test]
    fn attribute_values_are_escaped() {
        assert_eq!(
            super::html_attribute_escape(r#"a&b"c'd<e>f--0f"#),
            "a&amp;b&quot;c&#39;d&lt;e&gt;f--0f"
        );
    }
}
