//! The `keayl_cable::testing` harness itself: each test asserts what the harness
//! reports against what the real connection did (frames, hooks, pub/sub), so a harness
//! that mis-reports confirmation, streams, transmissions, broadcasts, errors, timers or
//! unsubscribe fails here.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{FakeBroker, Log};
use keayl_cable::channel::{Channel, ChannelContext, ChannelError, Data};
use keayl_cable::coder::{Coder, CoderError};
use keayl_cable::connection::{
    CommandError, ConnectError, Connection, ConnectionHandler, ConnectionState, Identifiers,
};
use keayl_cable::naming::{self, GlobalId};
use keayl_cable::protocol::ProtocolError;
use keayl_cable::pubsub::{External, PubSub};
use keayl_cable::testing::{TestCable, TestConnection, broadcasting_for};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------
// The app under test.

/// `token` query parameter or cookie → `current_user`; `token=fail` fails; none rejects.
struct Handler {
    log: Log,
}

impl ConnectionHandler for Handler {
    const IDENTIFIED_BY: &'static [&'static str] = &["current_user"];

    async fn connect(&self, conn: &mut Connection) -> Result<(), ConnectError> {
        self.log.push("connect");
        let token = conn
            .request()
            .query("token")
            .or_else(|| conn.request().cookie("token"))
            .map(str::to_owned);
        match token.as_deref() {
            None => conn.reject_unauthorized_connection(),
            Some("fail") => Err(ConnectError::Failed("database down".into())),
            Some(user) => {
                conn.set_identifier("current_user", user.to_owned());
                Ok(())
            }
        }
    }

    async fn disconnect(&self, conn: &mut Connection) {
        let user = conn.identifiers().param("current_user").unwrap_or_default();
        self.log.push(format!("disconnect:{user}"));
    }
}

/// Streams `room:<room>` and greets; rejects (after streaming) room `secret` and a
/// missing room. Leaving broadcasts `{"left": user}`.
#[derive(Clone, Default)]
struct RoomChannel {
    log: Log,
}

#[derive(serde::Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
enum RoomAction {
    Speak { text: String },
    Follow { stream: String },
    Unfollow { stream: String },
    Whoami,
    Fail,
}

fn user(ctx: &ChannelContext<'_>) -> String {
    ctx.identifiers().param("current_user").unwrap_or_default()
}

impl Channel for RoomChannel {
    const NAME: &'static str = "RoomChannel";
    type Action = RoomAction;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        let Some(room) = ctx.param_str("room").map(str::to_owned) else {
            ctx.reject();
            return Ok(());
        };
        ctx.stream_from(format!("room:{room}"));
        if room == "secret" {
            ctx.reject();
            return Ok(());
        }
        self.log.push(format!("subscribed:{room}"));
        ctx.transmit(json!({ "hello": user(ctx) }));
        Ok(())
    }

    async fn unsubscribed(&mut self, ctx: &mut ChannelContext<'_>) {
        let mut streams: Vec<&str> = ctx.streams().collect();
        streams.sort();
        self.log
            .push(format!("unsubscribed streams={}", streams.join(",")));
        if let Some(room) = ctx.param_str("room") {
            let _ = ctx
                .broadcast_to(&format!("room:{room}"), &json!({ "left": user(ctx) }))
                .await;
        }
    }

    async fn perform(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        action: RoomAction,
    ) -> Result<(), ChannelError> {
        match action {
            RoomAction::Speak { text } => {
                let room = ctx.param_str("room").unwrap_or_default().to_owned();
                ctx.broadcast_to(
                    &format!("room:{room}"),
                    &json!({ "from": user(ctx), "text": text }),
                )
                .await?;
            }
            RoomAction::Follow { stream } => {
                ctx.stream_from(stream);
            }
            RoomAction::Unfollow { stream } => ctx.stop_stream_from(&stream),
            RoomAction::Whoami => ctx.transmit(json!({ "user": user(ctx) })),
            RoomAction::Fail => return Err(ChannelError::msg("nope")),
        }
        Ok(())
    }

    async fn receive(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        data: &Data,
    ) -> Result<(), ChannelError> {
        ctx.transmit(json!({ "received": data }));
        Ok(())
    }
}

