//! AnyCable's extended protocol (`actioncable-v1-ext-json`) over a real
//! socket: negotiation, the session id in `welcome`, client pings and
//! pongs, positions on broadcasts, history requests served from the
//! streams' history (or rejected when it cannot cover them), and
//! `actioncable-v1-json` unchanged beside it.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use keayl_axum::cable::{CableServer, OriginPolicy, ServerConfig};
use keayl_cable::{Cable, InMemory};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[path = "../../keayl-cable/tests/common/echo.rs"]
mod echo;
use echo::EchoChannel;

async fn start() -> (SocketAddr, CableServer) {
    let cable = Cable::builder(InMemory::new())
        .channel::<EchoChannel>()
        .build();
    let config = ServerConfig {
        origins: OriginPolicy::AllowAll,
        ..ServerConfig::default()
    };
    let server = CableServer::new(cable, config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = server.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, server)
}

/// Connect offering `offer`; returns the socket and the chosen subprotocol.
async fn connect(addr: SocketAddr, offer: &str) -> (Ws, Option<String>) {
    let mut req = format!("ws://{addr}/cable").into_client_request().unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", offer.parse().unwrap());
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    let chosen = resp
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_owned());
    (ws, chosen)
}

/// The next text frame that is not a server ping, within 5 s.
async fn next_text(ws: &mut Ws) -> String {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("timed out waiting for a frame")
            .expect("stream ended")
            .expect("read failed");
        if let Message::Text(t) = msg {
            if t.contains(r#""type":"ping""#) {
                continue;
            }
            return t.to_string();
        }
    }
}

