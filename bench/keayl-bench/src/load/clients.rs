//! The client tasks of a pool: WebSocket and SSE receivers recording
//! deliveries, and senders publishing the rounds.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Result, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;

use super::CONNECT_TIMEOUT;
use super::pool::{Feed, Round, Shared};
use crate::client::{self, Frames, HttpBroadcaster, Target, Ws};
use crate::stats::now_ns;

pub(super) async fn ws_receiver(
    target: Arc<Target>,
    frames: Arc<Frames>,
    shared: Arc<Shared>,
    gate: Arc<Semaphore>,
) {
    let permit = gate.acquire().await;
    // Boxed: the handshake's state (~3 KiB) lives on the heap only while
    // connecting instead of inflating every connection's task for good.
    let ws = tokio::time::timeout(
        CONNECT_TIMEOUT,
        Box::pin(client::open_subscribed(&target, &frames)),
    )
    .await;
    drop(permit);
    let mut ws = match ws {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => return shared.fail(&e),
        Err(_) => return shared.fail(&anyhow::anyhow!("connect timed out")),
    };
    let _live = shared.confirm();
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Text(text)) => {
                if let Some((t, seq)) = client::scan_payload(text.as_bytes()) {
                    shared.deliver(t, seq);
                }
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    if !shared.stopping.load(Ordering::Relaxed) {
        shared.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

pub(super) async fn sse_receiver(
    target: Arc<Target>,
    request: Arc<[u8]>,
    shared: Arc<Shared>,
    gate: Arc<Semaphore>,
) {
    let permit = gate.acquire().await;
    let opened = tokio::time::timeout(
        CONNECT_TIMEOUT,
        Box::pin(client::open_sse(&target, &request)),
    )
    .await;
    drop(permit);
    let (mut stream, mut reader) = match opened {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return shared.fail(&e),
        Err(_) => return shared.fail(&anyhow::anyhow!("SSE connect timed out")),
    };
    let _live = shared.confirm();
    let mut buf = vec![0u8; 4096];
    let on_event = |event: &[u8]| {
        if let Some((t, seq)) = client::scan_payload(event) {
            shared.deliver(t, seq);
        }
    };
    // Body bytes that came with the head.
    let _ = reader.feed(&[], on_event);
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if reader.feed(&buf[..n], on_event).is_err() || reader.ended() {
                    break;
                }
            }
        }
    }
    if !shared.stopping.load(Ordering::Relaxed) {
        shared.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

enum Publisher {
    Ws(Box<Ws>),
    Http(HttpBroadcaster),
}

impl Publisher {
    /// Wait for the next incoming frame (forever for HTTP); `Err` when the
    /// socket ended.
    async fn idle(&mut self) -> Result<()> {
        match self {
            Publisher::Ws(ws) => match ws.next().await {
                Some(Ok(_)) => Ok(()),
                Some(Err(e)) => Err(e.into()),
                None => bail!("sender socket closed"),
            },
            Publisher::Http(_) => std::future::pending().await,
        }
    }

    async fn publish(&mut self, frames: &Frames, seq: u64) -> Result<()> {
        let t = now_ns();
        match self {
            Publisher::Ws(ws) => ws.send(frames.broadcast(t, seq)).await?,
            Publisher::Http(h) => h.post(&client::http_broadcast_body("all", t, seq)).await?,
        }
        Ok(())
    }
}

pub(super) async fn sender(
    target: Arc<Target>,
    frames: Arc<Frames>,
    shared: Arc<Shared>,
    mut rounds: watch::Receiver<Option<Arc<Round>>>,
    ready: Arc<AtomicUsize>,
    feed: Feed,
) -> Result<()> {
    let mut publisher = match feed {
        Feed::Ws => Publisher::Ws(Box::new(client::open_subscribed(&target, &frames).await?)),
        Feed::Http => Publisher::Http(HttpBroadcaster::connect(&target).await?),
    };
    ready.fetch_add(1, Ordering::Relaxed);
    loop {
        tokio::select! {
            changed = rounds.changed() => if changed.is_err() { return Ok(()) },
            r = publisher.idle() => { r?; continue; }
        }
        let Some(round) = rounds.borrow_and_update().clone() else {
            continue;
        };
        loop {
            let seq = round.next.fetch_add(1, Ordering::AcqRel);
            if seq >= round.end {
                break;
            }
            publisher.publish(&frames, seq).await?;
            let deadline = tokio::time::Instant::now() + round.wait;
            loop {
                let progressed = shared.progress.notified();
                tokio::pin!(progressed);
                progressed.as_mut().enable();
                if shared.count(seq) >= round.expected || tokio::time::Instant::now() >= deadline {
                    break;
                }
                tokio::select! {
                    _ = progressed => {}
                    _ = tokio::time::sleep_until(deadline) => {}
                    r = publisher.idle() => r?,
                }
            }
            let pause = tokio::time::sleep(round.pause);
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    _ = &mut pause => break,
                    r = publisher.idle() => r?,
                }
            }
        }
        round.finished.fetch_add(1, Ordering::AcqRel);
        round.done.notify_waiters();
    }
}
