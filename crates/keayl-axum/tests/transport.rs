//! The WebSocket transport over loopback: slow clients, size limits,
//! graceful shutdown, restart.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use keayl_axum::cable::{CableServer, OriginPolicy, ServerConfig, SocketConfig};
use keayl_cable::{Cable, Channel, ChannelContext, ChannelError, Data, InMemory};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(Default)]
struct StreamChannel;

impl Channel for StreamChannel {
    const NAME: &'static str = "StreamChannel";
    // `echo` transmits the data back whole (`action` included, keys in the
    // client's order); any other action is invalid.
    type Action = Data;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        ctx.stream_from("s");
        Ok(())
    }

    async fn perform(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        data: Data,
    ) -> Result<(), ChannelError> {
        if data.get("action").and_then(|a| a.as_str()) != Some("echo") {
            return Err(ChannelError::invalid("unknown action"));
        }
        ctx.transmit(&data);
        Ok(())
    }
}

async fn start(config: ServerConfig) -> (SocketAddr, CableServer) {
    let cable = Cable::builder(InMemory::new())
        .channel::<StreamChannel>()
        .build();
    let server = CableServer::new(
        cable,
        ServerConfig {
            origins: OriginPolicy::AllowAll,
            ..config
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

const ID: &str = r#"{\"channel\":\"StreamChannel\"}"#;

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
    // Reading what the slow socket got: frames, maybe the too_slow notice,
    // then the end. Never more than was broadcast.
    let mut frames = 0;
    let mut saw_too_slow = false;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(2), slow.next()).await {
        if let Message::Text(t) = msg {
            if t.contains("too_slow") {
                assert_eq!(
                    t.as_str(),
                    r#"{"type":"disconnect","reason":"too_slow","reconnect":true}"#
                );
                saw_too_slow = true;
            } else {
                frames += 1;
            }
        }
    }
    assert!(
        frames < count,
        "the slow client cannot have received everything"
    );
    let _ = saw_too_slow; // delivered only when the socket still takes it
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

#[tokio::test]
async fn plain_get_and_refused_origin_get_404() {
    let (addr, _server) = start(ServerConfig::default()).await;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(b"GET /cable HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 404"), "{out}");
    assert!(out.ends_with("Page not found"));
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
