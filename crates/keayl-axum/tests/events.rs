//! AnyCable's SSE transport for channels (`GET /events`) over a real
//! socket: the subscription named by the query, `welcome` and the
//! confirmation as named events, broadcasts as data-only events with
//! `id: <offset>/<stream>/<epoch>`, resuming from `Last-Event-ID` or
//! `history_since`, `$pubsub` streams, refusals (400, 401, 403), pings,
//! timers, remote disconnects, restarts, and the teardown when the client
//! goes away.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use keayl_axum::cable::{CableServer, OriginPolicy, ServerConfig, SocketConfig};
use keayl_cable::connection::{ConnectError, Connection, ConnectionHandler};
use keayl_cable::pubsub_channel::PubSubChannel;
use keayl_cable::signing::StreamVerifier;
use keayl_cable::{Cable, Channel, ChannelContext, ChannelError, InMemory, NoActions};
use serde_json::{Value, json};

#[path = "../../keayl-cable/tests/common/echo.rs"]
mod echo;
use echo::EchoChannel;

/// `user` from the query, else the `user` cookie: `bad` is refused, any
/// other is `current_user`, none is accepted anonymous.
struct AppConnection;

impl ConnectionHandler for AppConnection {
    const IDENTIFIED_BY: &'static [&'static str] = &["current_user"];

    async fn connect(&self, conn: &mut Connection) -> Result<(), ConnectError> {
        let user = conn
            .request()
            .query("user")
            .or_else(|| conn.request().cookie("user"))
            .map(str::to_owned);
        match user.as_deref() {
            Some("bad") => conn.reject_unauthorized_connection(),
            Some(user) => {
                conn.set_identifier("current_user", user.to_owned());
                Ok(())
            }
            None => Ok(()),
        }
    }
}

/// Transmits who the connection is.
#[derive(Default)]
struct WhoAmI;

impl Channel for WhoAmI {
    const NAME: &'static str = "WhoAmI";
    type Action = NoActions;
    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        ctx.transmit(ctx.identifiers().param("current_user"));
        Ok(())
    }
}

/// Always rejects.
#[derive(Default)]
struct RejectChannel;

impl Channel for RejectChannel {
    const NAME: &'static str = "RejectChannel";
    type Action = NoActions;
    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        ctx.reject();
        Ok(())
    }
}

/// Transmits `{"tick": n}` every 100 ms.
#[derive(Default)]
struct TickerChannel {
    n: u64,
}

impl Channel for TickerChannel {
    const NAME: &'static str = "TickerChannel";
    type Action = NoActions;
    const PERIODICALLY: &'static [(&'static str, Duration)] =
        &[("tick", Duration::from_millis(100))];
    async fn periodic(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        _timer: &'static str,
    ) -> Result<(), ChannelError> {
        self.n += 1;
        ctx.transmit(json!({"tick": self.n}));
        Ok(())
    }
}

/// The rooms whose `RoomChannel` subscription ended.
static LEFT: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Streams `room:<room>`; `unsubscribed` records the room in [`LEFT`].
#[derive(Default)]
struct RoomChannel;

impl Channel for RoomChannel {
    const NAME: &'static str = "RoomChannel";
    type Action = NoActions;
    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        let room = ctx.param_str("room").unwrap_or_default().to_owned();
        ctx.stream_from(format!("room:{room}"));
        Ok(())
    }
    async fn unsubscribed(&mut self, ctx: &mut ChannelContext<'_>) {
        let room = ctx.param_str("room").unwrap_or_default().to_owned();
        LEFT.lock().unwrap().push(room);
    }
}

fn cable() -> Cable {
    Cable::builder(InMemory::new())
        .connection_handler(AppConnection)
        .channel::<EchoChannel>()
        .channel::<WhoAmI>()
        .channel::<RejectChannel>()
        .channel::<TickerChannel>()
        .channel::<RoomChannel>()
        .channel_with(|| {
            PubSubChannel::signed(StreamVerifier::new("s3Krit")).with_public_streams(false)
        })
        .build()
}

async fn start_with(cable: Cable, config: ServerConfig) -> (SocketAddr, CableServer) {
    let server = CableServer::new(cable, config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = server.events_router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, server)
}

async fn start() -> (SocketAddr, CableServer) {
    start_with(cable(), ServerConfig::default()).await
}

