//! The edges of a live connection: a client that leaves while the writer is
//! idle, a client that never reads, and a `Last-Event-ID` sized or shaped to
//! hurt. Served by plain hyper over real loopback sockets.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderMap;
use http::header::HeaderValue;
use http_body::{Body, Frame};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use keayl_live::{Live, LiveBody, LiveError, LiveHandle, LiveResponse, Sse, WriterError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;

use common::{get, read_response};

/// When the adapter last took a chunk from the body.
type LastPull = Arc<Mutex<Option<Instant>>>;

/// A [`LiveBody`] that notes when hyper pulls from it, so a test can tell
/// how long data really waited before a cut.
struct Recorded {
    inner: LiveBody,
    last_pull: LastPull,
}

impl Body for Recorded {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(_)) = &polled {
            *self.last_pull.lock().unwrap() = Some(Instant::now());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

/// Serve one live response per request with plain hyper. With
/// `send_buffer`, accepted sockets get that `SO_SNDBUF` (inherited from the
/// listener), so a non-reading client backs data up into the live buffer
/// within milliseconds instead of after megabytes.
async fn serve(
    send_buffer: Option<u32>,
    make: impl Fn(&HeaderMap) -> LiveResponse + Send + Sync + 'static,
) -> (SocketAddr, mpsc::UnboundedReceiver<LiveHandle>, LastPull) {
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(bytes) = send_buffer {
        socket.set_send_buffer_size(bytes).unwrap();
    }
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(64).unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let last_pull = LastPull::default();
    let pulls = last_pull.clone();
    let make = Arc::new(make);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (make, tx, pulls) = (make.clone(), tx.clone(), pulls.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (resp, handle) = make(req.headers()).into_parts();
                    let _ = tx.send(handle);
                    let resp = resp.map(|inner| Recorded {
                        inner,
                        last_pull: pulls.clone(),
                    });
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, rx, last_pull)
}

/// A client that sends its request and then never reads, with a small
/// receive buffer so that little data hides in the kernel.
async fn non_reading_client(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(addr).await.unwrap();
    tcp.write_all(
        format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    tcp
}

/// Sets its flag when dropped: cleanup that runs however a writer ends.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------
// A client that leaves while the writer waits on something else.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn idle_writer_ends_promptly_after_the_client_leaves_and_runs_its_cleanup() {
    let cleaned = Arc::new(AtomicBool::new(false));
    // The writer's feed: nothing is ever sent, and the sender stays alive,
    // so only the disconnect can end the wait.
    let (feed_tx, feed_rx) = mpsc::channel::<String>(1);
    let feed_rx = Arc::new(Mutex::new(Some(feed_rx)));
    let c = cleaned.clone();
    let (addr, mut handles, _) = serve(None, move |_| {
        let mut feed = feed_rx.lock().unwrap().take().expect("one request");
        let c = c.clone();
        Sse::new().spawn(move |sse| async move {
            sse.comment("subscribed").await?;
            let result = async {
                while let Some(text) = sse.or_disconnected(feed.recv()).await? {
                    sse.write(text).await?;
                }
                Ok::<(), LiveError>(())
            }
            .await;
            // Plain code after the wait, not a Drop guard: it runs because
            // the wait ended with an error rather than the task being dropped.
            c.store(true, Ordering::SeqCst);
            assert_eq!(result, Err(LiveError::ClientDisconnected));
            Ok(())
        })
    })
    .await;
    let mut tcp = get(addr, "/", "").await;
    let mut buf = [0u8; 512];
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains(": subscribed\n") {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    let handle = handles.recv().await.unwrap();
    let closed_at = Instant::now();
    drop(tcp);
    tokio::time::timeout(Duration::from_secs(1), handle)
        .await
        .expect("an idle writer must end within 1 s of the client leaving")
        .unwrap();
    let took = closed_at.elapsed();
    assert!(cleaned.load(Ordering::SeqCst), "cleanup must run");
    eprintln!("idle writer ended {took:?} after the client closed");
    drop(feed_tx);
}

#[tokio::test]
async fn writer_that_ignores_the_disconnect_is_dropped_after_the_grace() {
    const GRACE: Duration = Duration::from_millis(300);
    let dropped = Arc::new(AtomicBool::new(false));
    let resumed = Arc::new(AtomicBool::new(false));
    let (feed_tx, feed_rx) = mpsc::channel::<String>(1);
    let feed_rx = Arc::new(Mutex::new(Some(feed_rx)));
    let (d, r) = (dropped.clone(), resumed.clone());
    let (addr, mut handles, _) = serve(None, move |_| {
        let mut feed = feed_rx.lock().unwrap().take().expect("one request");
        let (d, r) = (d.clone(), r.clone());
        Live::new()
            .disconnect_grace(Some(GRACE))
            .spawn(move |stream| async move {
                let _cleanup = SetOnDrop(d);
                stream.write("hello\n").await?;
                // The bug this net is for: a wait that ignores the client.
                let _ = feed.recv().await;
                r.store(true, Ordering::SeqCst);
                Ok(())
            })
    })
    .await;
    let mut tcp = get(addr, "/", "").await;
    let mut buf = [0u8; 512];
    assert!(tcp.read(&mut buf).await.unwrap() > 0);
    let mut handle = handles.recv().await.unwrap();
    let closed_at = Instant::now();
    drop(tcp);
    tokio::time::sleep(GRACE / 2).await;
    assert!(!handle.is_finished(), "the writer gets its grace period");
    let outcome = tokio::time::timeout(GRACE + Duration::from_secs(1), &mut handle)
        .await
        .expect("the writer must be dropped after the grace");
    let took = closed_at.elapsed();
    assert!(
        matches!(outcome, Err(WriterError::Abandoned)),
        "{outcome:?}"
    );
    assert!(took >= GRACE, "dropped after {took:?}, before the grace");
    assert!(dropped.load(Ordering::SeqCst), "Drop cleanup must run");
    assert!(
        !resumed.load(Ordering::SeqCst),
        "the abandoned wait never resumes"
    );
    eprintln!("ignoring writer dropped {took:?} after the client closed (grace {GRACE:?})");
    drop(feed_tx);
}

#[tokio::test]
async fn without_a_grace_an_ignoring_writer_runs_until_its_own_wait_ends() {
    let (feed_tx, feed_rx) = mpsc::channel::<String>(1);
    let feed_rx = Arc::new(Mutex::new(Some(feed_rx)));
    let (addr, mut handles, _) = serve(None, move |_| {
        let mut feed = feed_rx.lock().unwrap().take().expect("one request");
        Live::new()
            .disconnect_grace(None)
            .spawn(move |stream| async move {
                stream.write("hello\n").await?;
                let _ = feed.recv().await;
                assert!(stream.is_disconnected());
                Ok(())
            })
    })
    .await;
    let mut tcp = get(addr, "/", "").await;
    let mut buf = [0u8; 512];
    assert!(tcp.read(&mut buf).await.unwrap() > 0);
    let handle = handles.recv().await.unwrap();
    drop(tcp);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!handle.is_finished(), "no grace: nothing drops the writer");
    drop(feed_tx);
    tokio::time::timeout(Duration::from_secs(1), handle)
        .await
        .expect("the writer ends with its own wait")
        .unwrap();
}

#[tokio::test]
async fn or_disconnected_passes_output_through_and_fails_like_the_next_write() {
    let (body_tx, body_rx) = tokio::sync::oneshot::channel();
    let (resp, handle) = Live::new()
        .spawn(|stream| async move {
            assert_eq!(stream.or_disconnected(async { 7 }).await, Ok(7));
            stream.close();
            assert_eq!(
                stream.or_disconnected(std::future::pending::<()>()).await,
                Err(LiveError::StreamClosed)
            );
            // The body is still held: this disconnect is explicit.
            let _body: LiveBody = body_rx.await.unwrap();
            stream.disconnect();
            assert_eq!(
                stream.or_disconnected(std::future::ready(())).await,
                Err(LiveError::ClientDisconnected),
                "once the client is gone the error wins, even over a ready future"
            );
            Ok(())
        })
        .into_parts();
    body_tx.send(resp.into_body()).unwrap();
    tokio::time::timeout(Duration::from_secs(1), handle)
        .await
        .unwrap()
        .unwrap();
}

// ---------------------------------------------------------------------------
// A client that never reads.
// ---------------------------------------------------------------------------

const STALL: Duration = Duration::from_millis(300);
const SMALL_SNDBUF: Option<u32> = Some(8 * 1024);

/// What the stalled writer saw: the error that ended its wait, when, and its
/// last successful write.
struct Cut {
    error: Result<(), LiveError>,
    at: Instant,
    last_write: Instant,
}

#[tokio::test]
async fn stalled_client_is_cut_after_the_stall_timeout_while_the_writer_idles() {
    let (cut_tx, mut cut_rx) = mpsc::unbounded_channel::<Cut>();
    let (addr, mut handles, last_pull) = serve(SMALL_SNDBUF, move |_| {
        let cut_tx = cut_tx.clone();
        Live::new()
            .buffer_bytes(16 * 1024)
            .write_timeout(None)
            .stall_timeout(Some(STALL))
            .spawn(move |stream| async move {
                let chunk = Bytes::from(vec![b'z'; 4 * 1024]);
                let mut last_write = Instant::now();
                // Write until a write has to wait: every buffer downstream is
                // full and data is pending in ours. Then go idle.
                while let Ok(written) =
                    tokio::time::timeout(Duration::from_millis(100), stream.write(chunk.clone()))
                        .await
                {
                    written?;
                    last_write = Instant::now();
                }
                let error = stream.or_disconnected(std::future::pending::<()>()).await;
                let _ = cut_tx.send(Cut {
                    error,
                    at: Instant::now(),
                    last_write,
                });
                Ok(())
            })
    })
    .await;
    let started = Instant::now();
    let mut tcp = non_reading_client(addr).await;
    let cut = tokio::time::timeout(Duration::from_secs(5), cut_rx.recv())
        .await
        .expect("a client that reads nothing must be cut")
        .unwrap();
    assert_eq!(cut.error, Err(LiveError::ClientDisconnected));
    let last_pull = last_pull
        .lock()
        .unwrap()
        .expect("hyper pulled the first chunks");
    let since_pull = cut.at - last_pull;
    let since_activity = cut.at - last_pull.max(cut.last_write);
    // Never before the stall timeout (small slack: the pull is noted just
    // after the stream's own clock restarts) …
    assert!(
        since_pull + Duration::from_millis(20) >= STALL,
        "cut {since_pull:?} after the last pull, before the {STALL:?} stall timeout"
    );
    // … and promptly after it.
    assert!(
        since_activity < STALL + Duration::from_secs(1),
        "cut {since_activity:?} after the last activity"
    );
    eprintln!(
        "stalled client (idle writer) cut {since_pull:?} after the last pull, \
         {:?} after connecting (stall timeout {STALL:?})",
        cut.at - started
    );
    handles.recv().await.unwrap().await.unwrap();
    // The body ended: once the client reads again it gets what the kernel
    // held, then the end of the response, and the server closes.
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest))
        .await
        .expect("the cut body must end")
        .unwrap();
    assert!(
        rest.ends_with(b"0\r\n\r\n"),
        "the chunked body must end cleanly"
    );
}

