//! The baseline: the simplest correct Action Cable fan-out for the
//! benchmark protocol, on the same stack as Keayl (axum 0.8's WebSocket,
//! i.e. tokio-tungstenite 0.29, with the same buffer settings), so that a
//! ratio to it measures what Keayl's layers cost on this machine today.
//!
//! It speaks just enough Action Cable for `BenchmarkChannel`: `welcome`,
//! `ping` every 3 s, `subscribe` (stream `all`, or `all<id>`) with
//! `confirm_subscription`, `unsubscribe`, and the actions `echo` (transmit
//! the data back) and `broadcast` (broadcast the data to the stream, then
//! transmit it to the sender with action `broadcastResult`). A broadcast
//! is encoded once per distinct identifier and the same bytes are queued
//! to every subscriber; each connection's task writes everything queued
//! (`feed`) and flushes once.
//!
//! It also serves `GET /sse/{stream}` (every broadcast on the stream as one
//! `data: <json>\n\n` event, after an initial `: ok` comment) and
//! `POST /_broadcast` (`{"stream":…,"data":"<JSON text>"}`), the shapes the
//! load generator expects from Keayl.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Frames queued per connection before further ones are dropped (and
/// counted).
const QUEUE: usize = 4096;

/// The stream every connection joins under [`BaselineConfig::global_ping`]
/// (not reachable from the wire: client streams start with `all`).
const PING_STREAM: &str = "\0ping";

/// Settings of the baseline. The defaults mirror Keayl's transport; the
/// other values exist for experiments that size a proposed change to Keayl.
#[derive(Debug, Clone, Copy)]
pub struct BaselineConfig {
    /// tungstenite's read buffer per connection (allocated eagerly).
    /// Default 8 KiB, as Keayl.
    pub read_buffer_size: usize,
    /// tungstenite's write buffer target. Default 16 KiB, as Keayl.
    pub write_buffer_size: usize,
    /// One server-wide 3 s ticker that fans the same pre-encoded ping
    /// frame out to every connection (as Rails and AnyCable do), instead of
    /// a timer per connection. Default off (a timer per connection, as
    /// Keayl).
    pub global_ping: bool,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        BaselineConfig {
            read_buffer_size: 8 * 1024,
            write_buffer_size: 16 * 1024,
            global_ping: false,
        }
    }
}

#[derive(Clone)]
struct AppState {
    hub: Arc<Hub>,
    config: BaselineConfig,
}

#[derive(Clone)]
enum Outlet {
    Ws {
        /// The subscription identifier, JSON-escaped (a string literal).
        identifier: Arc<str>,
        tx: mpsc::Sender<Utf8Bytes>,
    },
    Sse(mpsc::Sender<Bytes>),
}

#[derive(Clone)]
struct Subscriber {
    id: u64,
    outlet: Outlet,
}

