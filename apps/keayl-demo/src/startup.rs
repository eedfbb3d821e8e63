//! What both servers of this crate (`keayl-demo` and `cable-fixture`) do
//! before they serve: logging, the panic-report limit, and the pub/sub
//! backend of `--pubsub`.

use std::time::Duration;

use keayl::pubsub::{Backend, PubSubUrl};
use tracing_subscriber::EnvFilter;

/// How long start-up waits for a networked broker before serving anyway.
const BROKER_WAIT: Duration = Duration::from_secs(2);

/// Log to stdout, filtered by `RUST_LOG` (`default_filter` when unset), and
/// cap panic reports so that a client making a channel panic in a loop
/// cannot flood the log.
pub fn init_process(default_filter: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter)),
        )
        .init();
    keayl_cable::socket::limit_panic_reports(5);
}

/// The `--pubsub` option (`#[command(flatten)]` it into a server's
/// arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct PubSubArgs {
    /// Pub/sub backend: `memory`, `redis://host:6379/0[?channel_prefix=app]`,
    /// `postgres://user@host/db[?channel_prefix=app]` or
    /// `nats://host:4222[?channel_prefix=app]`.
    // A `String`, parsed after clap: clap's own errors and `--help` would
    // show the value, password included.
    #[arg(
        long,
        env = keayl::pubsub::DEFAULT_ENV,
        hide_env_values = true,
        default_value = "memory"
    )]
    pub pubsub: String,
}

impl PubSubArgs {
    /// Start the backend (a networked one connects in the background), then
    /// wait up to 2 s for its broker. Without it the server still starts:
    /// it serves local clients and reconnects in the background (logged as
    /// a warning).
    pub async fn connect(&self) -> anyhow::Result<Backend> {
        let url: PubSubUrl = self.pubsub.parse()?;
        let backend = url.connect()?;
        if backend.health.wait_up(BROKER_WAIT).await {
            tracing::info!(pubsub = %backend.url, "pub/sub backend ready");
        } else {
            tracing::warn!(
                pubsub = %backend.url,
                "pub/sub broker not reachable yet; serving local clients and reconnecting in the background"
            );
        }
        Ok(backend)
    }
}
