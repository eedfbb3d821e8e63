//! `cable-fixture`: the Action Cable conformance fixture server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use clap::Parser;
use keayl::pubsub::{BackendHealth, LinkState};
use keayl_demo::fixture::{FixtureConfig, fixture_router};
use keayl_demo::startup::{PubSubArgs, init_process};
use serde_json::{Value, json};

/// The conformance fixture: the reference channels (and `HistoryChannel`,
/// `WhisperChannel`, `PresenceChannel`, `$pubsub`), `/cable` without origin checks (both `actioncable-v1-json`
/// and `actioncable-v1-ext-json`: history on every stream, sessions kept
/// 300 s), `/cable-origin` with them, an open `POST /_broadcast`, and
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
    /// Extended protocol: disconnect (`no_pong`) a client that sent no
    /// pong for this many seconds. Off by default.
    #[arg(long)]
    pong_timeout: Option<f64>,
    /// Seconds a presence session outlives its connection.
    #[arg(long, default_value_t = 15.0)]
    presence_ttl: f64,
    #[command(flatten)]
    pubsub: PubSubArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_process("warn");
    let args = Args::parse();
    let config = FixtureConfig {
        tick_every: Duration::from_secs_f64(args.tick_every.max(0.01)),
        ping_interval: Duration::from_secs_f64(args.ping_interval.max(0.05)),
        pong_timeout: args
            .pong_timeout
            .map(|s| Duration::from_secs_f64(s.max(0.05))),
        presence_ttl: Duration::from_secs_f64(args.presence_ttl.max(0.1)),
    };
    let backend = args.pubsub.connect().await?;
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
