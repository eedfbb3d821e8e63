//! Server-Sent Events progress that resumes where it left off.
//!
//! `GET /progress` sends `progress` events with ids `1` to `--steps`, one
//! every `--interval-ms`, then a `done` event. Each event's `id` is what the
//! browser's `EventSource` sends back as `Last-Event-ID` when it reconnects
//! (after a network blip, or a server restart), and the stream resumes at
//! the next step instead of starting over. `GET /` shows it as a progress
//! bar.
//!
//! ```sh
//! cargo run -p keayl --example sse_progress -- --addr 127.0.0.1:3000
//! curl -N http://127.0.0.1:3000/progress
//! curl -N -H 'Last-Event-ID: 15' http://127.0.0.1:3000/progress   # resumes at 16
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Html;
use axum::routing::get;
use clap::Parser;
use keayl::live::{LiveResponse, Sse};
use keayl::transport::listener::{self, Listener, ListenerConfig};
use serde_json::json;

/// SSE progress events with `Last-Event-ID` resumption.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "ADDR", default_value = "127.0.0.1:3000")]
    addr: SocketAddr,
    /// Number of progress events.
    #[arg(long, default_value_t = 20)]
    steps: u32,
    /// Milliseconds between two events.
    #[arg(long, default_value_t = 500)]
    interval_ms: u64,
}

#[derive(Clone, Copy)]
struct Job {
    steps: u32,
    interval: Duration,
}

/// `GET /progress`.
async fn progress(State(job): State<Job>, headers: HeaderMap) -> LiveResponse {
    Sse::new()
        .retry(1000) // tells EventSource to reconnect 1 s after a drop
        .heartbeat(Duration::from_secs(15)) // keeps proxies from closing an idle stream
        .request_headers(&headers) // picks up Last-Event-ID
        .spawn(move |sse| async move {
            // A reconnecting client sends the id of the last event it got.
            let done: u32 = sse
                .last_event_id()
                .and_then(|id| id.parse().ok())
                .unwrap_or(0);
            for step in (done + 1)..=job.steps {
                // The "work". `or_disconnected` ends the wait (with
                // `LiveError::ClientDisconnected`, and `?` ends the writer)
                // as soon as the client leaves, rather than at the next write.
                sse.or_disconnected(tokio::time::sleep(job.interval))
                    .await?;
                let data =
                    json!({ "step": step, "of": job.steps, "percent": step * 100 / job.steps });
                sse.write(data.to_string())
                    .event("progress")
                    .id(step.to_string())
                    .await?;
            }
            // Without it the browser would reconnect forever, each time
            // getting an empty stream; the page closes its EventSource on it.
            sse.write("finished").event("done").await?;
            Ok(())
        })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let job = Job {
        steps: args.steps.max(1),
        interval: Duration::from_millis(args.interval_ms),
    };
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/progress", get(progress))
        .with_state(job);

    let listener = Listener::new(listener::bind(args.addr)?, ListenerConfig::default())?;
    println!("listening on {}", listener.local_addr()?);
    // On Ctrl-C: stop accepting; streams still open get
    // `ListenerConfig::shutdown_grace` (5 s) and are then cut, which their
    // writers see as the client disconnecting.
    listener
        .serve_until(app, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

const PAGE: &str = r#"<!doctype html>
<meta charset="utf-8">
<title>Keayl SSE progress</title>
<p><progress id="bar" max="100" value="0"></progress> <span id="status">starting</span></p>
<script>
  const bar = document.getElementById("bar");
  const status = document.getElementById("status");
  const source = new EventSource("/progress"); // reconnects by itself, sending Last-Event-ID
  source.addEventListener("progress", (event) => {
    const { step, of, percent } = JSON.parse(event.data);
    bar.value = percent;
    status.textContent = `step ${step} of ${of}`;
  });
  source.addEventListener("done", () => {
    status.textContent = "done";
    source.close();
  });
  source.onerror = () => { status.textContent = "reconnecting…"; };
</script>
"#;