/// `subscribed` fails.
#[derive(Default)]
struct BrokenChannel;

impl Channel for BrokenChannel {
    const NAME: &'static str = "BrokenChannel";
    type Action = keayl_cable::NoActions;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        ctx.stream_from("broken");
        Err(ChannelError::msg("no database"))
    }
}

/// Timers `fast` (1 s) and `slow` (3 s), each transmitting its name; action `extra`
/// registers `extra` (2 s) at run time.
#[derive(Default)]
struct TickChannel;

#[derive(serde::Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
enum TickAction {
    Extra,
}

impl Channel for TickChannel {
    const NAME: &'static str = "TickChannel";
    type Action = TickAction;
    const PERIODICALLY: &'static [(&'static str, Duration)] = &[
        ("fast", Duration::from_secs(1)),
        ("slow", Duration::from_secs(3)),
    ];

    async fn perform(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        action: TickAction,
    ) -> Result<(), ChannelError> {
        let TickAction::Extra = action;
        ctx.periodically("extra", Duration::from_secs(2));
        Ok(())
    }

    async fn periodic(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        timer: &'static str,
    ) -> Result<(), ChannelError> {
        ctx.transmit(timer);
        Ok(())
    }
}

/// Wraps every payload as `{"wrapped": value}` in pub/sub (not JSON passthrough).
#[derive(Debug)]
struct WrapCoder;

impl Coder for WrapCoder {
    fn encode(&self, value: &Value) -> Result<Bytes, CoderError> {
        Ok(Bytes::from(json!({ "wrapped": value }).to_string()))
    }
    fn decode(&self, bytes: &[u8]) -> Result<Value, CoderError> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| CoderError(e.to_string()))?;
        v.get("wrapped")
            .cloned()
            .ok_or_else(|| CoderError("not wrapped".into()))
    }
}

fn room_7() -> GlobalId {
    GlobalId::new("app", "Room", 7)
}

/// `stream_for(Room 7)`, with [`WrapCoder`].
#[derive(Default)]
struct ModelChannel;

impl Channel for ModelChannel {
    const NAME: &'static str = "Admin::ModelChannel";
    type Action = keayl_cable::NoActions;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        ctx.stream_for(&room_7());
        Ok(())
    }

    fn coder() -> Arc<dyn Coder> {
        Arc::new(WrapCoder)
    }
}

/// Not registered on the cable.
#[derive(Default)]
struct LoneChannel;

impl Channel for LoneChannel {
    const NAME: &'static str = "LoneChannel";
    type Action = keayl_cable::NoActions;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        ctx.stream_from("lone");
        Ok(())
    }
}

fn cable(log: &Log) -> TestCable {
    let (handler_log, room_log) = (log.clone(), log.clone());
    TestCable::new(move |b| {
        b.connection_handler(Handler { log: handler_log })
            .channel_with(move || RoomChannel {
                log: room_log.clone(),
            })
            .channel::<BrokenChannel>()
            .channel::<TickChannel>()
            .channel::<ModelChannel>()
    })
}

fn alice() -> Identifiers {
    Identifiers::new().with("current_user", "alice".to_string())
}

async fn stubbed(cable: &TestCable, who: &str) -> TestConnection {
    cable
        .stub_connection(Identifiers::new().with("current_user", who.to_string()))
        .await
}

fn get(uri: &str) -> http::Request<()> {
    http::Request::get(uri).body(()).unwrap()
}

// ---------------------------------------------------------------------------------------
// Connections (Rails' Connection::TestCase)

