//! Helpers shared by the PostgreSQL integration tests.

#![allow(dead_code)]

#[path = "../../../keayl-cable/tests/support/broker.rs"]
mod support;

pub use support::*;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use keayl_postgres::{PostgresConfig, PostgresPubSub};

/// The database the tests use (`KEAYL_POSTGRES_URL`, default the machine's
/// `test` database).
pub fn pg_url() -> String {
    std::env::var("KEAYL_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// `host:port` of a `postgres://…` URL.
pub fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let rest = &rest[..end];
    let hp = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    if hp.contains(':') {
        hp.to_owned()
    } else {
        format!("{hp}:5432")
    }
}

/// `url` with `application_name` set (to find the backend's sessions).
pub fn with_app_name(url: &str, name: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}application_name={name}")
}

/// A unique application name.
pub fn unique_app_name(label: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "keayl-test-{label}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether the machine's PostgreSQL is reachable (see [`require_service`]).
pub fn require_pg() -> bool {
    require_service("PostgreSQL", &host_port(&pg_url()))
}

/// Fast-reconnecting test configuration for `url`.
pub fn fast_config(url: &str) -> PostgresConfig {
    let mut c = PostgresConfig::from_url(url).expect("valid PostgreSQL URL");
    c.reconnect_min = Duration::from_millis(50);
    c.reconnect_max = Duration::from_millis(400);
    c.command_timeout = Duration::from_secs(1);
    c.connect_timeout = Duration::from_secs(1);
    c
}

/// A connected backend (waits until it is up).
pub async fn connected(config: PostgresConfig) -> PostgresPubSub {
    let p = PostgresPubSub::new(config).expect("backend starts");
    assert!(
        p.health().wait_up(Duration::from_secs(10)).await,
        "backend did not connect: {:?}",
        p.health()
    );
    p
}

/// A plain connection (standing in for a Rails process, or for
/// inspection); its driver runs on a task.
pub async fn raw_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

fn pg_bindir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("KEAYL_PG_BINDIR") {
        return Some(dir.into());
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists() && b.join("postgres").exists())
        .collect();
    found.sort();
    found.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A command running `program` as the `postgres` user when we are root
/// (PostgreSQL refuses to run as root).
fn pg_command(program: PathBuf) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// An `initdb`-ed cluster to copy (initdb takes seconds, a copy a fraction):
/// made once, atomically, in the temporary directory and kept for later
/// runs (`keayl-pg-template-<version>`).
fn template(bindir: &std::path::Path) -> PathBuf {
    static TEMPLATE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            let version = bindir
                .parent()
                .and_then(|p| p.file_name())
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let dir = std::env::temp_dir().join(format!("keayl-pg-template-{version}"));
            if dir.join("PG_VERSION").exists() {
                return dir;
            }
            let tmp = std::env::temp_dir().join(format!(
                "keayl-pg-template-{version}.{}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&tmp);
            let status = pg_command(bindir.join("initdb"))
                .arg("-D")
                .arg(&tmp)
                .args([
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "--no-instructions",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("run initdb");
            assert!(status.success(), "initdb failed");
            match std::fs::rename(&tmp, &dir) {
                Ok(()) => dir,
                // Another test process made it first.
                Err(_) if dir.join("PG_VERSION").exists() => {
                    let _ = std::fs::remove_dir_all(&tmp);
                    dir
                }
                Err(_) => tmp,
            }
        })
        .clone()
}

/// A PostgreSQL server of the test's own (a copy of the template cluster
/// in a temporary directory, its own port, trust auth, no fsync); stopped
/// and removed on drop.
pub struct PrivatePostgres {
    pub port: u16,
    bindir: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivatePostgres {
    /// `None` (after a loud SKIPPED, or a panic under CI) when the server
    /// binaries are not installed.
    pub fn start() -> Option<Self> {
        Self::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Option<Self> {
        let Some(bindir) = pg_bindir() else {
            if services_required() {
                panic!(
                    "PostgreSQL server binaries (initdb) not found and KEAYL_REQUIRE_SERVICES=1"
                );
            }
            skip("PostgreSQL server binaries (initdb, postgres) not found; set KEAYL_PG_BINDIR");
            return None;
        };
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "keayl-pg-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let status = Command::new("cp")
            .arg("-a")
            .arg(template(&bindir))
            .arg(&dir)
            .status()
            .expect("copy the template cluster");
        assert!(status.success(), "copying the template cluster failed");
        let mut pg = PrivatePostgres {
            port,
            bindir,
            dir,
            child: None,
        };
        pg.restart();
        Some(pg)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Start it (again); waits until it accepts queries.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = pg_command(self.bindir.join("postgres"))
            .arg("-D")
            .arg(&self.dir)
            .args(["-p", &self.port.to_string()])
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=",
            ])
            .args([
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "synchronous_commit=off",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = Command::new(self.bindir.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "private postgres did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn postmaster_pid(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.dir.join("postmaster.pid")).ok()?;
        text.lines().next().map(|l| l.trim().to_owned())
    }

    /// Crash-stop it (SIGQUIT: immediate shutdown, no goodbye to clients).
    pub fn kill(&mut self) {
        if let Some(pid) = self.postmaster_pid() {
            let _ = Command::new("kill").args(["-QUIT", &pid]).status();
        }
        if let Some(mut c) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = std::fs::remove_file(self.dir.join("postmaster.pid"));
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Pauses a server process (SIGSTOP) until dropped (SIGCONT): a silent
/// network cut as its client sees it.
pub struct Frozen(pub i32);

impl Frozen {
    pub fn new(pid: i32) -> Self {
        let _ = Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status();
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}
