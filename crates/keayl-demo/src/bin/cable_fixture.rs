//! `cable-fixture`: the Action Cable conformance fixture server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use clap::Parser;
use keayl_demo::fixture::{FixtureConfig, fixture_router};
use keayl_demo::pubsub_config::{self, PubSubSpec};
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
    #[arg(long, env = pubsub_config::ENV, default_value = "memory")]
    pubsub: PubSubSpec,
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
    let config = FixtureConfig {
        tick_every: Duration::from_secs_f64(args.tick_every.max(0.01)),
        ping_interval: Duration::from_secs_f64(args.ping_interval.max(0.05)),
    };
    let backend = pubsub_config::connect(&args.pubsub, Duration::from_secs(2)).await?;
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
                (status, Json(health.to_json()))
            }
        }),
    );
    let tcp = keayl_axum::listener::bind(args.addr)?;
    let listener = keayl_axum::listener::Listener::new(tcp, Default::default())?;
    eprintln!("cable-fixture listening on {}", listener.local_addr()?);
    listener.serve(router).await?;
    Ok(())
}
