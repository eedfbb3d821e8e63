//! Choosing the cable's pub/sub backend from a URL.
//!
//! | URL | Backend | Cargo feature |
//! |---|---|---|
//! | `memory` (also `in-memory`, or empty) | [`InMemory`]: in-process, one process only | always there |
//! | `redis://[user:password@]host[:port][/db]`, `rediss://…`, `unix://…`, `redis+unix://…` | `keayl-redis` (`keayl::redis`): shares broadcasts with every process (Keayl or Rails) on that Redis | `redis` |
//! | `postgres://user[:password]@host[:port]/database`, `postgresql://…` | `keayl-postgres` (`keayl::postgres`): `LISTEN`/`NOTIFY` | `postgres` |
//! | `nats://[user:password@\|token@]host[:port]`, `tls://…`, several comma-separated | `keayl-nats` (`keayl::nats`): NATS core pub/sub | `nats` |
//!
//! (`rediss://` is recognised, but `keayl-redis` builds its client without
//! TLS, so it is refused with [`FromUrlError::InvalidUrl`].)
//!
//! A networked URL may carry Rails' `channel_prefix` as a query parameter
//! (`redis://host:6379/0?channel_prefix=myapp`, percent-decoded and removed
//! from the URL given to the driver): every broker channel becomes
//! `"<prefix>:<stream>"`, as in Rails' `cable.yml`.
//!
//! A networked backend connects in the background and reconnects forever:
//! [`from_url`] returns at once, the server serves its local clients even
//! while the broker is unreachable, and [`Backend::health`] reports the
//! link. Passwords never appear in this module's `Display`/`Debug` output
//! or errors (see [`redact`]).
//!
//! This module is about *choosing* a backend; the [`PubSub`] trait and the
//! backends' building blocks live in [`keayl_cable::pubsub`].

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

pub use keayl_broker::{Health, HealthStatus, LinkState, redact};
pub use keayl_cable::pubsub::{InMemory, PubSub};

/// The environment variable [`from_env`] is usually given: `KEAYL_PUBSUB`.
pub const DEFAULT_ENV: &str = "KEAYL_PUBSUB";

/// Which backend a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendKind {
    /// The in-process backend ([`InMemory`]).
    Memory,
    /// Redis (`redis://`, `rediss://`, `unix://`, `redis+unix://`).
    Redis,
    /// PostgreSQL (`postgres://`, `postgresql://`).
    Postgres,
    /// NATS (`nats://`, `tls://`).
    Nats,
}

impl BackendKind {
    /// `"memory"`, `"redis"`, `"postgres"` or `"nats"` (also what
    /// [`HealthStatus::backend`] says).
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Memory => "memory",
            BackendKind::Redis => "redis",
            BackendKind::Postgres => "postgres",
            BackendKind::Nats => "nats",
        }
    }

    /// The Cargo feature of `keayl` that provides this backend (`None` for
    /// the always-present in-memory one).
    pub fn feature(self) -> Option<&'static str> {
        match self {
            BackendKind::Memory => None,
            BackendKind::Redis => Some("redis"),
            BackendKind::Postgres => Some("postgres"),
            BackendKind::Nats => Some("nats"),
        }
    }

    /// Whether this build includes the backend.
    pub fn is_available(self) -> bool {
        match self {
            BackendKind::Memory => true,
            BackendKind::Redis => cfg!(feature = "redis"),
            BackendKind::Postgres => cfg!(feature = "postgres"),
            BackendKind::Nats => cfg!(feature = "nats"),
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a pub/sub URL was refused. Every URL it carries is redacted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FromUrlError {
    /// Neither `memory` nor a scheme this crate knows.
    #[error(
        "unknown pub/sub backend {url:?}: expected `memory`, `redis://…`, `postgres://…` or `nats://…`"
    )]
    UnknownScheme {
        /// The URL's scheme, lowercased, when it has one (`mysql`).
        scheme: Option<String>,
        /// The URL, password redacted.
        url: String,
    },
    /// A known backend that this build leaves out.
    #[error(
        "pub/sub URL {url} needs the {kind} backend, but keayl was built without the `{feature}` feature"
    )]
    FeatureDisabled {
        /// The backend the URL names.
        kind: BackendKind,
        /// The `keayl` feature to enable.
        feature: &'static str,
        /// The URL, password redacted.
        url: String,
    },
    /// The scheme is right but the rest is not a URL the driver accepts.
    #[error("invalid {kind} URL {url}: {reason}")]
    InvalidUrl {
        /// The backend the URL names.
        kind: BackendKind,
        /// The URL, password redacted.
        url: String,
        /// Why the driver refused it.
        reason: String,
    },
    /// A networked backend was started outside a Tokio runtime.
    #[error("the {kind} pub/sub backend must be started inside a Tokio runtime")]
    NoRuntime {
        /// The backend.
        kind: BackendKind,
    },
    /// [`from_env`]'s variable is set but not valid Unicode.
    #[error("environment variable {var} is not valid Unicode")]
    NotUnicode {
        /// The variable's name.
        var: String,
    },
}

