//! Broadcasting through the server-wide pub/sub (`set_cable_pubsub`): `stream_for` with a
//! model, `Channel::broadcast_to_target`, and Broadcastable models' Turbo Stream payloads.
//!
//! `set_cable_pubsub` is process-global, so every test of this binary shares ONE backend,
//! set once, and uses its own streams.

mod common;

use std::sync::{Arc, OnceLock};

use common::*;
use keayl_cable::Cable;
use keayl_cable::broadcasting::{Broadcastable, cable_pubsub, set_cable_pubsub};
use keayl_cable::channel::{Channel, ChannelContext, ChannelError};
use keayl_cable::coder::JsonCoder;
use keayl_cable::connection::{Connection, Identifiers};
use keayl_cable::naming::{GlobalId, HasGlobalId, Streamable, broadcasting_for, stream_name_from};
use keayl_cable::pubsub::{InMemory, PubSub};
use serde_json::{Value, json};

fn global() -> Arc<InMemory> {
    static GLOBAL: OnceLock<Arc<InMemory>> = OnceLock::new();
    GLOBAL
        .get_or_init(|| {
            let pubsub = Arc::new(InMemory::new());
            set_cable_pubsub(pubsub.clone());
            pubsub
        })
        .clone()
}

/// Streams the room given by the `room` param (a number) with `stream_for`, plain or with
/// an explicit `JsonCoder` when `coder` is set.
#[derive(Default)]
struct ChatChannel;

fn room(id: u64) -> GlobalId {
    GlobalId::new("chat-app", "Room", id)
}

impl Channel for ChatChannel {
    const NAME: &'static str = "ChatChannel";
    type Action = StreamsAction;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        let RoomParams { room: id, coder } = ctx.params_as()?;
        if coder.is_some() {
            ctx.stream_for_with_coder(&room(id), Arc::new(JsonCoder));
        } else {
            ctx.stream_for(&room(id));
        }
        let name = ctx.broadcasting_for(&room(id));
        ctx.transmit(json!({"streaming": name}));
        Ok(())
    }

    async fn perform(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        action: StreamsAction,
    ) -> Result<(), ChannelError> {
        let StreamsAction::Streams { stop } = action;
        if let Some(id) = stop {
            ctx.stop_stream_for(&room(id));
        }
        let streams: Vec<&str> = ctx.streams().collect();
        ctx.transmit(streams);
        Ok(())
    }
}

#[derive(serde::Deserialize)]
struct RoomParams {
    room: u64,
    coder: Option<Value>,
}

#[derive(serde::Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
enum StreamsAction {
    Streams { stop: Option<u64> },
}

/// Streams exactly the `stream` param (how a Turbo Streams channel streams a verified
/// name).
#[derive(Default)]
struct StreamsChannel;

impl Channel for StreamsChannel {
    const NAME: &'static str = "StreamsChannel";
    type Action = keayl_cable::NoActions;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        match ctx.param_str("stream").map(str::to_owned) {
            Some(stream) => {
                ctx.stream_from(stream);
            }
            None => ctx.reject(),
        }
        Ok(())
    }
}

async fn open() -> (Connection, RecordingSink) {
    let cable = Cable::builder_shared(global())
        .channel::<ChatChannel>()
        .channel::<StreamsChannel>()
        .build();
    let sink = RecordingSink::new();
    let mut conn = cable.connection(sink.sink(), Identifiers::new());
    conn.open().await;
    assert_eq!(sink.take(), vec![WELCOME]);
    (conn, sink)
}

