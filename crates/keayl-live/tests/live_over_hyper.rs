//! Live responses served by plain hyper over real loopback sockets.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use keayl_live::{Live, LiveError, LiveHandle, LiveState, WriterError};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot};

use common::{get, read_response, serve};

/// Serve exactly one live response built by `make`, handing its handle to
/// the test.
async fn serve_one(
    make: impl Fn() -> keayl_live::LiveResponse + Send + Sync + 'static,
) -> (std::net::SocketAddr, mpsc::UnboundedReceiver<LiveHandle>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let addr = serve(move |_req| {
        let (resp, handle) = make().into_parts();
        let _ = tx.send(handle);
        resp
    })
    .await;
    (addr, rx)
}

#[tokio::test]
async fn spec_numbers_example_byte_for_byte() {
    let (addr, mut handles) = serve_one(|| {
        Live::new().spawn(|stream| async move {
            for n in 1..=10 {
                stream.write(format!("{n}\n")).await?;
            }
            Ok(())
        })
    })
    .await;
    let mut tcp = get(addr, "/numbers", "").await;
    let resp = read_response(&mut tcp).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n");
    assert_eq!(resp.header("transfer-encoding"), Some("chunked"));
    assert_eq!(resp.header("x-accel-buffering"), Some("no"));
    let handle = handles.recv().await.unwrap();
    assert!(handle.await.is_ok());
}

#[tokio::test]
async fn text_is_utf8_and_bytes_pass_unchanged() {
    let (addr, _h) = serve_one(|| {
        Live::new().spawn(|stream| async move {
            stream.write("héllo ✓ ").await?;
            stream.write(vec![0u8, 0xff, 0xfe, b'\n']).await?;
            stream.write(Bytes::from_static(b"\x80end")).await?;
            Ok(())
        })
    })
    .await;
    let resp = read_response(&mut get(addr, "/", "").await).await;
    let mut expected = "héllo ✓ ".as_bytes().to_vec();
    expected.extend_from_slice(&[0, 0xff, 0xfe, b'\n', 0x80]);
    expected.extend_from_slice(b"end");
    assert_eq!(resp.body, expected);
}