#[tokio::test]
async fn stalled_client_releases_a_writer_blocked_without_a_write_timeout() {
    let (addr, mut handles, last_pull) = serve(SMALL_SNDBUF, move |_| {
        Live::new()
            .buffer_bytes(16 * 1024)
            .write_timeout(None)
            .stall_timeout(Some(STALL))
            .spawn(move |stream| async move {
                let chunk = Bytes::from(vec![b'y'; 4 * 1024]);
                loop {
                    stream.write(chunk.clone()).await?;
                }
            })
    })
    .await;
    let tcp = non_reading_client(addr).await;
    let handle = handles.recv().await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .expect("the stall timeout must release the blocked writer")
        .unwrap_err();
    let cut_at = Instant::now();
    assert_eq!(err.live_error(), Some(&LiveError::ClientDisconnected));
    let since_pull = cut_at - last_pull.lock().unwrap().unwrap();
    assert!(
        since_pull + Duration::from_millis(20) >= STALL,
        "{since_pull:?}"
    );
    assert!(
        since_pull < STALL + Duration::from_secs(1),
        "{since_pull:?}"
    );
    eprintln!("stalled client (blocked writer) cut {since_pull:?} after the last pull");
    drop(tcp);
}

#[tokio::test]
async fn heartbeats_pile_up_so_an_idle_sse_client_that_reads_nothing_is_cut() {
    let (cut_tx, mut cut_rx) = mpsc::unbounded_channel::<Cut>();
    let (addr, _handles, last_pull) = serve(SMALL_SNDBUF, move |_| {
        let cut_tx = cut_tx.clone();
        Sse::new()
            .heartbeat(Duration::from_millis(1))
            .live(|live| live.write_timeout(None).stall_timeout(Some(STALL)))
            .spawn(move |sse| async move {
                let started = Instant::now();
                // The writer itself never writes: only heartbeats flow.
                let error = sse.or_disconnected(std::future::pending::<()>()).await;
                let _ = cut_tx.send(Cut {
                    error,
                    at: Instant::now(),
                    last_write: started,
                });
                Ok(())
            })
    })
    .await;
    let tcp = non_reading_client(addr).await;
    let cut = tokio::time::timeout(Duration::from_secs(20), cut_rx.recv())
        .await
        .expect("heartbeats must back up and trip the stall timeout")
        .unwrap();
    assert_eq!(cut.error, Err(LiveError::ClientDisconnected));
    let since_pull = cut.at - last_pull.lock().unwrap().expect("heartbeats were pulled");
    assert!(
        since_pull + Duration::from_millis(20) >= STALL,
        "{since_pull:?}"
    );
    assert!(
        since_pull < STALL + Duration::from_secs(1),
        "{since_pull:?}"
    );
    eprintln!(
        "heartbeat-only SSE client cut {:?} after the stream opened, \
         {since_pull:?} after the last pull",
        cut.at - cut.last_write
    );
    drop(tcp);
}

