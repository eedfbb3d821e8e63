//! Hostile and broken input over real sockets. Each test runs a live probe
//! client beside the attacker and checks it is unaffected.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use keayl_axum::cable::{CableServer, OriginPolicy, ServerConfig, SocketConfig};
use keayl_cable::{Cable, CableConfig, InMemory};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

// The echo probe of keayl-cable's tests, streaming the `stream` param.
#[path = "../../keayl-cable/tests/common/echo.rs"]
mod echo;
use echo::EchoChannel;

async fn start() -> (SocketAddr, CableServer) {
    let cable = Cable::builder(InMemory::new())
        .channel::<EchoChannel>()
        .config(CableConfig {
            max_subscriptions: 100,
            ..CableConfig::default()
        })
        .build();
    let server = CableServer::new(
        cable,
        ServerConfig {
            origins: OriginPolicy::AllowAll,
            max_message_bytes: 64 * 1024,
            socket: SocketConfig {
                outbound_queue_bytes: 256 * 1024,
                write_timeout: Duration::from_secs(1),
                ..SocketConfig::default()
            },
            ..ServerConfig::default()
        },
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = server.router().merge(server.broadcast_router());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, server)
}

async fn connect(addr: SocketAddr) -> Ws {
    let req = format!("ws://{addr}/cable").into_client_request().unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(next_text(&mut ws).await, r#"{"type":"welcome"}"#);
    ws
}

async fn next_text(ws: &mut Ws) -> String {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("timed out waiting for a frame")
            .expect("stream ended")
            .expect("read failed");
        if let Message::Text(t) = msg {
            if t.contains("\"type\":\"ping\"") {
                continue;
            }
            return t.to_string();
        }
    }
}

