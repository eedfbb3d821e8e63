//! `IntoResponse for LiveResponse` (feature `axum`): the response axum gets
//! is the live one, its `LiveState` extension included.
//!
//! Run with `cargo test -p keayl-live --features axum`.

#![cfg(feature = "axum")]

use std::time::Duration;

use axum_core::response::IntoResponse;
use http::StatusCode;
use http::header::CONTENT_TYPE;
use http_body_util::BodyExt;
use keayl_live::{Live, LiveError, LiveState, Sse};
use tokio::sync::oneshot;

#[tokio::test]
async fn into_response_keeps_status_headers_body_and_live_state() {
    let response = Sse::new()
        .live(|live| live.status(StatusCode::ACCEPTED))
        .spawn(|sse| async move {
            sse.write("hello").event("greeting").await?;
            Ok(())
        })
        .into_response();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(
        response.headers().get(CONTENT_TYPE).unwrap(),
        "text/event-stream"
    );
    let state = LiveState::of(&response)
        .expect("into_response inserts the LiveState")
        .clone();
    assert!(state.is_streaming());
    // A response that is not live carries no state.
    assert!(LiveState::of(&"plain".into_response()).is_none());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"event: greeting\ndata: hello\n\n");
    assert!(!state.is_streaming());
    assert!(!state.is_disconnected());
}

#[tokio::test]
async fn dropping_the_axum_body_disconnects_the_writer() {
    let (err_tx, err_rx) = oneshot::channel::<LiveError>();
    let response = Live::new()
        .spawn(|stream| async move {
            loop {
                if let Err(e) = stream.write("x").await {
                    let _ = err_tx.send(e);
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .into_response();
    let state = response.extensions().get::<LiveState>().unwrap().clone();
    drop(response);
    assert!(state.is_disconnected() && !state.is_streaming());
    let err = tokio::time::timeout(Duration::from_secs(1), err_rx)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(err, LiveError::ClientDisconnected);
}

#[tokio::test]
async fn composes_with_axum_tuples() {
    let response = (
        StatusCode::CREATED,
        Live::new().spawn(|stream| async move { Ok(stream.write("ok").await?) }),
    )
        .into_response();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(LiveState::of(&response).is_some());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"ok");
}
