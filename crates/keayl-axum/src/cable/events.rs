//! `GET /events`: one channel subscription over Server-Sent Events
//! (AnyCable's SSE transport, protocol §8.9).
//!
//! The page needs no client library: the browser's own `EventSource`
//! subscribes with exactly one of `?channel=Name`,
//! `?identifier=<JSON identifier>`, `?stream=<public name>` or
//! `?signed_stream=<signed name>` (plus an optional
//! `history_since=<unix seconds>`), and resumes after a drop from the
//! `Last-Event-ID` it sends back.
//!
//! The request drives the same sans-IO [`Connection`] as the WebSocket
//! endpoint, with the extended protocol (so broadcasts carry their
//! positions) and without sessions (SSE resumes from `Last-Event-ID`):
//! `connect` sees the request's cookies, query and headers; a refused
//! connection or subscription is HTTP 401. Then each frame becomes one
//! event: protocol messages (`welcome`, `confirm_subscription`, `ping`,
//! `confirm_history`, `reject_history`, `disconnect`) named by their type
//! with the whole frame as data, broadcasts and transmissions unnamed with
//! only their `message` as data and `id: <offset>/<stream>/<epoch>` when
//! they have a position. A `disconnect` that forbids reconnecting carries
//! `retry: 31536000000`, so the browser does not come back.
//!
//! Each connection has a task: pings on the server's ping interval, the
//! channels' periodic timers, restart and shutdown; it ends when the client
//! goes away (the response body is dropped) or the server closes, and then
//! runs the teardown (`unsubscribed`, the handler's `disconnect`). Events
//! wait for a slow reader in a queue bounded like the WebSocket one
//! ([`SocketConfig::outbound_queue_bytes`](keayl_cable::socket::SocketConfig::outbound_queue_bytes),
//! [`SocketConfig::slow_client`](keayl_cable::socket::SocketConfig::slow_client)).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use axum::http::{HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use keayl_cable::connection::{Connection, Identifiers, Sink};
use keayl_cable::protocol::{DisconnectReason, Protocol};
use keayl_cable::socket::{Refused, SlowClientPolicy, SocketStats};
use keayl_live::sse::Frame;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::CableServer;

/// The `retry:` of a `disconnect` that forbids reconnecting: a year, in
/// milliseconds (what AnyCable sends).
pub const NO_RECONNECT_RETRY_MS: u64 = 31_536_000_000;

/// The query parameters that name the subscription; exactly one is given.
const SUBSCRIPTION_PARAMS: [&str; 4] = ["channel", "identifier", "stream", "signed_stream"];

/// Tells every SSE connection of a server to close as a restart does.
#[derive(Debug)]
pub(crate) struct Restarts(watch::Sender<u64>);

impl Restarts {
    pub(crate) fn new() -> Self {
        Restarts(watch::Sender::new(0))
    }

