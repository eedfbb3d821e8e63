//! [`Hub::serve`]: the reader, the worker and the writer of one connection.

use std::fmt::Display;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::Notify;
use tokio::time::{Instant, timeout};

use super::commands::CommandQueue;
use super::outbox::{CloseReason, Outbox};
use super::{Finished, Hub, Incoming, Outgoing, ReadError, Slot};
use crate::connection::{Connection, ConnectionState, Identifiers, Request};
use crate::protocol::{self, DisconnectReason};

/// A flag that can be awaited.
#[derive(Debug, Default)]
struct Latch {
    set: AtomicBool,
    notify: Notify,
}

impl Latch {
    fn set(&self) {
        self.set.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_set() {
                return;
            }
            notified.await;
        }
    }
}

/// What the three loops of one connection share.
#[derive(Debug)]
struct Life {
    /// The writer is done: the connection is over.
    writer_done: Latch,
    /// The writer sent a close frame (the client's reply is worth waiting
    /// for).
    close_sent: AtomicBool,
    /// When the client last sent anything, in ms since `start`.
    last_seen_ms: AtomicU64,
    start: Instant,
}

impl Life {
    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_seen_ms.store(ms, Ordering::Relaxed);
    }

    fn silent_for(&self) -> std::time::Duration {
        let seen = std::time::Duration::from_millis(self.last_seen_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(seen)
    }
}

impl Hub {
    /// Run one connection over a transport until it closes: `incoming` yields
    /// the client's frames, `outgoing` writes frames to it. `slot` comes from
    /// [`reserve`](Self::reserve), before the transport's handshake.
    ///
    /// Returns when the connection is over: the socket closed (or failed),
    /// every subscription was torn down, `disconnect` ran, and the command
    /// that was running when it closed has finished.
    pub async fn serve<St, Si>(
        &self,
        slot: Slot,
        incoming: &mut St,
        outgoing: &mut Si,
        request: Request,
    ) -> Finished
    where
        St: Stream<Item = Result<Incoming, ReadError>> + Unpin + Send,
        Si: Sink<Outgoing> + Unpin + Send,
        Si::Error: Display,
    {
        let handshake_deadline = slot.reserved_at + self.config().handshake_timeout;
        let _slot = slot;
        let config = self.config();
        let stats = self.stats();
        stats.connections_total.fetch_add(1, Ordering::Relaxed);
        let outbox = Arc::new(Outbox::new(
            config.outbound_queue_bytes,
            config.slow_client,
            stats.clone(),
            self.inner.log_limit.clone(),
        ));
        let _registered = self.register(&outbox);
        let push = outbox.clone();
        let close = outbox.clone();
        let sink = crate::Sink::new(move |frame| push.push(frame))
            .on_close(move || close.close(CloseReason::Normal));
        let mut conn = self
            .cable()
            .connection(sink, Identifiers::new())
            .with_request(request);
        // A subscribe waiting for a slow broker must not hold up the
        // connection's later commands.
        conn.set_deferred_confirmations(true);
        let queue = CommandQueue::new(config.command_queue_len, config.command_queue_bytes);
        let life = Life {
            writer_done: Latch::default(),
            close_sent: AtomicBool::new(false),
            last_seen_ms: AtomicU64::new(0),
            start: Instant::now(),
        };
        let (unread_input, close_code, ()) = tokio::join!(
            self.read_loop(incoming, &queue, &outbox, &life),
            self.write_loop(outgoing, &outbox, &life),
            self.work_loop(conn, handshake_deadline, &queue, &outbox, &life),
        );
        Finished {
            unread_input,
            close_code,
        }
    }