/// A parsed, validated pub/sub URL; nothing is connected yet
/// ([`connect`](Self::connect) starts the backend).
///
/// `Display` and `Debug` show it with its password replaced by `***`.
///
/// ```
/// use keayl::pubsub::{BackendKind, PubSubUrl};
///
/// let url: PubSubUrl = "memory".parse()?;
/// assert_eq!(url.kind(), BackendKind::Memory);
/// assert_eq!(url.to_string(), "memory");
/// # Ok::<(), keayl::pubsub::FromUrlError>(())
/// ```
#[derive(Clone)]
pub struct PubSubUrl {
    target: Target,
    redacted: String,
}

#[derive(Clone)]
enum Target {
    Memory,
    #[cfg(feature = "redis")]
    Redis(keayl_redis::RedisConfig),
    #[cfg(feature = "postgres")]
    Postgres(keayl_postgres::PostgresConfig),
    #[cfg(feature = "nats")]
    Nats(keayl_nats::NatsConfig),
}

impl PubSubUrl {
    /// Parse and check `url` (see the [module docs](self) for the forms);
    /// leading and trailing whitespace is ignored, schemes are
    /// case-insensitive.
    pub fn parse(url: &str) -> Result<Self, FromUrlError> {
        let url = url.trim();
        if url.is_empty()
            || url.eq_ignore_ascii_case("memory")
            || url.eq_ignore_ascii_case("in-memory")
        {
            return Ok(PubSubUrl {
                target: Target::Memory,
                redacted: "memory".to_owned(),
            });
        }
        let redacted = redact(url);
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(FromUrlError::UnknownScheme {
                scheme: None,
                url: redacted,
            });
        };
        let scheme = scheme.to_ascii_lowercase();
        let kind = match scheme.as_str() {
            "redis" | "rediss" | "unix" | "redis+unix" => BackendKind::Redis,
            "postgres" | "postgresql" => BackendKind::Postgres,
            "nats" | "tls" => BackendKind::Nats,
            _ => {
                return Err(FromUrlError::UnknownScheme {
                    scheme: Some(scheme),
                    url: redacted,
                });
            }
        };
        let normalized = format!("{scheme}://{rest}");
        let target = match kind {
            BackendKind::Redis => redis_target(&normalized, &redacted)?,
            BackendKind::Nats => nats_target(&normalized, &redacted)?,
            _ => postgres_target(&normalized, &redacted)?,
        };
        Ok(PubSubUrl { target, redacted })
    }

    /// Which backend the URL names.
    pub fn kind(&self) -> BackendKind {
        match self.target {
            Target::Memory => BackendKind::Memory,
            #[cfg(feature = "redis")]
            Target::Redis(_) => BackendKind::Redis,
            #[cfg(feature = "postgres")]
            Target::Postgres(_) => BackendKind::Postgres,
            #[cfg(feature = "nats")]
            Target::Nats(_) => BackendKind::Nats,
        }
    }

    /// Rails' `channel_prefix`, from the URL's `channel_prefix` query
    /// parameter (percent-decoded).
    pub fn channel_prefix(&self) -> Option<&str> {
        match &self.target {
            Target::Memory => None,
            #[cfg(feature = "redis")]
            Target::Redis(c) => c.channel_prefix.as_deref(),
            #[cfg(feature = "postgres")]
            Target::Postgres(c) => c.channel_prefix.as_deref(),
            #[cfg(feature = "nats")]
            Target::Nats(c) => c.channel_prefix.as_deref(),
        }
    }

    /// The URL with its password replaced by `***` (what `Display` shows).
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// The Redis backend's configuration (defaults plus what the URL says),
    /// to adjust timeouts before starting it with
    /// [`RedisPubSub::new`](keayl_redis::RedisPubSub::new); `None` for
    /// another backend.
    #[cfg(feature = "redis")]
    pub fn redis_config(&self) -> Option<&keayl_redis::RedisConfig> {
        match &self.target {
            Target::Redis(c) => Some(c),
            _ => None,
        }
    }

    /// The PostgreSQL backend's configuration (defaults plus what the URL
    /// says), to adjust limits before starting it with
    /// [`PostgresPubSub::new`](keayl_postgres::PostgresPubSub::new); `None`
    /// for another backend.
    #[cfg(feature = "postgres")]
    pub fn postgres_config(&self) -> Option<&keayl_postgres::PostgresConfig> {
        match &self.target {
            Target::Postgres(c) => Some(c),
            _ => None,
        }
    }

    /// The NATS backend's configuration (defaults plus what the URL says),
    /// to adjust it before starting it with
    /// [`NatsPubSub::new`](keayl_nats::NatsPubSub::new); `None` for another
    /// backend.
    #[cfg(feature = "nats")]
    pub fn nats_config(&self) -> Option<&keayl_nats::NatsConfig> {
        match &self.target {
            Target::Nats(c) => Some(c),
            _ => None,
        }
    }

    /// Start the backend. A networked one connects in the background (this
    /// does not wait; see [`BackendHealth::wait_up`]) and must be started
    /// inside a Tokio runtime.
    pub fn connect(&self) -> Result<Backend, FromUrlError> {
        let (pubsub, health): (Arc<dyn PubSub>, BackendHealth) = match &self.target {
            Target::Memory => (Arc::new(InMemory::new()), BackendHealth::in_process()),
            #[cfg(feature = "redis")]
            Target::Redis(config) => self.start::<keayl_redis::RedisClient>(config)?,
            #[cfg(feature = "postgres")]
            Target::Postgres(config) => self.start::<keayl_postgres::PostgresClient>(config)?,
            #[cfg(feature = "nats")]
            Target::Nats(config) => self.start::<keayl_nats::NatsClient>(config)?,
        };
        Ok(Backend {
            pubsub,
            health,
            url: self.clone(),
        })
    }

    /// Start a networked backend from its configuration.
    #[allow(dead_code)] // unused without networked backends
    fn start<C: keayl_broker::BrokerClient>(
        &self,
        config: &C::Config,
    ) -> Result<(Arc<dyn PubSub>, BackendHealth), FromUrlError> {
        let backend = keayl_broker::BrokerPubSub::<C>::new(config.clone())
            .map_err(|e| config_error(self.kind(), e, &self.redacted))?;
        let health = backend.health().into();
        Ok((Arc::new(backend), health))
    }
}