/// Nothing but pings arrives for `within`.
async fn silent(ws: &mut Ws, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(msg) = tokio::time::timeout_at(deadline, ws.next()).await {
        let msg = msg.expect("stream ended").expect("read failed");
        if let Message::Text(t) = &msg {
            assert!(t.contains(r#""type":"ping""#), "unexpected frame {t}");
        }
    }
}

async fn send(ws: &mut Ws, frame: Value) {
    ws.send(Message::text(frame.to_string())).await.unwrap();
}

const ID: &str = r#"{"channel":"EchoChannel","stream":"s"}"#;

#[tokio::test]
async fn the_extended_protocol_is_negotiated_and_welcomes_with_a_session_id() {
    let (addr, _server) = start().await;
    // What @anycable/web offers.
    let (mut a, chosen) = connect(addr, "actioncable-v1-ext-json").await;
    assert_eq!(chosen.as_deref(), Some("actioncable-v1-ext-json"));
    let welcome: Value = serde_json::from_str(&next_text(&mut a).await).unwrap();
    assert_eq!(welcome["type"], "welcome");
    let sid = welcome["sid"].as_str().expect("a sid").to_owned();
    assert_eq!(sid.len(), 32, "{sid}");
    assert_eq!(welcome.as_object().unwrap().len(), 2, "{welcome}");
    // Every connection gets its own.
    let (mut b, _) = connect(addr, "actioncable-v1-ext-json").await;
    let other: Value = serde_json::from_str(&next_text(&mut b).await).unwrap();
    assert_ne!(other["sid"], sid);
    // The client's order decides between two supported protocols.
    let (mut c, chosen) = connect(addr, "actioncable-v1-json, actioncable-v1-ext-json").await;
    assert_eq!(chosen.as_deref(), Some("actioncable-v1-json"));
    assert_eq!(next_text(&mut c).await, r#"{"type":"welcome"}"#);
}

#[tokio::test]
async fn client_pings_are_answered_and_pongs_accepted() {
    let (addr, _server) = start().await;
    let (mut ws, _) = connect(addr, "actioncable-v1-ext-json").await;
    next_text(&mut ws).await;
    send(&mut ws, json!({"command": "pong"})).await;
    send(&mut ws, json!({"command": "ping"})).await;
    assert_eq!(next_text(&mut ws).await, r#"{"type":"pong"}"#);
    silent(&mut ws, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn missed_messages_are_served_from_history_and_gaps_rejected() {
    let (addr, server) = start().await;
    let (mut ws, _) = connect(addr, "actioncable-v1-ext-json").await;
    next_text(&mut ws).await;
    send(&mut ws, json!({"command": "subscribe", "identifier": ID})).await;
    next_text(&mut ws).await;
    let broadcaster = keayl_cable::Broadcaster::new(server.cable().pubsub().clone());
    for n in 1..=3 {
        broadcaster.broadcast("s", &json!({"n": n})).await.unwrap();
    }
    let first: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    let epoch = first["epoch"].as_str().expect("an epoch").to_owned();
    assert_eq!(
        first,
        json!({"identifier": ID, "message": {"n": 1}, "stream_id": "s", "epoch": epoch, "offset": 1})
    );
    next_text(&mut ws).await;
    next_text(&mut ws).await;

    // Another connection that saw offset 1 subscribes with its position:
    // the confirmation, the missed 2 and 3, then confirm_history.
    let (mut back, _) = connect(addr, "actioncable-v1-ext-json").await;
    next_text(&mut back).await;
    send(
        &mut back,
        json!({"command": "subscribe", "identifier": ID,
               "history": {"streams": {"s": {"offset": 1, "epoch": epoch}}}}),
    )
    .await;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(serde_json::from_str::<Value>(&next_text(&mut back).await).unwrap());
    }
    assert_eq!(
        got,
        [
            json!({"identifier": ID, "type": "confirm_subscription"}),
            json!({"identifier": ID, "message": {"n": 2}, "stream_id": "s", "epoch": epoch, "offset": 2}),
            json!({"identifier": ID, "message": {"n": 3}, "stream_id": "s", "epoch": epoch, "offset": 3}),
            json!({"type": "confirm_history", "identifier": ID}),
        ]
    );
    // An epoch the history does not know: a gap, never silence.
    send(
        &mut back,
        json!({"command": "history", "identifier": ID,
               "history": {"streams": {"s": {"offset": 3, "epoch": "e1"}}}}),
    )
    .await;
    let answer: Value = serde_json::from_str(&next_text(&mut back).await).unwrap();
    assert_eq!(answer, json!({"type": "reject_history", "identifier": ID}));
    assert_eq!(server.cable().rejected_history(), 1);
    assert_eq!(server.cable().served_history(), 1);
    // The same in /metrics (whole lines: a name is not a prefix of another).
    let text = keayl_axum::ops::render(std::slice::from_ref(&server), None);
    for line in [
        "keayl_history_served_total 1",
        "keayl_history_rejected_total 1",
        "keayl_history_entries 3",
        "keayl_history_streams 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
    let bytes = text
        .lines()
        .find_map(|l| l.strip_prefix("keayl_history_bytes "))
        .expect("history bytes");
    assert!(bytes.parse::<f64>().unwrap() > 0.0);
    // Unknown subscription, an empty or malformed request: logged, no frame.
    for bad in [
        json!({"command": "history", "identifier": "{\"channel\":\"EchoChannel\"}", "history": {"since": 1}}),
        json!({"command": "history", "identifier": ID, "history": {}}),
        json!({"command": "history", "identifier": ID}),
        json!({"command": "history", "identifier": ID, "history": {"since": "yesterday"}}),
    ] {
        send(&mut back, bad).await;
    }
    silent(&mut back, Duration::from_millis(300)).await;
    assert_eq!(server.cable().rejected_history(), 1);
    // The connection still works.
    send(&mut back, json!({"command": "ping"})).await;
    assert_eq!(next_text(&mut back).await, r#"{"type":"pong"}"#);
}

#[tokio::test]
async fn actioncable_v1_json_is_unchanged() {
    let (addr, server) = start().await;
    let (mut ws, chosen) = connect(addr, "actioncable-v1-json, actioncable-unsupported").await;
    assert_eq!(chosen.as_deref(), Some("actioncable-v1-json"));
    assert_eq!(next_text(&mut ws).await, r#"{"type":"welcome"}"#);
    // Extended commands are unknown commands here: no frame.
    send(&mut ws, json!({"command": "ping"})).await;
    send(&mut ws, json!({"command": "pong"})).await;
    send(
        &mut ws,
        json!({"command": "subscribe", "identifier": ID, "history": {"since": 1}}),
    )
    .await;
    assert_eq!(
        next_text(&mut ws).await,
        format!(
            r#"{{"identifier":{},"type":"confirm_subscription"}}"#,
            serde_json::to_string(ID).unwrap()
        )
    );
    send(
        &mut ws,
        json!({"command": "history", "identifier": ID, "history": {"since": 1}}),
    )
    .await;
    silent(&mut ws, Duration::from_millis(300)).await;
    assert_eq!(server.cable().rejected_history(), 0);
    // Broadcasts carry no position fields.
    let broadcaster = keayl_cable::Broadcaster::new(server.cable().pubsub().clone());
    broadcaster.broadcast("s", &json!({"n": 1})).await.unwrap();
    assert_eq!(
        next_text(&mut ws).await,
        format!(
            r#"{{"identifier":{},"message":{{"n":1}}}}"#,
            serde_json::to_string(ID).unwrap()
        )
    );
}