    /// Read frames until the client or the server closes; queue commands.
    /// Returns whether the client may still be sending (oversize message).
    async fn read_loop<St>(
        &self,
        incoming: &mut St,
        queue: &CommandQueue,
        outbox: &Outbox,
        life: &Life,
    ) -> bool
    where
        St: Stream<Item = Result<Incoming, ReadError>> + Unpin,
    {
        let stats = self.stats();
        let mut flooded = false;
        loop {
            let next = tokio::select! {
                biased;
                _ = life.writer_done.wait() => break,
                next = incoming.next() => next,
            };
            if next.is_some() {
                life.touch();
            }
            match next {
                Some(Ok(Incoming::Text(text))) => {
                    if flooded {
                        continue;
                    }
                    if let Err(over) = queue.push(text) {
                        flooded = true;
                        stats.command_overflows.fetch_add(1, Ordering::Relaxed);
                        if self.log_allowed() {
                            tracing::warn!(
                                queued = over.len,
                                queued_bytes = over.bytes,
                                "client sent more commands than the queue holds; disconnecting"
                            );
                        }
                        outbox.push_and_close(
                            protocol::disconnect(
                                DisconnectReason::Other("too_many_commands"),
                                true,
                            ),
                            CloseReason::Flooded,
                        );
                    }
                }
                Some(Ok(Incoming::Binary(_))) => {
                    stats.binary_frames.fetch_add(1, Ordering::Relaxed);
                    if self.log_allowed() {
                        tracing::info!("dropped a binary frame (Action Cable frames are text)");
                    }
                }
                Some(Ok(Incoming::Ping | Incoming::Pong)) => {}
                Some(Ok(Incoming::Close)) => {
                    outbox.close(CloseReason::ClientClosed);
                    return false;
                }
                None => {
                    outbox.close(CloseReason::Gone);
                    return false;
                }
                Some(Err(ReadError::TooBig)) => {
                    stats.oversize.fetch_add(1, Ordering::Relaxed);
                    if self.log_allowed() {
                        tracing::info!("message over the size limit; closing with 1009");
                    }
                    outbox.close(CloseReason::TooBig);
                    return true;
                }
                Some(Err(ReadError::InvalidUtf8)) => {
                    stats.invalid_utf8.fetch_add(1, Ordering::Relaxed);
                    if self.log_allowed() {
                        tracing::info!("text frame is not UTF-8; closing with 1007");
                    }
                    outbox.close(CloseReason::InvalidUtf8);
                    break;
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "websocket read failed");
                    outbox.close(CloseReason::Gone);
                    return false;
                }
            }
        }
        // The server sent a close frame: wait a little for the client's, so
        // the socket is not torn down under it.
        if !life.close_sent.load(Ordering::Acquire) {
            return false;
        }
        let grace = self.config().close_grace;
        let _ = timeout(grace, async {
            while let Some(Ok(frame)) = incoming.next().await {
                if frame == Incoming::Close {
                    break;
                }
            }
        })
        .await;
        false
    }

    /// Write what the outbox holds until it closes; check liveness on every
    /// wake-up. Returns the close code sent.
    async fn write_loop<Si>(&self, outgoing: &mut Si, outbox: &Outbox, life: &Life) -> Option<u16>
    where
        Si: Sink<Outgoing> + Unpin,
        Si::Error: Display,
    {
        let config = self.config();
        let stats = self.stats();
        let mut batch: Vec<Bytes> = Vec::new();
        let mut last_ws_ping: Option<Instant> = None;
        let code = loop {
            if let Flushed::Closed(code) =
                flush(outgoing, outbox, &mut batch, config.write_timeout).await
            {
                break code;
            }
            let silent = life.silent_for();
            if silent >= config.liveness_timeout {
                stats.liveness_timeouts.fetch_add(1, Ordering::Relaxed);
                if self.log_allowed() {
                    tracing::info!(
                        silent_ms = silent.as_millis() as u64,
                        "client stopped answering; closing"
                    );
                }
                outbox.close(CloseReason::Gone);
                break None;
            }
            let half = config.liveness_timeout / 2;
            if silent >= half && last_ws_ping.is_none_or(|at| at.elapsed() >= half) {
                // Any client answers a WebSocket ping with a pong.
                last_ws_ping = Some(Instant::now());
                let _ = timeout(config.write_timeout, outgoing.send(Outgoing::Ping)).await;
            }
            outbox.wake.notified().await;
        };
        life.close_sent.store(code.is_some(), Ordering::Release);
        life.writer_done.set();
        code
    }

    /// `connect`, then every command in order and the periodic timers, until
    /// the connection is over; then the teardown.
    async fn work_loop(
        &self,
        mut conn: Connection,
        handshake_deadline: Instant,
        queue: &CommandQueue,
        outbox: &Outbox,
        life: &Life,
    ) {
        let stats = self.stats();
        let opened = tokio::select! {
            biased;
            _ = life.writer_done.wait() => None,
            // Checked first: an upgrade request that used up the deadline
            // is not welcomed however fast `connect` would be.
            state = async {
                if Instant::now() >= handshake_deadline {
                    return Err(());
                }
                tokio::time::timeout_at(handshake_deadline, Box::pin(conn.open()))
                    .await
                    .map_err(|_| ())
            } => match state {
                Ok(state) => Some(state),
                Err(_) => {
                    stats.handshake_timeouts.fetch_add(1, Ordering::Relaxed);
                    if self.log_allowed() {
                        tracing::info!("connect took longer than the handshake timeout; closing");
                    }
                    None
                }
            },
        };
        if opened == Some(ConnectionState::Open) {
            outbox.set_welcomed();
            loop {
                let due = conn.next_timer_due();
                tokio::select! {
                    biased;
                    _ = life.writer_done.wait() => break,
                    frame = queue.pop() => {
                        // Boxed: large, and alive only while a command runs
                        // (keeps every idle connection's task small).
                        if let Err(e) = Box::pin(conn.handle_frame(&frame)).await {
                            stats.command_error(e.kind());
                            if self.log_allowed() {
                                tracing::info!(kind = e.kind(), error = %e, "command failed");
                            }
                        }
                    }
                    _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                        Box::pin(conn.run_periodic_timers(Instant::now())).await;
                    }
                    _ = conn.pending_settled(), if conn.has_pending() => {
                        Box::pin(conn.confirm_settled()).await;
                    }
                }
            }
        }
        outbox.close(CloseReason::Normal);
        Box::pin(conn.disconnect()).await;
    }
}

