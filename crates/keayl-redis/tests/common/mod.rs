//! Helpers shared by the Redis integration tests.

#![allow(dead_code)]

#[path = "../../../keayl-cable/tests/support/broker.rs"]
mod support;
#[path = "../../../keayl-cable/tests/support/faults.rs"]
pub mod faults;

pub use support::*;

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// Whether `program` can be run; like [`require_service`] otherwise.
pub fn require_program(program: &str) -> bool {
    let found = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        if services_required() {
            panic!("{program} is not installed and KEAYL_REQUIRE_SERVICES=1");
        }
        skip(&format!(
            "{program} is not installed (needed for a private broker)"
        ));
    }
    found
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

/// A `redis-server` of the test's own, on its own port, without
/// persistence; killed on drop.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Self {
        let mut r = PrivateRedis { port, child: None };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Start it (again) on the same port; waits until it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            assert!(
                Instant::now() < deadline,
                "private redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kill it (SIGKILL: no goodbye to the clients).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status();
        }
    }

    /// Freeze it (SIGSTOP): connections stay open, nothing answers — a
    /// network cut as the client sees it.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Thaw it (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }
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
        require_program("redis-server").then(|| PrivateRedis::start_on(port))
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn kill(&mut self) {
        PrivateRedis::kill(self)
    }
    fn restart(&mut self) {
        PrivateRedis::restart(self)
    }
    fn freeze(&self) {
        PrivateRedis::freeze(self)
    }
    fn thaw(&self) {
        PrivateRedis::thaw(self)
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

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.thaw();
        self.kill();
    }
}