/// A backend's configuration error as a [`FromUrlError`] (the URL
/// redacted, secrets the driver quotes masked, by `keayl-broker`).
#[allow(dead_code)] // unused without networked backends
fn config_error(kind: BackendKind, e: keayl_broker::ConfigError, redacted: &str) -> FromUrlError {
    match e {
        keayl_broker::ConfigError::NoRuntime { .. } => FromUrlError::NoRuntime { kind },
        keayl_broker::ConfigError::InvalidUrl { reason, .. } => FromUrlError::InvalidUrl {
            kind,
            url: redacted.to_owned(),
            reason,
        },
        other => FromUrlError::InvalidUrl {
            kind,
            url: redacted.to_owned(),
            reason: other.to_string(),
        },
    }
}

#[cfg(feature = "redis")]
fn redis_target(url: &str, redacted: &str) -> Result<Target, FromUrlError> {
    keayl_redis::config_from_url(url)
        .map(Target::Redis)
        .map_err(|e| config_error(BackendKind::Redis, e, redacted))
}

#[cfg(not(feature = "redis"))]
fn redis_target(_url: &str, redacted: &str) -> Result<Target, FromUrlError> {
    Err(disabled(BackendKind::Redis, redacted))
}

#[cfg(feature = "postgres")]
fn postgres_target(url: &str, redacted: &str) -> Result<Target, FromUrlError> {
    keayl_postgres::PostgresConfig::from_url(url)
        .map(Target::Postgres)
        .map_err(|e| config_error(BackendKind::Postgres, e, redacted))
}

