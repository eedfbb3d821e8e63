//! Two `cable-fixture` processes on different ports sharing one broker
//! (Redis, then PostgreSQL), driven by WebSocket clients:
//! - a client on A receives what a client on B speaks;
//! - a `POST /_broadcast` on A reaches clients on B;
//! - a remote disconnect issued on A closes the user's connection on B;
//! - the broker is killed and restarted mid-test (a private instance on its
//!   own port): local clients keep being served during the outage, the
//!   outage is reported, and broadcasts flow again to the already-connected
//!   clients within 5 s of the broker's return.
//!
//! Tests needing a service skip loudly when it is absent, and fail instead
//! under `KEAYL_REQUIRE_SERVICES=1`.

#![cfg(any(feature = "redis", feature = "postgres"))]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Print to the real stderr, bypassing the test harness' capture (which
/// would hide a SKIPPED notice of a passing test).
macro_rules! loud {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const T: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Services.

fn services_required() -> bool {
    std::env::var("KEAYL_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

fn skip(what: &str) {
    loud!(
        "\n************************************************************\n\
         SKIPPED: {what}.\n\
         Set KEAYL_REQUIRE_SERVICES=1 to fail instead.\n\
         ************************************************************\n"
    );
}

/// Whether `addr` accepts TCP connections; a loud SKIPPED (or, under
/// `KEAYL_REQUIRE_SERVICES=1`, a panic) when it does not.
fn require_service(what: &str, addr: &str) -> bool {
    let reachable = addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .map(|a| TcpStream::connect_timeout(&a, Duration::from_millis(500)));
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
            skip(&format!("{what} at {addr} not reachable ({why})"));
            false
        }
    }
}

#[cfg(feature = "redis")]
fn redis_url() -> String {
    std::env::var("KEAYL_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

#[cfg(feature = "postgres")]
fn pg_url() -> String {
    std::env::var("KEAYL_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// `host:port` of a URL.
fn host_port(url: &str, default_port: u16) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let rest = &rest[..end];
    let hp = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    if hp.contains(':') {
        hp.to_owned()
    } else {
        format!("{hp}:{default_port}")
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn unique(label: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{label}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------------------
// The fixture processes.

/// A `cable-fixture` process; killed on drop.
struct Fixture {
    child: Child,
    addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Fixture {
    async fn start(pubsub: &str) -> Fixture {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cable-fixture"))
            .args(["--addr", "127.0.0.1:0", "--pubsub", pubsub])
            .env("RUST_LOG", "warn,keayl_redis=info,keayl_postgres=info")
            .env_remove("KEAYL_PUBSUB")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cable-fixture");
        // Logs go to stdout, the address line to stderr: keep both.
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
        let stderr: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
        for output in [stdout, stderr] {
            let (sink, tx) = (logs.clone(), tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(output).lines().map_while(Result::ok) {
                    if let Some(addr) = line.split("cable-fixture listening on ").nth(1) {
                        let _ = tx.send(addr.trim().to_owned());
                    }
                    sink.lock().unwrap().push(line);
                }
            });
        }
        let addr = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
            .await
            .unwrap()
            .expect("cable-fixture did not start");
        let fixture = Fixture {
            child,
            addr: addr.parse().unwrap(),
            logs,
        };
        // The broker link is up before clients come.
        let deadline = Instant::now() + Duration::from_secs(10);
        while fixture.health().await["up"] != true {
            assert!(
                Instant::now() < deadline,
                "fixture's pub/sub never came up: {}",
                fixture.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        fixture
    }

    fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    async fn health(&self) -> Value {
        let (_, body) = http(self.addr, "GET", "/_pubsub/health", None).await;
        serde_json::from_str(&body).unwrap_or(Value::Null)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 request; returns (status, body).
async fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(T, stream.read_to_end(&mut response))
        .await
        .expect("HTTP response timed out")
        .unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

// ---------------------------------------------------------------------------
// A WebSocket cable client.

struct Client {
    ws: Ws,
}

impl Client {
    async fn connect(addr: SocketAddr, user: &str) -> Client {
        let mut req = format!("ws://{addr}/cable?token={user}")
            .into_client_request()
            .unwrap();
        req.headers_mut().insert(
            "sec-websocket-protocol",
            "actioncable-v1-json, actioncable-unsupported"
                .parse()
                .unwrap(),
        );
        let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        let mut client = Client { ws };
        let welcome = client.next().await.expect("welcome");
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        client
    }

    /// The next frame that is not a ping; `None` when the connection closed
    /// (or nothing came within 5 s).
    async fn next_within(&mut self, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??;
            match msg {
                Ok(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["type"] != "ping" {
                        return Some(v);
                    }
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    async fn next(&mut self) -> Option<Value> {
        self.next_within(T).await
    }

    async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .unwrap();
    }

    async fn subscribe(&mut self, identifier: &Value) {
        let identifier = identifier.to_string();
        self.send(json!({"command": "subscribe", "identifier": identifier}))
            .await;
        let confirm = self.next().await.expect("confirmation");
        assert_eq!(confirm["type"], "confirm_subscription", "{confirm}");
        assert_eq!(confirm["identifier"], identifier.as_str());
    }

    async fn perform(&mut self, identifier: &Value, data: Value) {
        self.send(json!({
            "command": "message",
            "identifier": identifier.to_string(),
            "data": data.to_string(),
        }))
        .await;
    }

    /// Wait for a broadcast/transmission on `identifier` whose message
    /// satisfies `pred`; returns it.
    async fn expect_message(
        &mut self,
        identifier: &Value,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = self.next_within(left).await?;
            if frame["identifier"] == identifier.to_string().as_str() && pred(&frame["message"]) {
                return Some(frame["message"].clone());
            }
        }
    }
}

fn chat(room: &str) -> Value {
    json!({"channel": "ChatChannel", "room": room})
}

// ---------------------------------------------------------------------------
// Scenarios, run against each broker.

/// A client on A receives what a client on B speaks (and vice versa).
async fn speak_across(pubsub: &str) {
    let a = Fixture::start(pubsub).await;
    let b = Fixture::start(pubsub).await;
    let room = chat(&unique("room"));
    let mut alice = Client::connect(a.addr, "alice").await;
    let mut bob = Client::connect(b.addr, "bob").await;
    alice.subscribe(&room).await;
    bob.subscribe(&room).await;

    bob.perform(&room, json!({"action": "speak", "message": "hi from B ✓"}))
        .await;
    let got = alice
        .expect_message(&room, T, |m| m["message"] == "hi from B ✓")
        .await
        .unwrap_or_else(|| {
            panic!(
                "A did not receive B's message\nA: {}\nB: {}",
                a.logs(),
                b.logs()
            )
        });
    assert_eq!(got["from"], "bob");
    // The speaker's own process gets it too, through the broker.
    assert!(
        bob.expect_message(&room, T, |m| m["message"] == "hi from B ✓")
            .await
            .is_some()
    );

    alice
        .perform(&room, json!({"action": "speak", "message": "hi from A"}))
        .await;
    assert!(
        bob.expect_message(&room, T, |m| m["message"] == "hi from A")
            .await
            .is_some()
    );
}

/// `POST /_broadcast` on A reaches clients on B.
async fn http_broadcast_across(pubsub: &str) {
    let a = Fixture::start(pubsub).await;
    let b = Fixture::start(pubsub).await;
    let name = unique("room");
    let room = chat(&name);
    let mut bob = Client::connect(b.addr, "bob").await;
    bob.subscribe(&room).await;
    let body = json!({"stream": format!("room:{name}"), "data": json!({"via": "http", "text": "ünïcödé"}).to_string()});
    let (status, text) = http(a.addr, "POST", "/_broadcast", Some(&body.to_string())).await;
    assert_eq!(status, 201, "{text}");
    let got = bob
        .expect_message(&room, T, |m| m["via"] == "http")
        .await
        .unwrap_or_else(|| {
            panic!(
                "B did not receive A's /_broadcast\nA: {}\nB: {}",
                a.logs(),
                b.logs()
            )
        });
    assert_eq!(got["text"], "ünïcödé");
}

/// A remote disconnect issued on A (`ControlChannel#kick`) closes the user's
/// connection on B, and only that one.
async fn remote_disconnect_across(pubsub: &str) {
    let a = Fixture::start(pubsub).await;
    let b = Fixture::start(pubsub).await;
    let victim = unique("victim");
    let mut target = Client::connect(b.addr, &victim).await;
    let mut bystander = Client::connect(b.addr, &unique("bystander")).await;
    let room = chat(&unique("room"));
    bystander.subscribe(&room).await;

    let mut admin = Client::connect(a.addr, "admin").await;
    let control = json!({"channel": "ControlChannel"});
    admin.subscribe(&control).await;
    admin
        .perform(
            &control,
            json!({"action": "kick", "user": victim, "reconnect": true}),
        )
        .await;

    let frame = target
        .next()
        .await
        .unwrap_or_else(|| panic!("no disconnect on B\nA: {}\nB: {}", a.logs(), b.logs()));
    assert_eq!(frame["type"], "disconnect", "{frame}");
    assert_eq!(frame["reason"], "remote");
    assert_eq!(frame["reconnect"], true);
    assert!(
        target.next_within(T).await.is_none(),
        "connection not closed"
    );

    // The bystander on B is untouched.
    bystander
        .perform(&room, json!({"action": "echo", "still": "here"}))
        .await;
    assert!(
        bystander
            .expect_message(&room, T, |m| m["still"] == "here")
            .await
            .is_some()
    );
}

/// Kill the broker while clients are connected to two fixtures; restart it.
async fn broker_restart(pubsub: &str, kill: impl FnOnce(), restart: impl FnOnce()) {
    let a = Fixture::start(pubsub).await;
    let b = Fixture::start(pubsub).await;
    let room = chat(&unique("room"));
    let mut alice = Client::connect(a.addr, "alice").await;
    let mut bob = Client::connect(b.addr, "bob").await;
    alice.subscribe(&room).await;
    bob.subscribe(&room).await;
    bob.perform(&room, json!({"action": "speak", "message": "before"}))
        .await;
    assert!(
        alice
            .expect_message(&room, T, |m| m["message"] == "before")
            .await
            .is_some()
    );

    kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.health().await["up"] == true || b.health().await["up"] == true {
        assert!(
            Instant::now() < deadline,
            "outage not noticed\nA: {}",
            a.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The operations endpoint reports it too.
    let (status, _) = http(a.addr, "GET", "/health", None).await;
    assert_eq!(status, 503, "GET /health during the outage");
    let (_, metrics) = http(a.addr, "GET", "/metrics", None).await;
    assert!(metrics.contains("keayl_broker_up 0"), "{metrics}");
    // Local clients are still served (transmissions need no broker).
    bob.perform(&room, json!({"action": "echo", "during": "outage"}))
        .await;
    assert!(
        bob.expect_message(&room, T, |m| m["during"] == "outage")
            .await
            .is_some(),
        "a local client was not served during the outage"
    );
    // A broadcast during the outage fails loudly (counted and logged).
    bob.perform(&room, json!({"action": "speak", "message": "lost"}))
        .await;
    let deadline = Instant::now() + T;
    while b.health().await["lost_broadcasts"].as_u64().unwrap_or(0) == 0 {
        assert!(
            Instant::now() < deadline,
            "lost broadcast not counted: {}",
            b.health().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    restart();
    let back = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        bob.perform(
            &room,
            json!({"action": "speak", "message": format!("after {n}")}),
        )
        .await;
        if alice
            .expect_message(&room, Duration::from_millis(200), |m| {
                m["message"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("after"))
            })
            .await
            .is_some()
        {
            break;
        }
        assert!(
            back.elapsed() < T,
            "broadcasts did not flow again within 5 s of the broker's return\nA: {}\nB: {}",
            a.logs(),
            b.logs()
        );
    }
    for f in [&a, &b] {
        let (status, _) = http(f.addr, "GET", "/health", None).await;
        assert_eq!(status, 200, "GET /health after the outage");
        let h = f.health().await;
        assert_eq!(h["up"], true, "{h}");
        assert!(h["reconnects"].as_u64().unwrap() >= 1, "{h}");
        assert!(h["outages"].as_u64().unwrap() >= 1, "{h}");
        let logs = f.logs();
        assert!(
            logs.contains("connection lost"),
            "outage not logged:\n{logs}"
        );
        assert!(
            logs.contains("connection restored"),
            "recovery not logged:\n{logs}"
        );
    }
}

// ---------------------------------------------------------------------------
// Redis.

#[cfg(feature = "redis")]
mod redis {
    use super::*;

    fn available() -> bool {
        require_service("Redis", &host_port(&redis_url(), 6379))
    }

    #[tokio::test]
    async fn speak_on_b_reaches_a() {
        if available() {
            speak_across(&redis_url()).await;
        }
    }

    #[tokio::test]
    async fn http_broadcast_on_a_reaches_b() {
        if available() {
            http_broadcast_across(&redis_url()).await;
        }
    }

    #[tokio::test]
    async fn remote_disconnect_on_a_closes_the_connection_on_b() {
        if available() {
            remote_disconnect_across(&redis_url()).await;
        }
    }

    #[tokio::test]
    async fn prefixed_processes_share_broadcasts() {
        if available() {
            let base = redis_url();
            let sep = if base.contains('?') { '&' } else { '?' };
            let url = format!("{base}{sep}channel_prefix={}", unique("app"));
            speak_across(&url).await;
        }
    }

    /// A private `redis-server`, killed on drop.
    struct PrivateRedis {
        port: u16,
        child: Option<Child>,
    }

    impl PrivateRedis {
        fn start() -> Option<Arc<Mutex<PrivateRedis>>> {
            let found = Command::new("redis-server")
                .arg("--version")
                .stdout(Stdio::null())
                .status()
                .is_ok();
            if !found {
                if services_required() {
                    panic!("redis-server is not installed and KEAYL_REQUIRE_SERVICES=1");
                }
                skip("redis-server is not installed (needed for a private broker)");
                return None;
            }
            let mut r = PrivateRedis {
                port: free_port(),
                child: None,
            };
            r.restart();
            Some(Arc::new(Mutex::new(r)))
        }

        fn restart(&mut self) {
            self.child = Some(
                Command::new("redis-server")
                    .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
                    .args(["--save", "", "--appendonly", "no"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start redis-server"),
            );
            let addr = format!("127.0.0.1:{}", self.port);
            let deadline = Instant::now() + Duration::from_secs(10);
            while TcpStream::connect(&addr).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "private redis-server did not start"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }

        fn kill(&mut self) {
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    impl Drop for PrivateRedis {
        fn drop(&mut self) {
            self.kill();
        }
    }

    #[tokio::test]
    async fn redis_restart_mid_test() {
        let Some(redis) = PrivateRedis::start() else {
            return;
        };
        let url = format!("redis://127.0.0.1:{}", redis.lock().unwrap().port);
        let (k, r) = (redis.clone(), redis.clone());
        broker_restart(
            &url,
            move || k.lock().unwrap().kill(),
            move || r.lock().unwrap().restart(),
        )
        .await;
    }
}

// ---------------------------------------------------------------------------
// PostgreSQL.

#[cfg(feature = "postgres")]
mod postgres {
    use std::path::PathBuf;

    use super::*;

    fn available() -> bool {
        require_service("PostgreSQL", &host_port(&pg_url(), 5432))
    }

    #[tokio::test]
    async fn speak_on_b_reaches_a() {
        if available() {
            speak_across(&pg_url()).await;
        }
    }

    #[tokio::test]
    async fn http_broadcast_on_a_reaches_b() {
        if available() {
            http_broadcast_across(&pg_url()).await;
        }
    }

    #[tokio::test]
    async fn remote_disconnect_on_a_closes_the_connection_on_b() {
        if available() {
            remote_disconnect_across(&pg_url()).await;
        }
    }

    fn pg_bindir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("KEAYL_PG_BINDIR") {
            return Some(dir.into());
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").exists())
            .collect();
        found.sort();
        found.pop()
    }

    fn as_postgres(program: PathBuf) -> Command {
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

    /// An `initdb`-ed cluster to copy (initdb takes seconds, a copy a
    /// fraction): made once, atomically, in the temporary directory and kept
    /// for later runs (`keayl-pg-template-<version>`, shared with
    /// keayl-postgres' tests).
    fn template(bindir: &std::path::Path) -> PathBuf {
        let version = bindir
            .parent()
            .and_then(|p| p.file_name())
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!("keayl-pg-template-{version}"));
        if dir.join("PG_VERSION").exists() {
            return dir;
        }
        let tmp = std::env::temp_dir().join(unique(&format!("keayl-pg-template-{version}")));
        let ok = as_postgres(bindir.join("initdb"))
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
            .is_ok_and(|s| s.success());
        assert!(ok, "initdb failed");
        match std::fs::rename(&tmp, &dir) {
            Ok(()) => dir,
            Err(_) if dir.join("PG_VERSION").exists() => {
                let _ = std::fs::remove_dir_all(&tmp);
                dir
            }
            Err(_) => tmp,
        }
    }

    /// A private PostgreSQL (a copy of the template cluster in a temporary
    /// directory); stopped and removed on drop.
    struct PrivatePostgres {
        port: u16,
        bindir: PathBuf,
        dir: PathBuf,
        child: Option<Child>,
    }

    impl PrivatePostgres {
        fn start() -> Option<Arc<Mutex<PrivatePostgres>>> {
            let Some(bindir) = pg_bindir() else {
                if services_required() {
                    panic!("PostgreSQL server binaries not found and KEAYL_REQUIRE_SERVICES=1");
                }
                skip("PostgreSQL server binaries (initdb) not found; set KEAYL_PG_BINDIR");
                return None;
            };
            let dir = std::env::temp_dir().join(unique("keayl-pg-demo"));
            let ok = Command::new("cp")
                .arg("-a")
                .arg(template(&bindir))
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "copying the template cluster failed");
            let mut pg = PrivatePostgres {
                port: free_port(),
                bindir,
                dir,
                child: None,
            };
            pg.restart();
            Some(Arc::new(Mutex::new(pg)))
        }

        fn restart(&mut self) {
            self.child = Some(
                as_postgres(self.bindir.join("postgres"))
                    .arg("-D")
                    .arg(&self.dir)
                    .args(["-p", &self.port.to_string()])
                    .args([
                        "-c",
                        "listen_addresses=127.0.0.1",
                        "-c",
                        "unix_socket_directories=",
                    ])
                    .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start postgres"),
            );
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

        /// Immediate shutdown (SIGQUIT to the postmaster): a crash.
        fn kill(&mut self) {
            if let Some(pid) = std::fs::read_to_string(self.dir.join("postmaster.pid"))
                .ok()
                .and_then(|t| t.lines().next().map(|l| l.trim().to_owned()))
            {
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

    #[tokio::test]
    async fn postgres_restart_mid_test() {
        let Some(pg) = PrivatePostgres::start() else {
            return;
        };
        let url = format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            pg.lock().unwrap().port
        );
        let (k, r) = (pg.clone(), pg.clone());
        broker_restart(
            &url,
            move || k.lock().unwrap().kill(),
            move || r.lock().unwrap().restart(),
        )
        .await;
    }
}