/// `s` percent-encoded for a query value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Event {
    event: Option<String>,
    id: Option<String>,
    retry: Option<u64>,
    data: String,
}

impl Event {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
    fn name(&self) -> &str {
        self.event.as_deref().unwrap_or("message")
    }
}

/// A response to `GET /events…`, its body read as events.
struct Sse {
    status: u16,
    headers: http::HeaderMap,
    body: hyper::body::Incoming,
    buf: String,
    conn: tokio::task::JoinHandle<()>,
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Sse {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = http::Request::get(path).header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        sender.send_request(req.body(Empty::<Bytes>::new()).unwrap()),
    )
    .await
    .expect("a response")
    .unwrap();
    let (parts, body) = resp.into_parts();
    Sse {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
        buf: String::new(),
        conn,
    }
}

impl Sse {
    /// The whole body, as text (for refusals).
    async fn text(self) -> String {
        let body = tokio::time::timeout(Duration::from_secs(5), self.body.collect())
            .await
            .expect("the body")
            .unwrap()
            .to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    /// The next event within 5 s; `None` when the stream ends.
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut event = Event::default();
                let mut data: Vec<&str> = Vec::new();
                for line in block.lines().filter(|l| !l.is_empty()) {
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "event" => event.event = Some(value.to_owned()),
                        "id" => event.id = Some(value.to_owned()),
                        "retry" => event.retry = Some(value.parse().unwrap()),
                        "data" => data.push(value),
                        "" => {}
                        other => panic!("unknown field {other:?} in {block:?}"),
                    }
                }
                event.data = data.join("\n");
                return Some(event);
            }
            let frame = tokio::time::timeout(Duration::from_secs(5), self.body.frame())
                .await
                .expect("timed out waiting for an event");
            match frame {
                None => {
                    assert!(self.buf.is_empty(), "a partial event: {:?}", self.buf);
                    return None;
                }
                Some(frame) => {
                    if let Ok(data) = frame.expect("readable").into_data() {
                        self.buf.push_str(std::str::from_utf8(&data).unwrap());
                    }
                }
            }
        }
    }

    /// The next event that is not a ping.
    async fn next(&mut self) -> Event {
        loop {
            let event = self.next_event().await.expect("the stream ended");
            if event.name() != "ping" {
                return event;
            }
        }
    }

    /// Nothing but pings arrives for `within`.
    async fn silent(&mut self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let Ok(frame) = tokio::time::timeout_at(deadline, self.next_event()).await else {
                return;
            };
            let event = frame.expect("the stream ended");
            assert_eq!(event.name(), "ping", "unexpected {event:?}");
        }
    }

    /// The client goes away: the TCP connection is closed.
    fn close(self) {
        self.conn.abort();
    }
}

/// `welcome` and the confirmation of `identifier`.
async fn opened(sse: &mut Sse, identifier: &str) {
    assert_eq!(sse.status, 200);
    let welcome = sse.next().await;
    assert_eq!(welcome.name(), "welcome", "{welcome:?}");
    assert_eq!(welcome.json()["type"], "welcome");
    let confirm = sse.next().await;
    assert_eq!(confirm.name(), "confirm_subscription", "{confirm:?}");
    assert_eq!(
        confirm.json(),
        json!({"identifier": identifier, "type": "confirm_subscription"})
    );
}

const ID: &str = r#"{"channel":"EchoChannel","stream":"s"}"#;