#[tokio::test]
async fn connect_without_a_token_is_rejected_as_unauthorized() {
    let log = Log::new();
    let cable = cable(&log);
    let conn = cable.connect(get("/cable")).await;
    assert!(conn.is_rejected());
    assert!(!conn.is_open());
    assert_eq!(conn.state(), ConnectionState::Rejected);
    assert_eq!(conn.disconnect_reason().as_deref(), Some("unauthorized"));
    assert!(conn.is_closed());
    assert_eq!(
        conn.frames(),
        [json!({"type": "disconnect", "reason": "unauthorized", "reconnect": false})]
    );
    assert_eq!(conn.identifier::<String>("current_user"), None);
    assert_eq!(log.entries(), ["connect"]);
    let err = conn.subscribe::<RoomChannel>(json!({"room": "1"})).await;
    assert!(matches!(err, Err(CommandError::NotOpen)), "{err:?}");
}

#[tokio::test]
async fn connect_with_a_token_exposes_typed_identifiers() {
    let cable = cable(&Log::new());
    let conn = cable.connect(get("/cable?token=alice")).await;
    assert!(conn.is_open() && !conn.is_rejected() && !conn.is_closed());
    assert_eq!(
        conn.identifier::<String>("current_user")
            .map(String::as_str),
        Some("alice")
    );
    assert_eq!(conn.identifier::<u64>("current_user"), None); // another type
    assert_eq!(conn.connection_identifier(), Some("alice"));
    assert_eq!(conn.frames(), [json!({"type": "welcome"})]);
    assert_eq!(conn.disconnect_reason(), None);

    // A `Request` works as well as an `http::Request`, cookies included.
    let request = http::Request::get("/cable")
        .header("cookie", "token=bob")
        .body(())
        .unwrap();
    let conn = cable
        .connect(keayl_cable::connection::Request::from(request))
        .await;
    assert_eq!(conn.connection_identifier(), Some("bob"));
}

#[tokio::test]
async fn a_failing_connect_is_a_server_error() {
    let conn = cable(&Log::new()).connect(get("/cable?token=fail")).await;
    assert!(conn.is_rejected());
    assert_eq!(conn.disconnect_reason().as_deref(), Some("server_error"));
}

#[tokio::test]
async fn disconnect_unsubscribes_everything_then_runs_the_handler() {
    let log = Log::new();
    let cable = cable(&log);
    let mut conn = cable.connect(get("/cable?token=alice")).await;
    let sub = conn
        .subscribe::<RoomChannel>(json!({"room": "1"}))
        .await
        .unwrap();
    log.take();
    conn.disconnect().await;
    assert_eq!(conn.state(), ConnectionState::Closed);
    assert_eq!(
        log.entries(),
        ["unsubscribed streams=room:1", "disconnect:alice"]
    );
    assert!(sub.streams().is_empty());
    assert_eq!(cable.broadcasts("room:1"), [json!({"left": "alice"})]);
    assert!(conn.subscription_identifiers().await.is_empty());
    assert!(matches!(
        sub.perform("whoami", ()).await,
        Err(CommandError::NotOpen)
    ));
}

#[tokio::test]
async fn a_stubbed_connection_skips_the_handler() {
    let log = Log::new();
    let cable = cable(&log);
    let conn = cable.stub_connection(alice()).await;
    assert!(conn.is_open());
    assert_eq!(conn.frames(), [json!({"type": "welcome"})]);
    assert_eq!(conn.connection_identifier(), None);
    assert_eq!(
        conn.identifier::<String>("current_user")
            .map(String::as_str),
        Some("alice")
    );
    let sub = conn
        .subscribe::<RoomChannel>(json!({"room": "1"}))
        .await
        .unwrap();
    sub.perform("whoami", ()).await.unwrap();
    assert_eq!(sub.last_transmission(), Some(json!({"user": "alice"})));
    assert_eq!(log.count("connect"), 0, "{:?}", log.entries());
}

// ---------------------------------------------------------------------------------------
// Subscribing

