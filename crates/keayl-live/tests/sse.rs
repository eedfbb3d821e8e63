//! Server-Sent Events over real loopback sockets, and a property test of the
//! encoder against an independent parser (`eventsource-stream`).

mod common;

use std::time::Duration;

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use keayl_live::sse::Frame;
use keayl_live::{LiveError, Sse, SseField, SseOptions};
use proptest::prelude::*;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use common::{get, read_response, serve};

#[tokio::test]
async fn spec_greeting_example_byte_for_byte_with_headers() {
    let addr = serve(|_req| {
        Sse::new()
            .spawn(|sse| async move {
                sse.write("hello").event("greeting").await?;
                sse.write("world").await?;
                Ok(())
            })
            .into_http()
    })
    .await;
    let resp = read_response(&mut get(addr, "/events", "").await).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("text/event-stream"));
    assert_eq!(resp.header("cache-control"), Some("no-cache"));
    assert_eq!(resp.header("x-accel-buffering"), Some("no"));
    assert_eq!(
        String::from_utf8(resp.body).unwrap(),
        "event: greeting\ndata: hello\n\ndata: world\n\n"
    );
}

#[tokio::test]
async fn spec_retry_default_and_per_write_override_byte_for_byte() {
    let addr = serve(|_req| {
        Sse::new()
            .retry(5000)
            .spawn(|sse| async move {
                sse.write("tick").await?; // retry: 5000 applied
                sse.write("pong").retry(1000).await?; // overridden for this frame
                Ok(())
            })
            .into_http()
    })
    .await;
    let resp = read_response(&mut get(addr, "/", "").await).await;
    assert_eq!(
        String::from_utf8(resp.body).unwrap(),
        "retry: 5000\ndata: tick\n\nretry: 1000\ndata: pong\n\n"
    );
}

#[tokio::test]
async fn comment_is_a_heartbeat_line() {
    let addr = serve(|_req| {
        Sse::new()
            .spawn(|sse| async move {
                sse.comment("keep-alive").await?;
                Ok(())
            })
            .into_http()
    })
    .await;
    let resp = read_response(&mut get(addr, "/", "").await).await;
    assert_eq!(resp.body, b": keep-alive\n\n");
}

#[tokio::test]
async fn automatic_heartbeat_fills_idle_time() {
    let addr = serve(|_req| {
        Sse::new()
            .heartbeat(Duration::from_millis(50))
            .spawn(|sse| async move {
                sse.write("a").await?;
                tokio::time::sleep(Duration::from_millis(180)).await;
                sse.write("b").await?;
                Ok(())
            })
            .into_http()
    })
    .await;
    let resp = read_response(&mut get(addr, "/", "").await).await;
    let body = String::from_utf8(resp.body).unwrap();
    assert!(body.starts_with("data: a\n\n"), "{body}");
    assert!(body.ends_with("data: b\n\n"), "{body}");
    let beats = body.matches(": keep-alive\n\n").count();
    assert!((2..=4).contains(&beats), "expected 2-4 heartbeats: {body}");
}

