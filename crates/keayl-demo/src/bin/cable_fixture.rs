//! `cable-fixture`: the Action Cable conformance fixture server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use clap::Parser;
use keayl::pubsub::{BackendHealth, LinkState, PubSubUrl};
use keayl_demo::fixture::{FixtureConfig, fixture_router};
use serde_json::{Value, json};
use tracing_subscriber::EnvFilter;

/// The conformance fixture: the reference channels, `/cable` without origin
/// checks, `/cable-origin` with them, an open `POST /_broadcast`, and
/// `GET /_pubsub/health` (the pub/sub backend's status as JSON; 503 while
/// the broker is down).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "KEAYL_ADDR", default_value = "127.0.0.1:3001")]
    addr: SocketAddr,
    /// Seconds between `TickerChannel` ticks.
    #[arg(long, default_value_t = 1.0)]
    tick_every: f64,
    /// Seconds between pings.
    #[arg(long, default_value_t = 3.0)]
    ping_interval: f64,
    /// Pub/sub backend: `memory`, `redis://host:6379/0[?channel_prefix=app]`
    /// or `postgres://user@host/db[?channel_prefix=app]`.
    // A `String`, parsed after clap: clap's own errors and `--help` would
    // show the value, password included.
    #[arg(
        long,
        env = keayl::pubsub::DEFAULT_ENV,
        hide_env_values = true,
        default_value = "memory"
    )]
    pubsub: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .init();
    // A client that makes a channel panic in a loop cannot flood the log.
    keayl_cable::socket::limit_panic_reports(5);
    let args = Args::parse();
    let pubsub: PubSubUrl = args.pubsub.parse()?;
    let config = FixtureConfig {
        tick_every: Duration::from_secs_f64(args.tick_every.max(0.01)),
        ping_interval: Duration::from_secs_f64(args.ping_interval.max(0.05)),
    };
    let backend = pubsub.connect()?;
    if !backend.health.wait_up(Duration::from_secs(2)).await {
        tracing::warn!(
            pubsub = %backend.url,
            "pub/sub broker not reachable yet; serving local clients and reconnecting in the background"
        );
    }
    let pubsub: Arc<dyn keayl_cable::PubSub> = backend.pubsub;
    keayl_cable::set_cable_pubsub(pubsub.clone());
    let health = backend.health;
    let router = fixture_router(pubsub, &config).route(
        "/_pubsub/health",
        axum::routing::get(move || {
            let health = health.clone();
            async move {
                let status = if health.is_up() {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                (status, Json(health_json(&health)))
            }
        }),
    );
    let tcp = keayl_axum::listener::bind(args.addr)?;
    let listener = keayl_axum::listener::Listener::new(tcp, Default::default())?;
    eprintln!("cable-fixture listening on {}", listener.local_addr()?);
    listener.serve(router).await?;
    Ok(())
}

/// The backend's status as JSON: `{"backend","state","up","reconnects",
/// "outages","lost_broadcasts","failed_deliveries","down_for_ms","last_error"}`.
fn health_json(health: &BackendHealth) -> Value {
    let s = health.status();
    json!({
        "backend": s.backend,
        "state": s.state.as_str(),
        "up": s.state == LinkState::Up,
        "reconnects": s.reconnects,
        "outages": s.outages,
        "lost_broadcasts": s.lost_broadcasts,
        "failed_deliveries": s.failed_deliveries,
        "down_for_ms": s.down_for.map(|d| d.as_millis() as u64),
        "last_error": s.last_error,
    })
}
