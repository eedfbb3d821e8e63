//! Two `cable-fixture` processes on different ports sharing one broker
//! (Redis, PostgreSQL, NATS), driven by WebSocket clients:
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

#![cfg(any(feature = "redis", feature = "postgres", feature = "nats"))]

#[path = "support/metrics.rs"]
mod metrics;
#[path = "../../../crates/keayl-cable/tests/support/private.rs"]
mod private;
#[allow(dead_code)]
#[path = "../../../crates/keayl-cable/tests/support/broker.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const T: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Services.

use support::require_service;

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
            .env(
                "RUST_LOG",
                "warn,keayl_broker=info,keayl_redis=info,keayl_postgres=info,keayl_nats=info",
            )
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
    /// Connect over `actioncable-v1-ext-json` (with `?sid=` when given);
    /// returns the client and its welcome.
    async fn connect_ext(addr: SocketAddr, query: &str) -> (Client, Value) {
        let mut req = format!("ws://{addr}/cable?{query}")
            .into_client_request()
            .unwrap();
        req.headers_mut().insert(
            "sec-websocket-protocol",
            "actioncable-v1-ext-json".parse().unwrap(),
        );
        let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        let mut client = Client { ws };
        let welcome = client.next().await.expect("welcome");
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        (client, welcome)
    }

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

/// A client on A loses its socket; broadcasts go on through B; it comes
/// back on B with its session id. With a backend that keeps history and
/// sessions (`reliable`) the session is restored there (no `connect`: the
/// identity comes from the session) and a `history` request from its last
/// position gets exactly the missed messages; without (NATS) it gets a new
/// session and `reject_history`: a gap, never silence.
async fn restore_on_the_other_process(pubsub: &str, reliable: bool) {
    let a = Fixture::start(pubsub).await;
    let b = Fixture::start(pubsub).await;
    let name = unique("room");
    let room = chat(&name);
    let identifier = room.to_string();
    let broadcast = |at: SocketAddr, n: u64| {
        let body = json!({"stream": format!("room:{name}"), "data": json!({"n": n}).to_string()});
        async move {
            let (status, text) = http(at, "POST", "/_broadcast", Some(&body.to_string())).await;
            assert_eq!(status, 201, "{text}");
        }
    };
    let (mut alice, welcome) = Client::connect_ext(a.addr, "token=alice").await;
    let sid = welcome["sid"].as_str().expect("a sid").to_owned();
    alice.subscribe(&room).await;
    broadcast(a.addr, 1).await;
    let first = alice.next().await.expect("message 1");
    assert_eq!(first["message"], json!({"n": 1}), "{first}");
    if reliable {
        assert_eq!(first["stream_id"], format!("room:{name}"));
        assert_eq!(first["offset"], 1, "{first}");
    } else {
        assert_eq!(
            first.get("offset"),
            None,
            "no positions without history: {first}"
        );
    }
    drop(alice);
    broadcast(b.addr, 2).await;
    broadcast(b.addr, 3).await;

    // Back, on the other process, without the token: only the session
    // says who this is.
    let (mut back, welcome) = Client::connect_ext(b.addr, &format!("sid={sid}")).await;
    if !reliable {
        assert_eq!(welcome.get("restored"), None, "{welcome}");
        back.send(json!({"command": "subscribe", "identifier": identifier,
            "history": {"streams": {format!("room:{name}"): {"offset": 1, "epoch": "e"}}}}))
            .await;
        assert_eq!(
            back.next().await.expect("confirm")["type"],
            "confirm_subscription"
        );
        let answer = back.next().await.expect("the history answer");
        assert_eq!(
            answer,
            json!({"type": "reject_history", "identifier": identifier})
        );
        return;
    }
    assert_eq!(
        welcome["restored"],
        true,
        "{welcome}
B: {}",
        b.logs()
    );
    assert_eq!(welcome["restored_ids"], json!([identifier]));
    back.send(json!({"command": "history", "identifier": identifier,
        "history": {"streams": {format!("room:{name}"): {"offset": 1, "epoch": first["epoch"]}}}}))
        .await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(back.next().await.expect("history"));
    }
    assert_eq!(got[0]["message"], json!({"n": 2}), "{got:?}");
    assert_eq!(got[1]["message"], json!({"n": 3}), "{got:?}");
    assert_eq!(
        (got[0]["offset"].clone(), got[1]["offset"].clone()),
        (json!(2), json!(3))
    );
    assert_eq!(
        got[2],
        json!({"type": "confirm_history", "identifier": identifier})
    );
    // The restored identity speaks.
    back.perform(&room, json!({"action": "speak", "message": "back"}))
        .await;
    let said = back
        .expect_message(&room, T, |m| m["message"] == "back")
        .await
        .expect("the speak");
    assert_eq!(said["from"], "alice");
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
    assert_eq!(
        metrics::sample(&metrics, "keayl_broker_up"),
        0.0,
        "{metrics}"
    );
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
// The backends: the same checks on each, and the broker restarted mid-test
// (a private server of the test's own).

/// `url` with Rails' `channel_prefix` query parameter added.
fn with_prefix(url: &str, prefix: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}channel_prefix={prefix}")
}

macro_rules! across_processes {
    ($backend:ident, $feature:literal, $service:literal, $url:expr, $port:literal, $private:ty, reliable: $reliable:literal) => {
        #[cfg(feature = $feature)]
        mod $backend {
            use super::*;

            fn url() -> String {
                $url
            }

            fn available() -> bool {
                require_service($service, &host_port(&url(), $port))
            }

            #[tokio::test]
            async fn speak_on_b_reaches_a() {
                if available() {
                    speak_across(&url()).await;
                }
            }

            #[tokio::test]
            async fn http_broadcast_on_a_reaches_b() {
                if available() {
                    http_broadcast_across(&url()).await;
                }
            }

            #[tokio::test]
            async fn remote_disconnect_on_a_closes_the_connection_on_b() {
                if available() {
                    remote_disconnect_across(&url()).await;
                }
            }

            #[tokio::test]
            async fn a_session_is_restored_on_the_other_process() {
                if available() {
                    restore_on_the_other_process(&url(), $reliable).await;
                }
            }

            #[tokio::test]
            async fn prefixed_processes_share_broadcasts() {
                if available() {
                    speak_across(&with_prefix(&url(), &unique("app"))).await;
                }
            }

            #[tokio::test]
            async fn broker_restart_mid_test() {
                let Some(broker) = <$private>::start() else {
                    return;
                };
                let url = broker.url();
                let broker = Arc::new(Mutex::new(broker));
                let (k, r) = (broker.clone(), broker.clone());
                broker_restart(
                    &url,
                    move || k.lock().unwrap().kill(),
                    move || r.lock().unwrap().restart(),
                )
                .await;
            }
        }
    };
}

across_processes!(
    redis,
    "redis",
    "Redis",
    std::env::var("KEAYL_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
    6379,
    private::PrivateRedis,
    reliable: true
);
across_processes!(
    postgres,
    "postgres",
    "PostgreSQL",
    std::env::var("KEAYL_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
    5432,
    private::PrivatePostgres,
    reliable: true
);
across_processes!(
    nats,
    "nats",
    "NATS",
    std::env::var("KEAYL_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into()),
    4222,
    private::PrivateNats,
    reliable: false
);