#[tokio::test]
async fn subscribe_is_confirmed_under_the_identifier_a_client_sends() {
    let cable = cable(&Log::new());
    let conn = stubbed(&cable, "alice").await;
    // `channel` comes from the type, first, whatever the params say.
    let sub = conn
        .subscribe::<RoomChannel>(json!({"room": "1", "channel": "Other", "z": 2}))
        .await
        .unwrap();
    let id = r#"{"channel":"RoomChannel","room":"1","z":2}"#;
    assert_eq!(sub.identifier(), id);
    assert!(sub.is_confirmed() && !sub.is_rejected());
    assert_eq!(
        conn.frames(),
        [
            json!({"type": "welcome"}),
            // A transmit from `subscribed` goes out at once, before the confirmation.
            json!({"identifier": id, "message": {"hello": "alice"}}),
            json!({"identifier": id, "type": "confirm_subscription"}),
        ]
    );
    assert_eq!(conn.subscription_identifiers().await, [id]);

    // A struct serialises as params too.
    #[derive(serde::Serialize)]
    struct Params {
        room: u32,
    }
    let sub = conn
        .subscribe::<ModelChannel>(Params { room: 3 })
        .await
        .unwrap();
    assert_eq!(
        sub.identifier(),
        r#"{"channel":"Admin::ModelChannel","room":3}"#
    );
}

#[tokio::test]
async fn a_rejected_subscription_is_reported_and_torn_down() {
    let log = Log::new();
    let cable = cable(&log);
    let conn = stubbed(&cable, "alice").await;
    let sub = conn
        .subscribe::<RoomChannel>(json!({"room": "secret"}))
        .await
        .unwrap();
    assert!(sub.is_rejected() && !sub.is_confirmed());
    // It streamed before rejecting; the stream is gone, `unsubscribed` ran.
    assert!(sub.streams().is_empty());
    assert_eq!(log.entries(), ["unsubscribed streams=room:secret"]);
    assert_eq!(
        conn.frames().last(),
        Some(&json!({"identifier": sub.identifier(), "type": "reject_subscription"}))
    );
    assert!(conn.subscription_identifiers().await.is_empty());
    cable
        .cable()
        .broadcast("room:secret", &json!("psst"))
        .await
        .unwrap();
    assert!(sub.transmissions().is_empty());

    // A missing room and a failing `subscribed` reject too.
    let sub = conn.subscribe::<RoomChannel>(()).await.unwrap();
    assert!(sub.is_rejected());
    let sub = conn.subscribe::<BrokenChannel>(()).await.unwrap();
    assert!(sub.is_rejected() && sub.streams().is_empty());
}

