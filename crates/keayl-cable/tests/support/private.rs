//! Broker servers of a test's own: `redis-server`, `nats-server` and a
//! PostgreSQL cluster, each on its own port, started, killed (no goodbye to
//! the clients), restarted on the same port, and frozen (SIGSTOP: a silent
//! network cut as the clients see it). Included next to `broker.rs` (which
//! it uses as `super::support`) by the backends' tests and the demo's
//! two-process tests:
//! `#[path = "…/keayl-cable/tests/support/private.rs"] mod private;`.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::support::{free_port, services_required, skip};

/// Whether `program` can be run; a loud SKIPPED (or, under
/// `KEAYL_REQUIRE_SERVICES=1`, a panic) otherwise.
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
            "no {program} installed, needed for a private broker"
        ));
    }
    found
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
        assert!(Instant::now() < deadline, "private {what} did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
}

/// A server process: spawned from a command line, killed on drop.
/// [`PrivateRedis`] and [`PrivateNats`] are one of these (through `Deref`).
pub struct Process {
    program: String,
    args: Vec<String>,
    ports: Vec<u16>,
    child: Option<Child>,
}

impl Process {
    /// Start it (again) on the same ports; waits until they accept
    /// connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.program));
        self.child = Some(child);
        for &port in &self.ports {
            wait_for_port(port, &self.program);
        }
    }

    /// Kill it (SIGKILL: no goodbye to the clients).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freeze it (SIGSTOP): connections stay open, nothing answers.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Thaw it (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            signal(c.id(), sig);
        }
    }
}

macro_rules! is_a_process {
    ($server:ty) => {
        impl std::ops::Deref for $server {
            type Target = Process;
            fn deref(&self) -> &Process {
                &self.process
            }
        }

        impl std::ops::DerefMut for $server {
            fn deref_mut(&mut self) -> &mut Process {
                &mut self.process
            }
        }
    };
}

impl Drop for Process {
    fn drop(&mut self) {
        self.signal("-CONT");
        self.kill();
    }
}

/// A `redis-server` without persistence.
pub struct PrivateRedis {
    pub port: u16,
    process: Process,
}

impl PrivateRedis {
    /// `None` (after a loud skip) when `redis-server` is not installed.
    pub fn start() -> Option<Self> {
        Self::start_on(free_port())
    }

    /// On `port`.
    pub fn start_on(port: u16) -> Option<Self> {
        if !require_program("redis-server") {
            return None;
        }
        let args = ["--port", &port.to_string(), "--bind", "127.0.0.1"]
            .into_iter()
            .chain(["--save", "", "--appendonly", "no"])
            .map(str::to_owned)
            .collect();
        let mut r = PrivateRedis {
            port,
            process: Process {
                program: "redis-server".into(),
                args,
                ports: vec![port],
                child: None,
            },
        };
        r.restart();
        Some(r)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

is_a_process!(PrivateRedis);

/// `nats-server` on PATH, or Debian's in /usr/sbin.
fn nats_server() -> &'static str {
    if Command::new("nats-server")
        .arg("--version")
        .output()
        .is_ok()
    {
        "nats-server"
    } else {
        "/usr/sbin/nats-server"
    }
}

/// A `nats-server` (no JetStream) with its monitoring port open, to count
/// connections.
pub struct PrivateNats {
    pub port: u16,
    monitor: u16,
    process: Process,
}

impl PrivateNats {
    /// `None` (after a loud skip) when `nats-server` is not installed.
    pub fn start() -> Option<Self> {
        Self::start_on(free_port())
    }

    /// On `port`.
    pub fn start_on(port: u16) -> Option<Self> {
        let program = nats_server();
        if !require_program(program) {
            return None;
        }
        let monitor = free_port();
        let args = [
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
            &monitor.to_string(),
        ]
        .map(str::to_owned)
        .to_vec();
        let mut n = PrivateNats {
            port,
            monitor,
            process: Process {
                program: program.into(),
                args,
                ports: vec![port, monitor],
                child: None,
            },
        };
        n.restart();
        Some(n)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// `num_connections` from the monitoring endpoint `/connz`.
    pub fn connections(&self) -> usize {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(("127.0.0.1", self.monitor)).expect("monitor port");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET /connz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        let at = body
            .find("\"num_connections\":")
            .expect("num_connections in /connz");
        body[at + "\"num_connections\":".len()..]
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .expect("a number")
    }
}

is_a_process!(PrivateNats);

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

/// A command running `program` as the `postgres` user when we are root
/// (PostgreSQL refuses to run as root).
fn pg_command(program: PathBuf) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if root {
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
                .args(["-U", "postgres", "--auth=trust", "-E", "UTF8"])
                .args(["--no-sync", "--no-instructions"])
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

/// A PostgreSQL server (a copy of the template cluster in a temporary
/// directory, its own port, trust auth, no fsync); stopped and removed on
/// drop.
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
            skip("no PostgreSQL server binaries (initdb, postgres) found; set KEAYL_PG_BINDIR");
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
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "synchronous_commit=off"])
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
        signal(pid as u32, "-STOP");
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal(self.0 as u32, "-CONT");
    }
}
