//! One WebSocket connection: a reader loop that drives the
//! [`Connection`](keayl_cable::Connection) and a writer task that drains the
//! outbox.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::request::Parts;
use keayl_cable::connection::{ConnectionState, Identifiers, Request, Sink};
use keayl_cable::protocol::DisconnectReason;

use super::CableServer;
use super::outbox::{CloseReason, Outbox};

/// Capture what `connect` may look at: path, query, cookies, headers.
pub(crate) fn request_info(parts: &Parts) -> Request {
    let mut request = Request {
        path: parts.uri.path().to_owned(),
        ..Request::default()
    };
    if let Some(q) = parts.uri.query() {
        request.query = form_urlencoded::parse(q.as_bytes()).into_owned().collect();
    }
    for (name, value) in &parts.headers {
        let Ok(value) = value.to_str() else { continue };
        request
            .headers
            .entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(value);
            })
            .or_insert_with(|| value.to_owned());
        if name == http::header::COOKIE {
            request.cookies.extend(Request::parse_cookie_header(value));
        }
    }
    request
}

pub(crate) fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

struct Gauge<'a>(&'a super::Stats);
impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(crate) async fn run(server: CableServer, mut socket: WebSocket, request: Request) {
    let inner = &server.inner;
    let config = &inner.config;
    inner.stats.connections.fetch_add(1, Ordering::Relaxed);
    inner
        .stats
        .connections_total
        .fetch_add(1, Ordering::Relaxed);
    let _gauge = Gauge(&inner.stats);

    let outbox = Arc::new(Outbox::new(
        config.outbound_queue_bytes,
        config.slow_client,
        inner.stats.clone(),
    ));
    let push = outbox.clone();
    let close = outbox.clone();
    let sink =
        Sink::new(move |frame| push.push(frame)).on_close(move || close.close(CloseReason::Normal));
    let mut conn = inner
        .cable
        .connection(sink, Identifiers::new())
        .with_request(request);

    // Frames that arrive while `connect` runs wait in the socket and are
    // handled after `welcome`, in order.
    let opened = tokio::select! {
        // Boxed: large, and alive only while connecting (keeps the
        // per-connection task small).
        state = tokio::time::timeout(config.handshake_timeout, Box::pin(conn.open())) => state.ok(),
        _ = inner.shutdown.cancelled() => None,
    };
    if opened == Some(ConnectionState::Open) {
        let _registered = server.register(&outbox);
        serve(&server, &mut conn, &mut socket, &outbox).await;
    } else {
        outbox.close(CloseReason::Normal);
    }
    Box::pin(conn.disconnect()).await;
    outbox.close(CloseReason::Normal);
    // Whatever is still queued (a disconnect message), then the close frame.
    let mut batch = Vec::new();
    let _ = Box::pin(flush(
        &mut socket,
        &outbox,
        &mut batch,
        config.write_timeout,
    ))
    .await;
}

/// Write everything queued with one flush; then, if the outbox is closing,
/// the close frame. `Err` when the connection is over.
async fn flush(
    socket: &mut WebSocket,
    outbox: &Outbox,
    batch: &mut Vec<Bytes>,
    write_timeout: Duration,
) -> Result<(), ()> {
    let closing = outbox.drain(batch);
    if closing == Some(CloseReason::Gone) {
        return Err(());
    }
    if closing == Some(CloseReason::TooSlow) {
        tracing::info!("client too slow (outbound queue full); disconnecting");
    }
    if !batch.is_empty() {
        let write = async {
            for frame in batch.drain(..) {
                match Utf8Bytes::try_from(frame) {
                    Ok(text) => socket.feed(Message::Text(text)).await?,
                    Err(_) => tracing::error!("dropped a frame that is not UTF-8"),
                }
            }
            socket.flush().await
        };
        match tokio::time::timeout(write_timeout, write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "websocket write failed");
                outbox.close(CloseReason::Gone);
                return Err(());
            }
            Err(_) => {
                tracing::warn!("websocket write timed out; disconnecting slow client");
                outbox
                    .stats
                    .slow_disconnects
                    .fetch_add(1, Ordering::Relaxed);
                outbox.close(CloseReason::Gone);
                return Err(());
            }
        }
        batch.clear();
    }
    let Some(reason) = closing else {
        return Ok(());
    };
    let code = match reason {
        CloseReason::Normal | CloseReason::TooSlow => 1000,
        CloseReason::TooBig => 1009,
        CloseReason::ClientClosed | CloseReason::Gone => {
            // tungstenite queued the reply to the client's close; flush it.
            let _ = tokio::time::timeout(write_timeout, socket.flush()).await;
            return Err(());
        }
    };
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(""),
    };
    let _ = tokio::time::timeout(write_timeout, async {
        socket.send(Message::Close(Some(frame))).await?;
        socket.flush().await
    })
    .await;
    outbox.close(CloseReason::Gone);
    Err(())
}

