//! What every networked backend is configured with, URL redaction, and the
//! configuration error.

use std::time::Duration;

use keayl_cable::pubsub::HistoryConfig;

use crate::{Backoff, take_query_param};

/// The settings every networked backend shares: where the broker is, Rails'
/// `channel_prefix`, and the timeouts of its reconnecting client. A broker
/// crate's own configuration holds one of these beside what is specific to
/// its broker.
#[derive(Clone)]
pub struct BrokerConfig {
    /// The broker's URL, the `channel_prefix` query parameter (if any)
    /// already removed.
    pub url: String,
    /// Rails' `channel_prefix`: every stream `s` travels on the broker as
    /// `"<prefix>:<s>"` (see [`prefixed`](Self::prefixed)).
    pub channel_prefix: Option<String>,
    /// First reconnect delay. Default 100 ms.
    pub reconnect_min: Duration,
    /// Longest reconnect delay (the backoff doubles up to it). Default 2 s.
    pub reconnect_max: Duration,
    /// How long a subscription waits for the broker's acknowledgement
    /// (across a reconnection or a hang) before its readiness fails and the
    /// subscription is rejected. The connection keeps serving its other
    /// commands meanwhile (the socket driver defers the confirmation).
    /// Default 60 s.
    pub subscribe_timeout: Duration,
    /// Timeout of one broker command (a publish, a subscriber count, a
    /// subscribe batch, the health check). Default 2 s.
    pub command_timeout: Duration,
    /// Timeout of establishing a connection. Default 2 s.
    pub connect_timeout: Duration,
    /// Interval of the health check on the subscriber connection. Default 5 s.
    pub health_check_interval: Duration,
    /// The stream history kept in the broker, for backends that keep one
    /// (reliable streams): per stream the last `limit` messages for `ttl`,
    /// with per-stream overrides; `max_bytes` is the in-process bound and
    /// does not apply to a broker. Default [`HistoryConfig::default`]
    /// (100 messages, 300 s); [`HistoryConfig::off`] keeps none.
    pub history: HistoryConfig,
}

impl std::fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("url", &redact(&self.url))
            .field("channel_prefix", &self.channel_prefix)
            .field("reconnect_min", &self.reconnect_min)
            .field("reconnect_max", &self.reconnect_max)
            .field("subscribe_timeout", &self.subscribe_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("health_check_interval", &self.health_check_interval)
            .field("history", &self.history)
            .finish()
    }
}

impl AsRef<BrokerConfig> for BrokerConfig {
    fn as_ref(&self) -> &BrokerConfig {
        self
    }
}

impl BrokerConfig {
    /// Defaults for `url`, taken verbatim.
    pub fn new(url: impl Into<String>) -> Self {
        BrokerConfig {
            url: url.into(),
            channel_prefix: None,
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(2),
            subscribe_timeout: Duration::from_secs(60),
            command_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            health_check_interval: Duration::from_secs(5),
            history: HistoryConfig::default(),
        }
    }

    /// Defaults for `url`, Rails' `channel_prefix` taken from its
    /// `channel_prefix` query parameter (percent-decoded, removed from the
    /// URL): `redis://host:6379/0?channel_prefix=myapp`. Nothing is checked
    /// here; the broker crate checks the rest as its driver reads it.
    ///
    /// ```
    /// let c = keayl_broker::BrokerConfig::from_url_unchecked("redis://h:6379/0?channel_prefix=my%20app");
    /// assert_eq!(c.url, "redis://h:6379/0");
    /// assert_eq!(c.channel_prefix.as_deref(), Some("my app"));
    /// ```
    pub fn from_url_unchecked(url: &str) -> Self {
        let (url, prefix) = take_query_param(url, "channel_prefix");
        BrokerConfig {
            channel_prefix: prefix,
            ..BrokerConfig::new(url)
        }
    }

