//! The client side: connecting (WebSocket with the Action Cable subprotocol,
//! or a plain SSE GET), the pre-encoded benchmark frames, and the cheap scan
//! that pulls the timestamp and sequence number out of a received message.
//!
//! Payloads carry `{"t":<nanoseconds since the Unix epoch>,"seq":<n>}`; a
//! receiver finds them by substring search, never by parsing JSON.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// A client WebSocket over plain TCP.
pub type Ws = WebSocketStream<TcpStream>;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// The server's address.
    pub addr: SocketAddr,
    /// Path of the Action Cable endpoint (`/cable`).
    pub cable_path: String,
    /// Path of the SSE fan-out endpoint (`/sse/all`).
    pub sse_path: String,
    /// Path of the HTTP broadcast endpoint (`/_broadcast`).
    pub broadcast_path: String,
    /// Whether an SSE subscriber counts as subscribed only once the first
    /// event (a comment such as `: subscribed`) arrived, rather than at the
    /// response head. Keayl's demo and the baseline both send one after
    /// the subscription is live.
    pub sse_ready_event: bool,
    /// `Origin` header sent with every upgrade.
    pub origin: String,
    /// Local addresses to bind client sockets to, used in turn (each source
    /// address has its own ~28k ephemeral ports); empty: the kernel picks.
    pub source_ips: Vec<IpAddr>,
    next_source: Arc<AtomicUsize>,
}

impl Target {
    /// A target at `addr` with the usual paths, `Origin: http://<addr>`, and
    /// client sockets spread over 127.0.0.2‥127.0.0.9 when `addr` is on
    /// 127.0.0.0/8.
    pub fn new(addr: SocketAddr) -> Self {
        let source_ips = match addr.ip() {
            IpAddr::V4(v4) if v4.is_loopback() => {
                (2..=9u8).map(|i| IpAddr::from([127, 0, 0, i])).collect()
            }
            _ => Vec::new(),
        };
        Target {
            addr,
            cable_path: "/cable".into(),
            sse_path: "/sse/all".into(),
            broadcast_path: "/_broadcast".into(),
            sse_ready_event: true,
            origin: format!("http://{addr}"),
            source_ips,
            next_source: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Open a TCP connection (from the next source address, if any), with
    /// `TCP_NODELAY`.
    pub async fn tcp(&self) -> Result<TcpStream> {
        let stream = if self.source_ips.is_empty() {
            TcpStream::connect(self.addr).await?
        } else {
            let i = self.next_source.fetch_add(1, Ordering::Relaxed) % self.source_ips.len();
            let ip = self.source_ips[i];
            let socket = match ip {
                IpAddr::V4(_) => TcpSocket::new_v4()?,
                IpAddr::V6(_) => TcpSocket::new_v6()?,
            };
            socket
                .bind(SocketAddr::new(ip, 0))
                .with_context(|| format!("binding a client socket to {ip}"))?;
            socket.connect(self.addr).await?
        };
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// Open a WebSocket to the cable endpoint, offering
    /// `actioncable-v1-json`.
    pub async fn websocket(&self) -> Result<Ws> {
        let stream = self.tcp().await?;
        let url = format!("ws://{}{}", self.addr, self.cable_path);
        let mut request = url.into_client_request()?;
        let headers = request.headers_mut();
        headers.insert(http::header::ORIGIN, self.origin.parse()?);
        headers.insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            http::HeaderValue::from_static("actioncable-v1-json"),
        );
        let (ws, _response) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config()))
                .await
                .context("websocket handshake")?;
        Ok(ws)
    }
}

