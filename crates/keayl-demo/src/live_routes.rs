//! The live and SSE endpoints of the demo, one per example of the spec.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use keayl_live::{Live, LiveBody, Sse};

use crate::DemoConfig;

/// `GET /numbers`: the spec's first example, `1\n` through `10\n`.
pub fn numbers() -> http::Response<LiveBody> {
    Live::new()
        .spawn(|stream| async move {
            for n in 1..=10 {
                stream.write(format!("{n}\n")).await?;
            }
            Ok(())
        })
        .into_http()
}

/// `GET /events`: the spec's SSE example with a retry default of 5000 ms.
pub fn events(headers: &HeaderMap) -> http::Response<LiveBody> {
    Sse::new()
        .retry(5000)
        .request_headers(headers)
        .spawn(|sse| async move {
            sse.write("hello").event("greeting").await?;
            sse.write("world").await?;
            sse.write("pong").retry(1000).await?;
            Ok(())
        })
        .into_http()
}

/// `GET /clock`: one `tick` event per interval carrying the Unix time, with
/// an increasing id; resumes its count after `Last-Event-ID`.
pub fn clock(headers: &HeaderMap, config: &DemoConfig) -> http::Response<LiveBody> {
    let interval = config.clock_interval;
    Sse::new()
        .event("tick")
        .heartbeat(config.clock_heartbeat)
        .request_headers(headers)
        .spawn(move |sse| async move {
            let mut n: u64 = sse
                .last_event_id()
                .and_then(|id| id.parse().ok())
                .unwrap_or(0);
            sse.comment("clock stream open").await?;
            let mut ticker = tokio::time::interval(interval);
            ticker.tick().await;
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = sse.stream().disconnected() => {
                        tracing::debug!(ticks = n, "clock client went away");
                        return Ok(());
                    }
                }
                n += 1;
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                sse.write(format!("{{\"n\":{n},\"unix\":{now}}}"))
                    .id(n.to_string())
                    .await?;
            }
        })
        .into_http()
}

/// `GET /sse/{stream}`: every broadcast on a cable stream, as SSE frames
/// (`data: <json>`). Broadcasts come from `BenchmarkChannel`, models, or
/// `POST /_broadcast`. The frame is encoded once per broadcast and shared by
/// every SSE client; a client more than 256 frames behind is disconnected.
pub fn stream_events(
    pubsub: std::sync::Arc<dyn keayl_cable::PubSub>,
    stream: String,
) -> http::Response<LiveBody> {
    use bytes::Bytes;
    use keayl_cable::pubsub::Delivery;
    use keayl_live::sse::Frame;

    Sse::new()
        .heartbeat(std::time::Duration::from_secs(15))
        .spawn(move |sse| async move {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(256);
            let live = sse.stream().clone();
            let sub = pubsub.subscribe(
                &stream,
                std::sync::Arc::new(move |d: &Delivery| {
                    let frame = d.memo("sse", |msg| {
                        let text = String::from_utf8_lossy(msg);
                        Bytes::from(Frame::new(&text).to_bytes().unwrap_or_default())
                    });
                    if tx.try_send(frame).is_err() {
                        // Too far behind (or gone): end its stream.
                        live.disconnect();
                    }
                }),
            );
            let result = async {
                sub.ready.await?;
                sse.comment("subscribed").await?;
                while let Some(frame) = rx.recv().await {
                    sse.stream().write(frame).await?;
                }
                Ok::<(), keayl_live::BoxError>(())
            }
            .await;
            pubsub.unsubscribe(sub.id);
            match result {
                Err(e)
                    if e.downcast_ref::<keayl_live::LiveError>()
                        == Some(&keayl_live::LiveError::ClientDisconnected) =>
                {
                    Ok(())
                }
                other => other,
            }
        })
        .into_http()
}