#[tokio::test]
async fn handler_returns_before_writer_finishes_and_body_streams() {
    let (release_tx, release_rx) = std::sync::mpsc::channel::<oneshot::Receiver<()>>();
    let release_rx = std::sync::Mutex::new(release_rx);
    let (addr, mut handles) = serve_one(move || {
        let gate = release_rx.lock().unwrap().recv().unwrap();
        Live::new().spawn(|stream| async move {
            stream.write("first\n").await?;
            gate.await.ok();
            stream.write("second\n").await?;
            Ok(())
        })
    })
    .await;
    let (gate_tx, gate_rx) = oneshot::channel();
    release_tx.send(gate_rx).unwrap();
    let mut tcp = get(addr, "/", "").await;
    // The first chunk arrives while the writer is still running.
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !got.windows(6).any(|w| w == b"first\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("first chunk must stream before the writer ends")
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    let handle = handles.recv().await.unwrap();
    assert!(!handle.is_finished());
    gate_tx.send(()).unwrap();
    let mut rest = Vec::new();
    tcp.read_to_end(&mut rest).await.unwrap();
    got.extend_from_slice(&rest);
    let resp = common::parse_response(&got);
    assert_eq!(resp.body, b"first\nsecond\n");
    assert!(handle.await.is_ok());
}

#[tokio::test]
async fn writing_after_close_fails_with_stream_closed() {
    let (result_tx, mut result_rx) = mpsc::unbounded_channel();
    let (addr, _h) = serve_one(move || {
        let result_tx = result_tx.clone();
        Live::new().spawn(move |stream| async move {
            stream.write("only\n").await?;
            stream.close();
            let _ = result_tx.send(stream.write("late\n").await);
            Ok(())
        })
    })
    .await;
    let resp = read_response(&mut get(addr, "/", "").await).await;
    assert_eq!(resp.body, b"only\n");
    assert_eq!(
        result_rx.recv().await.unwrap(),
        Err(LiveError::StreamClosed)
    );
}

#[tokio::test]
async fn client_closing_mid_stream_is_seen_within_a_second_and_cleanup_runs() {
    let cleaned = Arc::new(AtomicBool::new(false));
    let c = cleaned.clone();
    let (addr, mut handles) = serve_one(move || {
        let c = c.clone();
        Live::new().spawn(move |stream| async move {
            loop {
                match stream.write("tick\n").await {
                    Ok(()) => tokio::time::sleep(Duration::from_millis(50)).await,
                    Err(LiveError::ClientDisconnected) => {
                        c.store(true, Ordering::SeqCst);
                        return Ok(());
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        })
    })
    .await;
    let mut tcp = get(addr, "/", "").await;
    let mut buf = [0u8; 256];
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(n > 0);
    let closed_at = Instant::now();
    drop(tcp);
    let handle = handles.recv().await.unwrap();
    tokio::time::timeout(Duration::from_secs(1), handle)
        .await
        .expect("writer must notice the disconnect within 1 s")
        .unwrap();
    assert!(cleaned.load(Ordering::SeqCst), "cleanup must run");
    assert!(closed_at.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn idle_writer_notices_disconnect_without_writing() {
    let (addr, mut handles) = serve_one(|| {
        Live::new().spawn(|stream| async move {
            stream.write("hello\n").await?;
            // Idle: nothing to write until the client goes.
            tokio::time::timeout(Duration::from_secs(5), stream.disconnected())
                .await
                .map_err(|_| "disconnect not noticed while idle")?;
            assert!(stream.is_disconnected());
            assert_eq!(stream.write("x").await, Err(LiveError::ClientDisconnected));
            Ok(())
        })
    })
    .await;
    let mut tcp = get(addr, "/", "").await;
    let mut buf = [0u8; 256];
    assert!(tcp.read(&mut buf).await.unwrap() > 0);
    drop(tcp);
    let handle = handles.recv().await.unwrap();
    tokio::time::timeout(Duration::from_secs(1), handle)
        .await
        .expect("handle must complete")
        .unwrap();
}

#[tokio::test]
async fn client_that_stops_reading_blocks_writer_with_bounded_memory_then_times_out() {
    const BUFFER: usize = 64 * 1024;
    let written = Arc::new(AtomicUsize::new(0));
    let w = written.clone();
    let (addr, mut handles) = serve_one(move || {
        let w = w.clone();
        Live::new()
            .buffer_bytes(BUFFER)
            .write_timeout(Some(Duration::from_millis(500)))
            .spawn(move |stream| async move {
                let chunk = Bytes::from(vec![b'x'; 16 * 1024]);
                loop {
                    stream.write(chunk.clone()).await?;
                    w.fetch_add(chunk.len(), Ordering::SeqCst);
                }
            })
    })
    .await;
    // Connect and never read.
    let tcp = get(addr, "/", "").await;
    let handle = handles.recv().await.unwrap();
    let started = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("the write timeout must fire");
    let err = outcome.unwrap_err();
    assert_eq!(err.live_error(), Some(&LiveError::ClientDisconnected));
    // The writer was held back: what it wrote is what fits in the kernel's
    // socket buffers plus our bounded buffer, not an unbounded amount.
    let total = written.load(Ordering::SeqCst);
    assert!(
        total < 32 * 1024 * 1024,
        "writer should block on a full buffer, wrote {total} bytes"
    );
    assert!(started.elapsed() >= Duration::from_millis(400));
    drop(tcp);
}

#[tokio::test]
async fn writer_blocked_on_full_buffer_sees_client_close() {
    let (addr, mut handles) = serve_one(|| {
        Live::new()
            .buffer_bytes(16 * 1024)
            .write_timeout(None)
            .spawn(|stream| async move {
                let chunk = Bytes::from(vec![b'y'; 64 * 1024]);
                loop {
                    stream.write(chunk.clone()).await?;
                }
            })
    })
    .await;
    let tcp = get(addr, "/", "").await;
    // Let the writer fill every buffer and block.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let handle = handles.recv().await.unwrap();
    assert!(!handle.is_finished(), "writer should be blocked");
    drop(tcp);
    let err = tokio::time::timeout(Duration::from_secs(2), handle)
        .await
        .expect("blocked writer must be released by the disconnect")
        .unwrap_err();
    assert_eq!(err.live_error(), Some(&LiveError::ClientDisconnected));
}

#[tokio::test]
async fn writer_failure_and_panic_reach_the_handle_and_close_the_body() {
    let (addr, mut handles) = serve_one(|| {
        Live::new().spawn(|stream| async move {
            stream.write("partial\n").await?;
            Err("boom".into())
        })
    })
    .await;
    let resp = read_response(&mut get(addr, "/", "").await).await;
    assert_eq!(resp.body, b"partial\n");
    match handles.recv().await.unwrap().await {
        Err(WriterError::Failed(e)) => assert_eq!(e.to_string(), "boom"),
        other => panic!("unexpected outcome {other:?}"),
    }

    let (addr, mut handles) = serve_one(|| {
        Live::new().spawn(|stream| async move {
            stream.write("before panic\n").await?;
            panic!("writer exploded");
        })
    })
    .await;
    let resp = read_response(&mut get(addr, "/", "").await).await;
    assert_eq!(resp.body, b"before panic\n");
    match handles.recv().await.unwrap().await {
        Err(WriterError::Panicked(msg)) => assert!(msg.contains("writer exploded")),
        other => panic!("unexpected outcome {other:?}"),
    }
}

#[tokio::test]
async fn blocking_writer_runs_on_its_own_thread() {
    let (addr, mut handles) = serve_one(|| {
        Live::new().spawn_blocking(|stream| {
            for n in 1..=3 {
                std::thread::sleep(Duration::from_millis(5));
                stream.write(format!("line {n}\n"))?;
            }
            Ok(())
        })
    })
    .await;
    let resp = read_response(&mut get(addr, "/", "").await).await;
    assert_eq!(resp.body, b"line 1\nline 2\nline 3\n");
    assert!(handles.recv().await.unwrap().await.is_ok());
}

#[tokio::test]
async fn blocking_writer_sees_client_disconnect() {
    let (addr, mut handles) = serve_one(|| {
        Live::new().spawn_blocking(|stream| {
            loop {
                match stream.write("b\n") {
                    Ok(()) => std::thread::sleep(Duration::from_millis(20)),
                    Err(LiveError::ClientDisconnected) => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
            }
        })
    })
    .await;
    let mut tcp = get(addr, "/", "").await;
    let mut buf = [0u8; 64];
    assert!(tcp.read(&mut buf).await.unwrap() > 0);
    drop(tcp);
    let handle = handles.recv().await.unwrap();
    tokio::time::timeout(Duration::from_secs(1), handle)
        .await
        .expect("blocking writer must notice within 1 s")
        .unwrap();
}

#[tokio::test]
async fn response_reports_live_and_streaming() {
    let (gate_tx, gate_rx) = oneshot::channel::<()>();
    let response = Live::new().spawn(|stream| async move {
        gate_rx.await.ok();
        stream.write("x").await?;
        Ok(())
    });
    // The writer waits on the gate: streaming, the client still there.
    assert!(response.is_streaming());
    assert!(!response.is_disconnected());
    let state = response.state();
    let (http_response, handle) = response.into_parts();
    // What makes it live for an adapter or a middleware: the converted
    // response carries its `LiveState`, which a plain response does not.
    assert!(
        LiveState::of(&http_response).is_some_and(LiveState::is_streaming),
        "the converted response carries the streaming state"
    );
    assert!(LiveState::of(&http::Response::new(())).is_none());
    gate_tx.send(()).unwrap();
    // Drain the body like an adapter would.
    let body = http_body_util::BodyExt::collect(http_response.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(&body[..], b"x");
    assert!(handle.await.is_ok());
    // The state `is_streaming` read before reports the end now.
    assert!(!state.is_streaming(), "closed and everything taken");
    assert!(!state.is_disconnected(), "the body was read to its end");
}

#[tokio::test]
async fn live_state_extension_reports_streaming_until_the_body_finishes() {
    let (gate_tx, gate_rx) = oneshot::channel::<()>();
    let response = Live::new().spawn(|stream| async move {
        gate_rx.await.ok();
        stream.write("abc").await?;
        Ok(())
    });
    let (http_response, handle) = response.into_parts();
    let (parts, body) = http_response.into_parts();
    let state = parts
        .extensions
        .get::<LiveState>()
        .expect("into_parts inserts the LiveState")
        .clone();
    assert!(state.is_streaming(), "the writer has not even started");
    assert!(!state.is_disconnected());

    gate_tx.send(()).unwrap();
    handle.await.unwrap();
    assert!(
        state.is_streaming(),
        "the writer finished, but its chunk still waits for the adapter"
    );

    let bytes = http_body_util::BodyExt::collect(body)
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(&bytes[..], b"abc");
    // Still a live response once its body has ended: the response's own
    // extension (not only the clone taken above) reports the end.
    let in_response = parts
        .extensions
        .get::<LiveState>()
        .expect("the extension stays after the body ends");
    assert!(!in_response.is_streaming(), "closed and everything taken");
    assert!(!in_response.is_disconnected());
    assert!(!state.is_streaming());
    drop(parts);
    assert!(!state.is_streaming(), "a clone outlives the response");
}

#[tokio::test]
async fn live_state_from_into_http_sees_a_client_that_leaves_over_hyper() {
    let (state_tx, mut states) = mpsc::unbounded_channel::<LiveState>();
    let addr = serve(move |_req| {
        let response = Live::new()
            .spawn(|stream| async move {
                loop {
                    stream.write("tick\n").await?;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .into_http();
        // What a middleware would do after the handler.
        let state = LiveState::of(&response).expect("a live response");
        state_tx.send(state.clone()).unwrap();
        response
    })
    .await;
    let mut tcp = get(addr, "/", "").await;
    let mut buf = [0u8; 256];
    assert!(tcp.read(&mut buf).await.unwrap() > 0);
    let state = states.recv().await.unwrap();
    assert!(state.is_streaming() && !state.is_disconnected());
    drop(tcp);
    let deadline = Instant::now() + Duration::from_secs(1);
    while state.is_streaming() {
        assert!(
            Instant::now() < deadline,
            "still streaming 1 s after the client left"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(state.is_disconnected());
    // For good: it does not turn back on a moment later.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!state.is_streaming() && state.is_disconnected());
}

#[tokio::test]
async fn live_state_over_hyper_ends_streaming_once_the_client_has_everything() {
    let (state_tx, mut states) = mpsc::unbounded_channel::<LiveState>();
    let addr = serve(move |_req| {
        let response = Live::new()
            .spawn(|stream| async move {
                stream.write("one\n").await?;
                stream.write("two\n").await?;
                Ok(())
            })
            .into_http();
        state_tx
            .send(response.extensions().get::<LiveState>().unwrap().clone())
            .unwrap();
        response
    })
    .await;
    let resp = read_response(&mut get(addr, "/", "").await).await;
    assert_eq!(resp.body, b"one\ntwo\n");
    let state = states.recv().await.unwrap();
    assert!(!state.is_streaming());
    assert!(!state.is_disconnected());
}
