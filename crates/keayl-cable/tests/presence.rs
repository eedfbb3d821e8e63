//! Presence and whispers, sans-IO, on the in-memory backend: events to
//! every subscriber of the presence stream, one join per id, a leave with
//! its last session (at once on unsubscribe, after the TTL on disconnect),
//! the server-side join and read, whispers to everyone but their sender.

mod common;

use std::time::Duration;

use common::*;
use keayl_cable::connection::{Connection, Identifiers, Request};
use keayl_cable::protocol::Protocol;
use keayl_cable::{Cable, CableConfig, Channel, ChannelContext, ChannelError, InMemory, NoActions};
use serde_json::{Value, json};

const ROOM: &str = r#"{"channel":"RoomChannel"}"#;
const PLAIN: &str = r#"{"channel":"PlainChannel"}"#;

/// Streams `room` as its presence and whisper stream; joins as
/// `current_user` when the connection has one (a server-side join).
#[derive(Default)]
struct RoomChannel;

impl Channel for RoomChannel {
    const NAME: &'static str = "RoomChannel";
    type Action = NoActions;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        ctx.stream_from("room").with_presence().with_whispers();
        if let Some(user) = ctx.identifiers().get::<String>("current_user").cloned() {
            ctx.join_presence(user.clone(), &json!({ "name": user }))
                .await?;
        }
        Ok(())
    }
}

/// Streams `room` without presence or whispers.
#[derive(Default)]
struct PlainChannel;

impl Channel for PlainChannel {
    const NAME: &'static str = "PlainChannel";
    type Action = NoActions;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        ctx.stream_from("room");
        Ok(())
    }
}

/// Joins `room` as `ghost`, then rejects the subscription.
#[derive(Default)]
struct GhostChannel;

impl Channel for GhostChannel {
    const NAME: &'static str = "GhostChannel";
    type Action = NoActions;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        ctx.stream_from("room").with_presence();
        ctx.join_presence("ghost", &Value::Null).await?;
        ctx.reject();
        Ok(())
    }
}

/// Joins `room` as `quitter`; its `receive` stops streaming `room`.
#[derive(Default)]
struct QuitterChannel;

impl Channel for QuitterChannel {
    const NAME: &'static str = "QuitterChannel";
    type Action = NoActions;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        ctx.stream_from("room").with_presence();
        ctx.join_presence("quitter", &Value::Null).await
    }

    async fn receive(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        _data: &keayl_cable::Data,
    ) -> Result<(), ChannelError> {
        ctx.stop_stream_from("room");
        Ok(())
    }
}

fn cable(ttl: Duration) -> Cable {
    Cable::builder(InMemory::new())
        .channel::<RoomChannel>()
        .channel::<PlainChannel>()
        .channel::<GhostChannel>()
        .channel::<QuitterChannel>()
        .config(CableConfig {
            presence_ttl: ttl,
            max_presence_members: 3,
            ..CableConfig::default()
        })
        .build()
}

async fn open(cable: &Cable, ids: Identifiers) -> (Connection, RecordingSink) {
    let sink = RecordingSink::new();
    let request = Request::from(http::Request::get("/cable").body(()).unwrap())
        .with_protocol(Protocol::V1ExtJson);
    let mut conn = cable.connection(sink.sink(), ids).with_request(request);
    conn.open().await;
    sink.take();
    (conn, sink)
}

async fn subscribed(cable: &Cable, identifier: &str) -> (Connection, RecordingSink) {
    let (mut conn, sink) = open(cable, Identifiers::new()).await;
    conn.handle_frame(subscribe(identifier).as_bytes())
        .await
        .unwrap();
    sink.take();
    (conn, sink)
}

fn frames(sink: &RecordingSink) -> Vec<Value> {
    sink.take()
        .iter()
        .map(|f| serde_json::from_str(f).unwrap())
        .collect()
}

/// The `message` of each presence frame.
fn events(sink: &RecordingSink) -> Vec<Value> {
    frames(sink)
        .into_iter()
        .filter(|f| f["type"] == "presence")
        .map(|f| f["message"].clone())
        .collect()
}