    /// Set Rails' `channel_prefix`.
    pub fn with_channel_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.channel_prefix = Some(prefix.into());
        self
    }

    /// `stream` under the channel prefix, as Rails' adapters name it:
    /// `"<prefix>:<stream>"` (an empty prefix kept, as Rails'
    /// `compact.join(":")` does), or `stream` without a prefix.
    ///
    /// ```
    /// use keayl_broker::BrokerConfig;
    /// assert_eq!(BrokerConfig::new("x").prefixed("chat:1"), "chat:1");
    /// assert_eq!(BrokerConfig::new("x").with_channel_prefix("app").prefixed("chat:1"), "app:chat:1");
    /// assert_eq!(BrokerConfig::new("x").with_channel_prefix("").prefixed("s"), ":s");
    /// ```
    pub fn prefixed(&self, stream: &str) -> String {
        match &self.channel_prefix {
            Some(p) => format!("{p}:{stream}"),
            None => stream.to_owned(),
        }
    }

    /// The servers of a comma-separated server list
    /// (`nats://a:4222,nats://b:4222`), each as written (a server after
    /// the first keeps the spaces that follow its comma). The list is split
    /// only at a comma followed (after optional spaces) by `scheme://`, so
    /// a password holding a `,` or a space stays whole. One server is a
    /// list of one.
    ///
    /// ```
    /// use keayl_broker::BrokerConfig;
    /// assert_eq!(BrokerConfig::split_servers("nats://a,nats://b"), ["nats://a", "nats://b"]);
    /// assert_eq!(BrokerConfig::split_servers("nats://u:p,w@a, tls://b"), ["nats://u:p,w@a", " tls://b"]);
    /// assert_eq!(BrokerConfig::split_servers("redis://h"), ["redis://h"]);
    /// ```
    pub fn split_servers(url: &str) -> Vec<&str> {
        let mut servers = Vec::new();
        let mut start = 0;
        for (comma, _) in url.match_indices(',') {
            if starts_with_scheme(url[comma + 1..].trim_start()) {
                servers.push(&url[start..comma]);
                start = comma + 1;
            }
        }
        servers.push(&url[start..]);
        servers
    }

    /// The URL for logs and health reports: [`redact`]ed.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }

    /// The reconnect backoff these settings describe.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.reconnect_min, self.reconnect_max)
    }
}