#[cfg(not(feature = "postgres"))]
fn postgres_target(_url: &str, redacted: &str) -> Result<Target, FromUrlError> {
    Err(disabled(BackendKind::Postgres, redacted))
}

#[cfg(feature = "nats")]
fn nats_target(url: &str, redacted: &str) -> Result<Target, FromUrlError> {
    keayl_nats::config_from_url(url)
        .map(Target::Nats)
        .map_err(|e| config_error(BackendKind::Nats, e, redacted))
}

#[cfg(not(feature = "nats"))]
fn nats_target(_url: &str, redacted: &str) -> Result<Target, FromUrlError> {
    Err(disabled(BackendKind::Nats, redacted))
}

#[allow(dead_code)] // unused when every backend is built in
fn disabled(kind: BackendKind, redacted: &str) -> FromUrlError {
    FromUrlError::FeatureDisabled {
        kind,
        feature: kind.feature().unwrap_or_default(),
        url: redacted.to_owned(),
    }
}

impl FromStr for PubSubUrl {
    type Err = FromUrlError;

    fn from_str(s: &str) -> Result<Self, FromUrlError> {
        PubSubUrl::parse(s)
    }
}

/// The URL, password redacted.
impl std::fmt::Display for PubSubUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl std::fmt::Debug for PubSubUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PubSubUrl({:?})", self.redacted)
    }
}

/// The health of a backend, whichever it is: the broker link's [`Health`]
/// for a networked backend, always up for the in-process one.
#[derive(Clone)]
pub struct BackendHealth {
    broker: Option<Health>,
}

impl BackendHealth {
    /// The in-process backend's health: always up.
    pub fn in_process() -> Self {
        BackendHealth { broker: None }
    }

    /// The backend's name: `"memory"`, `"redis"`, `"postgres"`, `"nats"`.
    pub fn backend(&self) -> &'static str {
        self.broker
            .as_ref()
            .map_or(BackendKind::Memory.as_str(), Health::backend)
    }

    /// The link state ([`LinkState::Up`] for the in-process backend).
    pub fn state(&self) -> LinkState {
        self.broker.as_ref().map_or(LinkState::Up, Health::state)
    }

    /// Whether broadcasts reach the broker now (always for in-process).
    pub fn is_up(&self) -> bool {
        self.state() == LinkState::Up
    }

    /// Wait until the link is up, at most `timeout`; returns whether it is.
    pub async fn wait_up(&self, timeout: Duration) -> bool {
        match &self.broker {
            None => true,
            Some(h) => h.wait_up(timeout).await,
        }
    }

    /// A snapshot: state and counters (all zero for in-process), for a
    /// health endpoint or metrics.
    pub fn status(&self) -> HealthStatus {
        match &self.broker {
            Some(h) => h.status(),
            None => HealthStatus {
                backend: BackendKind::Memory.as_str(),
                state: LinkState::Up,
                reconnects: 0,
                outages: 0,
                lost_broadcasts: 0,
                failed_deliveries: 0,
                down_for: None,
                last_error: None,
            },
        }
    }

    /// The networked backend's own handle (`None` in process), for
    /// [`Health::watch`] and friends.
    pub fn broker(&self) -> Option<&Health> {
        self.broker.as_ref()
    }
}

impl From<Health> for BackendHealth {
    fn from(health: Health) -> Self {
        BackendHealth {
            broker: Some(health),
        }
    }
}

