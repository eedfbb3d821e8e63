//! Helpers shared by the NATS integration tests.

#![allow(dead_code)]

#[path = "../../../keayl-cable/tests/support/broker.rs"]
mod support;
#[path = "../../../keayl-cable/tests/support/faults.rs"]
pub mod faults;

pub use support::*;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

const NATS_SERVER: &str = "nats-server";

/// A `nats-server` of the test's own (no JetStream), with its monitoring
/// port open to count connections; killed on drop.
pub struct PrivateNats {
    pub port: u16,
    monitor: u16,
    child: Option<Child>,
}

impl PrivateNats {
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(program())
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-m",
                &self.monitor.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in [self.port, self.monitor] {
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
                assert!(Instant::now() < deadline, "private nats-server did not start");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill").args([sig, &c.id().to_string()]).status();
        }
    }

    /// `num_connections` from the monitoring endpoint `/varz`-style `/connz`.
    fn connections(&self) -> usize {
        let mut s = TcpStream::connect(("127.0.0.1", self.monitor)).expect("monitor port");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET /connz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        let json = &body[body.find("\r\n\r\n").expect("HTTP response") + 4..];
        let v: serde_json::Value = serde_json::from_str(json).expect("connz JSON");
        v["num_connections"].as_u64().expect("num_connections") as usize
    }
}

/// `nats-server` (on PATH, or Debian's /usr/sbin).
fn program() -> &'static str {
    if Command::new(NATS_SERVER).arg("--version").output().is_ok() {
        NATS_SERVER
    } else {
        "/usr/sbin/nats-server"
    }
}

impl faults::PrivateBroker for PrivateNats {
    fn start_on(port: u16) -> Option<Self> {
        let found = Command::new(program())
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            if services_required() {
                panic!("nats-server is not installed and KEAYL_REQUIRE_SERVICES=1");
            }
            skip("nats-server is not installed (needed for a private broker)");
            return None;
        }
        let mut n = PrivateNats {
            port,
            monitor: free_port(),
            child: None,
        };
        n.spawn();
        Some(n)
    }

    fn port(&self) -> u16 {
        self.port
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn restart(&mut self) {
        self.spawn();
    }

    fn freeze(&self) {
        self.signal("-STOP");
    }

    fn thaw(&self) {
        self.signal("-CONT");
    }

    async fn connected_clients(&self) -> usize {
        self.connections()
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        faults::PrivateBroker::thaw(self);
        faults::PrivateBroker::kill(self);
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
