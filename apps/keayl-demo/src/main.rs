//! `keayl-demo`: the runnable demo server (in-memory pub/sub by default, no
//! setup; `--pubsub redis://…|postgres://…` to share broadcasts between
//! processes).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use keayl_axum::listener::ListenerConfig;
use keayl_demo::DemoConfig;
use keayl_demo::startup::{PubSubArgs, init_process};

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
    #[command(flatten)]
    pubsub: PubSubArgs,
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
    /// Seconds a presence session outlives its connection: a chat page
    /// closed (or reloaded) leaves the online list after it.
    #[arg(long, default_value_t = 15.0)]
    presence_ttl: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_process("info");
    let args = Args::parse();
    let tcp = keayl_axum::listener::bind(args.addr)?;
    tracing::info!(addr = %tcp.local_addr()?, "keayl-demo listening");
    let backend = args.pubsub.connect().await?;
    let listener = listener_config(&args)?;
    let config = DemoConfig {
        broadcast_secret: args.broadcast_secret,
        pubsub: backend.pubsub,
        listener,
        allowed_hosts: args.allowed_hosts,
        presence_ttl: Duration::try_from_secs_f64(args.presence_ttl.max(0.1))?,
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