fn join(id: &str, info: Value) -> String {
    json!({"command": "join", "identifier": ROOM, "presence": {"id": id, "info": info}}).to_string()
}

fn leave() -> String {
    json!({"command": "leave", "identifier": ROOM}).to_string()
}

fn info() -> String {
    json!({"command": "presence", "identifier": ROOM, "data": {}}).to_string()
}

/// Let the in-memory presence task and deliveries run.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn joins_leaves_and_info() {
    let cable = cable(Duration::from_secs(15));
    let (mut a, sa) = subscribed(&cable, ROOM).await;
    let (mut b, sb) = subscribed(&cable, ROOM).await;
    a.handle_frame(join("42", json!({"name": "Jack"})).as_bytes())
        .await
        .unwrap();
    let joined = json!({"type": "join", "id": "42", "info": {"name": "Jack"}});
    assert_eq!(events(&sa), std::slice::from_ref(&joined), "the joiner too");
    assert_eq!(events(&sb), [joined]);
    // A second session of 42: no event.
    b.handle_frame(join("42", json!({"name": "Jack"})).as_bytes())
        .await
        .unwrap();
    assert_eq!(events(&sa), Vec::<Value>::new());
    b.handle_frame(info().as_bytes()).await.unwrap();
    assert_eq!(
        events(&sb),
        [json!({"type": "info", "total": 1, "records": [{"id": "42", "info": {"name": "Jack"}}]})]
    );
    assert_eq!(cable.presence("room").await.unwrap().total, 1);
    a.handle_frame(leave().as_bytes()).await.unwrap();
    assert_eq!(events(&sb), Vec::<Value>::new(), "b still is 42");
    // An unsubscribe leaves at once.
    b.handle_frame(unsubscribe(ROOM).as_bytes()).await.unwrap();
    assert_eq!(events(&sa), [json!({"type": "leave", "id": "42"})]);
    assert_eq!(cable.presence("room").await.unwrap().total, 0);
}

#[tokio::test(start_paused = true)]
async fn a_disconnect_leaves_after_the_ttl_unless_the_id_comes_back() {
    let ttl = Duration::from_secs(2);
    let cable = cable(ttl);
    let (_watcher, sw) = subscribed(&cable, ROOM).await;
    let (mut tab, _) = subscribed(&cable, ROOM).await;
    tab.handle_frame(join("7", Value::Null).as_bytes())
        .await
        .unwrap();
    assert_eq!(events(&sw).len(), 1);
    tab.disconnect().await;
    // A reload within the TTL: the id is back before its old session expires.
    tokio::time::sleep(ttl / 2).await;
    let (mut again, _) = subscribed(&cable, ROOM).await;
    again
        .handle_frame(join("7", Value::Null).as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(ttl * 2).await;
    settle().await;
    assert_eq!(events(&sw), Vec::<Value>::new(), "no flicker");
    again.disconnect().await;
    tokio::time::sleep(ttl - Duration::from_millis(300)).await;
    settle().await;
    assert_eq!(events(&sw), Vec::<Value>::new(), "not before the TTL");
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle().await;
    assert_eq!(events(&sw), [json!({"type": "leave", "id": "7"})]);
}

#[tokio::test]
async fn server_side_joins_bounds_and_errors() {
    let cable = cable(Duration::from_secs(15));
    let (_w, sw) = subscribed(&cable, ROOM).await;
    let mut conns = Vec::new();
    for user in ["ann", "bob", "cy"] {
        let (mut c, s) = open(
            &cable,
            Identifiers::new().with("current_user", user.to_owned()),
        )
        .await;
        c.handle_frame(subscribe(ROOM).as_bytes()).await.unwrap();
        let got = frames(&s);
        assert_eq!(got[0]["type"], "confirm_subscription", "{got:?}");
        assert_eq!(
            got[1]["message"]["id"], user,
            "the join after the confirmation"
        );
        conns.push(c);
    }
    let ids: Vec<String> = cable
        .presence("room")
        .await
        .unwrap()
        .members
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, ["ann", "bob", "cy"]);
    assert_eq!(events(&sw).len(), 3);
    // Full (3 members): a fourth id is refused (an error for the caller to
    // log, no frame: the client would take it for the answer to a pending
    // `presence`); the socket stays. Too large an info too.
    let (mut d, sd) = subscribed(&cable, ROOM).await;
    assert!(
        d.handle_frame(join("dee", Value::Null).as_bytes())
            .await
            .is_err()
    );
    let big = json!("x".repeat(2_000));
    assert!(d.handle_frame(join("bob", big).as_bytes()).await.is_err());
    assert_eq!(events(&sd), Vec::<Value>::new());
    assert_eq!(cable.presence("room").await.unwrap().total, 3);
    // A subscription without a presence stream.
    let (mut p, sp) = subscribed(&cable, PLAIN).await;
    let on_plain = json!({"command": "presence", "identifier": PLAIN}).to_string();
    assert!(p.handle_frame(on_plain.as_bytes()).await.is_err());
    assert_eq!(frames(&sp)[0]["message"], json!({"type": "error"}));
}

