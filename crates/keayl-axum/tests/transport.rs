//! The WebSocket transport over loopback: slow clients, size limits,
//! graceful shutdown, restart.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use keayl_axum::cable::{AllowedOrigin, CableServer, OriginPolicy, ServerConfig, SocketConfig};
use keayl_cable::{Cable, InMemory};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

// The echo probe of keayl-cable's tests, streaming the `stream` param.
#[path = "../../keayl-cable/tests/common/echo.rs"]
mod echo;
use echo::EchoChannel;

/// A server that accepts every origin (the test clients send none).
async fn start(config: ServerConfig) -> (SocketAddr, CableServer) {
    start_with_origins(ServerConfig {
        origins: OriginPolicy::AllowAll,
        ..config
    })
    .await
}

/// A server with `config` as given, its origin policy included.
async fn start_with_origins(config: ServerConfig) -> (SocketAddr, CableServer) {
    let cable = Cable::builder(InMemory::new())
        .channel::<EchoChannel>()
        .build();
    let server = CableServer::new(cable, config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = server.router().merge(server.broadcast_router());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, server)
}

async fn connect(addr: SocketAddr) -> Ws {
    let mut req = format!("ws://{addr}/cable").into_client_request().unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "actioncable-v1-json, actioncable-unsupported"
            .parse()
            .unwrap(),
    );
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(
        resp.headers().get("sec-websocket-protocol").unwrap(),
        "actioncable-v1-json"
    );
    ws
}

/// Next text frame that is not a ping.
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

const ID: &str = r#"{\"channel\":\"EchoChannel\",\"stream\":\"s\"}"#;

