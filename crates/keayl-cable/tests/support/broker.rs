//! Test helpers shared by the networked backends' integration tests
//! (`keayl-redis`, `keayl-postgres`), included with
//! `#[path = "../../../keayl-cable/tests/support/broker.rs"] mod support;`
//! from their `tests/common/mod.rs`: skipping (or, under CI, failing) when a
//! service is missing, free ports, and captured logs. (Not a test target of
//! keayl-cable itself: Cargo only builds `tests/*.rs`.)

use std::io::Write;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Whether missing services fail the tests (`KEAYL_REQUIRE_SERVICES=1`, CI)
/// instead of skipping them.
pub fn services_required() -> bool {
    std::env::var("KEAYL_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Print a loud `SKIPPED (what)` notice to the real stderr, bypassing the
/// test harness' capture (which would hide it for a passing test).
/// `scripts/test.sh` counts these lines in its summary.
pub fn skip(what: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "\n************************************************************\n\
         SKIPPED ({what})\n\
         Set KEAYL_REQUIRE_SERVICES=1 to fail instead.\n\
         ************************************************************\n"
    );
}

/// Whether the service at `addr` accepts TCP connections. When it does not,
/// prints a loud SKIPPED notice and returns `false` — or panics when
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
            skip(&format!("no {what} at {addr}: {why}"));
            false
        }
    }
}

/// A free TCP port on 127.0.0.1, never the same twice in one test binary
/// (tests running in parallel must not meet on a port one of them left
/// free on purpose, for a broker that is absent or yet to start).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Captures every `tracing` event of the test binary (a global subscriber:
/// scoped ones lose events when tests run in parallel). Tests tell their
/// own lines apart by the private broker's port or a unique name.
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