#[test]
fn broadcasting_names_follow_rails() {
    assert_eq!(room(42).uri(), "gid://chat-app/Room/42");
    assert_eq!(room(42).to_gid_param(), "Z2lkOi8vY2hhdC1hcHAvUm9vbS80Mg");
    assert_eq!(
        ChatChannel::broadcasting_for(&room(42)),
        "chat:Z2lkOi8vY2hhdC1hcHAvUm9vbS80Mg"
    );
    assert_eq!(
        broadcasting_for(
            "Admin::NotesChannel",
            &[&GlobalId::new("rails-cable-peer", "Room", 1)]
        ),
        "admin:notes:Z2lkOi8vcmFpbHMtY2FibGUtcGVlci9Sb29tLzE"
    );
    assert_eq!(
        broadcasting_for("CommentsChannel", &[&GlobalId::new("TestApp", "Post", 1)]),
        "comments:Z2lkOi8vVGVzdEFwcC9Qb3N0LzE"
    );
    assert_eq!(
        broadcasting_for("ChatChannel", &[&room(42), &"messages"]),
        "chat:Z2lkOi8vY2hhdC1hcHAvUm9vbS80Mg:messages"
    );
    assert_eq!(
        broadcasting_for("WebNotificationsChannel", &[&1u64]),
        "web_notifications:1"
    );
    assert_eq!(
        stream_name_from(&[&room(42), &"messages"]),
        "Z2lkOi8vY2hhdC1hcHAvUm9vbS80Mg:messages"
    );
    assert_eq!("hello".to_param(), "hello");
}