async fn subscribe(ws: &mut Ws) {
    assert_eq!(next_text(ws).await, r#"{"type":"welcome"}"#);
    ws.send(Message::text(format!(
        r#"{{"command":"subscribe","identifier":"{ID}"}}"#
    )))
    .await
    .unwrap();
    assert_eq!(
        next_text(ws).await,
        format!(r#"{{"identifier":"{ID}","type":"confirm_subscription"}}"#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_is_cut_at_the_byte_bound_and_others_keep_up() {
    let (addr, server) = start(ServerConfig {
        socket: SocketConfig {
            outbound_queue_bytes: 256 * 1024,
            write_timeout: Duration::from_millis(500),
            ..SocketConfig::default()
        },
        ..ServerConfig::default()
    })
    .await;
    let mut fast = connect(addr).await;
    subscribe(&mut fast).await;
    let mut slow = connect(addr).await;
    subscribe(&mut slow).await;
    // `slow` never reads from now on.
    let payload = "x".repeat(32 * 1024);
    let count = 800; // 25 MiB: more than the kernel buffers of the stalled socket
    let cable = server.cable().clone();
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0usize);
    let reader = tokio::spawn(async move {
        let mut got = 0usize;
        while got < count {
            let frame = next_text(&mut fast).await;
            let expected_prefix = format!(r#"{{"identifier":"{ID}","message":{{"n":{got},"#);
            assert!(
                frame.starts_with(&expected_prefix),
                "out of order at {got}: {}",
                &frame[..80.min(frame.len())]
            );
            got += 1;
            let _ = progress_tx.send(got);
        }
        (got, fast)
    });
    for n in 0..count {
        // Pace to the fast reader (at most 4 frames ahead of it), so only the
        // stalled client falls behind.
        while n > *progress.borrow_and_update() + 4 {
            if progress.changed().await.is_err() {
                break;
            }
        }
        cable
            .broadcast("s", &serde_json::json!({"n": n, "pad": payload}))
            .await
            .unwrap();
    }
    // The fast client stays connected (it is returned, not dropped).
    let (got, _fast) = tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("the fast client must not be held up")
        .unwrap();
    assert_eq!(got, count, "the fast client received every broadcast");
    // The stalled client was disconnected for being too slow.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.stats().slow_disconnects.load(Ordering::Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "slow client was never cut"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while server.connection_count() != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "slow connection not torn down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Reading what the slow socket got: the broadcasts that were already in
    // the kernel's buffers, in order, then the end of the connection. The
    // `too_slow` notice is queued behind a write that never completes
    // (nobody reads), so the write timeout normally drops the socket before
    // it goes out; if it does get out, nothing but the close may follow it.
    // That a cut client that still reads is told is checked deterministically
    // by `a_client_over_the_byte_bound_is_told_too_slow_then_closed_with_1000`.
    let mut frames = 0;
    let mut told_too_slow = false;
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(5), slow.next()).await {
            Err(_) => panic!("the server never closed the slow client's socket"),
            // End of stream, a reset, or a frame cut off by the close.
            Ok(None) | Ok(Some(Err(_))) => break "closed",
            Ok(Some(Ok(Message::Close(_)))) => break "close frame",
            Ok(Some(Ok(Message::Text(t)))) => {
                assert!(!told_too_slow, "a frame after the too_slow notice: {t}");
                if t.contains("too_slow") {
                    assert_eq!(
                        t.as_str(),
                        r#"{"type":"disconnect","reason":"too_slow","reconnect":true}"#
                    );
                    told_too_slow = true;
                    continue;
                }
                if t.contains("\"type\":\"ping\"") {
                    continue;
                }
                let expected_prefix = format!(r#"{{"identifier":"{ID}","message":{{"n":{frames},"#);
                assert!(
                    t.starts_with(&expected_prefix),
                    "expected broadcast {frames}, got: {}",
                    &t[..80.min(t.len())]
                );
                frames += 1;
            }
            Ok(Some(Ok(_))) => {}
        }
    };
    assert!(
        frames < count,
        "the slow client cannot have received everything ({ended} after {frames})"
    );
    // Cut once, counted once (the queue overflow and the blocked write's
    // timeout are one disconnect).
    assert_eq!(server.stats().slow_disconnects.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_client_over_the_byte_bound_is_told_too_slow_then_closed_with_1000() {
    // Frames of ~2.5 KiB against a 4 KiB bound: two pushed before the writer
    // drains the first overflow it.
    let (addr, server) = start(ServerConfig {
        socket: SocketConfig {
            outbound_queue_bytes: 4 * 1024,
            ..SocketConfig::default()
        },
        ..ServerConfig::default()
    })
    .await;
    let mut ws = connect(addr).await;
    subscribe(&mut ws).await;
    // In-memory fan-out pushes into the connection's queue within
    // `broadcast` itself, and on this single-threaded runtime the
    // connection's writer cannot run before the test yields: both frames
    // are queued together, and the second is over the bound.
    let payload = "x".repeat(2500);
    let cable = server.cable().clone();
    for n in 0..2 {
        cable
            .broadcast("s", &serde_json::json!({"n": n, "pad": payload}))
            .await
            .unwrap();
    }
    assert_eq!(server.stats().slow_disconnects.load(Ordering::Relaxed), 1);
    // The client reads, so the socket takes the notice: what was queued is
    // dropped, the notice goes out, then a close frame with 1000.
    assert_eq!(
        next_text(&mut ws).await,
        r#"{"type":"disconnect","reason":"too_slow","reconnect":true}"#
    );
    let close = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("a close frame after the notice")
        .expect("the stream is still open")
        .expect("readable");
    match close {
        Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Normal),
        other => panic!("expected close 1000, got {other:?}"),
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.connection_count() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "cut connection not torn down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        server.stats().slow_disconnects.load(Ordering::Relaxed),
        1,
        "counted once"
    );
}

#[tokio::test]
async fn oversize_message_closes_with_1009_and_others_are_unaffected() {
    let (addr, _server) = start(ServerConfig {
        max_message_bytes: 16 * 1024,
        ..ServerConfig::default()
    })
    .await;
    let mut probe = connect(addr).await;
    subscribe(&mut probe).await;
    let mut big = connect(addr).await;
    subscribe(&mut big).await;
    big.send(Message::text("x".repeat(17 * 1024)))
        .await
        .unwrap();
    let mut code = None;
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(5), big.next()).await {
        match msg {
            Ok(Message::Close(Some(frame))) => {
                code = Some(frame.code);
                break;
            }
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    assert_eq!(code, Some(CloseCode::Size));
    // The probe still works.
    probe
        .send(Message::text(format!(
            r#"{{"command":"message","identifier":"{ID}","data":"{{\"action\":\"echo\",\"x\":1}}"}}"#
        )))
        .await
        .unwrap();
    assert_eq!(
        next_text(&mut probe).await,
        format!(r#"{{"identifier":"{ID}","message":{{"action":"echo","x":1}}}}"#)
    );
}

#[tokio::test]
async fn graceful_shutdown_tells_every_client_to_reconnect_then_closes() {
    let (addr, server) = start(ServerConfig {
        shutdown_deadline: Duration::from_secs(3),
        ..ServerConfig::default()
    })
    .await;
    let mut a = connect(addr).await;
    subscribe(&mut a).await;
    let mut b = connect(addr).await;
    subscribe(&mut b).await;
    let started = tokio::time::Instant::now();
    let shutdown = tokio::spawn({
        let server = server.clone();
        async move { server.shutdown().await }
    });
    for ws in [&mut a, &mut b] {
        assert_eq!(
            next_text(ws).await,
            r#"{"type":"disconnect","reason":"server_restart","reconnect":true}"#
        );
        let close = tokio::time::timeout(Duration::from_secs(3), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match close {
            Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Normal),
            other => panic!("expected close 1000, got {other:?}"),
        }
    }
    shutdown.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(server.connection_count(), 0);
    // New upgrades are refused while shutting down.
    let req = format!("ws://{addr}/cable").into_client_request().unwrap();
    assert!(tokio_tungstenite::connect_async(req).await.is_err());
}

#[tokio::test]
async fn restart_closes_connections_but_keeps_accepting() {
    let (addr, server) = start(ServerConfig::default()).await;
    let mut a = connect(addr).await;
    subscribe(&mut a).await;
    server.restart();
    assert_eq!(
        next_text(&mut a).await,
        r#"{"type":"disconnect","reason":"server_restart","reconnect":true}"#
    );
    let mut again = connect(addr).await;
    subscribe(&mut again).await;
}

/// Upgrade `/cable` with `origin` (none: no `Origin` header): the HTTP
/// status of the answer, and its body when it was not an upgrade.
async fn upgrade_with_origin(addr: SocketAddr, origin: Option<&str>) -> (u16, Option<String>) {
    let mut req = format!("ws://{addr}/cable").into_client_request().unwrap();
    if let Some(origin) = origin {
        req.headers_mut().insert("origin", origin.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((mut ws, resp)) => {
            assert_eq!(next_text(&mut ws).await, r#"{"type":"welcome"}"#);
            (resp.status().as_u16(), None)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => (
            resp.status().as_u16(),
            resp.body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned()),
        ),
        Err(e) => panic!("upgrade failed otherwise: {e}"),
    }
}

#[tokio::test]
async fn plain_get_and_refused_origin_get_404() {
    let (addr, server) = start_with_origins(ServerConfig {
        origins: OriginPolicy::Check {
            allowed: vec![AllowedOrigin::Exact("https://allowed.example".into())],
            allow_same_origin_as_host: false,
        },
        ..ServerConfig::default()
    })
    .await;
    let refused = || server.stats().refused.load(Ordering::Relaxed);
    // A plain GET (no upgrade).
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(b"GET /cable HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 404"), "{out}");
    assert!(out.ends_with("Page not found"), "{out}");
    assert_eq!(refused(), 1);
    // Upgrades from a refused origin, and without any: 404, never upgraded.
    for origin in [
        Some("https://evil.example"),
        Some("http://allowed.example"),
        None,
    ] {
        let (status, body) = upgrade_with_origin(addr, origin).await;
        assert_eq!(status, 404, "{origin:?}");
        assert_eq!(body.as_deref(), Some("Page not found"), "{origin:?}");
    }
    assert_eq!(refused(), 4);
    assert_eq!(server.connection_count(), 0);
    // The allowed origin upgrades (and is welcomed).
    let (status, _) = upgrade_with_origin(addr, Some("https://allowed.example")).await;
    assert_eq!(status, 101);
    assert_eq!(refused(), 4);
    assert_eq!(server.stats().connections_total.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn half_open_client_that_never_answers_is_closed_while_a_live_one_stays() {
    let (addr, server) = start(ServerConfig {
        socket: SocketConfig {
            ping_interval: Duration::from_millis(100),
            liveness_timeout: Duration::from_millis(800),
            ..SocketConfig::default()
        },
        ..ServerConfig::default()
    })
    .await;
    let mut live = connect(addr).await;
    subscribe(&mut live).await;
    let mut silent = connect(addr).await;
    subscribe(&mut silent).await;
    // `live` keeps reading (tungstenite answers the server's pings while
    // reading); `silent` never reads again, so it never answers.
    let reader = tokio::spawn(async move {
        let until = tokio::time::Instant::now() + Duration::from_millis(2500);
        while tokio::time::Instant::now() < until {
            let _ = tokio::time::timeout(Duration::from_millis(50), live.next()).await;
        }
        live
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while server.stats().liveness_timeouts.load(Ordering::Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "half-open client never closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut live = reader.await.unwrap();
    assert_eq!(server.stats().liveness_timeouts.load(Ordering::Relaxed), 1);
    assert_eq!(server.connection_count(), 1, "the answering client stays");
    live.send(Message::text(format!(
        r#"{{"command":"message","identifier":"{ID}","data":"{{\"action\":\"echo\",\"ok\":true}}"}}"#
    )))
    .await
    .unwrap();
    assert_eq!(
        next_text(&mut live).await,
        format!(r#"{{"identifier":"{ID}","message":{{"action":"echo","ok":true}}}}"#)
    );
    drop(silent);
}

#[tokio::test]
async fn connections_beyond_the_limit_get_503() {
    let (addr, _server) = start(ServerConfig {
        socket: SocketConfig {
            max_connections: 2,
            ..SocketConfig::default()
        },
        ..ServerConfig::default()
    })
    .await;
    let mut a = connect(addr).await;
    subscribe(&mut a).await;
    let mut b = connect(addr).await;
    subscribe(&mut b).await;
    let req = format!("ws://{addr}/cable").into_client_request().unwrap();
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 503)
        }
        other => panic!("expected HTTP 503, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_broadcasts_never_delays_echo_answers_or_the_unsubscribe() {
    let (addr, server) = start(ServerConfig::default()).await;
    let mut ws = connect(addr).await;
    subscribe(&mut ws).await;
    let cable = server.cable().clone();
    let burst = tokio::spawn(async move {
        for i in 0..10_000u32 {
            cable
                .broadcast("s", &serde_json::json!({"i": i}))
                .await
                .unwrap();
            if i % 200 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });
    let (mut tx, mut rx) = ws.split();
    let reader = tokio::spawn(async move {
        // Arrival time of each echo answer, by n.
        let mut answered = std::collections::HashMap::new();
        while let Some(Ok(msg)) = rx.next().await {
            if let Message::Text(t) = msg {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                if let Some(n) = v["message"]["n"].as_u64() {
                    answered.insert(n, tokio::time::Instant::now());
                    if n == 9 {
                        break;
                    }
                }
            }
        }
        (answered, rx)
    });
    let mut sent = Vec::new();
    for n in 0..10u64 {
        sent.push(tokio::time::Instant::now());
        tx.send(Message::text(format!(
            r#"{{"command":"message","identifier":"{ID}","data":"{{\"action\":\"echo\",\"n\":{n}}}"}}"#
        )))
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (answered, _rx) = tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("every echo answered")
        .unwrap();
    for (n, at) in sent.iter().enumerate() {
        let got = answered[&(n as u64)];
        assert!(
            got - *at < Duration::from_secs(1),
            "echo {n} took {:?}",
            got - *at
        );
    }
    tx.send(Message::text(format!(
        r#"{{"command":"unsubscribe","identifier":"{ID}"}}"#
    )))
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.cable().pubsub().stats().subscriptions > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "unsubscribe not honoured"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    burst.await.unwrap();
}