/// `url` without its secrets, for logs: the password of the userinfo
/// becomes `***` (`redis://:***@host`, `postgres://app:***@db/app`),
/// userinfo without a password is kept for PostgreSQL and Redis (a user
/// name) but hidden for NATS (`nats://***@host`: a token), and `password`
/// or `token` query parameters and `password=` in a `key=value`
/// connection string become `***`. Without a `://`, anything before an `@`
/// is hidden.
///
/// ```
/// use keayl_broker::redact;
/// assert_eq!(redact("redis://:s3cret@127.0.0.1:6379/0"), "redis://:***@127.0.0.1:6379/0");
/// assert_eq!(redact("postgres://app:pw@db/app?sslmode=disable"), "postgres://app:***@db/app?sslmode=disable");
/// assert_eq!(redact("postgres://app@db/app?password=pw"), "postgres://app@db/app?password=***");
/// assert_eq!(redact("nats://tok3n@127.0.0.1:4222"), "nats://***@127.0.0.1:4222");
/// assert_eq!(
///     redact("nats://a:pw1@h1:4222,nats://b:pw2@h2:4222"),
///     "nats://a:***@h1:4222,nats://b:***@h2:4222"
/// );
/// assert_eq!(redact("host=db user=app password=pw"), "host=db user=app password=***");
/// assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
/// ```
pub fn redact(url: &str) -> String {
    // Several servers in one string (`nats://a:pw@h1,nats://b:pw@h2`): each
    // is redacted on its own (the spaces after a comma kept as they are).
    let servers = BrokerConfig::split_servers(url);
    if servers.len() > 1 {
        return servers
            .iter()
            .map(|s| {
                let server = s.trim_start();
                format!("{}{}", &s[..s.len() - server.len()], redact(server))
            })
            .collect::<Vec<_>>()
            .join(",");
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        let url = match url.rfind('@') {
            Some(at) => format!("***@{}", &url[at + 1..]),
            None => url.to_owned(),
        };
        return url
            .split(' ')
            .map(redact_pair)
            .collect::<Vec<_>>()
            .join(" ");
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => match authority[..at].split_once(':') {
            Some((user, _password)) => format!("{user}:***@{}", &authority[at + 1..]),
            None if is_token_scheme(scheme) => format!("***@{}", &authority[at + 1..]),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let (query, fragment) = match query.split_once('#') {
                Some((q, f)) => (q, Some(f)),
                None => (query, None),
            };
            let query = query
                .split('&')
                .map(redact_pair)
                .collect::<Vec<_>>()
                .join("&");
            match fragment {
                Some(f) => format!("{path}?{query}#{f}"),
                None => format!("{path}?{query}"),
            }
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// Whether `s` starts with `scheme://` (a letter, then letters, digits,
/// `+`, `-` or `.`).
fn starts_with_scheme(s: &str) -> bool {
    let Some((scheme, _)) = s.split_once("://") else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Schemes whose password-less userinfo is a secret token.
fn is_token_scheme(scheme: &str) -> bool {
    matches!(
        scheme.to_ascii_lowercase().as_str(),
        "nats" | "tls" | "ws" | "wss"
    )
}

fn is_secret_key(key: &str) -> bool {
    ["password", "token", "auth_token"]
        .iter()
        .any(|k| key.eq_ignore_ascii_case(k))
}

fn redact_pair(pair: &str) -> String {
    match pair.split_once('=') {
        Some((key, _)) if is_secret_key(key) => format!("{key}=***"),
        _ => pair.to_owned(),
    }
}

/// The secrets [`redact`] hides in `url` (in every server of a server
/// list), raw and percent-decoded, longest first (to mask them in a
/// driver's error message that quotes them).
fn secrets(url: &str) -> Vec<String> {
    let mut found = Vec::new();
    for server in BrokerConfig::split_servers(url) {
        server_secrets(server.trim_start(), &mut found);
    }
    let decoded: Vec<String> = found.iter().map(|s| crate::percent_decode(s)).collect();
    found.extend(decoded);
    found.retain(|s| !s.is_empty());
    found.sort_by_key(|s| std::cmp::Reverse(s.len()));
    found.dedup();
    found
}

/// The secrets of one server's URL, raw, pushed onto `found`.
fn server_secrets(url: &str, found: &mut Vec<String>) {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let authority = &rest[..authority_end];
            if let Some(at) = authority.rfind('@') {
                match authority[..at].split_once(':') {
                    Some((_, password)) => found.push(password.to_owned()),
                    None if is_token_scheme(scheme) => found.push(authority[..at].to_owned()),
                    None => {}
                }
            }
            if let Some((_, query)) = rest[authority_end..].split_once('?') {
                let query = query.split_once('#').map_or(query, |(q, _)| q);
                found.extend(query.split('&').filter_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    is_secret_key(k).then(|| v.to_owned())
                }));
            }
        }
        None => {
            found.extend(url.split(' ').filter_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                is_secret_key(k).then(|| v.to_owned())
            }));
        }
    }
}

/// Errors from configuring a networked backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The URL is not one the backend's driver accepts.
    #[error("invalid {backend} URL {url}: {reason}")]
    InvalidUrl {
        /// The backend (`redis`, `postgres`, `nats`).
        backend: &'static str,
        /// The URL, [`redact`]ed.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// The backend was started outside a Tokio runtime.
    #[error("the {backend} backend must be created inside a Tokio runtime")]
    NoRuntime {
        /// The backend (`redis`, `postgres`, `nats`).
        backend: &'static str,
    },
}

impl ConfigError {
    /// An [`InvalidUrl`](ConfigError::InvalidUrl) for `url`: the URL
    /// [`redact`]ed, and any of its secrets that the driver's `reason`
    /// quotes masked.
    pub fn invalid_url(backend: &'static str, url: &str, reason: impl ToString) -> Self {
        let mut reason = reason.to_string();
        for secret in secrets(url) {
            reason = reason.replace(&secret, "***");
        }
        ConfigError::InvalidUrl {
            backend,
            url: redact(url),
            reason,
        }
    }

