//! The NATS backend's configuration and its URL.

use std::time::Duration;

use async_nats::{ConnectOptions, ServerAddr};
use keayl_broker::{BrokerConfig, ConfigError, percent_decode};

use crate::BACKEND;

/// Configuration of the NATS backend: the shared [`BrokerConfig`]
/// (reachable through `Deref`: `config.subscribe_timeout`) plus how long a
/// subscriber count listens for answers. Build it with
/// [`config_from_url`] or [`NatsConfig::new`].
#[derive(Clone, Debug)]
pub struct NatsConfig {
    /// URL (`nats://[user:password@|token@]host[:port]`, `tls://…`, or a
    /// comma-separated list of servers), Rails' `channel_prefix`, reconnect
    /// and timeouts. `command_timeout` bounds one publish, one subscribe
    /// batch and the health check (each until the server echoes a round
    /// trip sent after it).
    pub broker: BrokerConfig,
    /// How long [`subscriber_count`](keayl_cable::pubsub::PubSub::subscriber_count)
    /// collects answers from the processes subscribed to a stream (NATS
    /// keeps no per-subject count a client may read). Default 100 ms.
    pub census_window: Duration,
}

impl std::ops::Deref for NatsConfig {
    type Target = BrokerConfig;
    fn deref(&self) -> &BrokerConfig {
        &self.broker
    }
}

impl AsRef<BrokerConfig> for NatsConfig {
    fn as_ref(&self) -> &BrokerConfig {
        &self.broker
    }
}

impl std::ops::DerefMut for NatsConfig {
    fn deref_mut(&mut self) -> &mut BrokerConfig {
        &mut self.broker
    }
}

impl NatsConfig {
    /// Defaults for `url` (taken verbatim; checked when the client starts).
    pub fn new(url: impl Into<String>) -> Self {
        NatsConfig {
            broker: BrokerConfig::new(url),
            census_window: Duration::from_millis(100),
        }
    }
}

/// The configuration for a NATS URL: `nats://host:4222`,
/// `nats://user:password@host`, `nats://token@host`, `tls://host`, or
/// several servers separated by commas (`nats://a:4222,nats://b:4222`).
/// Rails' `channel_prefix` comes from its query parameter
/// (`nats://host:4222?channel_prefix=myapp`). The rest is checked as the
/// client will read it (nothing connects).
///
/// ```
/// let c = keayl_nats::config_from_url("nats://127.0.0.1:4222?channel_prefix=app").unwrap();
/// assert_eq!(c.url, "nats://127.0.0.1:4222");
/// assert_eq!(c.channel_prefix.as_deref(), Some("app"));
/// assert!(keayl_nats::config_from_url("redis://127.0.0.1").is_err());
/// ```
pub fn config_from_url(url: &str) -> Result<NatsConfig, ConfigError> {
    let broker = BrokerConfig::from_url_unchecked(url);
    servers(&broker.url)?;
    Ok(NatsConfig {
        broker,
        ..NatsConfig::new(String::new())
    })
}

/// What a URL says about authentication.
#[derive(Clone, Default)]
pub(crate) enum Credentials {
    #[default]
    None,
    Token(String),
    UserPassword(String, String),
}

impl Credentials {
    /// Fresh connect options carrying these credentials.
    pub(crate) fn options(&self) -> ConnectOptions {
        match self.clone() {
            Credentials::None => ConnectOptions::new(),
            Credentials::Token(t) => ConnectOptions::new().token(t),
            Credentials::UserPassword(u, p) => ConnectOptions::new().user_and_password(u, p),
        }
    }
}