#[tokio::test]
async fn subscribe_errors_are_the_connections_refusals() {
    let cable = cable(&Log::new());
    let conn = stubbed(&cable, "alice").await;
    let err = conn.subscribe::<LoneChannel>(()).await.unwrap_err();
    assert!(
        matches!(&err, CommandError::UnknownChannel(c) if c == "LoneChannel"),
        "{err:?}"
    );
    // Given a value, an unregistered channel subscribes.
    let lone = conn.subscribe_with(LoneChannel, ()).await.unwrap();
    assert!(lone.is_confirmed() && lone.has_stream("lone"));

    conn.subscribe::<RoomChannel>(json!({"room": "1"}))
        .await
        .unwrap();
    let err = conn
        .subscribe::<RoomChannel>(json!({"room": "1"}))
        .await
        .unwrap_err();
    assert!(matches!(err, CommandError::AlreadySubscribed(_)), "{err:?}");
    let err = conn.subscribe::<RoomChannel>(json!([1])).await.unwrap_err();
    assert!(
        matches!(
            err,
            CommandError::Protocol(ProtocolError::IdentifierNotObject { found: "array" })
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn subscribe_waits_for_the_broker_to_acknowledge() {
    let broker = FakeBroker::manual();
    let backend: Arc<dyn PubSub> = Arc::new(External::from_arc(broker.clone()));
    let cable = TestCable::from_fn_on(backend, |pubsub| {
        keayl_cable::Cable::builder_shared(pubsub)
            .channel::<RoomChannel>()
            .build()
    });
    let conn = cable.stub_connection(alice()).await;
    for deferred in [false, true] {
        conn.connection().await.set_deferred_confirmations(deferred);
        let acked = Arc::new(AtomicBool::new(false));
        let acker = tokio::spawn({
            let (broker, acked) = (broker.clone(), acked.clone());
            async move {
                while broker.ack_all() == 0 {
                    tokio::task::yield_now().await;
                }
                acked.store(true, Ordering::SeqCst);
            }
        });
        let room = format!("{deferred}");
        let sub = conn
            .subscribe::<RoomChannel>(json!({ "room": room }))
            .await
            .unwrap();
        // It returned only after the broker acknowledged, confirmed.
        assert!(acked.load(Ordering::SeqCst), "deferred={deferred}");
        assert!(sub.is_confirmed(), "deferred={deferred}");
        acker.await.unwrap();
        // Live: a broadcast right away reaches it.
        sub.perform("speak", json!({"text": "hi"})).await.unwrap();
        assert_eq!(
            sub.take_transmissions(),
            [
                json!({"hello": "alice"}),
                json!({"from": "alice", "text": "hi"})
            ]
        );
    }
}

// ---------------------------------------------------------------------------------------
// Streams

#[tokio::test]
async fn streams_follow_what_the_channel_does() {
    let cable = cable(&Log::new());
    let conn = stubbed(&cable, "alice").await;
    let sub = conn
        .subscribe::<RoomChannel>(json!({"room": "1"}))
        .await
        .unwrap();
    assert_eq!(sub.streams(), ["room:1"]);
    assert!(sub.has_stream("room:1") && !sub.has_stream("news"));
    sub.perform("follow", json!({"stream": "news"}))
        .await
        .unwrap();
    assert_eq!(sub.streams(), ["news", "room:1"]);
    sub.take_transmissions();
    cable.cable().broadcast("news", &json!(1)).await.unwrap();
    sub.perform("unfollow", json!({"stream": "news"}))
        .await
        .unwrap();
    assert_eq!(sub.streams(), ["room:1"]);
    cable.cable().broadcast("news", &json!(2)).await.unwrap();
    assert_eq!(sub.transmissions(), [json!(1)]);
}

#[tokio::test]
async fn stream_for_names_and_channel_coders() {
    let cable = cable(&Log::new());
    let conn = stubbed(&cable, "alice").await;
    let sub = conn.subscribe::<ModelChannel>(()).await.unwrap();
    let name = broadcasting_for::<ModelChannel>(&room_7());
    assert_eq!(
        name,
        naming::broadcasting_for("Admin::ModelChannel", &[&room_7()])
    );
    assert!(name.starts_with("admin:model:"), "{name}");
    assert!(sub.has_stream_for(&room_7()));
    assert!(!sub.has_stream_for(&GlobalId::new("app", "Room", 8)));
    assert_eq!(sub.streams(), std::slice::from_ref(&name));

    cable
        .cable()
        .broadcaster()
        .broadcast_for::<ModelChannel>(&room_7(), &json!({"n": 1}))
        .await
        .unwrap();
    assert_eq!(
        cable.raw_broadcasts(&name),
        [Bytes::from_static(br#"{"wrapped":{"n":1}}"#)]
    );
    assert_eq!(
        cable.broadcasts_for::<ModelChannel>(&room_7()),
        [json!({"n": 1})]
    );
    assert_eq!(cable.broadcasts(&name), [json!({"wrapped": {"n": 1}})]);
    assert_eq!(sub.transmissions(), [json!({"n": 1})]);
}

// ---------------------------------------------------------------------------------------
// Transmissions and broadcasts

#[tokio::test]
async fn transmissions_peek_drain_and_belong_to_one_subscription() {
    let cable = cable(&Log::new());
    let conn = stubbed(&cable, "alice").await;
    let one = conn
        .subscribe::<RoomChannel>(json!({"room": "1"}))
        .await
        .unwrap();
    let two = conn
        .subscribe::<RoomChannel>(json!({"room": "2"}))
        .await
        .unwrap();
    assert_eq!(one.transmissions(), [json!({"hello": "alice"})]);
    assert_eq!(one.transmissions(), [json!({"hello": "alice"})]); // peek
    assert_eq!(one.take_transmissions(), [json!({"hello": "alice"})]);
    assert!(one.transmissions().is_empty()); // drained

    cable
        .cable()
        .broadcast("room:1", &json!("a"))
        .await
        .unwrap();
    cable
        .cable()
        .broadcast("room:2", &json!("b"))
        .await
        .unwrap();
    one.perform("whoami", ()).await.unwrap();
    assert_eq!(one.transmissions(), [json!("a"), json!({"user": "alice"})]);
    assert_eq!(one.last_transmission(), Some(json!({"user": "alice"})));
    assert_eq!(two.transmissions(), [json!({"hello": "alice"}), json!("b")]);
    // A clone is the same subscription; taking through it drains both.
    assert_eq!(two.clone().take_transmissions().len(), 2);
    assert!(two.transmissions().is_empty());
    // Every frame stays in the connection's record.
    assert_eq!(conn.frames().len(), 1 + 2 * 2 + 3);
}

#[tokio::test]
async fn broadcasts_are_recorded_per_stream_from_everywhere() {
    let cable = cable(&Log::new());
    let conn = stubbed(&cable, "alice").await;
    let sub = conn
        .subscribe::<RoomChannel>(json!({"room": "1"}))
        .await
        .unwrap();
    assert!(cable.broadcasts("room:1").is_empty());
    sub.perform("speak", json!({"text": "hi"})).await.unwrap();
    cable
        .cable()
        .broadcast("room:1", &json!({"from": "test"}))
        .await
        .unwrap();
    cable
        .cable()
        .broadcast("nobody", &json!([1, 2]))
        .await
        .unwrap();
    cable
        .cable()
        .broadcast_raw("raw", Bytes::from_static(b"not json"))
        .await
        .unwrap();
    let room = [
        json!({"from": "alice", "text": "hi"}),
        json!({"from": "test"}),
    ];
    assert_eq!(cable.broadcasts("room:1"), room);
    assert_eq!(cable.broadcasts("room:1"), room); // peek
    assert_eq!(cable.broadcasts("nobody"), [json!([1, 2])]);
    assert_eq!(cable.broadcasts("raw"), [json!("not json")]);
    assert_eq!(cable.broadcast_streams(), ["room:1", "nobody", "raw"]);
    // Delivered too, not only recorded.
    assert_eq!(&sub.transmissions()[1..], room);

    assert_eq!(cable.take_broadcasts("room:1"), room);
    assert!(cable.broadcasts("room:1").is_empty());
    assert_eq!(cable.broadcasts("nobody").len(), 1); // other streams kept
    cable.clear_broadcasts();
    assert!(cable.broadcast_streams().is_empty());

    // The recording pub/sub, handed to code under test, records as well.
    keayl_cable::Broadcaster::new(cable.pubsub())
        .broadcast("room:1", &json!(3))
        .await
        .unwrap();
    assert_eq!(cable.broadcasts("room:1"), [json!(3)]);
}

// ---------------------------------------------------------------------------------------
// Actions and errors

#[tokio::test]
async fn action_errors_are_returned_and_leave_the_subscription_working() {
    let cable = cable(&Log::new());
    let conn = stubbed(&cable, "alice").await;
    let sub = conn
        .subscribe::<RoomChannel>(json!({"room": "1"}))
        .await
        .unwrap();
    let err = sub
        .perform("shout", json!({"text": "HI"}))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CommandError::InvalidAction { channel, action, .. }
            if channel == "RoomChannel" && action == "shout"),
        "{err:?}"
    );
    let err = sub.perform("speak", json!({"text": 5})).await.unwrap_err();
    assert!(matches!(err, CommandError::InvalidAction { .. }), "{err:?}");
    let err = sub.perform("fail", ()).await.unwrap_err();
    assert!(
        matches!(&err, CommandError::ActionFailed { message, .. } if message == "nope"),
        "{err:?}"
    );
    let err = sub.perform("speak", json!("hi")).await.unwrap_err();
    assert!(
        matches!(
            err,
            CommandError::Protocol(ProtocolError::DataNotObject { found: "string" })
        ),
        "{err:?}"
    );
    assert!(cable.broadcasts("room:1").is_empty());
    sub.perform("speak", json!({"text": "ok"})).await.unwrap();
    assert_eq!(cable.broadcasts("room:1").len(), 1);
}

#[tokio::test]
async fn receive_sends_data_without_an_action() {
    let cable = cable(&Log::new());
    let conn = stubbed(&cable, "alice").await;
    let sub = conn
        .subscribe::<RoomChannel>(json!({"room": "1"}))
        .await
        .unwrap();
    sub.take_transmissions();
    sub.receive(json!({"x": 1})).await.unwrap();
    assert_eq!(sub.take_transmissions(), [json!({"received": {"x": 1}})]);
    // As on the wire, an `action` key still names an action.
    sub.receive(json!({"action": "whoami"})).await.unwrap();
    assert_eq!(sub.take_transmissions(), [json!({"user": "alice"})]);

    let lone = conn.subscribe_with(LoneChannel, ()).await.unwrap();
    let err = lone.receive(json!({"x": 1})).await.unwrap_err();
    assert!(matches!(err, CommandError::UnknownAction { .. }), "{err:?}");
}

// ---------------------------------------------------------------------------------------
// Timers

// Paused: real time does not pass, so the timer an action registers is due exactly 2 s
// after the start (the schedule itself never needs the clock).
#[tokio::test(start_paused = true)]
async fn run_next_timers_steps_through_the_schedule() {
    let cable = cable(&Log::new());
    let conn = stubbed(&cable, "alice").await;
    assert_eq!(conn.run_next_timers().await, 0);
    assert_eq!(conn.next_timer_due().await, None);
    let start = tokio::time::Instant::now();
    let sub = conn.subscribe::<TickChannel>(()).await.unwrap();
    assert_eq!(
        conn.next_timer_due().await,
        Some(start + Duration::from_secs(1))
    );
    let mut fired = Vec::new();
    for _ in 0..3 {
        fired.push(conn.run_next_timers().await);
    }
    assert_eq!(fired, [1, 1, 2]); // t=1 fast, t=2 fast, t=3 fast+slow
    assert_eq!(
        sub.take_transmissions(),
        [json!("fast"), json!("fast"), json!("fast"), json!("slow")]
    );
    assert_eq!(
        conn.next_timer_due().await,
        Some(start + Duration::from_secs(4))
    );

    // A timer registered by an action (due at t=2) joins the schedule.
    sub.perform("extra", ()).await.unwrap();
    assert_eq!(conn.run_next_timers().await, 1); // t=2 extra
    assert_eq!(conn.run_next_timers().await, 2); // t=4 fast, extra
    assert_eq!(
        sub.take_transmissions(),
        [json!("extra"), json!("fast"), json!("extra")]
    );

    sub.unsubscribe().await.unwrap();
    assert_eq!(conn.next_timer_due().await, None);
    assert_eq!(conn.run_next_timers().await, 0);
}

#[tokio::test(start_paused = true)]
async fn run_due_timers_follows_the_tokio_clock() {
    let cable = cable(&Log::new());
    let conn = stubbed(&cable, "alice").await;
    let sub = conn.subscribe::<TickChannel>(()).await.unwrap();
    assert_eq!(conn.run_due_timers().await, 0);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(conn.run_due_timers().await, 1);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(conn.run_due_timers().await, 2);
    assert_eq!(
        sub.transmissions(),
        [json!("fast"), json!("fast"), json!("slow")]
    );
}

// ---------------------------------------------------------------------------------------
// Unsubscribe

#[tokio::test]
async fn unsubscribe_runs_the_hook_and_stops_delivery() {
    let log = Log::new();
    let cable = cable(&log);
    let conn = stubbed(&cable, "alice").await;
    let sub = conn
        .subscribe::<RoomChannel>(json!({"room": "1"}))
        .await
        .unwrap();
    sub.take_transmissions();
    log.take();
    sub.unsubscribe().await.unwrap();
    assert_eq!(log.entries(), ["unsubscribed streams=room:1"]);
    assert!(sub.streams().is_empty());
    assert_eq!(cable.broadcasts("room:1"), [json!({"left": "alice"})]);
    assert!(conn.subscription_identifiers().await.is_empty());
    // `unsubscribed` runs while its stream is still live: its own broadcast reaches it.
    assert_eq!(sub.transmissions(), [json!({"left": "alice"})]);
    cable
        .cable()
        .broadcast("room:1", &json!("late"))
        .await
        .unwrap();
    assert_eq!(sub.transmissions(), [json!({"left": "alice"})]); // not "late"
    assert!(matches!(
        sub.perform("whoami", ()).await,
        Err(CommandError::UnknownSubscription(_))
    ));
    assert!(matches!(
        sub.unsubscribe().await,
        Err(CommandError::UnknownSubscription(_))
    ));
    // Subscribing again starts afresh: the old frames are not its transmissions.
    let again = conn
        .subscribe::<RoomChannel>(json!({"room": "1"}))
        .await
        .unwrap();
    assert_eq!(again.transmissions(), [json!({"hello": "alice"})]);
}

// ---------------------------------------------------------------------------------------
// Presence and whispers through the harness.

/// `lounge` as its presence and whisper stream.
#[derive(Default)]
struct LoungeChannel;

impl Channel for LoungeChannel {
    const NAME: &'static str = "LoungeChannel";
    type Action = keayl_cable::NoActions;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        ctx.stream_from("lounge").with_presence().with_whispers();
        Ok(())
    }
}

#[tokio::test]
async fn presence_events_and_whispers_are_reported_apart_from_transmissions() {
    let cable = TestCable::new(|b| b.channel::<LoungeChannel>());
    let ann = stubbed_plain(&cable).await;
    let bob = stubbed_plain(&cable).await;
    let a = ann.subscribe::<LoungeChannel>(json!({})).await.unwrap();
    let b = bob.subscribe::<LoungeChannel>(json!({})).await.unwrap();
    a.join("ann", json!({"name": "Ann"})).await.unwrap();
    let joined = json!({"type": "join", "id": "ann", "info": {"name": "Ann"}});
    assert_eq!(b.take_presence_events(), std::slice::from_ref(&joined));
    assert_eq!(a.take_presence_events(), [joined]);
    assert!(
        b.take_transmissions().is_empty(),
        "presence is not a transmission"
    );
    b.request_presence().await.unwrap();
    assert_eq!(
        b.take_presence_events(),
        [json!({"type": "info", "total": 1, "records": [{"id": "ann", "info": {"name": "Ann"}}]})]
    );
    b.whisper(json!({"typing": true})).await.unwrap();
    assert_eq!(a.take_transmissions(), [json!({"typing": true})]);
    assert!(b.take_transmissions().is_empty(), "not to the whisperer");
    a.leave().await.unwrap();
    assert_eq!(
        b.take_presence_events(),
        [json!({"type": "leave", "id": "ann"})]
    );
}

/// A stubbed connection speaking the extended protocol (presence events
/// are frames of AnyCable's `actioncable-v1-ext-json` only).
async fn stubbed_plain(cable: &TestCable) -> TestConnection {
    let request =
        keayl_cable::connection::Request::from(http::Request::get("/cable").body(()).unwrap())
            .with_protocol(keayl_cable::protocol::Protocol::V1ExtJson);
    cable
        .stub_connection_with_request(Identifiers::new(), request)
        .await
}