enum Flushed {
    Open,
    /// The connection is over; the close code sent, if any.
    Closed(Option<u16>),
}

/// Write everything queued with one flush; then, if the outbox is closing,
/// the close frame.
async fn flush<Si>(
    outgoing: &mut Si,
    outbox: &Outbox,
    batch: &mut Vec<Bytes>,
    write_timeout: std::time::Duration,
) -> Flushed
where
    Si: Sink<Outgoing> + Unpin,
    Si::Error: Display,
{
    let closing = outbox.drain(batch);
    if closing == Some(CloseReason::Gone) {
        return Flushed::Closed(None);
    }
    if !batch.is_empty() {
        let write = async {
            for frame in batch.drain(..) {
                outgoing.feed(Outgoing::Text(frame)).await?;
            }
            outgoing.flush().await
        };
        let failed = match timeout(write_timeout, write).await {
            Ok(Ok(())) => false,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "websocket write failed");
                true
            }
            Err(_) => {
                // A client cut for its queue was counted then (possibly
                // while this write was blocked); count the others here, once.
                if outbox.closing() != Some(CloseReason::TooSlow) {
                    outbox
                        .stats
                        .slow_disconnects
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("websocket write timed out; disconnecting slow client");
                }
                true
            }
        };
        batch.clear();
        if failed {
            outbox.close(CloseReason::Gone);
            return Flushed::Closed(None);
        }
    }
    let Some(reason) = closing else {
        return Flushed::Open;
    };
    let Some(code) = reason.code() else {
        // The client closed: the transport queued its reply; flush it.
        let _ = timeout(write_timeout, outgoing.flush()).await;
        return Flushed::Closed(None);
    };
    let _ = timeout(write_timeout, outgoing.send(Outgoing::Close(code))).await;
    outbox.close(CloseReason::Gone);
    Flushed::Closed(Some(code))
}