/// The client's WebSocket settings: a 2 KiB read buffer (allocated eagerly
/// per connection; benchmark frames are ~150 bytes and tungstenite grows it
/// for a larger one), no write buffering (frames go out as they are sent).
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(2 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(1 << 20)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

/// The benchmark protocol's frames, encoded once.
#[derive(Debug, Clone)]
pub struct Frames {
    /// `{"command":"subscribe","identifier":"{\"channel\":\"BenchmarkChannel\"}"}`.
    pub subscribe: Utf8Bytes,
    /// `{"command":"message","identifier":…,"data":"{\"action\":\"broadcast\",\"payload\":{\"t\":`
    broadcast_prefix: String,
    echo_prefix: String,
    seq_infix: &'static str,
    suffix: &'static str,
    /// The identifier as the server echoes it, JSON-escaped (to recognise
    /// `confirm_subscription`).
    pub escaped_identifier: String,
}

impl Frames {
    /// Frames for `BenchmarkChannel`, with `id` as the stream suffix param
    /// when given (stream `all<id>`).
    pub fn new(id: Option<&str>) -> Self {
        let identifier = match id {
            Some(id) => serde_json::json!({"channel": "BenchmarkChannel", "id": id}).to_string(),
            None => r#"{"channel":"BenchmarkChannel"}"#.to_owned(),
        };
        let escaped = serde_json::to_string(&identifier).expect("a string encodes");
        let subscribe = format!(r#"{{"command":"subscribe","identifier":{escaped}}}"#);
        let prefix = |action: &str| {
            format!(
                r#"{{"command":"message","identifier":{escaped},"data":"{{\"action\":\"{action}\",\"payload\":{{\"t\":"#
            )
        };
        Frames {
            subscribe: Utf8Bytes::from(subscribe),
            broadcast_prefix: prefix("broadcast"),
            echo_prefix: prefix("echo"),
            seq_infix: r#",\"seq\":"#,
            suffix: r#"}}"}"#,
            escaped_identifier: escaped,
        }
    }

    fn with(&self, prefix: &str, t: u64, seq: u64) -> Message {
        use std::fmt::Write;
        let mut s = String::with_capacity(prefix.len() + 48);
        s.push_str(prefix);
        let _ = write!(s, "{t}{}{seq}{}", self.seq_infix, self.suffix);
        Message::Text(Utf8Bytes::from(s))
    }

    /// `perform("broadcast", {payload: {t, seq}})`.
    pub fn broadcast(&self, t: u64, seq: u64) -> Message {
        self.with(&self.broadcast_prefix, t, seq)
    }

    /// `perform("echo", {payload: {t, seq}})`.
    pub fn echo(&self, t: u64, seq: u64) -> Message {
        self.with(&self.echo_prefix, t, seq)
    }
}

/// The body of `POST /_broadcast` publishing `{"action":"broadcast","payload":{t,seq}}`
/// on `stream`.
pub fn http_broadcast_body(stream: &str, t: u64, seq: u64) -> String {
    format!(
        r#"{{"stream":"{stream}","data":"{{\"action\":\"broadcast\",\"payload\":{{\"t\":{t},\"seq\":{seq}}}}}"}}"#
    )
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let first = needle[0];
    let last_start = haystack.len().checked_sub(needle.len())?;
    let mut i = 0;
    while i <= last_start {
        match haystack[i..=last_start].iter().position(|&b| b == first) {
            None => return None,
            Some(p) => {
                i += p;
                if &haystack[i..i + needle.len()] == needle {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

fn number_after(haystack: &[u8], key: &[u8]) -> Option<u64> {
    let start = find(haystack, key)? + key.len();
    let digits = haystack[start..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits == 0 {
        return None;
    }
    std::str::from_utf8(&haystack[start..start + digits])
        .ok()?
        .parse()
        .ok()
}

/// `(t, seq)` of a message carrying a benchmark payload
/// (`…"payload":{…"t":<n>…"seq":<n>…}…`), in any key order, escaped or not.
pub fn scan_payload(msg: &[u8]) -> Option<(u64, u64)> {
    let at = find(msg, b"payload")?;
    let rest = &msg[at..];
    let (t, seq) = if find(rest, br#"\"t\":"#).is_some() {
        (
            number_after(rest, br#"\"t\":"#)?,
            number_after(rest, br#"\"seq\":"#)?,
        )
    } else {
        (
            number_after(rest, br#""t":"#)?,
            number_after(rest, br#""seq":"#)?,
        )
    };
    Some((t, seq))
}

/// Whether a server frame is the `{"type":"ping",…}` heartbeat.
pub fn is_ping(msg: &[u8]) -> bool {
    msg.starts_with(br#"{"type":"ping""#)
}

/// Whether a server frame is the `welcome` message.
pub fn is_welcome(msg: &[u8]) -> bool {
    find(msg, br#""type":"welcome""#).is_some()
}

/// Whether a server frame confirms a subscription.
pub fn is_confirm(msg: &[u8]) -> bool {
    find(msg, br#""type":"confirm_subscription""#).is_some()
}

/// Whether a server frame rejects a subscription.
pub fn is_reject(msg: &[u8]) -> bool {
    find(msg, br#""type":"reject_subscription""#).is_some()
}

/// Open a WebSocket, wait for `welcome`, subscribe, wait for the
/// confirmation. Errors say which step failed.
pub async fn open_subscribed(target: &Target, frames: &Frames) -> Result<Ws> {
    use futures_util::{SinkExt, StreamExt};
    let mut ws = target.websocket().await?;
    let mut welcomed = false;
    while let Some(msg) = ws.next().await {
        let msg = msg.context("reading before confirmation")?;
        let Message::Text(text) = msg else { continue };
        let b = text.as_bytes();
        if !welcomed {
            if is_welcome(b) {
                welcomed = true;
                ws.send(Message::Text(frames.subscribe.clone())).await?;
            } else if !is_ping(b) {
                bail!("expected welcome, got {}", text.as_str());
            }
        } else if is_confirm(b) {
            return Ok(ws);
        } else if is_reject(b) {
            bail!("subscription rejected");
        }
    }
    bail!(
        "connection closed before {}",
        if welcomed { "confirmation" } else { "welcome" }
    )
}

/// A `GET <sse_path>` request, encoded once.
pub fn sse_request(target: &Target) -> Vec<u8> {
    format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n",
        target.sse_path, target.addr
    )
    .into_bytes()
}

/// Incremental reader of an SSE response: HTTP head, optional chunked
/// transfer coding, events split at blank lines.
#[derive(Debug, Default)]
pub struct SseReader {
    head_done: bool,
    chunked: bool,
    /// Bytes left in the current chunk; `None` while reading a size line.
    chunk_left: Option<usize>,
    /// CRLF after a chunk still to skip.
    skip: usize,
    raw: Vec<u8>,
    body: Vec<u8>,
    ended: bool,
}

impl SseReader {
    /// A reader expecting the response head first.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the response head was read and said 200.
    pub fn head_done(&self) -> bool {
        self.head_done
    }

    /// Whether the body ended (last chunk).
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Feed bytes read from the socket; calls `on_event` with each complete
    /// event's text (lines, without the blank line).
    pub fn feed(&mut self, data: &[u8], mut on_event: impl FnMut(&[u8])) -> Result<()> {
        if self.ended {
            return Ok(());
        }
        self.raw.extend_from_slice(data);
        if !self.head_done {
            let Some(end) = find(&self.raw, b"\r\n\r\n") else {
                if self.raw.len() > 16 * 1024 {
                    bail!("response head too long");
                }
                return Ok(());
            };
            let head = String::from_utf8_lossy(&self.raw[..end]).to_ascii_lowercase();
            let status = head.split_whitespace().nth(1).unwrap_or("");
            if status != "200" {
                bail!(
                    "SSE endpoint answered {}",
                    head.lines().next().unwrap_or("")
                );
            }
            self.chunked = head
                .lines()
                .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"));
            self.head_done = true;
            self.raw.drain(..end + 4);
        }
        if self.chunked {
            let mut pos = 0;
            loop {
                if self.skip > 0 {
                    let n = self.skip.min(self.raw.len() - pos);
                    pos += n;
                    self.skip -= n;
                    if self.skip > 0 {
                        break;
                    }
                }
                match self.chunk_left {
                    None => {
                        let Some(nl) = find(&self.raw[pos..], b"\r\n") else {
                            break;
                        };
                        let line = std::str::from_utf8(&self.raw[pos..pos + nl])?;
                        let size_text = line.split(';').next().unwrap_or("").trim();
                        let size = usize::from_str_radix(size_text, 16)
                            .with_context(|| format!("bad chunk size {line:?}"))?;
                        pos += nl + 2;
                        if size == 0 {
                            self.ended = true;
                            break;
                        }
                        self.chunk_left = Some(size);
                    }
                    Some(left) => {
                        let n = left.min(self.raw.len() - pos);
                        if n == 0 {
                            break;
                        }
                        self.body.extend_from_slice(&self.raw[pos..pos + n]);
                        pos += n;
                        if n == left {
                            self.chunk_left = None;
                            self.skip = 2;
                        } else {
                            self.chunk_left = Some(left - n);
                        }
                    }
                }
            }
            self.raw.drain(..pos);
        } else {
            self.body.append(&mut self.raw);
        }
        let mut start = 0;
        while let Some(end) = find(&self.body[start..], b"\n\n") {
            on_event(&self.body[start..start + end]);
            start += end + 2;
        }
        self.body.drain(..start);
        Ok(())
    }
}

/// Open an SSE subscription: connect, send the GET, read until the
/// response head (and, with [`Target::sse_ready_event`], until the first
/// event). Returns the socket and the reader.
pub async fn open_sse(target: &Target, request: &[u8]) -> Result<(TcpStream, SseReader)> {
    let mut stream = target.tcp().await?;
    stream.write_all(request).await?;
    let mut reader = SseReader::new();
    let mut buf = [0u8; 1024];
    let mut events = 0;
    while !reader.head_done() || (target.sse_ready_event && events == 0) {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            bail!("connection closed before the SSE stream started");
        }
        reader.feed(&buf[..n], |_| events += 1)?;
    }
    Ok((stream, reader))
}

/// A keep-alive HTTP/1.1 connection for `POST /_broadcast`.
#[derive(Debug)]
pub struct HttpBroadcaster {
    stream: TcpStream,
    host: String,
    path: String,
    buf: Vec<u8>,
}

impl HttpBroadcaster {
    /// Connect to `target`.
    pub async fn connect(target: &Target) -> Result<Self> {
        Ok(HttpBroadcaster {
            stream: target.tcp().await?,
            host: target.addr.to_string(),
            path: target.broadcast_path.clone(),
            buf: Vec::with_capacity(1024),
        })
    }

    /// POST `body` and wait for a 2xx answer.
    pub async fn post(&mut self, body: &str) -> Result<()> {
        let request = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.path,
            self.host,
            body.len()
        );
        self.stream.write_all(request.as_bytes()).await?;
        self.buf.clear();
        let mut chunk = [0u8; 1024];
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while self.buf.len() < end + 4 + len {
                    let n = self.stream.read(&mut chunk).await?;
                    if n == 0 {
                        bail!("connection closed in a /_broadcast response");
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                let status = head.split_whitespace().nth(1).unwrap_or("");
                if !status.starts_with('2') {
                    bail!(
                        "POST {} answered {}",
                        self.path,
                        head.lines().next().unwrap_or("")
                    );
                }
                return Ok(());
            }
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed before the /_broadcast response");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Wait until something accepts TCP connections on `addr`.
pub async fn wait_listening(addr: SocketAddr, timeout: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("nothing listening on {addr} after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_plain_and_escaped_payloads() {
        let keayl = br#"{"identifier":"{\"channel\":\"BenchmarkChannel\"}","message":{"action":"broadcast","payload":{"seq":7,"t":123456}}}"#;
        assert_eq!(scan_payload(keayl), Some((123456, 7)));
        let sse = br#"data: {"action":"broadcast","payload":{"t":99,"seq":3}}"#;
        assert_eq!(scan_payload(sse), Some((99, 3)));
        let frames = Frames::new(None);
        let Message::Text(sent) = frames.broadcast(5, 6) else {
            panic!()
        };
        assert_eq!(scan_payload(sent.as_bytes()), Some((5, 6)));
        let outer: serde_json::Value = serde_json::from_str(sent.as_str()).unwrap();
        let data: serde_json::Value =
            serde_json::from_str(outer["data"].as_str().unwrap()).unwrap();
        assert_eq!(data["action"], "broadcast");
        assert_eq!(data["payload"]["seq"], 6);
        assert_eq!(
            outer["identifier"].as_str().unwrap(),
            r#"{"channel":"BenchmarkChannel"}"#
        );
        assert_eq!(scan_payload(br#"{"type":"ping","message":1}"#), None);
        let body = http_broadcast_body("all", 1, 2);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            scan_payload(v["data"].as_str().unwrap().as_bytes()),
            Some((1, 2))
        );
    }

    fn chunk(data: &[u8]) -> Vec<u8> {
        let mut out = format!("{:x}\r\n", data.len()).into_bytes();
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
        out
    }

    #[test]
    fn reads_chunked_sse() {
        let mut wire = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        wire.extend(chunk(b": ok\n\n"));
        wire.extend(chunk(br#"data: {"payload":{"t":1,"#));
        wire.extend(chunk(
            b"\"seq\":2}}\n\ndata: {\"payload\":{\"t\":3,\"seq\":4}}\n\n",
        ));
        wire.extend(chunk(b": x\n\n"));
        wire.extend_from_slice(b"0\r\n\r\n");
        for step in [1, 2, 3, 7, 1000] {
            let mut r = SseReader::new();
            let mut events = Vec::new();
            for piece in wire.chunks(step) {
                r.feed(piece, |e| events.push(e.to_vec())).unwrap();
            }
            assert!(r.ended(), "step {step}");
            assert_eq!(events.len(), 4, "step {step}: {events:?}");
            assert_eq!(events[0], b": ok");
            assert_eq!(scan_payload(&events[1]), Some((1, 2)));
            assert_eq!(scan_payload(&events[2]), Some((3, 4)));
        }
    }

    #[test]
    fn refuses_a_404() {
        let mut r = SseReader::new();
        assert!(r.feed(b"HTTP/1.1 404 Not Found\r\n\r\n", |_| {}).is_err());
    }
}
