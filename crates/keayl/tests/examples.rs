//! Smoke tests of `crates/keayl/examples`: each example binary is started on
//! a free loopback port (`--addr 127.0.0.1:0`, the address read back from
//! its `listening on …` line) and one real behaviour is checked over real
//! sockets.
//!
//! The binaries are the ones Cargo built next to this test
//! (`target/<profile>/examples/<name>`): `cargo test --workspace` builds
//! them; with a narrower command run `cargo build -p keayl --examples
//! --all-features` first. A missing binary is a loud `SKIPPED`, as is a
//! Redis that is not reachable at 127.0.0.1:6379 (a failure instead under
//! `KEAYL_REQUIRE_SERVICES=1`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// How long one step (a frame, an event, a line, a response) may take.
const T: Duration = Duration::from_secs(10);

/// Print to the real stderr, bypassing the test harness' capture (which
/// would hide a SKIPPED notice of a passing test).
macro_rules! loud {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

fn skip(what: &str) {
    loud!(
        "\n************************************************************\n\
         SKIPPED ({what})\n\
         ************************************************************\n"
    );
}

// ---------------------------------------------------------------------------
// The example processes.

/// `target/<profile>/examples/<name>`, from this test's own path
/// (`target/<profile>/deps/examples-<hash>`).
fn example_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>");
    profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

/// A running example; killed when dropped (its output is printed if the
/// test is failing).
struct Example {
    name: &'static str,
    addr: SocketAddr,
    output: Arc<Mutex<Vec<String>>>,
    _child: Child,
}

impl Example {
    /// Start example `name` with `args`, or `None` after a loud SKIPPED when
    /// it was not built.
    async fn start(name: &'static str, args: &[&str]) -> Option<Example> {
        let path = example_path(name);
        if !path.is_file() {
            skip(&format!(
                "example `{name}` is not built ({} missing; `cargo build -p keayl --examples \
                 --all-features` builds it)",
                path.display()
            ));
            return None;
        }
        let mut child = Command::new(&path)
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .env_remove("ADDR")
            .env_remove("KEAYL_PUBSUB")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", path.display()));
        let output = Arc::new(Mutex::new(Vec::new()));

        let stderr = child.stderr.take().unwrap();
        let sink = output.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });

        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let sink = output.clone();
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = stdout.next_line().await {
                sink.lock().unwrap().push(line.clone());
                if let Some(addr) = line.strip_prefix("listening on ") {
                    return Some(addr.trim().parse::<SocketAddr>().expect("an address"));
                }
            }
            None
        })
        .await;
        let addr = match addr {
            Ok(Some(addr)) => addr,
            other => panic!(
                "{name} did not print `listening on <addr>` ({}); its output:\n{}",
                if other.is_err() {
                    "timed out"
                } else {
                    "exited"
                },
                output.lock().unwrap().join("\n")
            ),
        };
        tokio::spawn(async move {
            while let Ok(Some(line)) = stdout.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        Some(Example {
            name,
            addr,
            output,
            _child: child,
        })
    }

    /// Wait until the example printed a line containing `needle`.
    async fn wait_for_output(&self, needle: &str) -> String {
        let found = tokio::time::timeout(T, async {
            loop {
                if let Some(line) = self
                    .output
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|l| l.contains(needle))
                {
                    return line.clone();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            panic!(
                "{} never printed {needle:?}; its output:\n{}",
                self.name,
                self.output.lock().unwrap().join("\n")
            )
        })
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        // The child is killed by `kill_on_drop`.
        if std::thread::panicking() {
            loud!(
                "--- output of example {} ---\n{}\n---",
                self.name,
                self.output.lock().unwrap().join("\n")
            );
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP, with hyper's client over a real TCP connection.

/// A response whose body is read as it arrives. Dropping it closes the
/// connection.
struct Response {
    status: u16,
    headers: hyper::HeaderMap,
    body: Incoming,
    buffered: Vec<u8>,
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for Response {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl Response {
    fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }

    /// Read until the body holds `delimiter`; the text up to it (included),
    /// or `None` at the end of the body.
    async fn read_until(&mut self, delimiter: &str) -> Option<String> {
        loop {
            if let Some(at) = find(&self.buffered, delimiter.as_bytes()) {
                let rest = self.buffered.split_off(at + delimiter.len());
                let item = std::mem::replace(&mut self.buffered, rest);
                return Some(String::from_utf8(item).expect("UTF-8"));
            }
            let frame = tokio::time::timeout(T, self.body.frame())
                .await
                .expect("the body to go on in time");
            match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffered.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => panic!("body: {e}"),
                None => return None,
            }
        }
    }

    /// The whole (rest of the) body.
    async fn text(mut self) -> String {
        let mut out = std::mem::take(&mut self.buffered);
        while let Some(frame) = tokio::time::timeout(T, self.body.frame())
            .await
            .expect("the body to end in time")
        {
            if let Ok(data) = frame.expect("body").into_data() {
                out.extend_from_slice(&data);
            }
        }
        String::from_utf8(out).expect("UTF-8")
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Send one request to `addr` on a new connection.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, addr.to_string());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let req = builder
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("HTTP handshake");
    let connection = tokio::spawn(async move {
        let _ = conn.await;
    });
    let response = tokio::time::timeout(T, sender.send_request(req))
        .await
        .expect("a response in time")
        .expect("a response");
    let (parts, body) = response.into_parts();
    Response {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
        buffered: Vec::new(),
        connection,
    }
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    request(addr, "GET", path, headers, "").await
}

// ---------------------------------------------------------------------------
// Action Cable, with tokio-tungstenite.

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Open `/cable{query}` as a page of the server's own origin would (the
/// examples keep the default same-origin check), with `cookie` if any.
async fn open_cable(addr: SocketAddr, query: &str, cookie: Option<&str>) -> Ws {
    let mut req = format!("ws://{addr}/cable{query}")
        .into_client_request()
        .unwrap();
    let headers = req.headers_mut();
    headers.insert("origin", format!("http://{addr}").parse().unwrap());
    headers.insert(
        "sec-websocket-protocol",
        "actioncable-v1-json".parse().unwrap(),
    );
    if let Some(cookie) = cookie {
        headers.insert("cookie", cookie.parse().unwrap());
    }
    let (ws, _) = tokio::time::timeout(T, tokio_tungstenite::connect_async(req))
        .await
        .expect("a WebSocket handshake in time")
        .expect("a WebSocket handshake");
    ws
}

/// The next frame other than a ping, decoded.
async fn next_frame(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(T, ws.next())
            .await
            .expect("a frame in time")
            .expect("the socket open")
            .expect("a readable frame");
        if let Message::Text(text) = msg {
            let frame: Value = serde_json::from_str(&text).expect("JSON");
            if frame["type"] != "ping" {
                return frame;
            }
        }
    }
}

async fn send(ws: &mut Ws, command: Value) {
    ws.send(Message::text(command.to_string())).await.unwrap();
}

/// Subscribe with `identifier`; the `confirm_subscription` or
/// `reject_subscription` frame's type.
async fn subscribe(ws: &mut Ws, identifier: &str) -> String {
    send(
        ws,
        json!({ "command": "subscribe", "identifier": identifier }),
    )
    .await;
    loop {
        let frame = next_frame(ws).await;
        if frame["identifier"] == identifier
            && let Some(kind) = frame["type"].as_str()
        {
            return kind.to_owned();
        }
    }
}

/// The next broadcast message on subscription `identifier`.
async fn next_message(ws: &mut Ws, identifier: &str) -> Value {
    loop {
        let frame = next_frame(ws).await;
        if frame["identifier"] == identifier && frame.get("type").is_none() {
            return frame["message"].clone();
        }
    }
}

/// Call `action` with `data` on subscription `identifier`.
async fn perform(ws: &mut Ws, identifier: &str, action: &str, mut data: Value) {
    data["action"] = action.into();
    send(
        ws,
        json!({ "command": "message", "identifier": identifier, "data": data.to_string() }),
    )
    .await;
}

fn unauthorized() -> Value {
    json!({ "type": "disconnect", "reason": "unauthorized", "reconnect": false })
}

/// Log in to the chat at `addr` as `name`: the signed session cookie
/// (`chat_user=…`).
async fn chat_login(addr: SocketAddr, name: &str) -> String {
    let login = get(addr, &format!("/login?name={name}"), &[]).await;
    assert_eq!(login.status, 303);
    let cookie = login
        .header(header::SET_COOKIE)
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert!(cookie.starts_with("chat_user=") && cookie.len() > "chat_user=".len() + name.len());
    cookie
}

// ---------------------------------------------------------------------------

/// chat: `/login` signs the session cookie, `/cable` accepts it and only it,
/// and a message spoken in a room reaches everyone in the room.
#[tokio::test]
async fn chat_authenticates_with_the_session_cookie_and_relays_messages() {
    let Some(chat) = Example::start("chat", &[]).await else {
        return;
    };
    let addr = chat.addr;

    // No cookie, or an unsigned one: the unauthorized disconnect.
    for cookie in [None, Some("chat_user=alice")] {
        let mut ws = open_cable(addr, "", cookie).await;
        assert_eq!(next_frame(&mut ws).await, unauthorized(), "{cookie:?}");
    }

    let mut sockets = Vec::new();
    for name in ["alice", "bob"] {
        let cookie = chat_login(addr, name).await;
        let page = get(addr, "/", &[("cookie", &cookie)]).await.text().await;
        assert!(page.contains(&format!("<b>{name}</b>")), "{page}");

        let mut ws = open_cable(addr, "", Some(&cookie)).await;
        assert_eq!(next_frame(&mut ws).await, json!({ "type": "welcome" }));
        sockets.push(ws);
    }
    assert_eq!(get(addr, "/login?name=a%20b", &[]).await.status, 400);

    let room = json!({ "channel": "ChatChannel", "room": "lobby" }).to_string();
    for ws in &mut sockets {
        assert_eq!(subscribe(ws, &room).await, "confirm_subscription");
    }
    let bad_room = json!({ "channel": "ChatChannel", "room": "no spaces" }).to_string();
    assert_eq!(
        subscribe(&mut sockets[0], &bad_room).await,
        "reject_subscription"
    );

    perform(
        &mut sockets[0],
        &room,
        "speak",
        json!({ "message": "hello" }),
    )
    .await;
    let expected = json!({ "user": "alice", "message": "hello" });
    for ws in &mut sockets {
        assert_eq!(next_message(ws, &room).await, expected);
    }
}

/// todo: the page's signed stream name subscribes to the list, and a todo
/// POSTed (JSON or form) arrives as a Turbo Stream append.
#[tokio::test]
async fn todo_broadcasts_a_turbo_stream_append_when_a_todo_is_created() {
    let Some(todo) = Example::start("todo", &[]).await else {
        return;
    };
    let addr = todo.addr;

    let page = get(addr, "/lists/7", &[]).await.text().await;
    let signed = page
        .split_once(r#"signed-stream-name=""#)
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(name, _)| name.to_owned())
        .unwrap_or_else(|| panic!("no signed-stream-name in {page}"));

    let mut ws = open_cable(addr, "", None).await;
    assert_eq!(next_frame(&mut ws).await, json!({ "type": "welcome" }));
    // A name the server did not sign is refused.
    let last = if signed.ends_with('0') { "1" } else { "0" };
    let forged = json!({
        "channel": "Turbo::StreamsChannel",
        "signed_stream_name": format!("{}{last}", &signed[..signed.len() - 1]),
    })
    .to_string();
    assert_eq!(subscribe(&mut ws, &forged).await, "reject_subscription");
    let list =
        json!({ "channel": "Turbo::StreamsChannel", "signed_stream_name": signed }).to_string();
    assert_eq!(subscribe(&mut ws, &list).await, "confirm_subscription");

    let created = request(
        addr,
        "POST",
        "/lists/7/todos",
        &[("content-type", "application/json")],
        r#"{"title":"milk & <eggs>"}"#,
    )
    .await;
    assert_eq!(created.status, 201);
    let body: Value = serde_json::from_str(&created.text().await).unwrap();
    assert_eq!(body["title"], "milk & <eggs>");
    assert_eq!(body["list_id"], 7);
    let id = body["id"].as_u64().unwrap();
    assert_eq!(
        next_message(&mut ws, &list).await,
        json!(format!(
            r#"<turbo-stream action="append" target="todos"><template><li id="todo_{id}">milk &amp; &lt;eggs&gt;</li></template></turbo-stream>"#
        ))
    );

    let form = request(
        addr,
        "POST",
        "/lists/7/todos",
        &[("content-type", "application/x-www-form-urlencoded")],
        "title=bread",
    )
    .await;
    assert_eq!(form.status, 303);
    assert_eq!(form.header(header::LOCATION), "/lists/7");
    let appended = next_message(&mut ws, &list).await;
    assert!(
        appended.as_str().unwrap().contains(">bread</li>"),
        "{appended}"
    );

    let page = get(addr, "/lists/7", &[]).await.text().await;
    assert!(
        page.contains("milk &amp; &lt;eggs&gt;</li>") && page.contains(">bread</li>"),
        "{page}"
    );
}

/// One SSE event: its fields.
#[derive(Debug, Default)]
struct Event {
    event: String,
    id: String,
    data: String,
}

/// The next event with data (skipping comments and retry-only frames).
async fn next_event(response: &mut Response) -> Option<Event> {
    loop {
        let block = response.read_until("\n\n").await?;
        let mut event = Event::default();
        for line in block.lines() {
            match line.split_once(':') {
                Some(("event", v)) => event.event = v.trim_start().to_owned(),
                Some(("id", v)) => event.id = v.trim_start().to_owned(),
                Some(("data", v)) => event.data.push_str(v.trim_start()),
                _ => {}
            }
        }
        if !event.data.is_empty() {
            return Some(event);
        }
    }
}

/// sse_progress: events 1, 2, then a reconnect with `Last-Event-ID: 2`
/// resumes at 3 and runs to the end.
#[tokio::test]
async fn sse_progress_resumes_after_last_event_id() {
    let Some(sse) = Example::start("sse_progress", &["--steps", "5", "--interval-ms", "20"]).await
    else {
        return;
    };
    let accept = [("accept", "text/event-stream")];

    let mut first = get(sse.addr, "/progress", &accept).await;
    assert_eq!(first.status, 200);
    assert!(
        first
            .header(header::CONTENT_TYPE)
            .starts_with("text/event-stream")
    );
    for step in 1..=2 {
        let event = next_event(&mut first).await.expect("an event");
        assert_eq!(event.event, "progress");
        assert_eq!(event.id, step.to_string());
        let data: Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(data["step"], step);
        assert_eq!(data["of"], 5);
    }
    drop(first); // the client goes away after event 2

    let mut resumed = get(sse.addr, "/progress", &[accept[0], ("last-event-id", "2")]).await;
    let mut ids = Vec::new();
    let done = loop {
        let event = next_event(&mut resumed)
            .await
            .expect("the stream to go on to `done`");
        if event.event == "progress" {
            ids.push(event.id);
        } else {
            break event;
        }
    };
    assert_eq!(ids, ["3", "4", "5"]);
    assert_eq!(done.event, "done");
    assert_eq!(done.data, "finished");
    assert!(next_event(&mut resumed).await.is_none(), "the stream ends");
}

/// blocking_live: primes arrive line by line from the blocking thread, and
/// the thread stops when the client leaves.
#[tokio::test]
async fn blocking_live_streams_lines_and_stops_when_the_client_leaves() {
    let Some(live) = Example::start("blocking_live", &[]).await else {
        return;
    };

    let mut primes = get(live.addr, "/primes", &[]).await;
    assert_eq!(primes.status, 200);
    assert!(
        primes
            .header(header::CONTENT_TYPE)
            .starts_with("text/plain")
    );
    let mut lines = Vec::new();
    for _ in 0..5 {
        lines.push(primes.read_until("\n").await.expect("a line"));
    }
    assert_eq!(lines, ["2\n", "3\n", "5\n", "7\n", "11\n"]);
    drop(primes); // closes the connection mid-stream
    let stopped = live.wait_for_output("client disconnected after").await;
    assert!(stopped.ends_with("primes; stopping"), "{stopped}");

    let ten = get(live.addr, "/primes?count=10", &[]).await.text().await;
    assert_eq!(ten, "2\n3\n5\n7\n11\n13\n17\n19\n23\n29\n");
}

/// chat with `--pubsub redis://…`: two processes on one Redis; what is
/// spoken on one arrives on the other, both ways.
#[tokio::test]
async fn chat_relays_messages_between_two_processes_over_redis() {
    if !cfg!(feature = "redis") {
        // The example binary was built with the same features as this test.
        skip("chat over Redis needs keayl's `redis` feature (`--all-features`)");
        return;
    }
    const REDIS: &str = "127.0.0.1:6379";
    let reachable = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::TcpStream::connect(REDIS),
    )
    .await;
    if !matches!(reachable, Ok(Ok(_))) {
        if std::env::var("KEAYL_REQUIRE_SERVICES").is_ok_and(|v| v == "1") {
            panic!("redis at {REDIS} is not reachable and KEAYL_REQUIRE_SERVICES=1");
        }
        skip(&format!(
            "no Redis at {REDIS}; set KEAYL_REQUIRE_SERVICES=1 to fail instead"
        ));
        return;
    }
    // A prefix of its own: nothing else on this Redis hears this test.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let url = format!(
        "redis://{REDIS}/0?channel_prefix=keayl-examples-{}-{nanos}",
        std::process::id()
    );
    let Some(a) = Example::start("chat", &["--pubsub", &url]).await else {
        return;
    };
    let Some(b) = Example::start("chat", &["--pubsub", &url]).await else {
        return;
    };

    // Each user logs in on the process they use: without a shared
    // SESSION_SECRET each process signs with a key of its own.
    let alice_cookie = chat_login(a.addr, "alice").await;
    let mut stranger = open_cable(b.addr, "", Some(&alice_cookie)).await;
    assert_eq!(next_frame(&mut stranger).await, unauthorized());

    let room = json!({ "channel": "ChatChannel", "room": "lobby" }).to_string();
    let mut alice = open_cable(a.addr, "", Some(&alice_cookie)).await;
    let mut bob = open_cable(b.addr, "", Some(&chat_login(b.addr, "bob").await)).await;
    for ws in [&mut alice, &mut bob] {
        assert_eq!(next_frame(ws).await, json!({ "type": "welcome" }));
        // Confirmed once Redis acknowledged the SUBSCRIBE.
        assert_eq!(subscribe(ws, &room).await, "confirm_subscription");
    }

    perform(
        &mut alice,
        &room,
        "speak",
        json!({ "message": "hi from A" }),
    )
    .await;
    let expected = json!({ "user": "alice", "message": "hi from A" });
    assert_eq!(next_message(&mut bob, &room).await, expected);
    assert_eq!(next_message(&mut alice, &room).await, expected);

    perform(&mut bob, &room, "speak", json!({ "message": "hi from B" })).await;
    let expected = json!({ "user": "bob", "message": "hi from B" });
    assert_eq!(next_message(&mut alice, &room).await, expected);
}
