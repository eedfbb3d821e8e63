//! Helpers shared by the NATS integration tests.

#![allow(dead_code)]

#[path = "../../../keayl-cable/tests/support/faults.rs"]
pub mod faults;
#[path = "../../../keayl-cable/tests/support/private.rs"]
mod private;
#[path = "../../../keayl-cable/tests/support/broker.rs"]
mod support;

pub use private::PrivateNats;
#[allow(unused_imports)]
pub use support::*;

use std::time::Duration;

use keayl_broker::BrokerConfig;
use keayl_nats::{NatsClient, NatsConfig, NatsPubSub};

/// The NATS server the tests use (`KEAYL_NATS_URL`, default the machine's).
pub fn nats_url() -> String {
    std::env::var("KEAYL_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// `host:port` of a `nats://host:port` URL.
pub fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let end = rest.find(['/', '?', ',']).unwrap_or(rest.len());
    let hp = &rest[..end];
    if hp.contains(':') {
        hp.to_owned()
    } else {
        format!("{hp}:4222")
    }
}

/// Whether the machine's NATS server is up (loud skip otherwise; a panic
/// under `KEAYL_REQUIRE_SERVICES=1`).
pub fn require_nats() -> bool {
    require_service("NATS", &host_port(&nats_url()))
}

/// A connected backend (waits until it is up).
pub async fn connected(config: NatsConfig) -> NatsPubSub {
    let n = NatsPubSub::new(config).expect("backend starts");
    assert!(
        n.health().wait_up(Duration::from_secs(5)).await,
        "backend did not connect: {:?}",
        n.health()
    );
    n
}

impl faults::PrivateBroker for PrivateNats {
    fn start_on(port: u16) -> Option<Self> {
        PrivateNats::start_on(port)
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
        self.connections()
    }
}

/// The NATS backend under the shared fault checks.
pub struct Nats;

impl faults::TestBackend for Nats {
    type Client = NatsClient;
    type Broker = PrivateNats;
    const CONNECTIONS: usize = 1;

    fn url(port: u16) -> String {
        format!("nats://127.0.0.1:{port}")
    }

    fn config(url: &str, tweak: &dyn Fn(&mut BrokerConfig)) -> NatsConfig {
        let mut c = keayl_nats::config_from_url(url).expect("valid NATS URL");
        faults::fast(&mut c);
        tweak(&mut c);
        c
    }
}
