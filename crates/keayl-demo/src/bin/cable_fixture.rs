//! `cable-fixture`: the Action Cable conformance fixture server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use keayl_demo::fixture::{FixtureConfig, fixture_router};
use tracing_subscriber::EnvFilter;

/// The conformance fixture: the reference channels, `/cable` without origin
/// checks, `/cable-origin` with them, an open `POST /_broadcast`.
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .init();
    let args = Args::parse();
    let config = FixtureConfig {
        tick_every: Duration::from_secs_f64(args.tick_every.max(0.01)),
        ping_interval: Duration::from_secs_f64(args.ping_interval.max(0.05)),
    };
    let pubsub: Arc<dyn keayl_cable::PubSub> = Arc::new(keayl_cable::InMemory::new());
    keayl_cable::set_cable_pubsub(pubsub.clone());
    let router = fixture_router(pubsub, &config);
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    eprintln!("cable-fixture listening on {}", listener.local_addr()?);
    axum::serve(listener, router).await?;
    Ok(())
}
