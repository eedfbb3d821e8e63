//! The listener's edges over real sockets: header and body timeouts, the
//! header bound, the connection budget with its ops headroom, a connect
//! storm, the handshake clock and graceful shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use futures_util::StreamExt;
use keayl_axum::cable::{CableServer, OriginPolicy, ServerConfig, SocketConfig};
use keayl_axum::listener::{Listener, ListenerConfig, ListenerStats};
use keayl_cable::{Cable, InMemory};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

struct Server {
    addr: SocketAddr,
    stats: ListenerStats,
    cable: CableServer,
}

fn config(f: impl FnOnce(&mut ListenerConfig)) -> ListenerConfig {
    let mut c = ListenerConfig::default();
    f(&mut c);
    c
}

/// `/health`, `/hold` (a body that never ends), `POST /echo` (the body's
/// length) and a cable at `/cable`.
async fn start(listener_config: ListenerConfig, socket: SocketConfig) -> Server {
    let cable = CableServer::new(
        Cable::builder(InMemory::new()).build(),
        ServerConfig {
            origins: OriginPolicy::AllowAll,
            socket,
            ..ServerConfig::default()
        },
    )
    .unwrap();
    let router = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/hold",
            get(|| async {
                axum::body::Body::from_stream(futures_util::stream::pending::<
                    Result<bytes::Bytes, std::io::Error>,
                >())
            }),
        )
        .route(
            "/echo",
            post(|body: String| async move { body.len().to_string() }),
        )
        .merge(cable.router());
    let tcp = keayl_axum::listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = Listener::new(tcp, listener_config).unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = listener.stats();
    tokio::spawn(listener.serve(router));
    Server { addr, stats, cable }
}

/// A whole HTTP/1.1 exchange on a new connection: the response's text.
async fn request(addr: SocketAddr, raw: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn health(addr: SocketAddr) -> String {
    request(
        addr,
        "GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await
}

/// Whether the server closed `s` (EOF or reset) within `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn silent_connections_are_closed_by_the_header_timeout_while_a_probe_is_served() {
    let server = start(
        config(|c| c.header_read_timeout = Duration::from_secs(1)),
        SocketConfig::default(),
    )
    .await;
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
    }
    let started = tokio::time::Instant::now();
    assert!(health(server.addr).await.starts_with("HTTP/1.1 200"));
    for s in &mut silent {
        assert!(closed_within(s, Duration::from_secs(4)).await);
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(800),
        "closed too early: {took:?}"
    );
    assert!(health(server.addr).await.starts_with("HTTP/1.1 200"));
    let snap = server.stats.snapshot();
    assert!(snap.header_timeouts >= 200, "{snap:?}");
}

