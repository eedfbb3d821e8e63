//! `POST /_broadcast` at the edge: the secret is checked before the body is
//! read, the body is bounded in bytes and time, cross-site posts are
//! refused, and shutdown answers 503.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use keayl_axum::cable::{BroadcastAuth, CableServer, OriginPolicy, ServerConfig};
use keayl_cable::{Cable, InMemory};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start(auth: BroadcastAuth) -> (SocketAddr, CableServer) {
    let server = CableServer::new(
        Cable::builder(InMemory::new()).build(),
        ServerConfig {
            origins: OriginPolicy::default(),
            broadcast_auth: auth,
            broadcast_body_bytes: 64 * 1024,
            broadcast_body_timeout: Duration::from_millis(500),
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

/// Send `head` (and `body`), return the status code of the response.
async fn status(addr: SocketAddr, head: &str, body: &[u8]) -> u16 {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(body).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("a response")
        .unwrap();
    String::from_utf8_lossy(&buf[..n])
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn post(addr: SocketAddr, extra: &str, len: usize) -> String {
    format!("POST /_broadcast HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Length: {len}\r\n\r\n")
}

const BODY: &[u8] = br#"{"stream":"s","data":"1"}"#;

#[tokio::test]
async fn an_unauthenticated_post_with_a_body_that_never_ends_is_refused_at_once() {
    let (addr, _server) = start(BroadcastAuth::Secret("s3cret".into())).await;
    let started = Instant::now();
    // 2 MB announced, 10 bytes sent, the rest never comes.
    let code = status(
        addr,
        &post(addr, "Content-Type: application/json\r\n", 2_000_000),
        b"{\"stream\":",
    )
    .await;
    assert_eq!(code, 401);
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_authenticated_body_is_bounded_in_bytes_and_in_time() {
    let (addr, _server) = start(BroadcastAuth::Secret("s3cret".into())).await;
    let auth = "Authorization: Bearer s3cret\r\nContent-Type: application/json\r\n";
    assert_eq!(status(addr, &post(addr, auth, BODY.len()), BODY).await, 201);
    let big = vec![b' '; 100 * 1024];
    assert_eq!(status(addr, &post(addr, auth, big.len()), &big).await, 413);
    let started = Instant::now();
    assert_eq!(status(addr, &post(addr, auth, 1000), b"{").await, 408);
    assert!(started.elapsed() >= Duration::from_millis(450));
}

#[tokio::test]
async fn a_web_page_cannot_broadcast_through_a_visitors_browser() {
    let (addr, _server) = start(BroadcastAuth::OpenForDevelopment).await;
    // A form or `text/plain` fetch needs no CORS preflight: refused.
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let head = post(
            addr,
            &format!("Content-Type: {content_type}\r\n"),
            BODY.len(),
        );
        assert_eq!(status(addr, &head, BODY).await, 415, "{content_type}");
    }
    // JSON marked cross-site by the browser, or from another origin: refused.
    let cross = "Content-Type: application/json\r\nSec-Fetch-Site: cross-site\r\n";
    assert_eq!(
        status(addr, &post(addr, cross, BODY.len()), BODY).await,
        403
    );
    let origin = "Content-Type: application/json\r\nOrigin: http://evil.example\r\n";
    assert_eq!(
        status(addr, &post(addr, origin, BODY.len()), BODY).await,
        403
    );
    // The same request from a tool (no Origin, no Sec-Fetch-Site) works.
    let tool = "Content-Type: application/json\r\n";
    assert_eq!(status(addr, &post(addr, tool, BODY.len()), BODY).await, 201);
}

#[tokio::test]
async fn shutdown_answers_503() {
    let (addr, server) = start(BroadcastAuth::OpenForDevelopment).await;
    let stop = server.clone();
    tokio::spawn(async move { stop.shutdown().await });
    while !server.is_shutting_down() {
        tokio::task::yield_now().await;
    }
    let head = post(addr, "Content-Type: application/json\r\n", BODY.len());
    assert_eq!(status(addr, &head, BODY).await, 503);
}
