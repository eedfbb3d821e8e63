//! Choosing the pub/sub backend: `--pubsub memory|redis://…|postgres://…`
//! (or the `KEAYL_PUBSUB` environment variable), for `keayl-demo` and
//! `cable-fixture`.
//!
//! * `memory` (the default): in-process, nothing to set up; one process only.
//! * `redis://[user:password@]host[:port][/db][?channel_prefix=app]`: shares
//!   broadcasts with every process (Keayl or Rails) on that Redis
//!   ([`keayl_redis`]).
//! * `postgres://user[:password]@host[:port]/database[?channel_prefix=app]`
//!   (or `postgresql://`): `LISTEN`/`NOTIFY` ([`keayl_postgres`]).
//!
//! A networked backend connects in the background and reconnects forever;
//! the server starts and serves its local clients even while the broker is
//! unreachable, and [`BackendHealth`] reports the link.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use keayl_cable::PubSub;
use serde_json::{Value, json};

/// The environment variable read when `--pubsub` is not given.
pub const ENV: &str = "KEAYL_PUBSUB";

/// A parsed `--pubsub` value.
#[derive(Clone, PartialEq, Eq)]
pub enum PubSubSpec {
    /// The in-process backend.
    Memory,
    /// A Redis URL (`redis://`, `rediss://`, `unix://`, `redis+unix://`).
    Redis(String),
    /// A PostgreSQL URL (`postgres://`, `postgresql://`).
    Postgres(String),
}

impl PubSubSpec {
    /// The backend's name: `memory`, `redis` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match self {
            PubSubSpec::Memory => "memory",
            PubSubSpec::Redis(_) => "redis",
            PubSubSpec::Postgres(_) => "postgres",
        }
    }
}

impl FromStr for PubSubSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() || s.eq_ignore_ascii_case("memory") || s.eq_ignore_ascii_case("in-memory") {
            return Ok(PubSubSpec::Memory);
        }
        let scheme = s
            .split_once("://")
            .map(|(scheme, _)| scheme.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("redis" | "rediss" | "unix" | "redis+unix") => Ok(PubSubSpec::Redis(s.to_owned())),
            Some("postgres" | "postgresql") => Ok(PubSubSpec::Postgres(s.to_owned())),
            _ => Err(format!(
                "unknown pub/sub backend {:?}: expected `memory`, `redis://…` or `postgres://…`",
                redact(s)
            )),
        }
    }
}

/// Shows the URL with its password hidden.
impl std::fmt::Display for PubSubSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PubSubSpec::Memory => f.write_str("memory"),
            PubSubSpec::Redis(url) | PubSubSpec::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

impl std::fmt::Debug for PubSubSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PubSubSpec({self})")
    }
}

/// `url` with the password replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// The health of the chosen backend.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum BackendHealth {
    /// In-memory: always up.
    Memory,
    /// Redis.
    #[cfg(feature = "redis")]
    Redis(keayl_redis::Health),
    /// PostgreSQL.
    #[cfg(feature = "postgres")]
    Postgres(keayl_postgres::Health),
}

impl BackendHealth {
    /// Whether the broker link is up (always for in-memory).
    pub fn is_up(&self) -> bool {
        match self {
            BackendHealth::Memory => true,
            #[cfg(feature = "redis")]
            BackendHealth::Redis(h) => h.is_up(),
            #[cfg(feature = "postgres")]
            BackendHealth::Postgres(h) => h.is_up(),
        }
    }

    /// Wait until the link is up, at most `timeout`; returns whether it is.
    pub async fn wait_up(&self, timeout: Duration) -> bool {
        let _ = timeout; // unused when built without networked backends
        match self {
            BackendHealth::Memory => true,
            #[cfg(feature = "redis")]
            BackendHealth::Redis(h) => h.wait_up(timeout).await,
            #[cfg(feature = "postgres")]
            BackendHealth::Postgres(h) => h.wait_up(timeout).await,
        }
    }

    /// The status as JSON: `{"backend","state","up","reconnects","outages",
    /// "lost_broadcasts","failed_deliveries","down_for_ms","last_error"}`.
    pub fn to_json(&self) -> Value {
        #[allow(unused_macros)] // without networked backends
        macro_rules! status {
            ($s:expr) => {{
                let s = $s;
                json!({
                    "backend": s.backend,
                    "state": s.state.as_str(),
                    "up": self.is_up(),
                    "reconnects": s.reconnects,
                    "outages": s.outages,
                    "lost_broadcasts": s.lost_broadcasts,
                    "failed_deliveries": s.failed_deliveries,
                    "down_for_ms": s.down_for.map(|d| d.as_millis() as u64),
                    "last_error": s.last_error,
                })
            }};
        }
        match self {
            BackendHealth::Memory => json!({
                "backend": "memory", "state": "up", "up": true, "reconnects": 0, "outages": 0,
                "lost_broadcasts": 0, "failed_deliveries": 0, "down_for_ms": null, "last_error": null,
            }),
            #[cfg(feature = "redis")]
            BackendHealth::Redis(h) => status!(h.status()),
            #[cfg(feature = "postgres")]
            BackendHealth::Postgres(h) => status!(h.status()),
        }
    }
}