/// The servers of `url` (split as [`BrokerConfig::split_servers`] does)
/// and the credentials of its first server that has some. The addresses
/// carry no userinfo (the driver logs them); the credentials travel in the
/// [`ConnectOptions`] ([`Credentials::options`]).
pub(crate) fn servers(url: &str) -> Result<(Vec<ServerAddr>, Credentials), ConfigError> {
    let mut addrs = Vec::new();
    let mut credentials = Credentials::None;
    for part in BrokerConfig::split_servers(url).into_iter().map(str::trim) {
        if !(part.starts_with("nats://") || part.starts_with("tls://")) {
            return Err(ConfigError::invalid_url(
                BACKEND,
                url,
                "expected nats://… or tls://… (comma-separated for several servers)",
            ));
        }
        let addr: ServerAddr = part
            .parse()
            .map_err(|e| ConfigError::invalid_url(BACKEND, url, e))?;
        if let (Credentials::None, Some(user)) = (&credentials, addr.username()) {
            let user = percent_decode(user);
            credentials = match addr.password() {
                Some(password) => Credentials::UserPassword(user, percent_decode(password)),
                None => Credentials::Token(user),
            };
        }
        let mut bare = addr.into_inner();
        let stripped = bare.set_password(None).and(bare.set_username(""));
        let addr = stripped
            .map_err(|()| "its user name cannot be removed")
            .and_then(|()| ServerAddr::from_url(bare).map_err(|_| "not a NATS address"))
            .map_err(|e| ConfigError::invalid_url(BACKEND, url, e))?;
        addrs.push(addr);
    }
    Ok((addrs, credentials))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let c = config_from_url("nats://u:p%40ss@h:4222?channel_prefix=my%20app").unwrap();
        assert_eq!(c.url, "nats://u:p%40ss@h:4222");
        assert_eq!(c.channel_prefix.as_deref(), Some("my app"));
        assert!(!format!("{c:?}").contains("p%40ss"));
        let (addrs, _) = servers("nats://a:1, nats://b:2").unwrap();
        assert_eq!(addrs.len(), 2);
        assert_eq!(addrs[1].port(), 2);
        for bad in [
            "redis://h",
            "h:4222",
            "nats://a:1,redis://b",
            "nats://h:port",
        ] {
            let e = config_from_url(bad).unwrap_err();
            assert_eq!(e.backend(), "nats", "{bad}");
        }
        // A password with a comma stays whole.
        let (addrs, credentials) = servers("nats://u:p,w@a:1,nats://b:2").unwrap();
        assert_eq!(addrs.len(), 2);
        assert!(matches!(credentials, Credentials::UserPassword(u, p) if u == "u" && p == "p,w"));
        // A bad URL's error does not show its secret.
        let e = config_from_url("nats://tok3n@h:port").unwrap_err();
        assert!(!e.to_string().contains("tok3n"), "{e}");
    }

    /// The driver logs server addresses: they hold no secret, which reaches
    /// the server through the connect options instead.
    #[test]
    fn addresses_carry_no_credentials() {
        let (addrs, credentials) =
            servers("nats://alice:s3cr%40t@h1:4222, tls://bob:other@h2:4223").unwrap();
        assert_eq!(addrs.len(), 2);
        for addr in &addrs {
            let shown = format!("{addr:?} {}", addr.clone().into_inner());
            for secret in ["s3cr", "other", "alice", "bob", "@"] {
                assert!(!shown.contains(secret), "{secret} in {shown}");
            }
            assert_eq!((addr.username(), addr.password()), (None, None));
            assert!(!addr.has_user_pass());
        }
        assert_eq!((addrs[0].host(), addrs[0].port()), ("h1", 4222));
        assert_eq!((addrs[1].host(), addrs[1].port()), ("h2", 4223));
        assert!(addrs[1].tls_required());
        assert!(matches!(
            credentials,
            Credentials::UserPassword(u, p) if u == "alice" && p == "s3cr@t"
        ));

        let (addrs, credentials) = servers("nats://tok3n@h").unwrap();
        assert!(!addrs[0].clone().into_inner().as_str().contains("tok3n"));
        assert!(matches!(credentials, Credentials::Token(t) if t == "tok3n"));
    }
}
