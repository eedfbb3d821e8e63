//! Exchanges on a fresh connection: an HTTP/1.1 `GET` (status, body),
//! `/health` and the samples of `/metrics`, and waiting for Action Cable's
//! `welcome` on a WebSocket.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use keayl_bench::client::{Ws, is_ping, is_welcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

pub(crate) fn parse_status(head: &[u8]) -> Option<u16> {
    if head.len() < 12 || !head.starts_with(b"HTTP/1.") {
        return None;
    }
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// `GET path` with `Connection: close`: status and body.
async fn http_get(addr: SocketAddr, path: &str, limit: Duration) -> Result<(u16, String)> {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.context("connect")?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::with_capacity(8 * 1024);
        s.read_to_end(&mut buf).await?;
        anyhow::Ok(buf)
    };
    let buf = timeout(limit, exchange)
        .await
        .with_context(|| format!("GET {path}: no answer within {limit:?}"))??;
    let status = parse_status(&buf).with_context(|| format!("GET {path}: no HTTP status"))?;
    let text = String::from_utf8_lossy(&buf);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_owned()))
}

/// `GET /health` answered 200: the latency.
pub(crate) async fn health_once(addr: SocketAddr) -> Result<Duration> {
    let start = Instant::now();
    let (status, _) = http_get(addr, "/health", Duration::from_secs(5)).await?;
    if status != 200 {
        bail!("/health answered {status}");
    }
    Ok(start.elapsed())
}

pub(crate) type Metrics = BTreeMap<String, f64>;

/// The unlabelled samples of `GET /metrics`.
pub(crate) async fn metrics(addr: SocketAddr) -> Result<Metrics> {
    let (status, body) = http_get(addr, "/metrics", Duration::from_secs(5)).await?;
    if status != 200 {
        bail!("/metrics answered {status}");
    }
    let mut m = Metrics::new();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        if let Some((name, value)) = line.rsplit_once(' ')
            && let Ok(v) = value.trim().parse::<f64>()
        {
            m.insert(name.trim().to_owned(), v);
        }
    }
    Ok(m)
}

/// Wait for `welcome`: false if the connection ended or sent something else.
pub(crate) async fn await_welcome(ws: &mut Ws) -> bool {
    while let Some(Ok(msg)) = ws.next().await {
        if let Message::Text(t) = msg {
            let b = t.as_bytes();
            if is_welcome(b) {
                return true;
            }
            if !is_ping(b) {
                return false;
            }
        }
    }
    false
}
