//! Broadcasting without a global: each cable's `Broadcaster` reaches its own
//! connections only, model broadcasts meet `stream_from_model`, and a
//! channel's coder is used both ways by `broadcast_for` and `stream_for`.
//! (No test here calls `set_cable_pubsub`.)

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use keayl_cable::coder::{Coder, CoderError};
use keayl_cable::naming::{GlobalId, HasGlobalId};
use keayl_cable::{
    Broadcastable, Broadcaster, Cable, Channel, ChannelContext, ChannelError, InMemory, NoActions,
};
use serde_json::{Value, json};

struct TodoList {
    id: u64,
    broadcaster: Broadcaster,
}

impl HasGlobalId for TodoList {
    fn global_id(&self) -> GlobalId {
        GlobalId::new("todo-app", "TodoList", self.id)
    }
}

/// The model broadcasts through its app's broadcaster, not a global.
impl Broadcastable for TodoList {
    fn broadcaster(&self) -> Result<Broadcaster, keayl_cable::pubsub::PubSubError> {
        Ok(self.broadcaster.clone())
    }
}

#[derive(serde::Deserialize)]
struct ListParams {
    list: u64,
}

#[derive(Default)]
struct ListChannel;

impl Channel for ListChannel {
    const NAME: &'static str = "ListChannel";
    type Action = NoActions;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        let ListParams { list } = ctx.params_as()?;
        ctx.stream_from_model(&GlobalId::new("todo-app", "TodoList", list));
        Ok(())
    }
}

const LIST1: &str = r#"{"channel":"ListChannel","list":1}"#;

async fn open(cable: &Cable) -> (keayl_cable::Connection, RecordingSink) {
    let sink = RecordingSink::new();
    let mut conn = cable.connection(sink.sink(), keayl_cable::Identifiers::new());
    conn.open().await;
    assert_eq!(sink.take(), vec![WELCOME]);
    (conn, sink)
}

async fn send(
    conn: &mut keayl_cable::Connection,
    frame: &str,
) -> Result<(), keayl_cable::CommandError> {
    conn.handle_frame(frame.as_bytes()).await
}

#[tokio::test]
async fn a_model_broadcast_reaches_the_channel_streaming_the_model() {
    let cable = Cable::builder(InMemory::new())
        .channel::<ListChannel>()
        .build();
    let (mut conn, sink) = open(&cable).await;
    send(&mut conn, &subscribe(LIST1)).await.unwrap();
    assert_eq!(sink.take(), vec![confirm(LIST1)]);
    let list = TodoList {
        id: 1,
        broadcaster: cable.broadcaster(),
    };
    list.broadcast_append_to(&list.global_id(), "todos", "<li>milk</li>")
        .await
        .unwrap();
    cable
        .broadcaster()
        .broadcast_remove_to(&list.global_id(), "todo_7")
        .await
        .unwrap();
    assert_eq!(
        sink.take(),
        vec![
            data(
                LIST1,
                r#""<turbo-stream action=\"append\" target=\"todos\"><template><li>milk</li></template></turbo-stream>""#
            ),
            data(
                LIST1,
                r#""<turbo-stream action=\"remove\" target=\"todo_7\"></turbo-stream>""#
            ),
        ]
    );
    // Another list's broadcasts do not arrive.
    let other = TodoList {
        id: 2,
        broadcaster: cable.broadcaster(),
    };
    other
        .broadcast_to(&other.global_id(), &json!("x"))
        .await
        .unwrap();
    assert!(sink.take().is_empty());
}

#[tokio::test]
async fn cables_built_side_by_side_never_see_each_others_broadcasts() {
    let mut cables = Vec::new();
    for _ in 0..8 {
        let cable = Cable::builder(InMemory::new())
            .channel::<ListChannel>()
            .build();
        let (mut conn, sink) = open(&cable).await;
        send(&mut conn, &subscribe(LIST1)).await.unwrap();
        sink.take();
        cables.push((cable, conn, sink));
    }
    let list = GlobalId::new("todo-app", "TodoList", 1);
    for (i, (cable, _, _)) in cables.iter().enumerate() {
        cable
            .broadcaster()
            .broadcast_to_model(&list, &json!(i))
            .await
            .unwrap();
    }
    for (i, (_, _, sink)) in cables.iter().enumerate() {
        assert_eq!(sink.take(), vec![data(LIST1, &i.to_string())]);
    }
}

/// Prefixes the JSON with `mark:` so the test can see it was encoded by this
/// coder, and wraps it in `{"decoded": …}` on the way out.
#[derive(Debug)]
struct MarkCoder;

impl Coder for MarkCoder {
    fn encode(&self, value: &Value) -> Result<Bytes, CoderError> {
        Ok(Bytes::from(format!("mark:{value}")))
    }
    fn decode(&self, bytes: &[u8]) -> Result<Value, CoderError> {
        let text = std::str::from_utf8(bytes).map_err(|e| CoderError(e.to_string()))?;
        let inner = text
            .strip_prefix("mark:")
            .ok_or_else(|| CoderError("not marked".into()))?;
        let v: Value = serde_json::from_str(inner).map_err(|e| CoderError(e.to_string()))?;
        Ok(json!({"decoded": v}))
    }
}

#[derive(Default)]
struct MarkedChannel;

impl Channel for MarkedChannel {
    const NAME: &'static str = "MarkedChannel";
    type Action = NoActions;

    fn coder() -> Arc<dyn Coder> {
        Arc::new(MarkCoder)
    }

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        ctx.stream_for(&GlobalId::new("app", "Room", 9));
        // From inside the channel too, through the same coder.
        ctx.broadcast_for(&GlobalId::new("app", "Room", 9), &"from subscribed")
            .await?;
        Ok(())
    }
}

#[tokio::test]
async fn a_channels_coder_encodes_its_broadcasts_and_decodes_its_streams() {
    let pubsub = Arc::new(InMemory::new());
    let cable = Cable::builder_shared(pubsub.clone())
        .channel::<MarkedChannel>()
        .build();
    let (mut conn, sink) = open(&cable).await;
    let id = r#"{"channel":"MarkedChannel"}"#;
    send(&mut conn, &subscribe(id)).await.unwrap();
    let room = GlobalId::new("app", "Room", 9);
    // What travels through pub/sub is the coder's encoding.
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let raw = keayl_cable::PubSub::subscribe(
        &*pubsub,
        &MarkedChannel::broadcasting_for(&room),
        Arc::new(move |d: &keayl_cable::pubsub::Delivery| {
            s2.lock()
                .unwrap()
                .push(String::from_utf8_lossy(d.message()).into_owned())
        }),
    );
    raw.ready.await.unwrap();
    cable
        .broadcaster()
        .broadcast_for::<MarkedChannel>(&room, &json!({"n": 1}))
        .await
        .unwrap();
    assert_eq!(seen.lock().unwrap().as_slice(), [r#"mark:{"n":1}"#]);
    assert_eq!(
        sink.take(),
        vec![
            // Held until the confirmation, as every stream message is.
            confirm(id),
            data(id, r#"{"decoded":"from subscribed"}"#),
            data(id, r#"{"decoded":{"n":1}}"#),
        ]
    );
}
