//! Helpers shared by the Redis integration tests.

#![allow(dead_code)]

use std::io::Write;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keayl_redis::{RedisConfig, RedisPubSub};

/// Print to the real stderr, bypassing the test harness' capture (which
/// would hide a SKIPPED notice of a passing test).
macro_rules! loud {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

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

fn services_required() -> bool {
    std::env::var("KEAYL_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Whether the service at `addr` accepts TCP connections. When it does not,
/// prints a loud SKIPPED line and returns `false` — or panics when
/// `KEAYL_REQUIRE_SERVICES=1` (CI).
pub fn require_service(what: &str, addr: &str) -> bool {
    let reachable = addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .map(|a: SocketAddr| TcpStream::connect_timeout(&a, Duration::from_millis(500)));
    match reachable {
        Some(Ok(_)) => true,
        other => {
            let why = match other {
                Some(Err(e)) => e.to_string(),
                _ => "address does not resolve".into(),
            };
            if services_required() {
                panic!("{what} at {addr} is not reachable ({why}) and KEAYL_REQUIRE_SERVICES=1");
            }
            loud!(
                "\n************************************************************\n\
                 SKIPPED: {what} at {addr} not reachable ({why}).\n\
                 Start it, or set KEAYL_REQUIRE_SERVICES=1 to fail instead.\n\
                 ************************************************************\n"
            );
            false
        }
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
        loud!("\n*** SKIPPED: {program} is not installed (needed for a private broker) ***\n");
    }
    found
}

/// Fast-reconnecting test configuration for `url`.
pub fn fast_config(url: &str) -> RedisConfig {
    let mut c = RedisConfig::from_url(url).expect("valid Redis URL");
    c.reconnect_min = Duration::from_millis(50);
    c.reconnect_max = Duration::from_millis(400);
    c.command_timeout = Duration::from_secs(1);
    c.connect_timeout = Duration::from_secs(1);
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

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.thaw();
        self.kill();
    }
}

/// Captures every `tracing` event of the test binary (a global subscriber:
/// scoped ones lose events when tests run in parallel). Tests tell their
/// own lines apart by the private broker's port.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    pub fn capture() -> Self {
        static LOGS: std::sync::OnceLock<Logs> = std::sync::OnceLock::new();
        LOGS.get_or_init(|| {
            let logs = Logs::default();
            let writer = logs.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::DEBUG)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish();
            let _ = tracing::subscriber::set_global_default(subscriber);
            logs
        })
        .clone()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Whether a line contains every one of `needles`.
    pub fn has_line(&self, needles: &[&str]) -> bool {
        self.text()
            .lines()
            .any(|l| needles.iter().all(|n| l.contains(n)))
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