/// A started backend and its health.
#[derive(Clone)]
pub struct PubSubBackend {
    /// The backend, for the cable.
    pub pubsub: Arc<dyn PubSub>,
    /// Its health.
    pub health: BackendHealth,
}

impl std::fmt::Debug for PubSubBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubSubBackend")
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

/// Start the backend `spec` names (a networked one connects in the
/// background). Must run inside a Tokio runtime.
pub fn build(spec: &PubSubSpec) -> anyhow::Result<PubSubBackend> {
    match spec {
        PubSubSpec::Memory => Ok(PubSubBackend {
            pubsub: Arc::new(keayl_cable::InMemory::new()),
            health: BackendHealth::Memory,
        }),
        #[cfg(feature = "redis")]
        PubSubSpec::Redis(url) => {
            let redis = keayl_redis::RedisPubSub::from_url(url)?;
            let health = BackendHealth::Redis(redis.health());
            Ok(PubSubBackend {
                pubsub: Arc::new(redis),
                health,
            })
        }
        #[cfg(feature = "postgres")]
        PubSubSpec::Postgres(url) => {
            let pg = keayl_postgres::PostgresPubSub::from_url(url)?;
            let health = BackendHealth::Postgres(pg.health());
            Ok(PubSubBackend {
                pubsub: Arc::new(pg),
                health,
            })
        }
        #[allow(unreachable_patterns)]
        other => anyhow::bail!(
            "this build has no {} pub/sub backend (enable the `{}` feature of keayl-demo)",
            other.kind(),
            other.kind()
        ),
    }
}

/// [`build`], then wait up to `wait` for the broker so the first clients
/// find it connected; logs which backend is used and, when the broker is not
/// reachable yet, that the server starts anyway and keeps retrying.
pub async fn connect(spec: &PubSubSpec, wait: Duration) -> anyhow::Result<PubSubBackend> {
    let backend = build(spec)?;
    if backend.health.wait_up(wait).await {
        tracing::info!(pubsub = %spec, "pub/sub backend ready");
    } else {
        tracing::warn!(
            pubsub = %spec,
            "pub/sub broker not reachable yet; serving local clients and reconnecting in the background"
        );
    }
    Ok(backend)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        assert_eq!("memory".parse::<PubSubSpec>().unwrap(), PubSubSpec::Memory);
        assert_eq!("".parse::<PubSubSpec>().unwrap(), PubSubSpec::Memory);
        assert_eq!(
            "redis://127.0.0.1:6379/0".parse::<PubSubSpec>().unwrap(),
            PubSubSpec::Redis("redis://127.0.0.1:6379/0".into())
        );
        assert_eq!(
            "postgresql://u@h/db".parse::<PubSubSpec>().unwrap(),
            PubSubSpec::Postgres("postgresql://u@h/db".into())
        );
        let err = "nats://h".parse::<PubSubSpec>().unwrap_err();
        assert!(err.contains("expected"), "{err}");
        assert!(
            !"mysql://u:pw@h"
                .parse::<PubSubSpec>()
                .unwrap_err()
                .contains("pw")
        );
    }

    #[test]
    fn display_hides_passwords() {
        let spec: PubSubSpec = "redis://:s3cret@h:6379/0".parse().unwrap();
        assert_eq!(spec.to_string(), "redis://***@h:6379/0");
        assert!(!format!("{spec:?}").contains("s3cret"));
    }

    #[tokio::test]
    async fn memory_is_always_up() {
        let backend = build(&PubSubSpec::Memory).unwrap();
        assert!(backend.health.wait_up(Duration::from_millis(1)).await);
        assert_eq!(backend.health.to_json()["state"], "up");
    }

    #[cfg(feature = "redis")]
    #[tokio::test]
    async fn an_unreachable_broker_still_builds() {
        let spec: PubSubSpec = "redis://127.0.0.1:1".parse().unwrap();
        let backend = connect(&spec, Duration::from_millis(200)).await.unwrap();
        assert!(!backend.health.is_up());
        assert!(backend.pubsub.broadcast("s", "1".into()).await.is_err());
        assert_eq!(backend.health.to_json()["lost_broadcasts"], 1);
    }
}
