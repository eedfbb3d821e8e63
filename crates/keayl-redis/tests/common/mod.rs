//! Helpers shared by the Redis integration tests.

#![allow(dead_code)]

#[path = "../../../keayl-cable/tests/support/faults.rs"]
pub mod faults;
#[path = "../../../keayl-cable/tests/support/private.rs"]
mod private;
#[path = "../../../keayl-cable/tests/support/broker.rs"]
mod support;

pub use private::PrivateRedis;
#[allow(unused_imports)]
pub use support::*;

use std::time::Duration;

use keayl_redis::{RedisConfig, RedisPubSub};

/// The Redis the tests use (`KEAYL_REDIS_URL`, default the machine's).
pub fn redis_url() -> String {
    std::env::var("KEAYL_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// `host:port` of a `redis://host:port/…` URL.
pub fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let hp = &rest[..end];
    if hp.contains(':') {
        hp.to_owned()
    } else {
        format!("{hp}:6379")
    }
}

/// Fast-reconnecting test configuration for `url`.
pub fn fast_config(url: &str) -> RedisConfig {
    let mut c = keayl_redis::config_from_url(url).expect("valid Redis URL");
    faults::fast(&mut c);
    c
}

/// A connected backend (waits until it is up).
pub async fn connected(config: RedisConfig) -> RedisPubSub {
    let r = RedisPubSub::new(config).expect("backend starts");
    assert!(
        r.health().wait_up(Duration::from_secs(5)).await,
        "backend did not connect: {:?}",
        r.health()
    );
    r
}

/// Connected clients, from `INFO clients` (the probe's own included).
async fn connected_clients(url: &str) -> usize {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

impl faults::PrivateBroker for PrivateRedis {
    fn start_on(port: u16) -> Option<Self> {
        PrivateRedis::start_on(port)
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn kill(&mut self) {
        private::Process::kill(self)
    }
    fn restart(&mut self) {
        private::Process::restart(self)
    }
    fn freeze(&self) {
        private::Process::freeze(self)
    }
    fn thaw(&self) {
        private::Process::thaw(self)
    }
    async fn connected_clients(&self) -> usize {
        connected_clients(&self.url()).await
    }
}

/// The Redis backend under the shared fault checks.
pub struct Redis;

impl faults::TestBackend for Redis {
    type Client = keayl_redis::RedisClient;
    type Broker = PrivateRedis;
    /// One subscriber and one publisher connection.
    const CONNECTIONS: usize = 2;

    fn url(port: u16) -> String {
        format!("redis://127.0.0.1:{port}")
    }

    fn config(url: &str, tweak: &dyn Fn(&mut keayl_broker::BrokerConfig)) -> RedisConfig {
        let mut c = fast_config(url);
        tweak(&mut c);
        c
    }
}