async fn serve(
    server: &CableServer,
    conn: &mut keayl_cable::Connection,
    socket: &mut WebSocket,
    outbox: &Outbox,
) {
    let inner = &server.inner;
    let config = &inner.config;
    // Pings come from the server-wide pinger (one encode per tick, pushed to
    // every outbox); each wake-up also checks that the client still talks.
    let shutdown = inner.shutdown.cancelled();
    tokio::pin!(shutdown);
    let mut restart = inner.restart.subscribe();
    restart.borrow_and_update();
    let restarted = restart.changed();
    tokio::pin!(restarted);
    let mut closing = false;
    let mut batch: Vec<Bytes> = Vec::new();
    let mut last_seen = tokio::time::Instant::now();
    let mut last_ws_ping = last_seen;
    loop {
        // One task owns the socket: it writes what is queued, then waits for
        // the next event. Reading is cancel-safe, so a wake-up to write never
        // loses a half-read frame.
        if flush(socket, outbox, &mut batch, config.write_timeout)
            .await
            .is_err()
        {
            return;
        }
        let silent = last_seen.elapsed();
        if silent >= config.liveness_timeout {
            inner
                .stats
                .liveness_timeouts
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                silent_ms = silent.as_millis() as u64,
                "client stopped answering; closing"
            );
            outbox.close(CloseReason::Gone);
            return;
        }
        if silent >= config.liveness_timeout / 2
            && last_ws_ping.elapsed() >= config.liveness_timeout / 2
        {
            // Any client answers a WebSocket ping with a pong.
            last_ws_ping = tokio::time::Instant::now();
            let _ = tokio::time::timeout(
                config.write_timeout,
                socket.send(Message::Ping(Bytes::new())),
            )
            .await;
        }
        let timer_due = conn.next_timer_due();
        tokio::select! {
            biased;
            _ = outbox.wake.notified() => {}
            _ = &mut shutdown, if !closing => {
                closing = true;
                conn.close(DisconnectReason::ServerRestart, true);
            }
            _ = &mut restarted, if !closing => {
                closing = true;
                conn.close(DisconnectReason::ServerRestart, true);
            }
            msg = socket.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    last_seen = tokio::time::Instant::now();
                    if let Err(e) = Box::pin(conn.handle_frame(text.as_bytes())).await {
                        inner.stats.command_error(e.kind());
                        if inner.log_limit.allow(&inner.stats) {
                            tracing::info!(kind = e.kind(), error = %e, "command failed");
                        }
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    last_seen = tokio::time::Instant::now();
                    inner.stats.binary_frames.fetch_add(1, Ordering::Relaxed);
                    if inner.log_limit.allow(&inner.stats) {
                        tracing::info!("dropped a binary frame (Action Cable frames are text)");
                    }
                }
                Some(Ok(Message::Close(_))) => outbox.close(CloseReason::ClientClosed),
                None => outbox.close(CloseReason::Gone),
                // Pings and pongs prove the client is there; tungstenite
                // answers pings itself.
                Some(Ok(_)) => last_seen = tokio::time::Instant::now(),
                Some(Err(e)) => {
                    let text = e.to_string();
                    if text.contains("too long") || text.contains("Space limit") {
                        inner.stats.oversize.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(error = %text, "message over the size limit; closing with 1009");
                        outbox.close(CloseReason::TooBig);
                    } else {
                        tracing::debug!(error = %text, "websocket read failed");
                        outbox.close(CloseReason::Gone);
                    }
                }
            },
            _ = tokio::time::sleep_until(timer_due.unwrap_or_else(tokio::time::Instant::now)),
                if timer_due.is_some() => {
                Box::pin(conn.run_periodic_timers(tokio::time::Instant::now())).await;
            }
        }
    }
}
