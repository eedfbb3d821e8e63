//! [`PostgresConfig`]: the shared broker settings plus the spill table's
//! bounds.

use std::str::FromStr;
use std::time::Duration;

use keayl_broker::{BrokerConfig, ConfigError};

use crate::BACKEND;
#[cfg(doc)]
use crate::{BroadcastError, SPILL_TABLE, channel_name};

/// Default of [`PostgresConfig::max_spill_bytes`]: 64 MiB of payload.
pub const DEFAULT_MAX_SPILL_BYTES: usize = 64 * 1024 * 1024;

/// Default of [`PostgresConfig::max_payload_bytes`]: 1 MiB.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// Configuration of the PostgreSQL backend: the shared [`BrokerConfig`]
/// (reachable through `Deref`: `config.subscribe_timeout`) plus the spill
/// table's bounds.
#[derive(Clone, Debug)]
pub struct PostgresConfig {
    /// URL (`postgres://user[:password]@host[:port]/database[?…]`, or a
    /// `key=value` string, the `channel_prefix` parameter removed), Rails'
    /// `channel_prefix` (hashed with the stream when over 63 bytes, see
    /// [`channel_name`]), reconnect and timeouts, and the stream history
    /// kept in PostgreSQL (`history`, see the crate docs). `command_timeout`
    /// is one statement's (`NOTIFY`, a positioned publish, a history read,
    /// a session statement, a `LISTEN` batch, a spill fetch, the health
    /// check `SELECT 1`; 10 s for spilled payloads and the maintenance);
    /// the health check interval also runs the maintenance of the spill,
    /// history and session tables.
    pub broker: BrokerConfig,
    /// How long a spilled payload is kept for a listener that has not
    /// fetched it yet (listeners fetch right after the `NOTIFY`, so only a
    /// stuck or dead listener needs more than milliseconds). Older rows are
    /// deleted by the periodic maintenance and whenever room is needed.
    /// Default 30 s.
    pub spill_ttl: Duration,
    /// Upper bound, in **bytes** of payload, of the spill table
    /// ([`SPILL_TABLE`]), shared by every process using the database and
    /// enforced by PostgreSQL. A large broadcast that does not fit (after
    /// reclaiming rows no listener still needs) fails with
    /// [`BroadcastError::SpillFull`]. Default 64 MiB (`64 * 1024 * 1024`).
    pub max_spill_bytes: usize,
    /// Longest payload, in **bytes**, that may be broadcast (spilled or
    /// not); a longer one fails with [`BroadcastError::PayloadTooLarge`]
    /// without reaching the database. Default 1 MiB (`1024 * 1024`).
    pub max_payload_bytes: usize,
}

impl std::ops::Deref for PostgresConfig {
    type Target = BrokerConfig;
    fn deref(&self) -> &BrokerConfig {
        &self.broker
    }
}

impl AsRef<BrokerConfig> for PostgresConfig {
    fn as_ref(&self) -> &BrokerConfig {
        &self.broker
    }
}

impl std::ops::DerefMut for PostgresConfig {
    fn deref_mut(&mut self) -> &mut BrokerConfig {
        &mut self.broker
    }
}

impl PostgresConfig {
    /// Defaults for `url` (taken verbatim).
    pub fn new(url: impl Into<String>) -> Self {
        Self::with_broker(BrokerConfig::new(url))
    }

    fn with_broker(broker: BrokerConfig) -> Self {
        PostgresConfig {
            broker,
            spill_ttl: Duration::from_secs(30),
            max_spill_bytes: DEFAULT_MAX_SPILL_BYTES,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
        }
    }

    /// Defaults for `url`, taking Rails' `channel_prefix` from the URL's
    /// `channel_prefix` query parameter (removed from the URL given to the
    /// driver): `postgres://app@db/app?channel_prefix=myapp`. The rest is
    /// checked as the driver will read it (nothing connects).
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        let broker = BrokerConfig::from_url_unchecked(url);
        tokio_postgres::Config::from_str(&broker.url)
            .map_err(|e| ConfigError::invalid_url(BACKEND, &broker.url, e))?;
        Ok(Self::with_broker(broker))
    }

    /// Set Rails' `channel_prefix`.
    pub fn with_channel_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.broker.channel_prefix = Some(prefix.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact;

    #[test]
    fn defaults() {
        let c = PostgresConfig::new("postgres://h/db");
        assert_eq!(c.max_spill_bytes, 64 * 1024 * 1024);
        assert_eq!(c.max_payload_bytes, 1024 * 1024);
        assert_eq!(c.spill_ttl, Duration::from_secs(30));
    }

    #[test]
    fn urls() {
        let c =
            PostgresConfig::from_url("postgres://u:pw@h/db?channel_prefix=x&application_name=y")
                .unwrap();
        assert_eq!(c.url, "postgres://u:pw@h/db?application_name=y");
        assert_eq!(c.channel_prefix.as_deref(), Some("x"));
        assert!(!format!("{c:?}").contains("pw"));
        assert_eq!(
            redact("host=h password=secret user=u"),
            "host=h password=*** user=u"
        );
        assert!(PostgresConfig::from_url("postgres://h/db?nonsense_option=1").is_err());
    }
}