    /// Every open SSE connection gets
    /// `{"type":"disconnect","reason":"server_restart","reconnect":true}`
    /// and its stream ends.
    pub(crate) fn restart(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}

/// A short plain-text response.
fn text(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// The subscription identifier a request names, or why it names none.
fn identifier_of(request: &keayl_cable::Request) -> Result<String, &'static str> {
    let given: Vec<(&str, &str)> = SUBSCRIPTION_PARAMS
        .iter()
        .filter_map(|&k| request.query(k).filter(|v| !v.is_empty()).map(|v| (k, v)))
        .collect();
    let [(key, value)] = given[..] else {
        return Err(
            "give exactly one of channel, identifier, stream or signed_stream as a query parameter\n",
        );
    };
    let quoted = |s: &str| Value::from(s).to_string();
    Ok(match key {
        "channel" => format!(r#"{{"channel":{}}}"#, quoted(value)),
        "identifier" => {
            let valid = serde_json::from_str::<Value>(value)
                .ok()
                .is_some_and(|v| v.get("channel").is_some_and(Value::is_string));
            if !valid {
                return Err("identifier must be a JSON object with a \"channel\"\n");
            }
            value.to_owned()
        }
        "stream" => format!(r#"{{"channel":"$pubsub","stream_name":{}}}"#, quoted(value)),
        _ => format!(
            r#"{{"channel":"$pubsub","signed_stream_name":{}}}"#,
            quoted(value)
        ),
    })
}

/// A `Last-Event-ID` of ours: `<offset>/<stream>/<epoch>`. The stream may
/// contain `/` (the offset ends at the first one, the epoch starts after
/// the last one).
pub(crate) fn parse_last_event_id(id: &str) -> Option<(u64, &str, &str)> {
    let (offset, rest) = id.split_once('/')?;
    let (stream, epoch) = rest.rsplit_once('/')?;
    if stream.is_empty() || epoch.is_empty() {
        return None;
    }
    Some((offset.parse().ok()?, stream, epoch))
}

/// The `subscribe` command for `identifier`, asking for what the client
/// missed: from its `Last-Event-ID`, else since `history_since`.
fn subscribe_command(identifier: &str, last_event_id: Option<&str>, since: Option<u64>) -> Vec<u8> {
    let mut command = serde_json::json!({"command": "subscribe", "identifier": identifier});
    if let Some((offset, stream, epoch)) = last_event_id.and_then(parse_last_event_id) {
        command["history"] =
            serde_json::json!({"streams": {stream: {"offset": offset, "epoch": epoch}}});
    } else if let Some(since) = since {
        command["history"] = serde_json::json!({"since": since});
    }
    command.to_string().into_bytes()
}

/// The parts of a frame that decide its event.
#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    identifier: Option<serde::de::IgnoredAny>,
    #[serde(default, borrow)]
    message: Option<&'a RawValue>,
    #[serde(default, borrow)]
    stream_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    epoch: Option<Cow<'a, str>>,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default)]
    reconnect: Option<bool>,
}

/// Append the SSE event for one connection frame to `out`; `false` (and
/// nothing appended) for a frame that cannot be one.
pub(crate) fn encode_event(frame: &[u8], out: &mut Vec<u8>) -> bool {
    let Ok(text) = std::str::from_utf8(frame) else {
        tracing::error!("dropped a frame that is not UTF-8");
        return false;
    };
    let Ok(peek) = serde_json::from_str::<Peek<'_>>(text) else {
        tracing::error!("dropped a frame that is not a JSON object");
        return false;
    };
    let encoded = if let Some(kind) = peek.kind.as_deref() {
        let mut event = Frame::new(text).event(kind);
        if kind == "disconnect" && peek.reconnect == Some(false) {
            event = event.retry(NO_RECONNECT_RETRY_MS);
        }
        event.encode(out)
    } else if peek.message.is_some() || peek.identifier.is_some() {
        let data = peek.message.map_or("null", RawValue::get);
        let id = match (&peek.stream_id, &peek.epoch, peek.offset) {
            (Some(stream), Some(epoch), Some(offset)) => Some(format!("{offset}/{stream}/{epoch}")),
            _ => None,
        };
        match id {
            Some(id) => Frame::new(data)
                .id(&id)
                .encode(out)
                .or_else(|_| Frame::new(data).encode(out)),
            None => Frame::new(data).encode(out),
        }
    } else {
        Frame::new(text).encode(out)
    };
    match encoded {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, "dropped a frame that cannot be an event");
            false
        }
    }
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Bytes>,
    bytes: usize,
    closed: bool,
    waker: Option<Waker>,
}

/// The frames waiting for one SSE response body, bounded in bytes. The
/// connection (and broadcasters) push without waiting; the body takes
/// everything queued at each poll.
#[derive(Debug)]
pub(crate) struct Queue {
    state: Mutex<State>,
    limit: usize,
    policy: SlowClientPolicy,
    stats: Arc<SocketStats>,
    server: CableServer,
    /// The connection is over: the client went away or the server closed.
    ended: CancellationToken,
    /// The body handed bytes to the server since the last look (the
    /// reader is alive: it stands in for the extended protocol's pongs).
    delivered: AtomicBool,
}