/// Subscription `n` of the echo channel, on the `probe` stream.
fn id(n: usize) -> String {
    format!(r#"{{\"channel\":\"EchoChannel\",\"stream\":\"probe\",\"n\":{n}}}"#)
}

fn subscribe_cmd(n: usize) -> String {
    format!(r#"{{"command":"subscribe","identifier":"{}"}}"#, id(n))
}

fn echo_cmd(n: usize, x: usize) -> String {
    format!(
        r#"{{"command":"message","identifier":"{}","data":"{{\"action\":\"echo\",\"x\":{x}}}"}}"#,
        id(n)
    )
}

/// A subscribed probe client.
async fn probe(addr: SocketAddr) -> Ws {
    let mut ws = connect(addr).await;
    ws.send(Message::text(subscribe_cmd(0))).await.unwrap();
    assert!(next_text(&mut ws).await.contains("confirm_subscription"));
    ws
}

/// The probe still echoes and receives broadcasts promptly.
async fn check_probe(ws: &mut Ws, server: &CableServer, x: usize) {
    let started = std::time::Instant::now();
    ws.send(Message::text(echo_cmd(0, x))).await.unwrap();
    let frame = next_text(ws).await;
    assert!(frame.contains(&format!("\"x\":{x}")), "probe got {frame}");
    server
        .cable()
        .broadcast("probe", &serde_json::json!({"probe": x}))
        .await
        .unwrap();
    let frame = next_text(ws).await;
    assert!(
        frame.contains(&format!("\"probe\":{x}")),
        "probe got {frame}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "probe was slowed down"
    );
}

#[tokio::test]
async fn deeply_nested_json_and_huge_identifiers_are_refused_without_harm() {
    let (addr, server) = start().await;
    let mut p = probe(addr).await;
    let mut bad = connect(addr).await;
    // 30,000 levels of nesting inside one frame (under the size limit).
    let deep = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
    bad.send(Message::text(deep)).await.unwrap();
    let nested_data = format!(
        r#"{{"command":"message","identifier":"{}","data":"{}1{}"}}"#,
        id(0),
        "[".repeat(20_000),
        "]".repeat(20_000)
    );
    bad.send(Message::text(nested_data)).await.unwrap();
    // An identifier of 60 KiB.
    let huge = format!(
        r#"{{"command":"subscribe","identifier":"{{\"channel\":\"EchoChannel\",\"pad\":\"{}\"}}"}}"#,
        "a".repeat(60 * 1024)
    );
    bad.send(Message::text(huge)).await.unwrap();
    check_probe(&mut p, &server, 1).await;
    // The attacker's connection is still usable (errors produce no frame).
    bad.send(Message::text(subscribe_cmd(1))).await.unwrap();
    let frame = next_text(&mut bad).await;
    let head = &frame[..frame.len().min(200)];
    assert!(frame.contains("confirm_subscription"), "{head}");
    assert!(
        frame.contains(r#"\"n\":1"#),
        "no frame for the refused commands: {head}"
    );
    assert!(server.stats().command_errors.load(Ordering::Relaxed) >= 3);
    assert!(
        server
            .stats()
            .command_errors_by_kind()
            .iter()
            .any(|(k, _)| *k == "identifier_too_long")
    );
}

#[tokio::test]
async fn invalid_utf8_text_frame_closes_only_that_connection() {
    let (addr, server) = start().await;
    let mut p = probe(addr).await;
    // A raw client sends a masked text frame whose payload is not UTF-8.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!(
            "GET /cable HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let payload = [0xffu8, 0xfe, 0xfd];
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    tcp.write_all(&frame).await.unwrap();
    // That connection gets a close frame with 1007, then the server closes
    // it: the read ends (EOF, not a reset) within the timeout.
    let mut wire = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut wire))
        .await
        .expect("the server closes the connection")
        .expect("closed cleanly, not reset");
    let head_end = wire.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(wire.starts_with(b"HTTP/1.1 101"));
    // The server's frames: (opcode, payload), each whole.
    let mut frames = Vec::new();
    let mut rest = &wire[head_end..];
    while !rest.is_empty() {
        assert!(rest.len() >= 2, "a cut frame header: {rest:?}");
        let (opcode, len) = (rest[0] & 0x0f, (rest[1] & 0x7f) as usize);
        assert_eq!(rest[1] & 0x80, 0, "server frames are unmasked");
        assert!(len < 126, "small server frames");
        assert!(rest.len() >= 2 + len, "a cut frame: {rest:?}");
        frames.push((opcode, &rest[2..2 + len]));
        rest = &rest[2 + len..];
    }
    // The welcome (and perhaps pings), then the close frame, last.
    assert_eq!(
        frames.first(),
        Some(&(0x1, &br#"{"type":"welcome"}"#[..])),
        "{frames:?}"
    );
    let (opcode, payload) = *frames.last().unwrap();
    assert_eq!(opcode, 0x8, "the last frame is a close frame: {frames:?}");
    assert!(payload.len() >= 2, "the close frame carries a code");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1007);
    assert_eq!(
        frames.iter().filter(|(op, _)| *op == 0x8).count(),
        1,
        "{frames:?}"
    );
    assert_eq!(server.stats().invalid_utf8.load(Ordering::Relaxed), 1);
    // Only that connection is gone; the probe still works.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.connection_count() != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed connection was not torn down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check_probe(&mut p, &server, 2).await;
    assert_eq!(server.connection_count(), 1);
}

#[tokio::test]
async fn thousands_of_subscriptions_hit_the_limit() {
    let (addr, server) = start().await;
    let mut p = probe(addr).await;
    let mut greedy = connect(addr).await;
    // 500: over the subscription limit, within the command queue (a client
    // pipelining more than the queue holds is disconnected; see the driver's
    // tests).
    for n in 1..=500 {
        greedy.feed(Message::text(subscribe_cmd(n))).await.unwrap();
    }
    greedy.flush().await.unwrap();
    let mut confirmed = 0;
    while let Ok(Some(Ok(msg))) =
        tokio::time::timeout(Duration::from_millis(1500), greedy.next()).await
    {
        if let Message::Text(t) = msg
            && t.contains("confirm_subscription")
        {
            confirmed += 1;
        }
    }
    assert_eq!(confirmed, 100, "the per-connection limit is enforced");
    check_probe(&mut p, &server, 3).await;
    let stats = server.cable().pubsub().stats();
    assert!(stats.subscriptions <= 102, "{stats:?}");
}

#[tokio::test]
async fn a_command_flood_from_a_client_that_does_not_read_is_cut_off() {
    let (addr, server) = start().await;
    let mut p = probe(addr).await;
    let mut flood = connect(addr).await;
    flood.send(Message::text(subscribe_cmd(1))).await.unwrap();
    assert!(next_text(&mut flood).await.contains("confirm"));
    // 40,000 echo requests of ~1 KiB each, never reading the answers.
    let pad = "p".repeat(1000);
    let cmd = format!(
        r#"{{"command":"message","identifier":"{}","data":"{{\"action\":\"echo\",\"pad\":\"{pad}\"}}"}}"#,
        id(1)
    );
    let writer = tokio::spawn(async move {
        for _ in 0..40_000 {
            if flood.feed(Message::text(cmd.clone())).await.is_err() {
                break;
            }
        }
        let _ = flood.flush().await;
        flood
    });
    // Meanwhile the probe is served.
    for x in 10..15 {
        check_probe(&mut p, &server, x).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    // Cut at the outbound byte bound (its answers pile up) or at the
    // command queue bound (its commands do), whichever it reaches first.
    let cut = || {
        server.stats().slow_disconnects.load(Ordering::Relaxed)
            + server.stats().command_overflows.load(Ordering::Relaxed)
    };
    while cut() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a flooding client that never reads must be cut at a bound"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Once cut, the flooding client's writes fail and its writer ends.
    tokio::time::timeout(Duration::from_secs(20), writer)
        .await
        .expect("the flooding writer ends once the server cuts it")
        .unwrap();
    check_probe(&mut p, &server, 20).await;
    assert!(
        server.stats().queued_bytes.load(Ordering::Relaxed) < 1024 * 1024,
        "outbound memory stays bounded"
    );
}

#[tokio::test]
async fn abrupt_reset_mid_frame_cleans_up() {
    let (addr, server) = start().await;
    let mut p = probe(addr).await;
    for _ in 0..20 {
        let ws = connect(addr).await;
        let mut tcp = ws.into_inner();
        let tcp = match &mut tcp {
            tokio_tungstenite::MaybeTlsStream::Plain(s) => s,
            _ => unreachable!(),
        };
        // The header of a 1000-byte masked text frame, then only 10 bytes of it.
        let mut partial = vec![0x81, 0x80 | 126, 0x03, 0xe8, 1, 2, 3, 4];
        partial.extend_from_slice(&[b'x'; 10]);
        tcp.write_all(&partial).await.unwrap();
        // A zero linger makes the close an RST; it never blocks.
        #[allow(deprecated)]
        tcp.set_linger(Some(Duration::ZERO)).unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.connection_count() != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "reset connections must be cleaned up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check_probe(&mut p, &server, 30).await;
    assert_eq!(
        server.cable().pubsub().stats().subscriptions,
        1,
        "only the probe's stream"
    );
}