#[tokio::test]
async fn a_subscription_gets_welcome_confirm_and_broadcasts_with_their_position() {
    let (addr, server) = start().await;
    let mut sse = get(addr, &format!("/events?identifier={}", enc(ID)), &[]).await;
    assert_eq!(sse.headers["content-type"], "text/event-stream");
    assert_eq!(sse.headers["cache-control"], "no-cache");
    assert_eq!(sse.headers["x-accel-buffering"], "no");
    opened(&mut sse, ID).await;
    assert_eq!(server.connection_count(), 1, "SSE connections are counted");
    let cable = server.cable();
    cable.broadcast("s", &json!({"n": 1})).await.unwrap();
    let first = sse.next().await;
    assert_eq!(first.event, None, "broadcasts are unnamed");
    assert_eq!(first.json(), json!({"n": 1}), "only the message");
    let id = first.id.clone().expect("an id");
    let epoch = id.strip_prefix("1/s/").expect("offset/stream/epoch");
    assert!(!epoch.is_empty());
    // A message with line breaks spans several `data:` lines.
    cable
        .broadcast_raw("s", Bytes::from_static(b"{\n\"n\": 2\n}"))
        .await
        .unwrap();
    let second = sse.next().await;
    assert_eq!(second.data, "{\n\"n\": 2\n}");
    assert_eq!(second.id.as_deref(), Some(&*format!("2/s/{epoch}")));
    // `?channel=Name` is `{"channel":"Name"}`.
    let mut plain = get(addr, "/events?channel=EchoChannel", &[]).await;
    opened(&mut plain, r#"{"channel":"EchoChannel"}"#).await;
}

#[tokio::test]
async fn last_event_id_resumes_with_exactly_the_missed_messages_then_live() {
    let (addr, server) = start().await;
    // The stream's name has slashes: the id splits at the first and last.
    let id = r#"{"channel":"EchoChannel","stream":"a/b"}"#;
    let path = format!("/events?identifier={}", enc(id));
    let mut first = get(addr, &path, &[]).await;
    opened(&mut first, id).await;
    let cable = server.cable();
    for n in 1..=3 {
        cable.broadcast("a/b", &json!({"n": n})).await.unwrap();
    }
    let mut last = None;
    for n in 1..=3 {
        let event = first.next().await;
        assert_eq!(event.json(), json!({"n": n}));
        last = event.id;
    }
    let last = last.unwrap();
    let epoch = last.strip_prefix("3/a/b/").unwrap().to_owned();
    first.close();
    for n in 4..=5 {
        cable.broadcast("a/b", &json!({"n": n})).await.unwrap();
    }
    let mut back = get(addr, &path, &[("last-event-id", &last)]).await;
    opened(&mut back, id).await;
    for n in 4..=5 {
        let event = back.next().await;
        assert_eq!(event.json(), json!({"n": n}));
        assert_eq!(event.id, Some(format!("{n}/a/b/{epoch}")));
    }
    let trailer = back.next().await;
    assert_eq!(trailer.name(), "confirm_history");
    assert_eq!(
        trailer.json(),
        json!({"type": "confirm_history", "identifier": id})
    );
    cable.broadcast("a/b", &json!({"n": 6})).await.unwrap();
    let live = back.next().await;
    assert_eq!(live.json(), json!({"n": 6}));
    assert_eq!(live.id, Some(format!("6/a/b/{epoch}")));
    back.silent(Duration::from_millis(200)).await;

    // An epoch the history does not know: `reject_history`, then live.
    let mut stale = get(addr, &path, &[("last-event-id", "3/a/b/other-epoch")]).await;
    opened(&mut stale, id).await;
    let reject = stale.next().await;
    assert_eq!(reject.name(), "reject_history");
    cable.broadcast("a/b", &json!({"n": 7})).await.unwrap();
    assert_eq!(stale.next().await.json(), json!({"n": 7}));
}

#[tokio::test]
async fn history_since_replays_the_streams_recent_messages() {
    let (addr, server) = start().await;
    let cable = server.cable();
    for n in 1..=2 {
        cable.broadcast("s", &json!({"n": n})).await.unwrap();
    }
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 60;
    let path = format!("/events?identifier={}&history_since={since}", enc(ID));
    let mut sse = get(addr, &path, &[]).await;
    opened(&mut sse, ID).await;
    for n in 1..=2 {
        let event = sse.next().await;
        assert_eq!(event.json(), json!({"n": n}));
        assert!(event.id.unwrap().starts_with(&format!("{n}/s/")));
    }
    assert_eq!(sse.next().await.name(), "confirm_history");
    let bad = get(
        addr,
        "/events?channel=EchoChannel&history_since=yesterday",
        &[],
    )
    .await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn public_and_signed_streams() {
    // Public names with `PubSubChannel::public()`.
    let public = Cable::builder(InMemory::new())
        .channel_with(PubSubChannel::public)
        .build();
    let (addr, server) = start_with(public, ServerConfig::default()).await;
    let mut sse = get(addr, "/events?stream=news%3A1", &[]).await;
    opened(&mut sse, r#"{"channel":"$pubsub","stream_name":"news:1"}"#).await;
    server.cable().broadcast("news:1", &"hi").await.unwrap();
    let event = sse.next().await;
    assert_eq!(event.json(), json!("hi"));
    assert!(event.id.unwrap().starts_with("1/news:1/"));
    let signed = StreamVerifier::new("s3Krit").generate("news:1");
    let refused = get(
        addr,
        &format!("/events?signed_stream={}", enc(&signed)),
        &[],
    )
    .await;
    assert_eq!(refused.status, 401, "signed streams are not enabled there");

    // Signed names (and no public ones) on the other cable.
    let (addr, server) = start().await;
    let signed = StreamVerifier::new("s3Krit").generate("room:9");
    let mut sse = get(
        addr,
        &format!("/events?signed_stream={}", enc(&signed)),
        &[],
    )
    .await;
    let identifier = json!({"channel": "$pubsub", "signed_stream_name": signed}).to_string();
    opened(&mut sse, &identifier).await;
    server
        .cable()
        .broadcast("room:9", &json!({"a": 1}))
        .await
        .unwrap();
    assert_eq!(sse.next().await.json(), json!({"a": 1}));
    let forged = StreamVerifier::new("not the key").generate("room:9");
    let refused = get(
        addr,
        &format!("/events?signed_stream={}", enc(&forged)),
        &[],
    )
    .await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.text().await, "subscription rejected\n");
    let refused = get(addr, "/events?stream=room%3A9", &[]).await;
    assert_eq!(refused.status, 401, "public streams are not enabled here");
}

#[tokio::test]
async fn refusals() {
    let (addr, server) = start().await;
    for (path, status) in [
        ("/events", 400),
        ("/events?channel=", 400),
        ("/events?history_since=1", 400),
        ("/events?channel=EchoChannel&stream=s", 400),
        ("/events?identifier=nope", 400),
        ("/events?identifier=%7B%22room%22%3A1%7D", 400),
        ("/events?channel=NoSuchChannel", 401),
        ("/events?channel=RejectChannel", 401),
        ("/events?channel=EchoChannel&user=bad", 401),
    ] {
        let sse = get(addr, path, &[]).await;
        assert_eq!(sse.status, status, "{path}");
        let body = sse.text().await;
        assert!(!body.contains("event:"), "{path}: {body}");
        if status == 400 {
            assert!(!body.is_empty(), "{path}: a short explanation");
        }
    }
    // Nothing is left open.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.connection_count(), 0);
}

#[tokio::test]
async fn connect_sees_the_query_and_the_cookies() {
    let (addr, _server) = start().await;
    for (query, headers, user) in [
        ("&user=alice", &[][..], "alice"),
        ("", &[("cookie", "user=bob")][..], "bob"),
    ] {
        let mut sse = get(addr, &format!("/events?channel=WhoAmI{query}"), headers).await;
        assert_eq!(sse.next().await.name(), "welcome");
        // What `subscribed` transmits comes before the confirmation.
        let who = sse.next().await;
        assert_eq!((who.json(), who.id), (json!(user), None));
        assert_eq!(sse.next().await.name(), "confirm_subscription");
    }
}

#[tokio::test]
async fn the_origin_policy_applies_to_a_present_origin() {
    let (addr, _server) = start().await;
    // A same-origin EventSource sends no Origin.
    let mut sse = get(addr, "/events?channel=EchoChannel", &[]).await;
    opened(&mut sse, r#"{"channel":"EchoChannel"}"#).await;
    let refused = get(
        addr,
        "/events?channel=EchoChannel",
        &[("origin", "http://evil.example")],
    )
    .await;
    assert_eq!(refused.status, 403);
    let same = format!("http://{addr}");
    let mut sse = get(addr, "/events?channel=EchoChannel", &[("origin", &same)]).await;
    assert_eq!(sse.headers["access-control-allow-origin"], &*same);
    opened(&mut sse, r#"{"channel":"EchoChannel"}"#).await;
}

#[tokio::test]
async fn pings_and_periodic_timers_run() {
    let config = ServerConfig {
        origins: OriginPolicy::AllowAll,
        socket: SocketConfig {
            ping_interval: Duration::from_millis(100),
            ..SocketConfig::default()
        },
        ..ServerConfig::default()
    };
    let (addr, _server) = start_with(cable(), config).await;
    let mut sse = get(addr, "/events?channel=TickerChannel", &[]).await;
    let mut pings = 0;
    let mut ticks = Vec::new();
    while pings < 2 || ticks.len() < 2 {
        let event = sse.next_event().await.expect("open");
        match event.name() {
            "ping" => {
                let ping = event.json();
                assert_eq!(ping["type"], "ping");
                assert!(ping["message"].as_u64().unwrap() > 1_600_000_000);
                pings += 1;
            }
            "message" => {
                assert_eq!(event.id, None, "transmissions have no position");
                ticks.push(event.json());
            }
            _ => {}
        }
    }
    assert_eq!(ticks, [json!({"tick": 1}), json!({"tick": 2})]);
}

#[tokio::test]
async fn a_remote_disconnect_without_reconnect_carries_a_huge_retry() {
    let (addr, server) = start().await;
    let mut sse = get(addr, "/events?channel=EchoChannel&user=carol", &[]).await;
    opened(&mut sse, r#"{"channel":"EchoChannel"}"#).await;
    server
        .cable()
        .remote_connections()
        .where_(&[("current_user", &"carol")])
        .unwrap()
        .disconnect(false)
        .await
        .unwrap();
    let bye = sse.next().await;
    assert_eq!(bye.name(), "disconnect");
    assert_eq!(
        bye.json(),
        json!({"type": "disconnect", "reason": "remote", "reconnect": false})
    );
    assert_eq!(bye.retry, Some(31_536_000_000));
    assert_eq!(sse.next_event().await, None, "the stream ends");
}

#[tokio::test]
async fn a_restart_closes_sse_connections_with_reconnect() {
    let (addr, server) = start().await;
    let mut sse = get(addr, "/events?channel=EchoChannel", &[]).await;
    opened(&mut sse, r#"{"channel":"EchoChannel"}"#).await;
    server.restart();
    let bye = sse.next().await;
    assert_eq!(
        bye.json(),
        json!({"type": "disconnect", "reason": "server_restart", "reconnect": true})
    );
    assert_eq!(bye.retry, None);
    assert_eq!(sse.next_event().await, None);
    // Shutdown waits for them.
    let mut sse = get(addr, "/events?channel=EchoChannel", &[]).await;
    opened(&mut sse, r#"{"channel":"EchoChannel"}"#).await;
    tokio::time::timeout(Duration::from_secs(3), server.shutdown())
        .await
        .unwrap();
    assert_eq!(sse.next().await.json()["reason"], "server_restart");
    assert_eq!(server.connection_count(), 0);
    let refused = get(addr, "/events?channel=EchoChannel", &[]).await;
    assert_eq!(refused.status, 503);
}

#[tokio::test]
async fn the_client_going_away_runs_unsubscribed() {
    let (addr, server) = start().await;
    let room = "going-away";
    let id = json!({"channel": "RoomChannel", "room": room}).to_string();
    let mut sse = get(addr, &format!("/events?identifier={}", enc(&id)), &[]).await;
    opened(&mut sse, &id).await;
    server
        .cable()
        .broadcast(&format!("room:{room}"), &1)
        .await
        .unwrap();
    assert_eq!(sse.next().await.json(), json!(1));
    assert!(!LEFT.lock().unwrap().iter().any(|r| r == room));
    sse.close();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !LEFT.lock().unwrap().iter().any(|r| r == room) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "unsubscribed did not run"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(server.connection_count(), 0);
}

#[tokio::test]
async fn a_reading_client_counts_as_ponging() {
    // The extended protocol's pong timeout: an SSE client cannot pong, so
    // a reader that takes the server's bytes stands in for one.
    let cable = Cable::builder(InMemory::new())
        .channel::<EchoChannel>()
        .config(keayl_cable::CableConfig {
            pong_timeout: Some(Duration::from_millis(300)),
            ..keayl_cable::CableConfig::default()
        })
        .build();
    let config = ServerConfig {
        socket: SocketConfig {
            ping_interval: Duration::from_millis(100),
            ..SocketConfig::default()
        },
        ..ServerConfig::default()
    };
    let (addr, _server) = start_with(cable, config).await;
    let mut sse = get(addr, "/events?channel=EchoChannel", &[]).await;
    opened(&mut sse, r#"{"channel":"EchoChannel"}"#).await;
    sse.silent(Duration::from_millis(1_000)).await;
}
