//! The live and SSE endpoints of the demo, one per example of the spec.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use bytes::Bytes;
use keayl_cable::PubSub;
use keayl_cable::pubsub::{Delivery, SubscriptionId};
use keayl_live::sse::Frame;
use keayl_live::{BoxError, Live, LiveError, LiveResponse, Sse};

use crate::DemoConfig;

/// `GET /numbers`: the spec's first example, `1\n` through `10\n`.
pub fn numbers() -> LiveResponse {
    Live::new().spawn(|stream| async move {
        for n in 1..=10 {
            stream.write(format!("{n}\n")).await?;
        }
        Ok(())
    })
}

/// `GET /events`: the spec's SSE example with a retry default of 5000 ms.
pub fn events(headers: &HeaderMap) -> LiveResponse {
    Sse::new()
        .retry(5000)
        .request_headers(headers)
        .spawn(|sse| async move {
            sse.write("hello").event("greeting").await?;
            sse.write("world").await?;
            sse.write("pong").retry(1000).await?;
            Ok(())
        })
}

/// `GET /clock`: one `tick` event per interval carrying the Unix time, with
/// an increasing id; resumes its count after `Last-Event-ID`.
pub fn clock(headers: &HeaderMap, config: &DemoConfig) -> LiveResponse {
    let interval = config.clock_interval;
    Sse::new()
        .event("tick")
        .heartbeat(config.clock_heartbeat)
        .max_duration(Some(SSE_MAX_DURATION))
        .request_headers(headers)
        .spawn(move |sse| async move {
            let mut n = resume_clock_after(sse.last_event_id());
            sse.comment("clock stream open").await?;
            let mut ticker = tokio::time::interval(interval);
            ticker.tick().await;
            loop {
                if let Err(e) = sse.or_disconnected(ticker.tick()).await {
                    tracing::debug!(ticks = n, reason = %e, "clock stream ended");
                    return Ok(());
                }
                // Bounded, so `n` can never wrap (and `n` stays exact for a
                // JavaScript client); unreachable at one tick per second.
                let Some(next) = n.checked_add(1).filter(|&m| m <= MAX_CLOCK_ID) else {
                    return Ok(());
                };
                n = next;
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                sse.write(format!("{{\"n\":{n},\"unix\":{now}}}"))
                    .id(n.to_string())
                    .await?;
            }
        })
}

/// The largest `/clock` id: 2^53 - 1, the largest integer a JavaScript
/// client reads exactly from the `n` of a tick.
const MAX_CLOCK_ID: u64 = (1 << 53) - 1;

/// Where `/clock` resumes counting after the client's `Last-Event-ID`: the
/// id itself when it is one this stream could have issued (plain decimal
/// digits, at most [`MAX_CLOCK_ID`]); anything else (a sign, a fraction, a
/// number too large for `u64` or for the clock) starts a fresh count at 0.
fn resume_clock_after(last_event_id: Option<&str>) -> u64 {
    last_event_id
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        // `parse` reports overflow as an error; it never wraps.
        .and_then(|id| id.parse::<u64>().ok())
        .filter(|&n| n <= MAX_CLOCK_ID)
        .unwrap_or(0)
}

/// How long the demo's endless SSE streams (`/clock`, `/sse/{stream}`) run
/// before they end and the browser's `EventSource` reconnects (resuming
/// with `Last-Event-ID`): what bounds a client that reads nothing on a
/// quiet stream (its kernel buffers would take hours to fill).
pub const SSE_MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(600);

/// Whether the demo's `/sse/{stream}` may serve `stream`: a public name of
/// letters, digits and `:_.-` (up to 100 bytes), never a connection's
/// internal `action_cable/<id>` stream and never a model's stream (a
/// GlobalID param, `Z2lkOi8v…`): those carry private updates and are only
/// reachable through a channel that checks access, or a signed Turbo name.
pub fn is_public_stream(stream: &str) -> bool {
    let charset = stream
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b":_.-".contains(&b));
    let model = stream
        .split(':')
        .any(|part| part.starts_with("Z2lkOi8v") || part.starts_with("gid"));
    (1..=100).contains(&stream.len()) && charset && !stream.starts_with("action_cable") && !model
}

/// `GET /sse/{stream}`: every broadcast on a cable stream, as SSE frames
/// (`data: <json>`). Broadcasts come from `BenchmarkChannel`, models, or
/// `POST /_broadcast`. The frame is encoded once per broadcast and shared by
/// every SSE client; a client more than 256 frames behind is disconnected.
///
/// The writer waits for broadcasts through `or_disconnected`, so a client
/// that leaves while the stream is quiet ends it at once; the subscription
/// is dropped by a guard, however the writer ends.
pub fn stream_events(pubsub: Arc<dyn PubSub>, stream: String) -> LiveResponse {
    Sse::new()
        .heartbeat(std::time::Duration::from_secs(15))
        .max_duration(Some(SSE_MAX_DURATION))
        .spawn(move |sse| async move {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(256);
            let live = sse.stream().clone();
            let sub = pubsub.subscribe(
                &stream,
                Arc::new(move |d: &Delivery| {
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
            let _unsubscribe = Unsubscribe {
                pubsub: pubsub.clone(),
                id: sub.id,
            };
            let result = async {
                sse.or_disconnected(sub.ready).await??;
                sse.comment("subscribed").await?;
                while let Some(frame) = sse.or_disconnected(rx.recv()).await? {
                    sse.stream().write(frame).await?;
                }
                Ok::<(), BoxError>(())
            }
            .await;
            match result {
                Err(e) if e.downcast_ref::<LiveError>() == Some(&LiveError::ClientDisconnected) => {
                    Ok(())
                }
                other => other,
            }
        })
}

/// Removes a pub/sub subscription when dropped: on every way out of a
/// writer, including a panic or the writer being dropped after
/// `LiveConfig::disconnect_grace`.
struct Unsubscribe {
    pubsub: Arc<dyn PubSub>,
    id: SubscriptionId,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        self.pubsub.unsubscribe(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_resumes_only_after_ids_it_could_have_issued() {
        assert_eq!(resume_clock_after(None), 0);
        assert_eq!(resume_clock_after(Some("7")), 7);
        assert_eq!(resume_clock_after(Some("0007")), 7);
        assert_eq!(resume_clock_after(Some("9007199254740991")), MAX_CLOCK_ID);
        for refused in [
            "",
            "-1",
            "+7",
            " 7",
            "7.5",
            "abc",
            "9007199254740992",     // MAX_CLOCK_ID + 1
            "18446744073709551615", // u64::MAX: `n += 1` used to wrap or panic here
            "18446744073709551616", // u64::MAX + 1
        ] {
            assert_eq!(resume_clock_after(Some(refused)), 0, "{refused:?}");
        }
        let huge = "9".repeat(1024);
        assert_eq!(resume_clock_after(Some(&huge)), 0);
    }
}