/// Stream → subscribers (copy-on-write, so a broadcast iterates a snapshot
/// with no lock held).
#[derive(Default)]
pub struct Hub {
    streams: RwLock<HashMap<String, Arc<Vec<Subscriber>>>>,
    next_id: AtomicU64,
    dropped: AtomicU64,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("dropped", &self.dropped.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Hub {
    fn subscribe(&self, stream: &str, outlet: Outlet) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut streams = self.streams.write().unwrap_or_else(|e| e.into_inner());
        let list = streams.entry(stream.to_owned()).or_default();
        Arc::make_mut(list).push(Subscriber { id, outlet });
        id
    }

    fn unsubscribe(&self, stream: &str, id: u64) {
        let mut streams = self.streams.write().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = streams.get_mut(stream) {
            Arc::make_mut(list).retain(|s| s.id != id);
            if list.is_empty() {
                streams.remove(stream);
            }
        }
    }

    /// Queue the same WebSocket frame to every WebSocket subscriber of
    /// `stream` (the global ping).
    fn broadcast_frame(&self, stream: &str, frame: &Utf8Bytes) {
        let Some(subs) = self
            .streams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(stream)
            .cloned()
        else {
            return;
        };
        for sub in subs.iter() {
            if let Outlet::Ws { tx, .. } = &sub.outlet
                && tx.try_send(frame.clone()).is_err()
            {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Deliver `message` (JSON text) to every subscriber of `stream`.
    pub fn broadcast(&self, stream: &str, message: &str) {
        let Some(subs) = self
            .streams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(stream)
            .cloned()
        else {
            return;
        };
        let mut ws_frames: Vec<(Arc<str>, Utf8Bytes)> = Vec::new();
        let mut sse_frame: Option<Bytes> = None;
        for sub in subs.iter() {
            let sent = match &sub.outlet {
                Outlet::Ws { identifier, tx } => {
                    let frame = match ws_frames
                        .iter()
                        .find(|(i, _)| Arc::ptr_eq(i, identifier) || **i == **identifier)
                    {
                        Some((_, f)) => f.clone(),
                        None => {
                            let f = Utf8Bytes::from(data_frame(identifier, message));
                            ws_frames.push((identifier.clone(), f.clone()));
                            f
                        }
                    };
                    tx.try_send(frame).is_ok()
                }
                Outlet::Sse(tx) => {
                    let frame = sse_frame
                        .get_or_insert_with(|| Bytes::from(format!("data: {message}\n\n")))
                        .clone();
                    tx.try_send(frame).is_ok()
                }
            };
            if !sent {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn data_frame(escaped_identifier: &str, message: &str) -> String {
    format!(r#"{{"identifier":{escaped_identifier},"message":{message}}}"#)
}

/// The baseline's router: `/cable`, `/sse/{stream}`, `/_broadcast`. Under
/// [`BaselineConfig::global_ping`] it also starts the ticker (call it from
/// within a tokio runtime).
pub fn router(hub: Arc<Hub>, config: BaselineConfig) -> Router {
    if config.global_ping {
        let hub = hub.clone();
        tokio::spawn(async move {
            let period = Duration::from_secs(3);
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            loop {
                tick.tick().await;
                hub.broadcast_frame(PING_STREAM, &ping_frame());
            }
        });
    }
    Router::new()
        .route("/cable", get(ws_handler))
        .route("/sse/{stream}", get(sse_handler))
        .route("/_broadcast", post(http_broadcast))
        .with_state(AppState { hub, config })
}

/// Serve the baseline (default settings) on `listener` until the process
/// ends.
pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
    serve_with(listener, BaselineConfig::default()).await
}

/// Serve the baseline with `config` on `listener` until the process ends.
pub async fn serve_with(listener: TcpListener, config: BaselineConfig) -> std::io::Result<()> {
    axum::serve(listener, router(Arc::new(Hub::default()), config)).await
}

fn ping_frame() -> Utf8Bytes {
    Utf8Bytes::from(format!(r#"{{"type":"ping","message":{}}}"#, unix_secs()))
}

async fn ws_handler(State(app): State<AppState>, ws: WebSocketUpgrade) -> Response {
    ws.protocols(["actioncable-v1-json"])
        .read_buffer_size(app.config.read_buffer_size)
        .write_buffer_size(app.config.write_buffer_size)
        .max_write_buffer_size(1024 * 1024 + 64 * 1024)
        .max_message_size(64 * 1024)
        .max_frame_size(64 * 1024)
        .on_upgrade(move |socket| connection(app.hub, socket, app.config.global_ping))
}

struct Subscription {
    /// The raw identifier, as the client sent it.
    identifier: String,
    escaped: Arc<str>,
    stream: String,
    id: u64,
}

#[derive(Deserialize)]
struct Command {
    command: String,
    #[serde(default)]
    identifier: String,
    #[serde(default)]
    data: Option<String>,
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn connection(hub: Arc<Hub>, mut socket: WebSocket, global_ping: bool) {
    let (tx, mut rx) = mpsc::channel::<Utf8Bytes>(QUEUE);
    let _ = tx.try_send(Utf8Bytes::from_static(r#"{"type":"welcome"}"#));
    let mut subs: Vec<Subscription> = Vec::new();
    let pinged = global_ping.then(|| {
        hub.subscribe(
            PING_STREAM,
            Outlet::Ws {
                identifier: Arc::from(""),
                tx: tx.clone(),
            },
        )
    });
    let period = Duration::from_secs(3);
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            biased;
            Some(frame) = rx.recv() => {
                let write = async {
                    socket.feed(Message::Text(frame)).await?;
                    while let Ok(frame) = rx.try_recv() {
                        socket.feed(Message::Text(frame)).await?;
                    }
                    socket.flush().await
                };
                match tokio::time::timeout(Duration::from_secs(5), write).await {
                    Ok(Ok(())) => {}
                    _ => break,
                }
            }
            msg = socket.next() => match msg {
                Some(Ok(Message::Text(text))) => command(&hub, &tx, &mut subs, text.as_str()),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            _ = ping.tick(), if !global_ping => {
                let _ = tx.try_send(ping_frame());
            }
        }
    }
    for s in subs {
        hub.unsubscribe(&s.stream, s.id);
    }
    if let Some(id) = pinged {
        hub.unsubscribe(PING_STREAM, id);
    }
}

fn command(hub: &Hub, tx: &mpsc::Sender<Utf8Bytes>, subs: &mut Vec<Subscription>, text: &str) {
    let Ok(cmd) = serde_json::from_str::<Command>(text) else {
        return;
    };
    let transmit = |frame: String| {
        let _ = tx.try_send(Utf8Bytes::from(frame));
    };
    match cmd.command.as_str() {
        "subscribe" => {
            if subs.iter().any(|s| s.identifier == cmd.identifier) {
                return;
            }
            let escaped = serde_json::to_string(&cmd.identifier).unwrap_or_default();
            let params: Value = serde_json::from_str(&cmd.identifier).unwrap_or(Value::Null);
            if params["channel"] != "BenchmarkChannel" {
                transmit(format!(
                    r#"{{"identifier":{escaped},"type":"reject_subscription"}}"#
                ));
                return;
            }
            let stream = match &params["id"] {
                Value::String(s) => format!("all{s}"),
                Value::Number(n) => format!("all{n}"),
                _ => "all".to_owned(),
            };
            let escaped: Arc<str> = escaped.into();
            let id = hub.subscribe(
                &stream,
                Outlet::Ws {
                    identifier: escaped.clone(),
                    tx: tx.clone(),
                },
            );
            transmit(format!(
                r#"{{"identifier":{escaped},"type":"confirm_subscription"}}"#
            ));
            subs.push(Subscription {
                identifier: cmd.identifier,
                escaped,
                stream,
                id,
            });
        }
        "unsubscribe" => {
            if let Some(i) = subs.iter().position(|s| s.identifier == cmd.identifier) {
                let s = subs.swap_remove(i);
                hub.unsubscribe(&s.stream, s.id);
            }
        }
        "message" => {
            let Some(sub) = subs.iter().find(|s| s.identifier == cmd.identifier) else {
                return;
            };
            let Some(data) = cmd.data else { return };
            let Ok(mut map) = serde_json::from_str::<serde_json::Map<String, Value>>(&data) else {
                return;
            };
            match map.get("action").and_then(Value::as_str) {
                Some("echo") => transmit(data_frame(&sub.escaped, &data)),
                Some("broadcast") => {
                    hub.broadcast(&sub.stream, &data);
                    map.insert("action".into(), Value::from("broadcastResult"));
                    let result = Value::Object(map).to_string();
                    transmit(data_frame(&sub.escaped, &result));
                }
                _ => {}
            }
        }
        _ => {}
    }
}

/// Unsubscribes an SSE client when its body is dropped.
struct SseGuard {
    hub: Arc<Hub>,
    stream: String,
    id: u64,
}

impl Drop for SseGuard {
    fn drop(&mut self) {
        self.hub.unsubscribe(&self.stream, self.id);
    }
}

async fn sse_handler(State(app): State<AppState>, Path(stream): Path<String>) -> Response {
    let hub = app.hub;
    let (tx, rx) = mpsc::channel::<Bytes>(QUEUE);
    let _ = tx.try_send(Bytes::from_static(b": ok\n\n"));
    let id = hub.subscribe(&stream, Outlet::Sse(tx));
    let guard = SseGuard { hub, stream, id };
    let body = futures_util::stream::unfold((rx, guard), |(mut rx, guard)| async move {
        let frame = rx.recv().await?;
        Some((Ok::<_, Infallible>(frame), (rx, guard)))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

#[derive(Deserialize)]
struct HttpBroadcast {
    stream: String,
    data: String,
}

async fn http_broadcast(State(app): State<AppState>, body: Bytes) -> Response {
    let hub = app.hub;
    let Ok(b) = serde_json::from_slice::<HttpBroadcast>(&body) else {
        return StatusCode::UNPROCESSABLE_ENTITY.into_response();
    };
    if serde_json::from_str::<serde::de::IgnoredAny>(&b.data).is_err() {
        return StatusCode::UNPROCESSABLE_ENTITY.into_response();
    }
    hub.broadcast(&b.stream, &b.data);
    StatusCode::CREATED.into_response()
}