impl Queue {
    pub(crate) fn new(server: &CableServer) -> Self {
        let socket = &server.config().socket;
        Queue {
            state: Mutex::new(State::default()),
            limit: socket.outbound_queue_bytes,
            policy: socket.slow_client,
            stats: server.hub().stats().clone(),
            server: server.clone(),
            ended: CancellationToken::new(),
            delivered: AtomicBool::new(false),
        }
    }

    // A std mutex: held for a push or a take, never across an await.
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake(st: &mut State) {
        if let Some(waker) = st.waker.take() {
            waker.wake();
        }
    }

    fn enqueue(&self, st: &mut State, frame: Bytes) {
        st.bytes += frame.len();
        self.stats
            .queued_bytes
            .fetch_add(frame.len(), Ordering::Relaxed);
        st.frames.push_back(frame);
    }

    fn clear(&self, st: &mut State) {
        self.stats
            .queued_bytes
            .fetch_sub(st.bytes, Ordering::Relaxed);
        st.frames.clear();
        st.bytes = 0;
    }

    /// Queue a frame, applying the slow-client policy when it does not fit.
    pub(crate) fn push(&self, frame: Bytes) {
        let mut st = self.lock();
        if st.closed {
            return;
        }
        if st.bytes + frame.len() > self.limit && !st.frames.is_empty() {
            match self.policy {
                SlowClientPolicy::DropNewest => {
                    self.stats.dropped_frames.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                // A client that comes back resumes from the last event it
                // got (`Last-Event-ID`): what is dropped here is replayed.
                SlowClientPolicy::Disconnect => {
                    self.stats.slow_disconnects.fetch_add(1, Ordering::Relaxed);
                    if self.server.log_allowed() {
                        tracing::warn!(
                            queued = st.bytes,
                            limit = self.limit,
                            "SSE client too slow; disconnecting"
                        );
                    }
                    self.clear(&mut st);
                    let bye = keayl_cable::protocol::disconnect(DisconnectReason::TooSlow, true);
                    self.enqueue(&mut st, bye);
                    st.closed = true;
                    Self::wake(&mut st);
                    drop(st);
                    self.ended.cancel();
                    return;
                }
            }
        }
        self.enqueue(&mut st, frame);
        Self::wake(&mut st);
    }

    /// The server closes: the body sends what is queued, then ends.
    pub(crate) fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        Self::wake(&mut st);
        drop(st);
        self.ended.cancel();
    }

    /// The body was dropped (the client went away): nothing more is sent.
    fn gone(&self) {
        let mut st = self.lock();
        st.closed = true;
        self.clear(&mut st);
        st.waker = None;
        drop(st);
        self.ended.cancel();
    }

    /// Take everything queued into `into`; `Ready(false)` once closed and
    /// empty, `Pending` (the waker kept) while open and empty.
    fn poll_take(&self, cx: &mut Context<'_>, into: &mut Vec<Bytes>) -> Poll<bool> {
        let mut st = self.lock();
        if st.frames.is_empty() {
            if st.closed {
                return Poll::Ready(false);
            }
            match &st.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => st.waker = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        into.extend(st.frames.drain(..));
        self.stats
            .queued_bytes
            .fetch_sub(st.bytes, Ordering::Relaxed);
        st.bytes = 0;
        Poll::Ready(true)
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        self.stats
            .queued_bytes
            .fetch_sub(st.bytes, Ordering::Relaxed);
    }
}

/// The response body: the queued frames as SSE events. Dropping it (hyper
/// does when the client goes away) ends the connection.
struct EventBody {
    queue: Arc<Queue>,
    batch: Vec<Bytes>,
}

impl futures_util::Stream for EventBody {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            match this.queue.poll_take(cx, &mut this.batch) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(false) => return Poll::Ready(None),
                Poll::Ready(true) => {}
            }
            let mut out = Vec::new();
            for frame in this.batch.drain(..) {
                encode_event(&frame, &mut out);
            }
            if !out.is_empty() {
                this.queue.delivered.store(true, Ordering::Relaxed);
                return Poll::Ready(Some(Ok(Bytes::from(out))));
            }
        }
    }
}