impl std::fmt::Debug for BackendHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.status(), f)
    }
}

/// A started backend: what the cable needs, its health, and the URL it came
/// from. Dropping every clone of [`pubsub`](Self::pubsub) stops a networked
/// backend.
#[derive(Clone)]
#[non_exhaustive]
pub struct Backend {
    /// The backend, for the cable (`keayl::cable::set_cable_pubsub`, the
    /// transport's server).
    pub pubsub: Arc<dyn PubSub>,
    /// Its health.
    pub health: BackendHealth,
    /// The URL it was started from (password redacted when shown).
    pub url: PubSubUrl,
}

impl Backend {
    /// A fresh in-process backend.
    pub fn memory() -> Self {
        Backend {
            pubsub: Arc::new(InMemory::new()),
            health: BackendHealth::in_process(),
            url: PubSubUrl {
                target: Target::Memory,
                redacted: "memory".to_owned(),
            },
        }
    }

    /// Which backend this is.
    pub fn kind(&self) -> BackendKind {
        self.url.kind()
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("url", &self.url)
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

/// Parse `url` ([`PubSubUrl::parse`]) and start the backend it names
/// ([`PubSubUrl::connect`]). A networked backend connects in the background
/// — this returns at once — and must be started inside a Tokio runtime.
///
/// ```
/// use keayl::pubsub::{self, BackendKind};
///
/// let backend = pubsub::from_url("memory")?;
/// assert_eq!(backend.kind(), BackendKind::Memory);
/// assert!(backend.health.is_up());
/// keayl::cable::set_cable_pubsub(backend.pubsub.clone());
/// # Ok::<(), pubsub::FromUrlError>(())
/// ```
///
/// With Redis (feature `redis`) or PostgreSQL (feature `postgres`):
///
/// ```no_run
/// # async fn run() -> Result<(), keayl::pubsub::FromUrlError> {
/// use std::time::Duration;
///
/// let backend = keayl::pubsub::from_url("redis://127.0.0.1:6379/0?channel_prefix=myapp")?;
/// // or "postgres://app:secret@127.0.0.1/app?channel_prefix=myapp"
/// if !backend.health.wait_up(Duration::from_secs(2)).await {
///     eprintln!("{} not reachable yet; retrying in the background", backend.url);
/// }
/// # Ok(()) }
/// ```
pub fn from_url(url: &str) -> Result<Backend, FromUrlError> {
    PubSubUrl::parse(url)?.connect()
}

/// [`from_url`] with the value of environment variable `var` (usually
/// [`DEFAULT_ENV`]); in-process when it is unset or empty.
///
/// ```no_run
/// let backend = keayl::pubsub::from_env(keayl::pubsub::DEFAULT_ENV)?;
/// println!("pub/sub: {}", backend.url); // password redacted
/// # Ok::<(), keayl::pubsub::FromUrlError>(())
/// ```
pub fn from_env(var: &str) -> Result<Backend, FromUrlError> {
    match std::env::var(var) {
        Ok(url) => from_url(&url),
        Err(std::env::VarError::NotPresent) => Ok(Backend::memory()),
        Err(std::env::VarError::NotUnicode(_)) => Err(FromUrlError::NotUnicode {
            var: var.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_forms() {
        for s in ["memory", "", "  Memory ", "in-memory", "IN-MEMORY"] {
            let url = PubSubUrl::parse(s).unwrap();
            assert_eq!(url.kind(), BackendKind::Memory, "{s:?}");
            assert_eq!(url.channel_prefix(), None);
            assert_eq!(url.to_string(), "memory");
        }
    }

    #[test]
    fn memory_backend_is_always_up() {
        let backend = from_url("memory").unwrap();
        assert_eq!(backend.kind(), BackendKind::Memory);
        assert!(backend.health.is_up());
        assert!(backend.health.broker().is_none());
        let status = backend.health.status();
        assert_eq!(status.backend, "memory");
        assert_eq!(status.state, LinkState::Up);
        assert_eq!(status.lost_broadcasts, 0);
        assert_eq!(Backend::memory().kind(), BackendKind::Memory);
    }

    #[test]
    fn from_env_defaults_to_memory() {
        let backend = from_env("KEAYL_TEST_PUBSUB_NEVER_SET_7f3a").unwrap();
        assert_eq!(backend.kind(), BackendKind::Memory);
    }

    #[test]
    fn unknown_schemes() {
        let err = PubSubUrl::parse("amqp://h:5672").unwrap_err();
        assert!(
            matches!(&err, FromUrlError::UnknownScheme { scheme: Some(s), .. } if s == "amqp"),
            "{err:?}"
        );
        assert!(err.to_string().contains("expected `memory`"), "{err}");
        let err = PubSubUrl::parse("localhost:6379").unwrap_err();
        assert!(
            matches!(err, FromUrlError::UnknownScheme { scheme: None, .. }),
            "{err:?}"
        );
        let err = PubSubUrl::parse("mysql://u:hunter2@h/db").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
        let err = PubSubUrl::parse("u:hunter2@h").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn kinds() {
        assert_eq!(BackendKind::Redis.to_string(), "redis");
        assert_eq!(BackendKind::Postgres.feature(), Some("postgres"));
        assert_eq!(BackendKind::Memory.feature(), None);
        assert!(BackendKind::Memory.is_available());
        assert_eq!(BackendKind::Redis.is_available(), cfg!(feature = "redis"));
        assert_eq!(
            BackendKind::Postgres.is_available(),
            cfg!(feature = "postgres")
        );
    }

    #[test]
    fn urls_are_shown_redacted() {
        let url = PubSubUrl::parse("memory").unwrap();
        assert_eq!(url.redacted(), "memory");
        assert_eq!(redact("redis://:s3cret@h:6379/0"), "redis://:***@h:6379/0");
    }

    /// One URL of each networked backend, with a password `hunter2`, a bad
    /// port, and a good unreachable address.
    const NETWORKED: [(BackendKind, &str, &str); 3] = [
        (
            BackendKind::Redis,
            "redis://:hunter2@h:port/0",
            "redis://:hunter2@127.0.0.1:1",
        ),
        (
            BackendKind::Postgres,
            "postgres://u:hunter2@h:port/db",
            "postgres://u:hunter2@127.0.0.1:1/db",
        ),
        (
            BackendKind::Nats,
            "nats://u:hunter2@h:port",
            "nats://u:hunter2@127.0.0.1:1",
        ),
    ];

    #[test]
    fn backends_left_out_of_the_build_say_which_feature() {
        for (kind, _, good) in NETWORKED.into_iter().filter(|(k, ..)| !k.is_available()) {
            let err = PubSubUrl::parse(good).unwrap_err();
            let feature = kind.feature().unwrap();
            assert_eq!(
                err,
                FromUrlError::FeatureDisabled {
                    kind,
                    feature,
                    url: redact(good)
                }
            );
            let text = err.to_string();
            assert!(
                text.contains(&format!("built without the `{feature}` feature")),
                "{text}"
            );
            assert!(!text.contains("hunter2"), "{text}");
        }
    }

    #[test]
    fn bad_urls_are_refused_without_their_password() {
        for (kind, bad, _) in NETWORKED.into_iter().filter(|(k, ..)| k.is_available()) {
            let err = PubSubUrl::parse(bad).unwrap_err();
            assert!(
                matches!(err, FromUrlError::InvalidUrl { kind: k, .. } if k == kind),
                "{err:?}"
            );
            assert!(!err.to_string().contains("hunter2"), "{err}");
            assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
        }
    }

    #[test]
    fn networked_backends_need_a_runtime() {
        for (kind, _, good) in NETWORKED.into_iter().filter(|(k, ..)| k.is_available()) {
            assert_eq!(
                from_url(good).unwrap_err(),
                FromUrlError::NoRuntime { kind }
            );
        }
    }

    #[tokio::test]
    async fn an_unreachable_broker_still_starts() {
        for (kind, _, good) in NETWORKED.into_iter().filter(|(k, ..)| k.is_available()) {
            let backend = from_url(good).unwrap();
            assert_eq!(backend.kind(), kind);
            assert!(!backend.health.wait_up(Duration::from_millis(200)).await);
            assert!(backend.pubsub.broadcast("s", "1".into()).await.is_err());
            let status = backend.health.status();
            assert_eq!(status.backend, kind.as_str());
            assert_eq!(status.lost_broadcasts, 1, "{kind}");
            assert!(backend.health.broker().is_some());
            assert!(!format!("{backend:?}").contains("hunter2"));
        }
    }

    #[cfg(feature = "redis")]
    mod redis {
        use super::*;

        #[test]
        fn schemes() {
            for s in [
                "redis://127.0.0.1:6379/0",
                "unix:///tmp/redis.sock",
                "redis+unix:///tmp/redis.sock",
                "REDIS://h:6379/0",
            ] {
                let url = PubSubUrl::parse(s).unwrap();
                assert_eq!(url.kind(), BackendKind::Redis, "{s}");
                assert_eq!(url.channel_prefix(), None);
            }
            let url = PubSubUrl::parse("REDIS://h:6379/0").unwrap();
            assert_eq!(url.redis_config().unwrap().url, "redis://h:6379/0");
            // Recognised, but keayl-redis' client is built without TLS.
            let err = PubSubUrl::parse("rediss://h:6380").unwrap_err();
            assert!(
                matches!(
                    &err,
                    FromUrlError::InvalidUrl {
                        kind: BackendKind::Redis,
                        reason,
                        ..
                    } if reason.contains("TLS")
                ),
                "{err:?}"
            );
        }

        #[test]
        fn channel_prefix() {
            let url: PubSubUrl = "redis://h:6379/0?channel_prefix=my%20app&protocol=resp2"
                .parse()
                .unwrap();
            assert_eq!(url.channel_prefix(), Some("my app"));
            let config = url.redis_config().unwrap();
            assert_eq!(config.url, "redis://h:6379/0?protocol=resp2");
            assert_eq!(config.channel_prefix.as_deref(), Some("my app"));
            let url = PubSubUrl::parse("redis://h/?channel_prefix=").unwrap();
            assert_eq!(url.channel_prefix(), Some(""));
        }

        #[test]
        fn display_and_debug_hide_the_password() {
            let url = PubSubUrl::parse("redis://:hunter2@h:6379/0?channel_prefix=a").unwrap();
            assert_eq!(url.to_string(), "redis://:***@h:6379/0?channel_prefix=a");
            assert!(!format!("{url:?}").contains("hunter2"));
        }
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn postgres_schemes_and_channel_prefix() {
        for s in [
            "postgres://u@h/db",
            "postgresql://u@h/db",
            "PostgreSQL://u@h/db",
        ] {
            let url = PubSubUrl::parse(s).unwrap();
            assert_eq!(url.kind(), BackendKind::Postgres, "{s}");
            assert_eq!(url.channel_prefix(), None);
        }
        let url =
            PubSubUrl::parse("postgres://u:pw@h/db?channel_prefix=x&application_name=y").unwrap();
        assert_eq!(url.channel_prefix(), Some("x"));
        let config = url.postgres_config().unwrap();
        assert_eq!(config.url, "postgres://u:pw@h/db?application_name=y");
        assert_eq!(
            url.to_string(),
            "postgres://u:***@h/db?channel_prefix=x&application_name=y"
        );
    }

    #[cfg(feature = "nats")]
    #[test]
    fn nats_schemes_and_channel_prefix() {
        for s in [
            "nats://h:4222",
            "NATS://h",
            "tls://h:4222",
            "nats://a:1,nats://b:2",
        ] {
            let url = PubSubUrl::parse(s).unwrap();
            assert_eq!(url.kind(), BackendKind::Nats, "{s}");
            assert_eq!(url.channel_prefix(), None);
        }
        let url = PubSubUrl::parse("nats://s3cr3t@h:4222?channel_prefix=x").unwrap();
        assert_eq!(url.channel_prefix(), Some("x"));
        assert_eq!(url.nats_config().unwrap().url, "nats://s3cr3t@h:4222");
        assert_eq!(url.to_string(), "nats://***@h:4222?channel_prefix=x");
    }
}
