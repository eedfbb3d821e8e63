//! Streams: `stream_from`, repeated and stopped streams, nothing before the confirmation.

use bytes::Bytes;
use keayl_cable::channel::{Channel, ChannelContext, ChannelError};
use serde_json::json;

use crate::common::*;
use crate::support::*;

// ---------------------------------------------------------------------------------------
// Streams

#[tokio::test]
async fn stream_from_delivers_broadcasts_as_identifier_and_message() {
    let (cable, _) = cable_with(&Log::new(), |b| b);
    let (mut conn, sink) = open(&cable).await;
    send(&mut conn, &subscribe(ROOM1)).await.unwrap();
    sink.take();
    cable
        .broadcast(
            "room:1",
            &json!({"message": "hello room 1", "from": "alice"}),
        )
        .await
        .unwrap();
    cable.broadcast("room:1", &json!("tock")).await.unwrap();
    cable.broadcast("room:1", &json!(42)).await.unwrap();
    cable
        .broadcast("room:1", &json!([1, "2", null]))
        .await
        .unwrap();
    // A string that looks like JSON arrives as a JSON string, not an object.
    cable
        .broadcast("room:1", &json!(r#"{"script":{"alert":"Message!"}}"#))
        .await
        .unwrap();
    cable
        .broadcast("room:2", &json!("elsewhere"))
        .await
        .unwrap();
    assert_eq!(
        sink.take(),
        vec![
            r#"{"identifier":"{\"channel\":\"ChatChannel\",\"room\":\"1\"}","message":{"from":"alice","message":"hello room 1"}}"#,
            r#"{"identifier":"{\"channel\":\"ChatChannel\",\"room\":\"1\"}","message":"tock"}"#,
            r#"{"identifier":"{\"channel\":\"ChatChannel\",\"room\":\"1\"}","message":42}"#,
            r#"{"identifier":"{\"channel\":\"ChatChannel\",\"room\":\"1\"}","message":[1,"2",null]}"#,
            r#"{"identifier":"{\"channel\":\"ChatChannel\",\"room\":\"1\"}","message":"{\"script\":{\"alert\":\"Message!\"}}"}"#,
        ]
    );
    // Pre-encoded JSON is spliced verbatim; a payload that is not JSON is dropped.
    cable
        .broadcast_raw("room:1", Bytes::from_static(br#"{"b":1, "a":2}"#))
        .await
        .unwrap();
    cable
        .broadcast_raw("room:1", Bytes::from_static(b"not json"))
        .await
        .unwrap();
    assert_eq!(sink.take(), vec![data(ROOM1, r#"{"b":1, "a":2}"#)]);
    assert_alive(&mut conn, &sink, "after").await;
}

/// Streams `dup` twice in `subscribed`.
#[derive(Default)]
struct TwiceChannel;

impl Channel for TwiceChannel {
    const NAME: &'static str = "TwiceChannel";
    type Action = Again;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        ctx.stream_from("dup");
        ctx.stream_from("dup".to_string());
        Ok(())
    }

    async fn perform(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        _: Again,
    ) -> Result<(), ChannelError> {
        ctx.stream_from("dup");
        Ok(())
    }
}

#[derive(serde::Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
enum Again {
    Again,
}

#[tokio::test]
async fn repeated_stream_from_of_one_name_delivers_once() {
    let (cable, pubsub) = cable_with(&Log::new(), |b| b.channel::<TwiceChannel>());
    let (mut conn, sink) = open(&cable).await;
    let id = r#"{"channel":"TwiceChannel"}"#;
    send(&mut conn, &subscribe(id)).await.unwrap();
    send(&mut conn, &message(id, &json!({"action": "again"})))
        .await
        .unwrap();
    assert_eq!(sink.take(), vec![confirm(id)]);
    assert_eq!(pubsub.local_count("dup"), 1);
    cable.broadcast("dup", &json!("once")).await.unwrap();
    assert_eq!(sink.take(), vec![data(id, r#""once""#)]);
}

#[tokio::test]
async fn stream_from_in_an_action_and_stop_stream_from() {
    let (cable, pubsub) = cable_with(&Log::new(), |b| b);
    let (mut conn, sink) = open(&cable).await;
    send(&mut conn, &subscribe(ROOM1)).await.unwrap();
    send(
        &mut conn,
        &message(ROOM1, &json!({"action": "follow", "stream": "news"})),
    )
    .await
    .unwrap();
    assert_eq!(sink.take(), vec![ROOM1_CONFIRM], "no second confirmation");
    cable.broadcast("news", &json!("n1")).await.unwrap();
    assert_eq!(sink.take(), vec![data(ROOM1, r#""n1""#)]);

    send(
        &mut conn,
        &message(ROOM1, &json!({"action": "unfollow", "stream": "news"})),
    )
    .await
    .unwrap();
    assert_eq!(pubsub.local_count("news"), 0);
    cable.broadcast("news", &json!("n2")).await.unwrap();
    cable.broadcast("room:1", &json!("r")).await.unwrap();
    assert_eq!(
        sink.take(),
        vec![data(ROOM1, r#""r""#)],
        "other streams keep flowing"
    );

    // Stopping a stream that is not streamed is a no-op.
    send(
        &mut conn,
        &message(ROOM1, &json!({"action": "unfollow", "stream": "nothing"})),
    )
    .await
    .unwrap();
    send(&mut conn, &message(ROOM1, &json!({"action": "streams"})))
        .await
        .unwrap();
    assert_eq!(sink.take(), vec![data(ROOM1, r#"["room:1"]"#)]);
}

#[tokio::test]
async fn stop_all_streams_stops_every_stream_but_keeps_the_subscription() {
    let (cable, pubsub) = cable_with(&Log::new(), |b| b);
    let (mut conn, sink) = open(&cable).await;
    send(&mut conn, &subscribe(ROOM1)).await.unwrap();
    send(
        &mut conn,
        &message(ROOM1, &json!({"action": "follow", "stream": "news"})),
    )
    .await
    .unwrap();
    send(&mut conn, &message(ROOM1, &json!({"action": "stop_all"})))
        .await
        .unwrap();
    sink.take();
    assert_eq!(pubsub.local_count("news"), 0);
    assert_eq!(pubsub.local_count("room:1"), 0);
    cable.broadcast("news", &json!(1)).await.unwrap();
    cable.broadcast("room:1", &json!(2)).await.unwrap();
    assert!(sink.take().is_empty());
    // The subscription itself is still there.
    send(&mut conn, &message(ROOM1, &json!({"action": "echo"})))
        .await
        .unwrap();
    assert_eq!(sink.take(), vec![data(ROOM1, r#"{"action":"echo"}"#)]);
}

/// Streams `eager` and broadcasts on it from `subscribed`, before it is confirmed.
#[derive(Default)]
struct EagerChannel;

impl Channel for EagerChannel {
    const NAME: &'static str = "EagerChannel";
    type Action = keayl_cable::NoActions;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        ctx.stream_from("eager");
        ctx.broadcast_to("eager", &"from subscribed").await?;
        ctx.transmit("transmitted");
        Ok(())
    }
}

#[tokio::test]
async fn a_stream_message_is_never_delivered_before_the_confirmation() {
    let (cable, _) = cable_with(&Log::new(), |b| b.channel::<EagerChannel>());
    let (mut conn, sink) = open(&cable).await;
    let id = r#"{"channel":"EagerChannel"}"#;
    send(&mut conn, &subscribe(id)).await.unwrap();
    assert_eq!(
        sink.take(),
        vec![
            data(id, r#""transmitted""#),
            confirm(id),
            data(id, r#""from subscribed""#),
        ]
    );
}