impl Drop for EventBody {
    fn drop(&mut self) {
        self.queue.gone();
    }
}

/// How opening and subscribing ended.
enum Opened {
    Accepted,
    Refused(StatusCode, &'static str),
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `GET <events path>`.
pub(crate) async fn handler(server: CableServer, req: Request<axum::body::Body>) -> Response {
    let stats = server.stats();
    let headers = req.headers();
    // Browsers send no `Origin` on a same-origin `EventSource` GET, and a
    // cross-origin one always carries it: only a present one is checked.
    let origin = headers.get(http::header::ORIGIN).cloned();
    if origin.is_some() && !server.config().origins.allows(headers) {
        stats.refused.fetch_add(1, Ordering::Relaxed);
        if server.log_allowed() {
            tracing::warn!(
                origin = ?origin,
                allowed = ?server.config().origins,
                "request origin not allowed; refusing SSE subscription"
            );
        }
        return text(StatusCode::FORBIDDEN, "origin not allowed\n");
    }
    let (parts, _body) = req.into_parts();
    let request = keayl_cable::Request::from_parts(parts).with_protocol(Protocol::V1ExtJson);
    let identifier = match identifier_of(&request) {
        Ok(identifier) => identifier,
        Err(why) => return text(StatusCode::BAD_REQUEST, why),
    };
    let since = match request.query("history_since").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => match s.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    "history_since must be unix seconds\n",
                );
            }
        },
    };
    let command = subscribe_command(&identifier, request.header("last-event-id"), since);
    let slot = match server.hub().reserve() {
        Ok(slot) => slot,
        Err(Refused::ShuttingDown) => {
            return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
        }
        Err(_) => {
            if server.log_allowed() {
                tracing::warn!(
                    limit = server.hub().config().max_connections,
                    "connection limit reached; refusing SSE subscription"
                );
            }
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "connection limit reached\n",
            );
        }
    };

    let queue = Arc::new(Queue::new(&server));
    let push = queue.clone();
    let close = queue.clone();
    let sink = Sink::new(move |frame| push.push(frame)).on_close(move || close.close());
    let conn = server
        .cable()
        .connection(sink, Identifiers::new())
        .with_request(request)
        .without_sessions();
    // Opened and served on a task of its own: a client that goes away
    // while `connect` runs still gets its teardown.
    let body = EventBody {
        queue: queue.clone(),
        batch: Vec::new(),
    };
    let (opened_tx, opened_rx) = oneshot::channel();
    let task_server = server.clone();
    server.inner.tracker.spawn(async move {
        let _slot = slot;
        run(task_server, conn, queue, identifier, command, opened_tx).await;
    });
    match opened_rx.await {
        Ok(Opened::Accepted) => {}
        Ok(Opened::Refused(status, why)) => return text(status, why),
        Err(_) => return text(StatusCode::INTERNAL_SERVER_ERROR, "connection failed\n"),
    }
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .header(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        )
        .header(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        )
        .header("x-accel-buffering", HeaderValue::from_static("no"));
    if let Some(origin) = origin {
        // An allowed cross-origin page may read the stream (with cookies:
        // `new EventSource(url, {withCredentials: true})`).
        response = response
            .header(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin)
            .header(
                http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            )
            .header(http::header::VARY, HeaderValue::from_static("origin"));
    }
    response
        .body(axum::body::Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Open the connection and subscribe (answering `opened`), then serve it
/// until it ends; then the teardown.
async fn run(
    server: CableServer,
    mut conn: Connection,
    queue: Arc<Queue>,
    identifier: String,
    command: Vec<u8>,
    opened: oneshot::Sender<Opened>,
) {
    let stats = server.hub().stats().clone();
    let mut restarts = server.inner.events.subscribe();
    let deadline = Instant::now() + server.config().socket.handshake_timeout;
    let outcome = tokio::time::timeout_at(deadline, async {
        if conn.open().await != keayl_cable::connection::ConnectionState::Open {
            return Opened::Refused(StatusCode::UNAUTHORIZED, "unauthorized\n");
        }
        if let Err(e) = Box::pin(conn.handle_frame(&command)).await {
            stats.command_error(e.kind());
            if server.log_allowed() {
                tracing::info!(kind = e.kind(), error = %e, "SSE subscription failed");
            }
        }
        if conn.subscription_identifiers().any(|id| id == identifier) {
            Opened::Accepted
        } else {
            Opened::Refused(StatusCode::UNAUTHORIZED, "subscription rejected\n")
        }
    })
    .await
    .unwrap_or_else(|_| {
        stats.handshake_timeouts.fetch_add(1, Ordering::Relaxed);
        if server.log_allowed() {
            tracing::info!("SSE connect or subscribe took longer than the handshake timeout");
        }
        Opened::Refused(StatusCode::SERVICE_UNAVAILABLE, "connect timed out\n")
    });
    let accepted = matches!(outcome, Opened::Accepted);
    // The handler is gone when this fails: so is the client.
    if opened.send(outcome).is_err() || !accepted {
        queue.close();
        Box::pin(conn.disconnect()).await;
        return;
    }
    stats.connections_total.fetch_add(1, Ordering::Relaxed);
    if server.is_shutting_down() {
        conn.close(DisconnectReason::ServerRestart, true);
    }
    let every = server.config().socket.ping_interval;
    let mut ping = tokio::time::interval_at(Instant::now() + every, every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let pongs = server.cable().config().pong_timeout.is_some();
    loop {
        let due = conn.next_timer_due();
        tokio::select! {
            biased;
            _ = queue.ended.cancelled() => break,
            changed = restarts.changed() => {
                if changed.is_err() {
                    break;
                }
                conn.close(DisconnectReason::ServerRestart, true);
            }
            _ = ping.tick() => {
                // An SSE client cannot pong: a reader that takes our bytes
                // is alive.
                if pongs && queue.delivered.swap(false, Ordering::Relaxed) {
                    let _ = Box::pin(conn.handle_frame(br#"{"command":"pong"}"#)).await;
                }
                conn.ping(unix_secs());
            }
            _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                Box::pin(conn.run_periodic_timers(Instant::now())).await;
            }
        }
    }
    queue.close();
    Box::pin(conn.disconnect()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(frame: &str) -> String {
        let mut out = Vec::new();
        assert!(encode_event(frame.as_bytes(), &mut out), "{frame}");
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn last_event_ids_split_at_the_first_and_last_slash() {
        assert_eq!(parse_last_event_id("3/s/e1"), Some((3, "s", "e1")));
        assert_eq!(
            parse_last_event_id("12/chat/room/1/abc"),
            Some((12, "chat/room/1", "abc"))
        );
        for bad in ["", "3", "3/s", "x/s/e", "3//e", "3/s/", "-1/s/e"] {
            assert_eq!(parse_last_event_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn subscribe_commands_ask_for_history() {
        let id = r#"{"channel":"C"}"#;
        let parse = |c: Vec<u8>| serde_json::from_slice::<Value>(&c).unwrap();
        assert_eq!(
            parse(subscribe_command(id, Some("2/a/b/e"), Some(5))),
            serde_json::json!({"command": "subscribe", "identifier": id,
                "history": {"streams": {"a/b": {"offset": 2, "epoch": "e"}}}})
        );
        assert_eq!(
            parse(subscribe_command(id, Some("junk"), Some(5))),
            serde_json::json!({"command": "subscribe", "identifier": id, "history": {"since": 5}})
        );
        assert_eq!(
            parse(subscribe_command(id, None, None)),
            serde_json::json!({"command": "subscribe", "identifier": id})
        );
    }

    #[test]
    fn a_reader_too_slow_for_the_queue_is_cut() {
        let cable = keayl_cable::Cable::builder(keayl_cable::InMemory::new()).build();
        let config = super::super::ServerConfig {
            socket: keayl_cable::socket::SocketConfig {
                outbound_queue_bytes: 100,
                ..Default::default()
            },
            ..Default::default()
        };
        let server = CableServer::new(cable, config).unwrap();
        let queue = Queue::new(&server);
        let frame = Bytes::from(vec![b'x'; 40]);
        queue.push(frame.clone());
        queue.push(frame.clone());
        assert!(!queue.ended.is_cancelled());
        assert_eq!(server.stats().queued_bytes.load(Ordering::Relaxed), 80);
        queue.push(frame.clone());
        assert!(
            queue.ended.is_cancelled(),
            "over the bound: the stream ends"
        );
        queue.push(frame);
        let mut batch = Vec::new();
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(queue.poll_take(&mut cx, &mut batch), Poll::Ready(true));
        assert_eq!(
            batch,
            [keayl_cable::protocol::disconnect(
                DisconnectReason::TooSlow,
                true
            )],
            "what was queued is dropped: the client resumes from its last id"
        );
        assert_eq!(queue.poll_take(&mut cx, &mut batch), Poll::Ready(false));
        assert_eq!(server.stats().slow_disconnects.load(Ordering::Relaxed), 1);
        assert_eq!(server.stats().queued_bytes.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn frames_become_events() {
        assert_eq!(
            event(r#"{"type":"welcome","sid":"x"}"#),
            "event: welcome\ndata: {\"type\":\"welcome\",\"sid\":\"x\"}\n\n"
        );
        assert_eq!(
            event(r#"{"type":"ping","message":17}"#),
            "event: ping\ndata: {\"type\":\"ping\",\"message\":17}\n\n"
        );
        assert_eq!(
            event(r#"{"identifier":"{\"channel\":\"C\"}","message":{"a":"x\ny"}}"#),
            "data: {\"a\":\"x\\ny\"}\n\n"
        );
        assert_eq!(
            event(
                r#"{"identifier":"i","message":{"n":1},"stream_id":"a/b","epoch":"e","offset":4}"#
            ),
            "id: 4/a/b/e\ndata: {\"n\":1}\n\n"
        );
        assert_eq!(
            event("{\"identifier\":\"i\",\"message\":{\n\"n\": 1\n}}"),
            "data: {\ndata: \"n\": 1\ndata: }\n\n"
        );
        assert_eq!(
            event(r#"{"identifier":"i","message":null}"#),
            "data: null\n\n"
        );
        assert_eq!(
            event(r#"{"type":"disconnect","reason":"remote","reconnect":false}"#),
            "event: disconnect\nretry: 31536000000\ndata: {\"type\":\"disconnect\",\"reason\":\"remote\",\"reconnect\":false}\n\n"
        );
        assert_eq!(
            event(r#"{"type":"disconnect","reason":"server_restart","reconnect":true}"#),
            "event: disconnect\ndata: {\"type\":\"disconnect\",\"reason\":\"server_restart\",\"reconnect\":true}\n\n"
        );
        // A stream id that cannot be an id line: the event goes without it.
        assert_eq!(
            event(r#"{"identifier":"i","message":1,"stream_id":"a\nb","epoch":"e","offset":4}"#),
            "data: 1\n\n"
        );
        let mut out = Vec::new();
        assert!(!encode_event(b"\xff", &mut out));
        assert!(!encode_event(b"[1]", &mut out));
        assert!(out.is_empty());
    }
}