#[tokio::test]
async fn whispers_reach_the_others_only() {
    let cable = cable(Duration::from_secs(15));
    let (mut a, sa) = subscribed(&cable, ROOM).await;
    let (_b, sb) = subscribed(&cable, ROOM).await;
    let (_p, sp) = subscribed(&cable, PLAIN).await;
    let whisper = json!({"command": "whisper", "identifier": ROOM, "data": {"typing": "a"}});
    a.handle_frame(whisper.to_string().as_bytes())
        .await
        .unwrap();
    assert_eq!(
        frames(&sb),
        [json!({"identifier": ROOM, "message": {"typing": "a"}})]
    );
    assert!(frames(&sa).is_empty(), "not to its sender");
    assert!(
        frames(&sp).is_empty(),
        "not to subscribers without whispers"
    );
    // Not in the room's history either.
    let history = cable
        .pubsub()
        .history("room", &keayl_cable::pubsub::HistoryFrom::Since(0))
        .await
        .unwrap();
    assert!(history.is_empty(), "{history:?}");
    // On a subscription without a whisper stream: ignored.
    let mut p2 = open(&cable, Identifiers::new()).await.0;
    p2.handle_frame(subscribe(PLAIN).as_bytes()).await.unwrap();
    let ignored = json!({"command": "whisper", "identifier": PLAIN, "data": {"x": 1}});
    p2.handle_frame(ignored.to_string().as_bytes())
        .await
        .unwrap();
    assert!(frames(&sb).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_whisper_flood_is_cut_at_the_rate_limit() {
    let cable = cable(Duration::from_secs(15));
    let (mut a, _) = subscribed(&cable, ROOM).await;
    let (_b, sb) = subscribed(&cable, ROOM).await;
    let limit = CableConfig::default().max_presence_commands_per_second as usize;
    let mut refused = 0;
    for i in 0..limit + 5 {
        let whisper = json!({"command": "whisper", "identifier": ROOM, "data": {"n": i}});
        if a.handle_frame(whisper.to_string().as_bytes())
            .await
            .is_err()
        {
            refused += 1;
        }
    }
    assert_eq!(refused, 5);
    assert_eq!(frames(&sb).len(), limit);
    // The next second has room again.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let whisper = json!({"command": "whisper", "identifier": ROOM, "data": {"n": "again"}});
    a.handle_frame(whisper.to_string().as_bytes())
        .await
        .unwrap();
    assert_eq!(frames(&sb).len(), 1);
}

#[tokio::test]
async fn history_requests_skip_the_internal_streams() {
    let cable = cable(Duration::from_secs(15));
    let (mut a, sa) = open(&cable, Identifiers::new()).await;
    let with_history = json!({
        "command": "subscribe",
        "identifier": ROOM,
        "history": {"since": 1},
    });
    a.handle_frame(with_history.to_string().as_bytes())
        .await
        .unwrap();
    let got = frames(&sa);
    let types: Vec<&str> = got.iter().filter_map(|f| f["type"].as_str()).collect();
    assert_eq!(
        types,
        ["confirm_subscription", "confirm_history"],
        "{got:?}"
    );
}

#[tokio::test]
async fn a_server_side_join_cannot_be_overridden_by_the_client() {
    let cable = cable(Duration::from_secs(15));
    let (_w, sw) = subscribed(&cable, ROOM).await;
    let (mut bob, sb) = open(
        &cable,
        Identifiers::new().with("current_user", "bob".to_owned()),
    )
    .await;
    bob.handle_frame(subscribe(ROOM).as_bytes()).await.unwrap();
    sb.take();
    assert_eq!(
        events(&sw),
        [json!({"type": "join", "id": "bob", "info": {"name": "bob"}})]
    );
    assert!(
        bob.handle_frame(join("alice", Value::Null).as_bytes())
            .await
            .is_err()
    );
    assert!(bob.handle_frame(leave().as_bytes()).await.is_err());
    assert_eq!(events(&sb), Vec::<Value>::new());
    assert_eq!(
        events(&sw),
        Vec::<Value>::new(),
        "no leave of bob, no join of alice"
    );
    let ids: Vec<String> = cable
        .presence("room")
        .await
        .unwrap()
        .members
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, ["bob"]);
}

#[tokio::test]
async fn rails_protocol_subscriptions_are_members_without_presence_frames() {
    let cable = cable(Duration::from_secs(15));
    let sink = RecordingSink::new();
    let mut rails = cable.connection(
        sink.sink(),
        Identifiers::new().with("current_user", "ann".to_owned()),
    );
    rails.open().await;
    rails
        .handle_frame(subscribe(ROOM).as_bytes())
        .await
        .unwrap();
    let (mut other, _) = subscribed(&cable, ROOM).await;
    other
        .handle_frame(join("zed", Value::Null).as_bytes())
        .await
        .unwrap();
    let got = frames(&sink);
    assert!(
        got.iter().all(|f| f["type"] != "presence"),
        "no presence frame on actioncable-v1-json: {got:?}"
    );
    assert_eq!(
        cable.presence("room").await.unwrap().total,
        2,
        "ann is a member"
    );
}

#[tokio::test]
async fn a_rejected_or_stopped_presence_stream_leaves_nothing_behind() {
    let cable = cable(Duration::from_secs(15));
    let (_w, sw) = subscribed(&cable, ROOM).await;
    let (mut g, sg) = open(&cable, Identifiers::new()).await;
    let ghost = r#"{"channel":"GhostChannel"}"#;
    g.handle_frame(subscribe(ghost).as_bytes()).await.unwrap();
    assert_eq!(frames(&sg)[0]["type"], "reject_subscription");
    assert_eq!(cable.presence("room").await.unwrap().total, 0);
    assert_eq!(cable.presence_sessions(), 0, "not kept alive");
    assert_eq!(
        events(&sw),
        Vec::<Value>::new(),
        "a join never announced, no leave either"
    );

    let quitter = r#"{"channel":"QuitterChannel"}"#;
    let (mut q, _) = subscribed(&cable, quitter).await;
    assert_eq!(
        events(&sw),
        [json!({"type": "join", "id": "quitter", "info": null})]
    );
    assert_eq!(cable.presence_sessions(), 1);
    let receive = json!({"command": "message", "identifier": quitter, "data": "{}"});
    q.handle_frame(receive.to_string().as_bytes())
        .await
        .unwrap();
    settle().await;
    assert_eq!(events(&sw), [json!({"type": "leave", "id": "quitter"})]);
    assert_eq!(cable.presence_sessions(), 0);
    assert_eq!(cable.presence("room").await.unwrap().total, 0);
}

/// In-memory presence that loses every session once, at the next touch (a
/// broker restart, say).
struct Forgetful {
    inner: InMemory,
    lose: std::sync::atomic::AtomicBool,
}

impl keayl_cable::PubSub for Forgetful {
    fn subscribe(
        &self,
        stream: &str,
        callback: keayl_cable::pubsub::Callback,
    ) -> keayl_cable::pubsub::Subscribed {
        self.inner.subscribe(stream, callback)
    }
    fn unsubscribe(&self, id: keayl_cable::pubsub::SubscriptionId) {
        self.inner.unsubscribe(id)
    }
    fn broadcast(
        &self,
        stream: &str,
        message: bytes::Bytes,
    ) -> keayl_cable::pubsub::BoxFuture<'static, Result<(), keayl_cable::pubsub::PubSubError>> {
        self.inner.broadcast(stream, message)
    }
    fn subscriber_count(
        &self,
        stream: &str,
    ) -> keayl_cable::pubsub::BoxFuture<'static, Result<usize, keayl_cable::pubsub::PubSubError>>
    {
        self.inner.subscriber_count(stream)
    }
    fn presence_join(
        &self,
        stream: &str,
        session: &str,
        id: &str,
        info: bytes::Bytes,
        limits: keayl_cable::pubsub::PresenceLimits,
    ) -> keayl_cable::pubsub::BoxFuture<
        'static,
        Result<keayl_cable::pubsub::PresenceJoined, keayl_cable::pubsub::PresenceError>,
    > {
        self.inner.presence_join(stream, session, id, info, limits)
    }
    fn presence_leave(
        &self,
        stream: &str,
        session: &str,
    ) -> keayl_cable::pubsub::BoxFuture<
        'static,
        Result<Option<String>, keayl_cable::pubsub::PresenceError>,
    > {
        self.inner.presence_leave(stream, session)
    }
    fn presence_touch(
        &self,
        stream: &str,
        sessions: Vec<String>,
        ttl: Duration,
    ) -> keayl_cable::pubsub::BoxFuture<
        'static,
        Result<Vec<String>, keayl_cable::pubsub::PresenceError>,
    > {
        if self.lose.swap(false, std::sync::atomic::Ordering::SeqCst) {
            for s in &sessions {
                drop(self.inner.presence_leave(stream, s));
            }
        }
        self.inner.presence_touch(stream, sessions, ttl)
    }
    fn presence_info(
        &self,
        stream: &str,
    ) -> keayl_cable::pubsub::BoxFuture<
        'static,
        Result<keayl_cable::pubsub::PresenceSet, keayl_cable::pubsub::PresenceError>,
    > {
        self.inner.presence_info(stream)
    }
    fn presence_reap(
        &self,
    ) -> keayl_cable::pubsub::BoxFuture<
        'static,
        Result<Vec<keayl_cable::pubsub::PresenceLeft>, keayl_cable::pubsub::PresenceError>,
    > {
        self.inner.presence_reap()
    }
}

#[tokio::test(start_paused = true)]
async fn a_live_session_the_backend_lost_is_joined_again() {
    let backend = std::sync::Arc::new(Forgetful {
        inner: InMemory::new(),
        lose: std::sync::atomic::AtomicBool::new(false),
    });
    let cable = Cable::builder_shared(backend.clone())
        .channel::<RoomChannel>()
        .config(CableConfig {
            presence_ttl: Duration::from_secs(3),
            ..CableConfig::default()
        })
        .build();
    let (_w, sw) = subscribed(&cable, ROOM).await;
    let (mut bob, _) = open(
        &cable,
        Identifiers::new().with("current_user", "bob".to_owned()),
    )
    .await;
    bob.handle_frame(subscribe(ROOM).as_bytes()).await.unwrap();
    assert_eq!(events(&sw).len(), 1);
    backend
        .lose
        .store(true, std::sync::atomic::Ordering::SeqCst);
    // The next touch finds bob's session gone (an in-memory leave: no
    // event) and joins it again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle().await;
    assert_eq!(
        events(&sw),
        [json!({"type": "join", "id": "bob", "info": {"name": "bob"}})],
        "announced again"
    );
    assert_eq!(cable.presence("room").await.unwrap().total, 1);
}