#[tokio::test]
async fn stream_for_a_model_uses_the_rails_name_and_receives_broadcast_to_target() {
    let (mut conn, sink) = open().await;
    let id = r#"{"channel":"ChatChannel","room":42}"#;
    conn.handle_frame(subscribe(id).as_bytes()).await.unwrap();
    assert_eq!(
        sink.take(),
        vec![
            data(id, r#"{"streaming":"chat:Z2lkOi8vY2hhdC1hcHAvUm9vbS80Mg"}"#),
            confirm(id)
        ]
    );
    assert_eq!(
        global().local_count("chat:Z2lkOi8vY2hhdC1hcHAvUm9vbS80Mg"),
        1
    );

    ChatChannel::broadcast_to_target(&room(42), &json!({"message": "hi room 42"}))
        .await
        .unwrap();
    ChatChannel::broadcast_to_target(&room(43), &json!("other room"))
        .await
        .unwrap();
    assert_eq!(
        sink.take(),
        vec![
            r#"{"identifier":"{\"channel\":\"ChatChannel\",\"room\":42}","message":{"message":"hi room 42"}}"#
        ]
    );

    // stop_stream_for stops it.
    conn.handle_frame(message(id, &json!({"action": "streams", "stop": 42})).as_bytes())
        .await
        .unwrap();
    assert_eq!(sink.take(), vec![data(id, "[]")]);
    ChatChannel::broadcast_to_target(&room(42), &json!("gone"))
        .await
        .unwrap();
    assert!(sink.take().is_empty());
}

#[tokio::test]
async fn stream_for_with_json_coder_delivers_the_decoded_value() {
    let (mut conn, sink) = open().await;
    let id = r#"{"channel":"ChatChannel","room":44,"coder":"json"}"#;
    conn.handle_frame(subscribe(id).as_bytes()).await.unwrap();
    sink.take();
    ChatChannel::broadcast_to_target(&room(44), &json!({"n": [1, 2.5, "x"], "u": "é"}))
        .await
        .unwrap();
    assert_eq!(sink.take(), vec![data(id, r#"{"n":[1,2.5,"x"],"u":"é"}"#)]);
}

#[tokio::test]
async fn the_global_pubsub_is_the_one_set() {
    let g = global();
    let set = cable_pubsub().expect("set");
    let got = Arc::new(std::sync::Mutex::new(0));
    let g2 = got.clone();
    let sub = g.subscribe(
        "global-check",
        Arc::new(move |_: &keayl_cable::pubsub::Delivery| *g2.lock().unwrap() += 1),
    );
    sub.ready.await.unwrap();
    set.broadcast("global-check", "1".into()).await.unwrap();
    keayl_cable::Broadcaster::process_default()
        .unwrap()
        .broadcast("global-check", &json!(2))
        .await
        .unwrap();
    assert_eq!(*got.lock().unwrap(), 2);
    g.unsubscribe(sub.id);
}

// ---------------------------------------------------------------------------------------
// Broadcastable models

struct Post {
    id: u64,
}

impl HasGlobalId for Post {
    fn global_id(&self) -> GlobalId {
        GlobalId::new("blog", "Post", self.id)
    }
}

impl Broadcastable for Post {}

/// Subscribes to `StreamsChannel` on `stream`, returning the identifier.
async fn stream(conn: &mut Connection, sink: &RecordingSink, stream: &str) -> String {
    let id = json!({"channel": "StreamsChannel", "stream": stream}).to_string();
    conn.handle_frame(subscribe(&id).as_bytes()).await.unwrap();
    assert_eq!(sink.take(), vec![confirm(&id)]);
    id
}

#[tokio::test]
async fn broadcast_append_to_sends_the_turbo_stream_html_as_a_json_string() {
    let (mut conn, sink) = open().await;
    let post = Post { id: 101 };
    let name = stream_name_from(&[&post.global_id()]);
    assert_eq!(name, "Z2lkOi8vYmxvZy9Qb3N0LzEwMQ");
    let id = stream(&mut conn, &sink, &name).await;
    post.broadcast_append_to(&post.global_id(), "posts", "<p>hi</p>")
        .await
        .unwrap();
    assert_eq!(
        sink.take(),
        vec![format!(
            r#"{{"identifier":{},"message":"<turbo-stream action=\"append\" target=\"posts\"><template><p>hi</p></template></turbo-stream>"}}"#,
            json_str(&id)
        )]
    );
}

#[tokio::test]
async fn broadcast_replace_to_and_remove_to_and_broadcast_to() {
    let (mut conn, sink) = open().await;
    let post = Post { id: 102 };
    let id = stream(&mut conn, &sink, &stream_name_from(&[&post.global_id()])).await;

    post.broadcast_replace_to(
        &post.global_id(),
        "post_102",
        r#"<div id="post_102">new & "quoted"</div>"#,
    )
    .await
    .unwrap();
    post.broadcast_remove_to(&post.global_id(), "post_102")
        .await
        .unwrap();
    post.broadcast_to(&post.global_id(), &json!({"custom": true}))
        .await
        .unwrap();
    post.broadcast_append_to(&post.global_id(), "messages", "")
        .await
        .unwrap();
    let frames = sink.take();
    assert_eq!(
        frames,
        vec![
            data(
                &id,
                r#""<turbo-stream action=\"replace\" target=\"post_102\"><template><div id=\"post_102\">new & \"quoted\"</div></template></turbo-stream>""#
            ),
            data(
                &id,
                r#""<turbo-stream action=\"remove\" target=\"post_102\"></turbo-stream>""#
            ),
            data(&id, r#"{"custom":true}"#),
            data(
                &id,
                r#""<turbo-stream action=\"append\" target=\"messages\"><template></template></turbo-stream>""#
            ),
        ]
    );
    // The message of a Turbo broadcast is a JSON string of HTML.
    let v: Value = serde_json::from_str(&frames[1]).unwrap();
    assert_eq!(
        v["message"],
        r#"<turbo-stream action="remove" target="post_102"></turbo-stream>"#
    );
}

#[tokio::test]
async fn model_broadcasts_reach_every_subscriber_of_the_stream_and_no_other() {
    let (mut a, a_sink) = open().await;
    let (mut b, b_sink) = open().await;
    let post = Post { id: 103 };
    let other = Post { id: 104 };
    let a_id = stream(&mut a, &a_sink, &stream_name_from(&[&post.global_id()])).await;
    let b_id = stream(&mut b, &b_sink, &stream_name_from(&[&other.global_id()])).await;
    post.broadcast_remove_to(&post.global_id(), "x")
        .await
        .unwrap();
    assert_eq!(
        a_sink.take(),
        vec![data(
            &a_id,
            r#""<turbo-stream action=\"remove\" target=\"x\"></turbo-stream>""#
        )]
    );
    assert!(b_sink.take().is_empty());
    // And the other model's stream reaches only its own subscriber.
    other
        .broadcast_remove_to(&other.global_id(), "y")
        .await
        .unwrap();
    assert_eq!(
        b_sink.take(),
        vec![data(
            &b_id,
            r#""<turbo-stream action=\"remove\" target=\"y\"></turbo-stream>""#
        )]
    );
    assert!(a_sink.take().is_empty());
    // A model can broadcast to another streamable (a plain name).
    let c_id = stream(&mut b, &b_sink, "announcements").await;
    post.broadcast_to(&"announcements", &json!("hello"))
        .await
        .unwrap();
    assert_eq!(b_sink.take(), vec![data(&c_id, r#""hello""#)]);
}