    /// The backend the error is about.
    pub fn backend(&self) -> &'static str {
        match self {
            ConfigError::InvalidUrl { backend, .. } | ConfigError::NoRuntime { backend } => backend,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_password() {
        let c = BrokerConfig::new("redis://:hunter2@h:1");
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn redaction() {
        let cases = [
            ("redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"),
            ("redis://user:s3cret@h", "redis://user:***@h"),
            (
                "rediss://u:p%40ss@h:6380/1?channel_prefix=a",
                "rediss://u:***@h:6380/1?channel_prefix=a",
            ),
            ("postgres://app:pw@db/app", "postgres://app:***@db/app"),
            ("postgres://app:a@b@db?x=1", "postgres://app:***@db?x=1"),
            ("postgres://app@db/app", "postgres://app@db/app"),
            (
                "postgres://app@db/app?PASSWORD=pw&x=1",
                "postgres://app@db/app?PASSWORD=***&x=1",
            ),
            (
                "postgres://db:5432?password=pw#frag",
                "postgres://db:5432?password=***#frag",
            ),
            ("nats://s3cret@h:4222", "nats://***@h:4222"),
            ("nats://u:pw@h:4222", "nats://u:***@h:4222"),
            ("nats://h:4222?token=t", "nats://h:4222?token=***"),
            ("redis://h", "redis://h"),
            ("unix:///tmp/redis.sock", "unix:///tmp/redis.sock"),
            (
                "host=db password=pw user=app",
                "host=db password=*** user=app",
            ),
            ("u:pw@h:6379", "***@h:6379"),
            ("memory", "memory"),
        ];
        for (input, want) in cases {
            assert_eq!(redact(input), want, "{input}");
        }
    }

    #[test]
    fn server_lists_split_only_before_a_scheme() {
        // A password with a comma or a space stays whole.
        let list = "nats://a:p,w@h1:4222,nats://b:p w@h2:4222, tls://c:x,nats:y@h3";
        assert_eq!(
            BrokerConfig::split_servers(list),
            [
                "nats://a:p,w@h1:4222",
                "nats://b:p w@h2:4222",
                " tls://c:x,nats:y@h3"
            ]
        );
        assert_eq!(
            redact(list),
            "nats://a:***@h1:4222,nats://b:***@h2:4222, tls://c:***@h3"
        );
        // A token after a comma and a space is hidden too.
        assert_eq!(
            redact("nats://h1, nats://tok,en@h2"),
            "nats://h1, nats://***@h2"
        );
        // One server with a comma in its password is one server.
        assert_eq!(redact("nats://u:a,b@h"), "nats://u:***@h");
        assert_eq!(redact("redis://:a, b@h/0"), "redis://:***@h/0");
    }

    #[test]
    fn secrets_of_every_server() {
        let s = secrets("nats://a:p,w1@h1,nats://b:p%20w2@h2, nats://t,o k@h3");
        for want in ["p,w1", "p%20w2", "p w2", "t,o k"] {
            assert!(s.contains(&want.to_owned()), "{want}: {s:?}");
        }
        let err = ConfigError::invalid_url(
            "nats",
            "nats://a:p,w1@h1,nats://b:p w2@h2",
            "refused p,w1 and p w2",
        );
        let shown = err.to_string();
        assert!(
            !shown.contains("p,w1") && !shown.contains("p w2"),
            "{shown}"
        );
        assert!(shown.contains("nats://a:***@h1,nats://b:***@h2"), "{shown}");
    }

    #[test]
    fn invalid_url_masks_secrets_the_driver_quotes() {
        let s = secrets("postgres://u:p%40ss@h/db?password=other");
        assert!(s.contains(&"p%40ss".to_owned()), "{s:?}");
        assert!(s.contains(&"p@ss".to_owned()), "{s:?}");
        assert!(s.contains(&"other".to_owned()), "{s:?}");
        let err =
            ConfigError::invalid_url("postgres", "postgres://u:p%40ss@h/db", "bad value p@ss");
        assert!(!err.to_string().contains("p@ss"), "{err}");
        assert!(err.to_string().contains("postgres://u:***@h/db"), "{err}");
        let err = ConfigError::invalid_url("nats", "nats://tok@h", "token tok refused");
        assert!(!err.to_string().contains("tok "), "{err}");
        assert_eq!(err.backend(), "nats");
    }
}