#[tokio::test]
async fn without_a_stall_timeout_a_stalled_idle_client_is_kept() {
    let (state_tx, mut state_rx) = mpsc::unbounded_channel::<LiveError>();
    let (addr, _handles, _) = serve(SMALL_SNDBUF, move |_| {
        let state_tx = state_tx.clone();
        Live::new()
            .buffer_bytes(16 * 1024)
            .write_timeout(None)
            .stall_timeout(None)
            .spawn(move |stream| async move {
                let chunk = Bytes::from(vec![b'x'; 4 * 1024]);
                while let Ok(written) =
                    tokio::time::timeout(Duration::from_millis(100), stream.write(chunk.clone()))
                        .await
                {
                    written?;
                }
                if let Err(e) = stream.or_disconnected(std::future::pending::<()>()).await {
                    let _ = state_tx.send(e);
                }
                Ok(())
            })
    })
    .await;
    let tcp = non_reading_client(addr).await;
    // The control for the tests above: the same stall, no timeout, no cut.
    assert!(
        tokio::time::timeout(STALL * 3, state_rx.recv())
            .await
            .is_err(),
        "nothing but the stall timeout should cut this client"
    );
    drop(tcp);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(2), state_rx.recv())
            .await
            .unwrap(),
        Some(LiveError::ClientDisconnected),
        "closing the socket still disconnects"
    );
}