#[tokio::test]
async fn invalid_fields_are_refused_and_write_nothing() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let addr = serve(move |_req| {
        let tx = tx.clone();
        Sse::new()
            .spawn(move |sse| async move {
                let _ = tx.send(sse.write("x").event("a\ndata: injected").await);
                let _ = tx.send(sse.write("x").id("1\r\nevent: evil").await);
                let _ = tx.send(sse.write("x").id("nul\0").await);
                let _ = tx.send(sse.write("x").event("lone\rcr").await);
                sse.write("ok").await?;
                Ok(())
            })
            .into_http()
    })
    .await;
    let resp = read_response(&mut get(addr, "/", "").await).await;
    assert_eq!(resp.body, b"data: ok\n\n");
    for field in [SseField::Event, SseField::Id, SseField::Id, SseField::Event] {
        match rx.recv().await.unwrap() {
            Err(LiveError::InvalidSseField { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected a refused field, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn last_event_id_reaches_the_writer() {
    let addr = serve(|req| {
        Sse::new()
            .request_headers(req.headers())
            .spawn(|sse| async move {
                let next: u64 = sse
                    .last_event_id()
                    .and_then(|s| s.parse().ok())
                    .map_or(1, |n: u64| n + 1);
                sse.write(format!("resumed at {next}"))
                    .id(next.to_string())
                    .await?;
                Ok(())
            })
            .into_http()
    })
    .await;
    let resp = read_response(&mut get(addr, "/", "Last-Event-ID: 41\r\n").await).await;
    assert_eq!(resp.body, b"id: 42\ndata: resumed at 42\n\n");
    let resp = read_response(&mut get(addr, "/", "").await).await;
    assert_eq!(resp.body, b"id: 1\ndata: resumed at 1\n\n");
}

#[tokio::test]
async fn sse_writer_sees_client_disconnect() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let addr = serve(move |_req| {
        let tx = tx.clone();
        Sse::new()
            .spawn(move |sse| async move {
                loop {
                    if let Err(e) = sse.write("tick").await {
                        let _ = tx.send(e);
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .into_http()
    })
    .await;
    let mut tcp = get(addr, "/", "").await;
    let mut buf = [0u8; 128];
    assert!(tcp.read(&mut buf).await.unwrap() > 0);
    drop(tcp);
    let err = tokio::time::timeout(Duration::from_secs(1), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(err, LiveError::ClientDisconnected);
}

#[tokio::test]
async fn blocking_sse_writer() {
    let addr = serve(|_req| {
        Sse::new()
            .event("n")
            .spawn_blocking(|sse| {
                for n in 1..=2 {
                    sse.write(n.to_string()).send()?;
                }
                sse.comment("done")?;
                Ok(())
            })
            .into_http()
    })
    .await;
    let resp = read_response(&mut get(addr, "/", "").await).await;
    assert_eq!(
        resp.body,
        b"event: n\ndata: 1\n\nevent: n\ndata: 2\n\n: done\n\n"
    );
}

#[tokio::test]
async fn blocking_sse_writer_takes_per_write_options_like_the_async_one() {
    let (err_tx, mut errs) = mpsc::unbounded_channel::<LiveError>();
    let addr = serve(move |_req| {
        let err_tx = err_tx.clone();
        Sse::new()
            .retry(5000)
            .event("n")
            .spawn_blocking(move |sse| {
                sse.write("tick").send()?; // the defaults
                sse.write("pong").retry(1000).send()?; // retry overridden
                sse.write("hello\nworld").event("greeting").send()?;
                let id = String::from("7");
                sse.write(format!("#{id}")).id(&*id).send()?;
                sse.write_with(
                    "both",
                    &SseOptions {
                        event: Some("e".into()),
                        ..SseOptions::default()
                    },
                )?;
                // A refused field writes nothing and the stream goes on.
                let err = sse.write("lost").event("bad\nevent").send().unwrap_err();
                err_tx.send(err).unwrap();
                sse.write("last").event("end").id("8").retry(1).send()?;
                Ok(())
            })
            .into_http()
    })
    .await;
    let resp = read_response(&mut get(addr, "/", "").await).await;
    assert_eq!(
        String::from_utf8(resp.body.clone()).unwrap(),
        "event: n\nretry: 5000\ndata: tick\n\n\
         event: n\nretry: 1000\ndata: pong\n\n\
         event: greeting\nretry: 5000\ndata: hello\ndata: world\n\n\
         event: n\nid: 7\nretry: 5000\ndata: #7\n\n\
         event: e\nretry: 5000\ndata: both\n\n\
         event: end\nid: 8\nretry: 1\ndata: last\n\n"
    );
    assert!(matches!(
        errs.recv().await.unwrap(),
        LiveError::InvalidSseField { .. }
    ));
    // An independent parser agrees.
    let events = tokio::task::spawn_blocking(move || parse(resp.body))
        .await
        .unwrap();
    let seen: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| (e.event.as_str(), e.id.as_str(), e.data.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("n", "", "tick"),
            ("n", "", "pong"),
            ("greeting", "", "hello\nworld"),
            ("n", "7", "#7"),
            ("e", "7", "both"),
            ("end", "8", "last"),
        ]
    );
}

#[tokio::test]
async fn blocking_and_async_sse_writers_encode_the_same_bytes() {
    let addr = serve(|req| {
        let sse = Sse::new().id("0").retry(100);
        if req.uri().path() == "/blocking" {
            sse.spawn_blocking(|sse| {
                sse.write("a").send()?;
                sse.write("b").event("x").send()?;
                sse.write("c\r\nd").id("2").retry(7).send()?;
                sse.comment("c")?;
                Ok(())
            })
            .into_http()
        } else {
            sse.spawn(|sse| async move {
                sse.write("a").await?;
                sse.write("b").event("x").await?;
                sse.write("c\r\nd").id("2").retry(7).await?;
                sse.comment("c").await?;
                Ok(())
            })
            .into_http()
        }
    })
    .await;
    let blocking = read_response(&mut get(addr, "/blocking", "").await).await;
    let not_blocking = read_response(&mut get(addr, "/async", "").await).await;
    assert_eq!(blocking.header("content-type"), Some("text/event-stream"));
    assert_eq!(
        String::from_utf8(blocking.body).unwrap(),
        String::from_utf8(not_blocking.body).unwrap()
    );
}

/// Parse `bytes` with the independent `eventsource-stream` parser.
fn parse(bytes: Vec<u8>) -> Vec<eventsource_stream::Event> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async move {
        futures_util::stream::iter([Ok::<_, std::convert::Infallible>(Bytes::from(bytes))])
            .eventsource()
            .map(|e| e.expect("independent parser failed"))
            .collect()
            .await
    })
}

fn valid_field() -> impl Strategy<Value = String> {
    // Any text without CR, LF or NUL; leading spaces are trimmed by one by
    // the parser, so the encoder's "field: value" keeps them intact.
    "[^\r\n\u{0}]{0,40}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn encoded_frames_round_trip_through_an_independent_parser(
        data in any::<String>(),
        event in proptest::option::of("[^\r\n\u{0}]{1,40}"),
        id in proptest::option::of(valid_field()),
        retry in proptest::option::of(0u64..10_000_000),
    ) {
        let mut frame = Frame::new(&data);
        frame.event = event.as_deref();
        frame.id = id.as_deref();
        frame.retry = retry;
        let bytes = frame.to_bytes().unwrap();
        let events = parse(bytes);
        prop_assert_eq!(events.len(), 1);
        let ev = &events[0];
        // The SSE parser joins data lines with LF: CRLF and CR come back as LF.
        let expected = data.replace("\r\n", "\n").replace('\r', "\n");
        prop_assert_eq!(&ev.data, &expected);
        prop_assert_eq!(&ev.event, event.as_deref().unwrap_or("message"));
        if let Some(id) = &id {
            prop_assert_eq!(&ev.id, id);
        }
        prop_assert_eq!(ev.retry, retry.map(Duration::from_millis));
    }

    #[test]
    fn invalid_fields_are_never_encoded(
        prefix in "[a-z]{0,5}",
        breaker in prop_oneof![Just("\n"), Just("\r"), Just("\r\n")],
        suffix in "[a-z:]{0,10}",
    ) {
        let bad = format!("{prefix}{breaker}{suffix}");
        prop_assert!(Frame::new("d").event(&bad).to_bytes().is_err());
        prop_assert!(Frame::new("d").id(&bad).to_bytes().is_err());
        let with_nul = format!("{prefix}\0{suffix}");
        prop_assert!(Frame::new("d").id(&with_nul).to_bytes().is_err());
    }
}