#[tokio::test]
async fn slowloris_upgrades_are_closed_by_the_header_timeout() {
    let server = start(
        config(|c| c.header_read_timeout = Duration::from_secs(1)),
        SocketConfig::default(),
    )
    .await;
    let mut trickling = Vec::new();
    for _ in 0..100 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"GET /cable HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n")
            .await
            .unwrap();
        trickling.push(s);
    }
    let trickle = async {
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            for s in &mut trickling {
                // One byte of a header line that never ends.
                let _ = s.write_all(b"x").await;
            }
        }
    };
    let probe = async {
        for _ in 0..10 {
            assert!(health(server.addr).await.starts_with("HTTP/1.1 200"));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::join!(trickle, probe);
    for s in &mut trickling {
        assert!(closed_within(s, Duration::from_secs(1)).await);
    }
    assert_eq!(server.cable.connection_count(), 0);
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let server = start(ListenerConfig::default(), SocketConfig::default()).await;
    let pad = "x".repeat(40 * 1024);
    let answer = request(
        server.addr,
        &format!("GET /health HTTP/1.1\r\nHost: t\r\nX-Pad: {pad}\r\n\r\n"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(health(server.addr).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_stalled_body_fails_but_a_slow_one_completes() {
    let server = start(
        config(|c| c.body_read_timeout = Duration::from_millis(500)),
        SocketConfig::default(),
    )
    .await;
    // 10 of 100 bytes, then nothing.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out))
        .await
        .expect("a stalled body is answered")
        .unwrap();
    let answer = String::from_utf8_lossy(&out);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(server.stats.snapshot().body_timeouts, 1);

    // 20 bytes, one every 100 ms: slower in total than the timeout, but
    // never stalled that long.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 20\r\n\r\n",
    )
    .await
    .unwrap();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.write_all(b"y").await.unwrap();
    }
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let answer = String::from_utf8_lossy(&out);
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("20"),
        "{answer}"
    );
}

async fn ws_connect(addr: SocketAddr) -> Result<Ws, u16> {
    match tokio_tungstenite::connect_async(format!("ws://{addr}/cable")).await {
        Ok((mut ws, _)) => {
            let first = tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .expect("a frame")
                .expect("open")
                .expect("readable");
            assert_eq!(first, Message::text(r#"{"type":"welcome"}"#));
            Ok(ws)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("connect failed otherwise: {e}"),
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[tokio::test]
async fn a_full_budget_leaves_health_answering_and_refuses_the_rest() {
    let server = start(
        config(|c| {
            c.max_connections = 20;
            c.ops_headroom = 3;
            c.ops_header_read_timeout = Duration::from_secs(1);
        }),
        SocketConfig::default(),
    )
    .await;
    // Idle WebSockets take every regular place.
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(ws_connect(server.addr).await.expect("within the budget"));
    }
    assert_eq!(server.stats.snapshot().open, 20);
    // An ops place serves /health, and nothing else.
    for _ in 0..5 {
        assert!(health(server.addr).await.starts_with("HTTP/1.1 200"));
    }
    assert_eq!(ws_connect(server.addr).await.err(), Some(503));
    let page = request(server.addr, "GET /hold HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert!(page.starts_with("HTTP/1.1 503"), "{page}");
    // Silent sockets on every ops place: the next connection is refused
    // with 503 at once; the ops places free within their short timeout.
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = health(server.addr).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(server.stats.snapshot().refused >= 1);
    for s in &mut silent {
        assert!(closed_within(s, Duration::from_secs(3)).await);
    }
    assert!(health(server.addr).await.starts_with("HTTP/1.1 200"));
    // A WebSocket that closes gives its place back.
    drop(idle.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while server.stats.snapshot().open > 19 {
        assert!(tokio::time::Instant::now() < deadline, "place not freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ws_connect(server.addr).await.expect("a freed place");
}

#[tokio::test]
async fn a_connect_storm_of_twice_the_limit_holds_exactly_the_limit() {
    const LIMIT: usize = 100;
    let server = start(
        config(|c| {
            c.max_connections = LIMIT;
            c.ops_headroom = 4;
        }),
        SocketConfig::default(),
    )
    .await;
    let storm: Vec<_> = (0..2 * LIMIT)
        .map(|_| tokio::spawn(ws_connect(server.addr)))
        .collect();
    let (mut welcomed, mut refused) = (Vec::new(), 0);
    for t in storm {
        match t.await.unwrap() {
            Ok(ws) => welcomed.push(ws),
            Err(503) => refused += 1,
            Err(other) => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((welcomed.len(), refused), (LIMIT, LIMIT));
    assert_eq!(server.cable.connection_count(), LIMIT);
    assert_eq!(server.stats.snapshot().open, LIMIT);
    assert!(health(server.addr).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn the_handshake_timeout_counts_from_the_tcp_accept() {
    let server = start(
        ListenerConfig::default(),
        SocketConfig {
            handshake_timeout: Duration::from_secs(1),
            ..SocketConfig::default()
        },
    )
    .await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let head = "GET /cable HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    // The request trickles in for 1.5 s: past the handshake timeout.
    for chunk in head.as_bytes().chunks(head.len() / 15 + 1) {
        s.write_all(chunk).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out))
        .await
        .expect("the server ends the connection")
        .ok();
    let text = String::from_utf8_lossy(&out);
    assert!(
        !text.contains("welcome"),
        "welcomed after the deadline: {text}"
    );
    assert_eq!(server.cable.connection_count(), 0);
}

#[tokio::test]
async fn shutdown_stops_accepting_and_cuts_open_streams_after_the_grace() {
    let router = Router::new().route(
        "/hold",
        get(|| async {
            axum::body::Body::from_stream(futures_util::stream::pending::<
                Result<bytes::Bytes, std::io::Error>,
            >())
        }),
    );
    let tcp = keayl_axum::listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = Listener::new(
        tcp,
        config(|c| c.shutdown_grace = Duration::from_millis(300)),
    )
    .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(listener.serve_until(router, async move {
        let _ = stop_rx.await;
    }));
    let mut held = TcpStream::connect(addr).await.unwrap();
    held.write_all(b"GET /hold HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = held.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let started = tokio::time::Instant::now();
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(3), served)
        .await
        .expect("serve_until returns after the grace")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(closed_within(&mut held, Duration::from_secs(1)).await);
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
}

/// A response of 1 KB every 20 ms for ever; `dropped` is set when the
/// server lets go of it.
fn firehose(dropped: std::sync::Arc<std::sync::atomic::AtomicBool>) -> axum::body::Body {
    struct Flag(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let flag = Flag(dropped);
    axum::body::Body::from_stream(futures_util::stream::unfold(flag, |flag| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Some((
            Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 1000])),
            flag,
        ))
    }))
}

#[tokio::test]
async fn a_client_that_reads_nothing_is_cut_and_a_reading_one_is_not() {
    let stalled_flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reading_flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (a, b) = (stalled_flag.clone(), reading_flag.clone());
    let router = Router::new()
        .route(
            "/stalled",
            get(move || std::future::ready(firehose(a.clone()))),
        )
        .route(
            "/reading",
            get(move || std::future::ready(firehose(b.clone()))),
        );
    let tcp = keayl_axum::listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = Listener::new(
        tcp,
        config(|c| c.client_stall_timeout = Some(Duration::from_secs(2))),
    )
    .unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = listener.stats();
    tokio::spawn(listener.serve(router));

    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(b"GET /stalled HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut reading = TcpStream::connect(addr).await.unwrap();
    reading
        .write_all(b"GET /reading HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    let mut read = 0usize;
    while !stalled_flag.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the non-reading client was not cut"
        );
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(50), reading.read(&mut buf)).await
        {
            assert!(n > 0, "the reading client was cut");
            read += n;
        }
    }
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert!(!reading_flag.load(std::sync::atomic::Ordering::SeqCst));
    assert!(read > 50_000, "read only {read} bytes");
    assert_eq!(stats.snapshot().client_stalls, 1);
}