// ---------------------------------------------------------------------------
// Last-Event-ID.
// ---------------------------------------------------------------------------

/// The `Last-Event-ID` a writer sees for these request headers.
async fn seen_last_event_id(headers: HeaderMap) -> Option<String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (_resp, handle) = Sse::new()
        .request_headers(&headers)
        .spawn(move |sse| async move {
            let _ = tx.send(sse.last_event_id().map(str::to_owned));
            Ok(())
        })
        .into_parts();
    handle.await.unwrap();
    rx.await.unwrap()
}

fn with_last_event_id(value: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("last-event-id", HeaderValue::from_bytes(value).unwrap());
    headers
}

#[tokio::test]
async fn last_event_id_is_bounded_and_must_be_text() {
    let max = Sse::MAX_LAST_EVENT_ID_BYTES;
    assert_eq!(max, 1024);
    let cases: Vec<(String, Vec<u8>, Option<String>)> = vec![
        ("plain".into(), b"42".to_vec(), Some("42".into())),
        (
            "u64 overflow is kept as text".into(),
            b"18446744073709551616".to_vec(),
            Some("18446744073709551616".into()),
        ),
        (
            "exactly the limit".into(),
            vec![b'7'; max],
            Some("7".repeat(max)),
        ),
        ("one byte over".into(), vec![b'7'; max + 1], None),
        ("100 KiB".into(), vec![b'9'; 100 * 1024], None),
        ("empty".into(), Vec::new(), None),
        (
            "UTF-8 text".into(),
            "évent-✓".as_bytes().to_vec(),
            Some("évent-✓".into()),
        ),
        ("not UTF-8".into(), vec![b'a', 0xff, 0xfe], None),
    ];
    for (name, value, expected) in cases {
        let seen = seen_last_event_id(with_last_event_id(&value)).await;
        assert_eq!(seen, expected, "case {name}");
    }
    assert_eq!(seen_last_event_id(HeaderMap::new()).await, None);
    // Only the first header counts.
    let mut two = with_last_event_id(b"1");
    two.append("last-event-id", HeaderValue::from_static("2"));
    assert_eq!(seen_last_event_id(two).await, Some("1".into()));
    // A multi-byte character straddling the limit is not cut in half: the
    // whole id is refused.
    let mut straddling = "a".repeat(max - 1).into_bytes();
    straddling.extend_from_slice("é".as_bytes());
    assert_eq!(
        seen_last_event_id(with_last_event_id(&straddling)).await,
        None
    );
}

