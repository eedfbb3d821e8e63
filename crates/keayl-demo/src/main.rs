//! `keayl-demo`: the runnable demo server (in-memory pub/sub by default, no
//! setup; `--pubsub redis://…|postgres://…` to share broadcasts between
//! processes).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use keayl::pubsub::PubSubUrl;
use keayl_axum::listener::ListenerConfig;
use keayl_demo::DemoConfig;
use tracing_subscriber::EnvFilter;

/// Keayl demo server: live responses, Server-Sent Events and Action Cable.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "KEAYL_ADDR", default_value = "127.0.0.1:3000")]
    addr: SocketAddr,
    /// Bearer secret required by `POST /_broadcast` (open when unset).
    #[arg(long, env = "KEAYL_BROADCAST_SECRET")]
    broadcast_secret: Option<String>,
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
    /// A host name the server answers to (repeat for several; any port).
    /// Unset: any host. Others get HTTP 421 (against DNS rebinding).
    #[arg(long = "allowed-host")]
    allowed_hosts: Vec<String>,
    /// Connections served at once, every kind counted (WebSocket, SSE,
    /// keep-alive); 64 more may reach `/health` and `/metrics` only.
    #[arg(long, default_value_t = 19_500)]
    max_connections: usize,
    /// Seconds for a request's headers to arrive (also the idle
    /// keep-alive timeout).
    #[arg(long, default_value_t = 10.0)]
    header_read_timeout: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    // A client that makes a channel panic in a loop cannot flood the log.
    keayl_cable::socket::limit_panic_reports(5);
    let args = Args::parse();
    let pubsub: PubSubUrl = args.pubsub.parse()?;
    let tcp = keayl_axum::listener::bind(args.addr)?;
    tracing::info!(addr = %tcp.local_addr()?, "keayl-demo listening");
    let backend = pubsub.connect()?;
    if backend.health.wait_up(Duration::from_secs(2)).await {
        tracing::info!(pubsub = %backend.url, "pub/sub backend ready");
    } else {
        tracing::warn!(
            pubsub = %backend.url,
            "pub/sub broker not reachable yet; serving local clients and reconnecting in the background"
        );
    }
    let listener = listener_config(&args)?;
    let config = DemoConfig {
        broadcast_secret: args.broadcast_secret,
        pubsub: backend.pubsub,
        listener,
        allowed_hosts: args.allowed_hosts,
        ..DemoConfig::default()
    };
    keayl_demo::serve_until(tcp, config, shutdown_signal()).await?;
    Ok(())
}

fn listener_config(args: &Args) -> anyhow::Result<ListenerConfig> {
    let mut config = ListenerConfig::default();
    config.max_connections = args.max_connections;
    config.header_read_timeout = Duration::try_from_secs_f64(args.header_read_timeout)?;
    config.validate()?;
    Ok(config)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: closing cable connections");
}
