//! The demo's live and SSE endpoints, served by axum over loopback.

#[path = "support/metrics.rs"]
mod metrics;

use std::time::Duration;

use metrics::{sample, samples};

use futures_util::StreamExt;
use keayl_demo::DemoConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

async fn start(config: DemoConfig) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(keayl_demo::serve(listener, config));
    addr
}

async fn get_raw(addr: std::net::SocketAddr, path: &str, headers: &str) -> (String, Vec<u8>) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let head = head.to_ascii_lowercase();
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(&raw[split + 4..])
    } else {
        raw[split + 4..].to_vec()
    };
    (head, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 4 + size..];
    }
    out
}

/// Read from `stream` into `got` until it holds `needle` (5 s per read).
async fn read_until(stream: &mut TcpStream, got: &mut Vec<u8>, needle: &str) {
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(got).contains(needle) {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("read timed out")
            .unwrap();
        assert!(n > 0, "connection closed before {needle:?}");
        got.extend_from_slice(&buf[..n]);
    }
}

/// `POST /_broadcast` with JSON `body`; asserts 201.
async fn post_broadcast(addr: std::net::SocketAddr, body: &str) {
    let mut post = TcpStream::connect(addr).await.unwrap();
    post.write_all(
        format!(
            "POST /_broadcast HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut resp = String::new();
    post.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 201"), "{resp}");
}

#[tokio::test]
async fn numbers_is_the_spec_example() {
    let addr = start(DemoConfig::default()).await;
    let (head, body) = get_raw(addr, "/numbers", "").await;
    assert!(head.starts_with("http/1.1 200"));
    assert_eq!(body, b"1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n");
}

#[tokio::test]
async fn events_is_the_spec_example_with_retry_default() {
    let addr = start(DemoConfig::default()).await;
    let (head, body) = get_raw(addr, "/events", "").await;
    assert!(head.contains("content-type: text/event-stream"));
    assert!(head.contains("cache-control: no-cache"));
    assert!(head.contains("x-accel-buffering: no"));
    assert_eq!(
        String::from_utf8(body).unwrap(),
        "event: greeting\nretry: 5000\ndata: hello\n\n\
         retry: 5000\ndata: world\n\n\
         retry: 1000\ndata: pong\n\n"
    );
}

#[tokio::test]
async fn clock_ticks_with_ids_and_resumes_after_last_event_id() {
    let addr = start(DemoConfig {
        clock_interval: Duration::from_millis(50),
        clock_heartbeat: Duration::from_secs(15),
        ..DemoConfig::default()
    })
    .await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /clock HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 7\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    read_until(&mut tcp, &mut got, "id: 9\n").await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains(": clock stream open\n"));
    assert!(
        text.contains("event: tick\nid: 8\ndata: {\"n\":8,"),
        "{text}"
    );
}

#[tokio::test]
async fn index_page_uses_event_source_on_clock() {
    let addr = start(DemoConfig::default()).await;
    let (head, body) = get_raw(addr, "/", "").await;
    assert!(head.contains("content-type: text/html"));
    let page = String::from_utf8(body).unwrap();
    assert!(page.contains("new EventSource(\"/clock\")"));
}

#[tokio::test]
async fn sse_refuses_internal_and_model_streams() {
    let addr = start(DemoConfig::default()).await;
    for path in [
        "/sse/action_cable%2F1",
        "/sse/action_cable:x",
        "/sse/Z2lkOi8vdG9kby1hcHAvVG9kb0xpc3QvMQ",
        "/sse/chat:Z2lkOi8vY2hhdC1hcHAvUm9vbS80Mg",
        "/sse/a%20b",
    ] {
        let (head, _) = get_raw(addr, path, "").await;
        assert!(head.starts_with("http/1.1 404"), "{path}: {head}");
    }
    assert!(keayl_demo::is_public_stream("chat:lobby"));
    assert!(keayl_demo::is_public_stream("news"));
}

#[tokio::test]
async fn sse_stream_carries_broadcasts_from_the_http_api() {
    let addr = start(DemoConfig::default()).await;
    let mut sse = TcpStream::connect(addr).await.unwrap();
    sse.write_all(b"GET /sse/news HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    read_until(&mut sse, &mut got, ": subscribed\n").await;
    let body = r#"{"stream":"news","data":"{\"headline\":\"hi\\nthere\"}"}"#;
    post_broadcast(addr, body).await;
    read_until(
        &mut sse,
        &mut got,
        "data: {\"headline\":\"hi\\nthere\"}\n\n",
    )
    .await;
}

#[test]
fn sample_parsing_matches_whole_names_only() {
    let text = "# HELP keayl_connections Open WebSocket connections\n\
                # TYPE keayl_connections gauge\n\
                keayl_connections_total 7\n\
                keayl_connections 2\n\
                keayl_command_errors_total{kind=\"not_json\"} 3\n\
                keayl_command_errors_total{kind=\"unknown_channel\"} 1 1700000000\n";
    assert_eq!(sample(text, "keayl_connections"), 2.0);
    assert_eq!(sample(text, "keayl_connections_total"), 7.0);
    assert_eq!(
        samples(text, "keayl_command_errors_total"),
        [
            ("kind=\"not_json\"".to_owned(), 3.0),
            ("kind=\"unknown_channel\"".to_owned(), 1.0)
        ]
    );
    assert!(samples(text, "keayl_conn").is_empty());
    assert!(samples(text, "keayl_broker_up").is_empty());
}

async fn metrics(addr: std::net::SocketAddr) -> String {
    let (head, body) = get_raw(addr, "/metrics", "").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    String::from_utf8(body).unwrap()
}

#[tokio::test]
async fn metrics_and_health_endpoints() {
    let addr = start(DemoConfig::default()).await;
    let (head, body) = get_raw(addr, "/health", "").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, b"ok");
    let text = metrics(addr).await;
    assert_eq!(sample(&text, "keayl_connections"), 0.0, "{text}");
    assert_eq!(sample(&text, "keayl_connections_total"), 0.0, "{text}");
    assert_eq!(sample(&text, "keayl_broker_up"), 1.0, "{text}");
    assert_eq!(sample(&text, "keayl_broadcasts_total"), 0.0, "{text}");
    assert!(sample(&text, "keayl_runtime_alive_tasks") > 0.0, "{text}");

    // One cable connection (from an allowed origin) and one broadcast.
    let mut req = format!("ws://{addr}/cable").into_client_request().unwrap();
    req.headers_mut()
        .insert("origin", "http://localhost:3000".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let welcome = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("a welcome")
        .unwrap()
        .unwrap();
    assert_eq!(welcome, Message::text(r#"{"type":"welcome"}"#));
    let body = r#"{"stream":"news","data":"{}"}"#;
    post_broadcast(addr, body).await;
    let text = metrics(addr).await;
    assert_eq!(sample(&text, "keayl_connections"), 1.0, "{text}");
    assert_eq!(sample(&text, "keayl_connections_total"), 1.0, "{text}");
    assert_eq!(sample(&text, "keayl_broadcasts_total"), 1.0, "{text}");
    assert_eq!(sample(&text, "keayl_broker_up"), 1.0, "{text}");
    drop(ws);
}

#[tokio::test]
async fn shutdown_finishes_even_with_open_sse_streams() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(keayl_demo::serve_until(
        listener,
        DemoConfig::default(),
        async move {
            let _ = stop_rx.await;
        },
    ));
    let mut sse = TcpStream::connect(addr).await.unwrap();
    sse.write_all(b"GET /clock HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    assert!(sse.read(&mut buf).await.unwrap() > 0);
    let started = std::time::Instant::now();
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), server)
        .await
        .expect("shutdown must not hang on an open SSE stream")
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed()
            < keayl_axum::listener::ListenerConfig::default().shutdown_grace
                + Duration::from_secs(3)
    );
}

#[tokio::test]
async fn with_allowed_hosts_another_host_gets_421_dns_rebinding() {
    let addr = start(DemoConfig {
        allowed_hosts: vec!["localhost".into()],
        ..DemoConfig::default()
    })
    .await;
    let request =
        |host: &str| format!("GET /numbers HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    for (host, want) in [("localhost:3000", "200"), ("evil.example:3000", "421")] {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(request(host).as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await.unwrap();
        let status = String::from_utf8_lossy(&raw[..12]).into_owned();
        assert!(status.ends_with(want), "{host}: {status}");
    }
}