#[tokio::test]
async fn last_event_id_set_by_code_has_the_same_bounds() {
    for (id, expected) in [
        (Some("5".to_owned()), Some("5".to_owned())),
        (Some(String::new()), None),
        (Some("x".repeat(Sse::MAX_LAST_EVENT_ID_BYTES + 1)), None),
        (Some("a\0b".to_owned()), None),
        (None, None),
    ] {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (_resp, handle) = Sse::new()
            .last_event_id(id)
            .spawn(move |sse| async move {
                let _ = tx.send(sse.last_event_id().map(str::to_owned));
                Ok(())
            })
            .into_parts();
        handle.await.unwrap();
        assert_eq!(rx.await.unwrap(), expected);
    }
}

#[tokio::test]
async fn huge_last_event_id_over_hyper_is_ignored_without_harm() {
    let (addr, mut handles, _) = serve(None, |headers| {
        Sse::new().request_headers(headers).spawn(|sse| async move {
            let seen = match sse.last_event_id() {
                Some(id) => format!("len {}", id.len()),
                None => "none".to_owned(),
            };
            sse.write(seen).await?;
            Ok(())
        })
    })
    .await;
    for (len, expected) in [
        (64 * 1024, "data: none\n\n".to_owned()),
        (
            Sse::MAX_LAST_EVENT_ID_BYTES,
            format!("data: len {}\n\n", Sse::MAX_LAST_EVENT_ID_BYTES),
        ),
    ] {
        let id = "9".repeat(len);
        let mut tcp = get(addr, "/", &format!("Last-Event-ID: {id}\r\n")).await;
        let resp = read_response(&mut tcp).await;
        assert_eq!(resp.status, 200);
        assert_eq!(String::from_utf8(resp.body).unwrap(), expected);
        handles.recv().await.unwrap().await.unwrap();
    }
}

#[tokio::test]
async fn max_duration_ends_a_quiet_stream_whose_client_reads_nothing() {
    const MAX: Duration = Duration::from_millis(600);
    let ended_with = Arc::new(Mutex::new(None));
    let e = ended_with.clone();
    let (addr, mut handles, _) = serve(None, move |_| {
        let e = e.clone();
        Sse::new()
            .max_duration(Some(MAX))
            .spawn(move |sse| async move {
                // One small event every 100 ms: never enough to fill a buffer.
                let result = async {
                    loop {
                        sse.write("tick").await?;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                .await;
                *e.lock().unwrap() = Some(result);
                Ok(())
            })
    })
    .await;
    // A client that sends its request and never reads.
    let tcp = get(addr, "/", "").await;
    let handle = handles.recv().await.unwrap();
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(3), handle)
        .await
        .expect("the writer ends after max_duration")
        .unwrap();
    let took = started.elapsed();
    assert!(took >= MAX - Duration::from_millis(100), "{took:?}");
    assert_eq!(
        *ended_with.lock().unwrap(),
        Some(Err::<(), _>(LiveError::ClientDisconnected))
    );
    drop(tcp);
}
