//! Channels over `handle_frame`: subscribe/confirm, streams, transmit, broadcast,
//! action dispatch, duplicate and unknown subscriptions, unsubscribe, reject, coders and
//! periodic timers. Every assertion is on the exact frames the client would receive.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use keayl_cable::channel::{Channel, ChannelContext, ChannelError, Data};
use keayl_cable::coder::{Coder, CoderError, JsonCoder};
use keayl_cable::connection::{CommandError, Connection, Identifiers};
use keayl_cable::pubsub::InMemory;
use keayl_cable::server::CableBuilder;
use keayl_cable::{Cable, CableConfig};
use serde_json::{Value, json};
use tokio::time::Instant;

const ROOM1: &str = r#"{"channel":"ChatChannel","room":"1"}"#;
const ROOM1_CONFIRM: &str = r#"{"identifier":"{\"channel\":\"ChatChannel\",\"room\":\"1\"}","type":"confirm_subscription"}"#;

fn base(pubsub: &Arc<InMemory>, log: &Log) -> CableBuilder {
    let chat_log = log.clone();
    Cable::builder_shared(pubsub.clone())
        .channel::<EchoChannel>()
        .channel_with(move || ChatChannel {
            log: chat_log.clone(),
        })
}

/// A cable with `EchoChannel`, `ChatChannel` (logging into `log`) and whatever `extra`
/// registers.
fn cable_with(
    log: &Log,
    extra: impl FnOnce(CableBuilder) -> CableBuilder,
) -> (Cable, Arc<InMemory>) {
    let pubsub = Arc::new(InMemory::new());
    let cable = extra(base(&pubsub, log)).build();
    (cable, pubsub)
}

/// An open connection with the welcome already taken and `EchoChannel` subscribed (the
/// probe), its confirmation taken too.
async fn open(cable: &Cable) -> (Connection, RecordingSink) {
    let sink = RecordingSink::new();
    let mut conn = cable.connection(sink.sink(), Identifiers::new());
    conn.open().await;
    assert_eq!(sink.take(), vec![WELCOME]);
    conn.handle_frame(subscribe(ECHO_ID).as_bytes())
        .await
        .unwrap();
    assert_eq!(sink.take(), vec![confirm(ECHO_ID)]);
    (conn, sink)
}

/// The connection still works: the echo probe gets exactly its answer.
async fn assert_alive(conn: &mut Connection, sink: &RecordingSink, text: &str) {
    let (probe, answer) = echo_probe(text);
    conn.handle_frame(probe.as_bytes()).await.unwrap();
    assert_eq!(sink.take(), vec![answer]);
}

async fn send(conn: &mut Connection, frame: &str) -> Result<(), CommandError> {
    conn.handle_frame(frame.as_bytes()).await
}

// ---------------------------------------------------------------------------------------
// Subscribe and confirm

#[tokio::test]
async fn subscribe_is_confirmed_with_the_exact_identifier() {
    let log = Log::new();
    let (cable, pubsub) = cable_with(&log, |b| b);
    let (mut conn, sink) = open(&cable).await;
    send(&mut conn, &subscribe(ROOM1)).await.unwrap();
    assert_eq!(sink.take(), vec![ROOM1_CONFIRM]);
    assert_eq!(log.entries(), vec![format!("subscribed:{ROOM1}")]);
    assert_eq!(
        pubsub.local_count("room:1"),
        1,
        "the stream is live once confirmed"
    );
    assert_eq!(
        conn.subscription_identifiers().collect::<Vec<_>>(),
        vec![ECHO_ID, ROOM1]
    );
}

#[tokio::test]
async fn identifiers_are_echoed_unchanged_and_keyed_by_the_raw_string() {
    let log = Log::new();
    let (cable, _) = cable_with(&log, |b| b);
    let (mut conn, sink) = open(&cable).await;
    let variants = [
        r#"{"channel":"ChatChannel","room":"1"}"#,
        r#"{"room":"1","channel":"ChatChannel"}"#,
        r#"{"channel": "ChatChannel", "room": "1"}"#,
        r#"{"channel":"ChatChannel","room":1}"#,
    ];
    for id in variants {
        send(&mut conn, &subscribe(id)).await.unwrap();
    }
    assert_eq!(sink.take(), variants.map(confirm).to_vec());
    let mut expected = vec![ECHO_ID];
    expected.extend(variants);
    assert_eq!(
        conn.subscription_identifiers().collect::<Vec<_>>(),
        expected,
        "four distinct subscriptions besides the probe's"
    );
    // All four stream room:1 (room 1 and room "1" both name it): one frame each, each
    // with its own identifier.
    cable
        .broadcast("room:1", &json!({"text": "hi"}))
        .await
        .unwrap();
    assert_eq!(
        sink.take(),
        variants.map(|id| data(id, r#"{"text":"hi"}"#)).to_vec()
    );
    // Identifiers with characters that need escaping are echoed byte for byte.
    let odd = r#"{"channel":"ChatChannel","room":"é \"q\" \\ <b>&"}"#;
    send(&mut conn, &subscribe(odd)).await.unwrap();
    assert_eq!(
        sink.take(),
        vec![
            r#"{"identifier":"{\"channel\":\"ChatChannel\",\"room\":\"é \\\"q\\\" \\\\ \u003cb\u003e\u0026\"}","type":"confirm_subscription"}"#
        ]
    );
}

/// Transmits "hello" and "world" from `subscribed`, and streams `greetings`.
#[derive(Default)]
struct GreeterChannel;

impl Channel for GreeterChannel {
    const NAME: &'static str = "GreeterChannel";
    type Action = keayl_cable::NoActions;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        ctx.stream_from("greetings");
        ctx.transmit("hello");
        ctx.transmit("world");
        Ok(())
    }
}

#[tokio::test]
async fn transmits_in_subscribed_precede_the_confirmation() {
    let (cable, _) = cable_with(&Log::new(), |b| b.channel::<GreeterChannel>());
    let (mut conn, sink) = open(&cable).await;
    let id = r#"{"channel":"GreeterChannel"}"#;
    send(&mut conn, &subscribe(id)).await.unwrap();
    assert_eq!(
        sink.take(),
        vec![
            r#"{"identifier":"{\"channel\":\"GreeterChannel\"}","message":"hello"}"#.to_owned(),
            r#"{"identifier":"{\"channel\":\"GreeterChannel\"}","message":"world"}"#.to_owned(),
            r#"{"identifier":"{\"channel\":\"GreeterChannel\"}","type":"confirm_subscription"}"#
                .to_owned(),
        ]
    );
}

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

// ---------------------------------------------------------------------------------------
// transmit, broadcast_to, perform

#[tokio::test]
async fn transmit_from_an_action_sends_to_this_client_only() {
    let (cable, _) = cable_with(&Log::new(), |b| b);
    let (mut a, a_sink) = open(&cable).await;
    let (mut b, b_sink) = open(&cable).await;
    send(&mut a, &subscribe(ROOM1)).await.unwrap();
    send(&mut b, &subscribe(ROOM1)).await.unwrap();
    a_sink.take();
    b_sink.take();
    send(&mut a, &message(ROOM1, &json!({"action": "echo", "x": 1})))
        .await
        .unwrap();
    assert_eq!(
        a_sink.take(),
        vec![
            r#"{"identifier":"{\"channel\":\"ChatChannel\",\"room\":\"1\"}","message":{"action":"echo","x":1}}"#
        ]
    );
    assert!(b_sink.take().is_empty());
}

#[tokio::test]
async fn broadcast_to_reaches_every_connection_on_the_stream() {
    let (cable, _) = cable_with(&Log::new(), |b| b);
    let (mut a, a_sink) = open(&cable).await;
    let (mut b, b_sink) = open(&cable).await;
    let (mut c, c_sink) = open(&cable).await;
    let room2 = r#"{"channel":"ChatChannel","room":"2"}"#;
    send(&mut a, &subscribe(ROOM1)).await.unwrap();
    send(&mut b, &subscribe(ROOM1)).await.unwrap();
    send(&mut c, &subscribe(room2)).await.unwrap();
    for s in [&a_sink, &b_sink, &c_sink] {
        s.take();
    }
    send(
        &mut a,
        &message(ROOM1, &json!({"action": "speak", "message": "hi all"})),
    )
    .await
    .unwrap();
    let expected =
        vec![r#"{"identifier":"{\"channel\":\"ChatChannel\",\"room\":\"1\"}","message":"hi all"}"#];
    assert_eq!(a_sink.take(), expected);
    assert_eq!(b_sink.take(), expected);
    assert!(c_sink.take().is_empty());
}

#[tokio::test]
async fn perform_gets_the_typed_action_decoded_from_the_data() {
    let log = Log::new();
    let (cable, _) = cable_with(&log, |b| b);
    let (mut conn, sink) = open(&cable).await;
    send(&mut conn, &subscribe(ROOM1)).await.unwrap();
    sink.take();
    let d = json!({"action": "echo", "n": null, "nested": {"k": [1, 2]}, "text": "hé 😀"});
    send(&mut conn, &message(ROOM1, &d)).await.unwrap();
    let frames = sink.take();
    assert_eq!(frames.len(), 1);
    let frame: Value = serde_json::from_str(&frames[0]).unwrap();
    assert_eq!(frame["identifier"], ROOM1);
    assert_eq!(
        frame["message"], d,
        "the echo action's fields, action included"
    );
    assert!(frame.get("type").is_none(), "data frames carry no type");
    assert_eq!(log.entries().last().unwrap(), "perform:echo");
}

#[tokio::test]
async fn channel_context_exposes_identifiers_channel_and_typed_params() {
    let (cable, _) = cable_with(&Log::new(), |b| b);
    let sink = RecordingSink::new();
    let mut conn = cable.connection(
        sink.sink(),
        Identifiers::new().with("current_user", "alice".to_string()),
    );
    conn.open().await;
    let id = r#"{"channel":"ChatChannel","room":1}"#;
    send(&mut conn, &subscribe(id)).await.unwrap();
    sink.take();
    send(&mut conn, &message(id, &json!({"action": "whoami"})))
        .await
        .unwrap();
    assert_eq!(
        sink.take(),
        vec![data(
            id,
            r#"{"channel":"ChatChannel","params":{"channel":"ChatChannel","room":1},"user":"alice"}"#
        )]
    );
}

#[tokio::test]
async fn an_undefined_action_or_ill_typed_data_is_invalid_and_sends_nothing() {
    let log = Log::new();
    let (cable, _) = cable_with(&log, |b| b);
    let (mut conn, sink) = open(&cable).await;
    send(&mut conn, &subscribe(ROOM1)).await.unwrap();
    sink.take();
    log.take();
    let err = send(&mut conn, &message(ROOM1, &json!({"action": "dance"})))
        .await
        .unwrap_err();
    match &err {
        CommandError::InvalidAction {
            channel,
            action,
            message,
        } => {
            assert_eq!(channel, "ChatChannel");
            assert_eq!(action, "dance");
            assert!(message.contains("dance"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.kind(), "invalid_action");
    // A defined action with data of the wrong shape: the same, never a panic.
    for bad in [
        json!({"action": "follow"}),
        json!({"action": "follow", "stream": 42}),
        json!({"action": "follow", "stream": ["x"]}),
    ] {
        let err = send(&mut conn, &message(ROOM1, &bad)).await.unwrap_err();
        assert!(
            matches!(&err, CommandError::InvalidAction { action, .. } if action == "follow"),
            "{bad}: {err:?}"
        );
    }
    assert!(sink.take().is_empty());
    assert!(log.entries().is_empty(), "perform was not called");
    assert_alive(&mut conn, &sink, "ok").await;
}

/// Defines only `ping`.
#[derive(Default)]
struct SneakyChannel;

#[derive(serde::Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
enum Ping {
    Ping,
}

impl Channel for SneakyChannel {
    const NAME: &'static str = "SneakyChannel";
    type Action = Ping;

    async fn perform(&mut self, ctx: &mut ChannelContext<'_>, _: Ping) -> Result<(), ChannelError> {
        ctx.transmit("performed:ping");
        Ok(())
    }
}

const FRAMEWORK_NAMES: &[&str] = &[
    "stream_from",
    "stream_for",
    "stop_stream_from",
    "stop_all_streams",
    "transmit",
    "broadcast_to",
    "subscribed",
    "unsubscribed",
    "reject",
    "periodically",
    "perform",
    "perform_action",
    "params",
    "identifier",
    "connection",
    "current_user",
    "send",
    "__send__",
    "instance_eval",
    "_run_subscribe_callbacks",
    "receive",
    "Ping",
];

#[tokio::test]
async fn framework_names_are_never_dispatched_unless_defined() {
    let (cable, _) = cable_with(&Log::new(), |b| b.channel::<SneakyChannel>());
    let (mut conn, sink) = open(&cable).await;
    let id = r#"{"channel":"SneakyChannel"}"#;
    send(&mut conn, &subscribe(id)).await.unwrap();
    sink.take();
    for name in FRAMEWORK_NAMES {
        let err = send(
            &mut conn,
            &message(id, &json!({"action": name, "stream": "x"})),
        )
        .await
        .unwrap_err();
        // `receive` goes to the (default, unhandling) `receive`; every other
        // name fails to decode as the channel's action.
        assert!(
            matches!(&err, CommandError::InvalidAction { action, .. } if action == name)
                || (*name == "receive"
                    && matches!(&err, CommandError::UnknownAction { action, .. } if action == name)),
            "{name}: {err:?}"
        );
        assert!(sink.take().is_empty(), "{name} produced a frame");
    }
    // The listed action is dispatched.
    send(&mut conn, &message(id, &json!({"action": "ping"})))
        .await
        .unwrap();
    assert_eq!(sink.take(), vec![data(id, r#""performed:ping""#)]);
}

/// Defines lifecycle and framework names as actions: they reach `perform`, never the
/// lifecycle callbacks or the context's operations.
#[derive(Clone)]
struct ListedNamesChannel {
    log: Log,
}

impl Channel for ListedNamesChannel {
    const NAME: &'static str = "ListedNamesChannel";
    type Action = Listed;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        self.log.push("lifecycle:subscribed");
        ctx.stream_from("listed");
        Ok(())
    }

    async fn unsubscribed(&mut self, _ctx: &mut ChannelContext<'_>) {
        self.log.push("lifecycle:unsubscribed");
    }

    async fn perform(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        action: Listed,
    ) -> Result<(), ChannelError> {
        let action = match action {
            Listed::Subscribed => "subscribed",
            Listed::Unsubscribed => "unsubscribed",
            Listed::StreamFrom => "stream_from",
            Listed::Transmit => "transmit",
            Listed::Reject => "reject",
        };
        self.log.push(format!("perform:{action}"));
        ctx.transmit(format!("perform:{action}"));
        Ok(())
    }
}

#[derive(serde::Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
enum Listed {
    Subscribed,
    Unsubscribed,
    StreamFrom,
    Transmit,
    Reject,
}

#[tokio::test]
async fn defined_framework_names_reach_perform_only() {
    let log = Log::new();
    let l = log.clone();
    let (cable, pubsub) = cable_with(&Log::new(), |b| {
        b.channel_with(move || ListedNamesChannel { log: l.clone() })
    });
    let (mut conn, sink) = open(&cable).await;
    let id = r#"{"channel":"ListedNamesChannel"}"#;
    send(&mut conn, &subscribe(id)).await.unwrap();
    sink.take();
    for name in [
        "subscribed",
        "unsubscribed",
        "stream_from",
        "transmit",
        "reject",
    ] {
        send(&mut conn, &message(id, &json!({"action": name})))
            .await
            .unwrap();
        assert_eq!(
            sink.take(),
            vec![data(id, &json_str(&format!("perform:{name}")))]
        );
    }
    assert_eq!(
        log.entries(),
        vec![
            "lifecycle:subscribed",
            "perform:subscribed",
            "perform:unsubscribed",
            "perform:stream_from",
            "perform:transmit",
            "perform:reject",
        ]
    );
    // The lifecycle did not re-run: still one stream handler, still subscribed.
    assert_eq!(pubsub.local_count("listed"), 1);
    cable.broadcast("listed", &json!("x")).await.unwrap();
    assert_eq!(sink.take(), vec![data(id, r#""x""#)]);
}

/// Implements `receive`.
#[derive(Default)]
struct ReceiveChannel;

impl Channel for ReceiveChannel {
    const NAME: &'static str = "ReceiveChannel";
    type Action = keayl_cable::NoActions;

    async fn receive(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        data: &Data,
    ) -> Result<(), ChannelError> {
        ctx.transmit(json!({"action": "receive", "data": data}));
        Ok(())
    }
}

#[tokio::test]
async fn a_message_without_action_is_dispatched_to_receive() {
    let (cable, _) = cable_with(&Log::new(), |b| b.channel::<ReceiveChannel>());
    let (mut conn, sink) = open(&cable).await;
    let id = r#"{"channel":"ReceiveChannel"}"#;
    send(&mut conn, &subscribe(id)).await.unwrap();
    sink.take();
    for d in [
        json!({"text": "hi"}),
        json!({"action": null, "text": "hi"}),
        json!({"action": "", "text": "hi"}),
        json!({"action": "  ", "text": "hi"}),
    ] {
        send(&mut conn, &message(id, &d)).await.unwrap();
        let expected = json!({"action": "receive", "data": d}).to_string();
        assert_eq!(sink.take(), vec![data(id, &expected)], "{d}");
    }
}

#[tokio::test]
async fn a_message_without_action_is_unknown_when_receive_is_not_implemented() {
    let (cable, _) = cable_with(&Log::new(), |b| b);
    let (mut conn, sink) = open(&cable).await;
    send(&mut conn, &subscribe(ROOM1)).await.unwrap();
    sink.take();
    let err = send(&mut conn, &message(ROOM1, &json!({"text": "hi"})))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CommandError::UnknownAction { action, .. } if action == "receive"),
        "{err:?}"
    );
    assert!(sink.take().is_empty());
}

#[tokio::test]
async fn a_failing_or_panicking_action_is_reported_and_leaves_the_subscription_as_it_was() {
    let (cable, _) = cable_with(&Log::new(), |b| b);
    let (mut conn, sink) = open(&cable).await;
    send(&mut conn, &subscribe(ROOM1)).await.unwrap();
    sink.take();
    for (action, expected) in [("fail", "nope"), ("explode", "kaboom")] {
        let err = send(&mut conn, &message(ROOM1, &json!({"action": action})))
            .await
            .unwrap_err();
        match err {
            CommandError::ActionFailed {
                channel,
                action: a,
                message,
            } => {
                assert_eq!(channel, "ChatChannel");
                assert_eq!(a, action);
                assert_eq!(message, expected);
            }
            other => panic!("{other:?}"),
        }
        assert!(sink.take().is_empty());
    }
    cable
        .broadcast("room:1", &json!("still streaming"))
        .await
        .unwrap();
    assert_eq!(sink.take(), vec![data(ROOM1, r#""still streaming""#)]);
    assert_alive(&mut conn, &sink, "fine").await;
}

// ---------------------------------------------------------------------------------------
// Duplicate and unknown subscriptions

#[tokio::test]
async fn a_duplicate_subscribe_is_ignored() {
    let log = Log::new();
    let (cable, pubsub) = cable_with(&log, |b| b);
    let (mut conn, sink) = open(&cable).await;
    send(&mut conn, &subscribe(ROOM1)).await.unwrap();
    let err = send(&mut conn, &subscribe(ROOM1)).await.unwrap_err();
    assert!(
        matches!(&err, CommandError::AlreadySubscribed(id) if id == ROOM1),
        "{err:?}"
    );
    assert_eq!(sink.take(), vec![ROOM1_CONFIRM], "no second confirmation");
    assert_eq!(
        log.count(&format!("subscribed:{ROOM1}")),
        1,
        "subscribed ran once"
    );
    assert_eq!(pubsub.local_count("room:1"), 1);
    cable.broadcast("room:1", &json!("once")).await.unwrap();
    assert_eq!(sink.take(), vec![data(ROOM1, r#""once""#)]);
}

#[tokio::test]
async fn an_unknown_channel_is_refused_without_any_frame() {
    let (cable, _) = cable_with(&Log::new(), |b| b);
    let (mut conn, sink) = open(&cable).await;
    for channel in [
        "NopeChannel",
        "String",
        "Kernel",
        "chatchannel",
        "ActionCable::Channel::Base",
        "ApplicationCable::Channel",
        "",
    ] {
        let id = json!({"channel": channel}).to_string();
        let err = send(&mut conn, &subscribe(&id)).await.unwrap_err();
        assert!(
            matches!(&err, CommandError::UnknownChannel(c) if c == channel),
            "{channel}: {err:?}"
        );
        assert!(sink.take().is_empty(), "{channel}");
        assert_eq!(err.kind(), "unknown_channel");
    }
    assert_eq!(
        conn.subscription_identifiers().collect::<Vec<_>>(),
        vec![ECHO_ID]
    );
    assert_alive(&mut conn, &sink, "still").await;
}

#[tokio::test]
async fn a_message_or_unsubscribe_for_an_unknown_identifier_is_refused() {
    let (cable, _) = cable_with(&Log::new(), |b| b);
    let (mut conn, sink) = open(&cable).await;
    send(&mut conn, &subscribe(ROOM1)).await.unwrap();
    sink.take();
    // A different raw string is a different identifier.
    let spaced = r#"{"channel": "ChatChannel", "room": "1"}"#;
    for id in [r#"{"channel":"ChatChannel","room":"9"}"#, spaced] {
        let err = send(&mut conn, &message(id, &json!({"action": "echo"})))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, CommandError::UnknownSubscription(i) if i == id),
            "{err:?}"
        );
        let err = send(&mut conn, &unsubscribe(id)).await.unwrap_err();
        assert!(
            matches!(&err, CommandError::UnknownSubscription(i) if i == id),
            "{err:?}"
        );
    }
    assert!(sink.take().is_empty());
    assert_alive(&mut conn, &sink, "alive").await;
}

#[tokio::test]
async fn the_subscription_limit_refuses_further_subscribes_without_a_frame() {
    let pubsub = Arc::new(InMemory::new());
    let cable = base(&pubsub, &Log::new())
        .config(CableConfig {
            max_subscriptions: 2,
            ..CableConfig::default()
        })
        .build();
    let (mut conn, sink) = open(&cable).await; // EchoChannel is #1
    send(&mut conn, &subscribe(ROOM1)).await.unwrap();
    let room2 = r#"{"channel":"ChatChannel","room":"2"}"#;
    let err = send(&mut conn, &subscribe(room2)).await.unwrap_err();
    assert!(
        matches!(err, CommandError::TooManySubscriptions(2)),
        "{err:?}"
    );
    assert_eq!(sink.take(), vec![ROOM1_CONFIRM]);
    assert_eq!(pubsub.local_count("room:2"), 0);
    // Freeing a slot allows it.
    send(&mut conn, &unsubscribe(ROOM1)).await.unwrap();
    send(&mut conn, &subscribe(room2)).await.unwrap();
    assert_eq!(sink.take(), vec![confirm(room2)]);
}

// ---------------------------------------------------------------------------------------
// Unsubscribe

#[tokio::test]
async fn unsubscribe_runs_unsubscribed_stops_streams_sends_nothing_and_allows_resubscribe() {
    let log = Log::new();
    let (cable, pubsub) = cable_with(&log, |b| b);
    let (mut conn, sink) = open(&cable).await;
    send(&mut conn, &subscribe(ROOM1)).await.unwrap();
    send(
        &mut conn,
        &message(ROOM1, &json!({"action": "follow", "stream": "news"})),
    )
    .await
    .unwrap();
    sink.take();
    log.take();

    send(&mut conn, &unsubscribe(ROOM1)).await.unwrap();
    assert!(sink.take().is_empty(), "no unsubscription frame");
    assert_eq!(
        log.take(),
        vec![format!("unsubscribed:{ROOM1} streams=news,room:1")],
        "unsubscribed ran, before its streams stopped"
    );
    assert_eq!(pubsub.local_count("room:1"), 0);
    assert_eq!(pubsub.local_count("news"), 0);
    cable.broadcast("room:1", &json!("gone")).await.unwrap();
    assert!(sink.take().is_empty());
    let err = send(&mut conn, &message(ROOM1, &json!({"action": "echo"})))
        .await
        .unwrap_err();
    assert!(
        matches!(err, CommandError::UnknownSubscription(_)),
        "{err:?}"
    );
    let err = send(&mut conn, &unsubscribe(ROOM1)).await.unwrap_err();
    assert!(
        matches!(err, CommandError::UnknownSubscription(_)),
        "{err:?}"
    );

    // Re-subscribing is allowed and confirmed again.
    send(&mut conn, &subscribe(ROOM1)).await.unwrap();
    assert_eq!(sink.take(), vec![ROOM1_CONFIRM]);
    cable.broadcast("room:1", &json!("back")).await.unwrap();
    assert_eq!(sink.take(), vec![data(ROOM1, r#""back""#)]);
    assert_eq!(
        pubsub.local_count("news"),
        0,
        "the fresh subscription starts clean"
    );
}

// ---------------------------------------------------------------------------------------
// Reject

/// Transmits, streams `forbidden`, schedules a timer, then rejects.
#[derive(Clone)]
struct ForbiddenChannel {
    log: Log,
}

impl Channel for ForbiddenChannel {
    const NAME: &'static str = "ForbiddenChannel";
    type Action = EchoAction;
    const PERIODICALLY: &'static [(&'static str, Duration)] = &[("tick", Duration::from_secs(1))];

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        self.log.push("subscribed");
        ctx.transmit("before reject");
        ctx.stream_from("forbidden");
        ctx.periodically("dyn_tick", Duration::from_secs(1));
        // Logged, not asserted here: a panic in `subscribed` rejects too.
        self.log.push(format!("is_rejected:{}", ctx.is_rejected()));
        ctx.reject();
        self.log.push(format!("is_rejected:{}", ctx.is_rejected()));
        Ok(())
    }

    async fn unsubscribed(&mut self, ctx: &mut ChannelContext<'_>) {
        let streams: Vec<&str> = ctx.streams().collect();
        self.log
            .push(format!("unsubscribed streams={}", streams.join(",")));
    }

    async fn perform(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        _: EchoAction,
    ) -> Result<(), ChannelError> {
        self.log.push("perform:echo");
        ctx.transmit("should never happen");
        Ok(())
    }

    async fn periodic(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        timer: &'static str,
    ) -> Result<(), ChannelError> {
        self.log.push(format!("timer:{timer}"));
        ctx.transmit("should never happen");
        Ok(())
    }
}

#[tokio::test]
async fn reject_in_subscribed() {
    let log = Log::new();
    let l = log.clone();
    let (cable, pubsub) = cable_with(&Log::new(), |b| {
        b.channel_with(move || ForbiddenChannel { log: l.clone() })
    });
    let sink = RecordingSink::mirrored(&log);
    let mut conn = cable.connection(sink.sink(), Identifiers::new());
    conn.open().await;
    send(&mut conn, &subscribe(ECHO_ID)).await.unwrap();
    sink.take();
    log.take();
    let id = r#"{"channel":"ForbiddenChannel"}"#;

    send(&mut conn, &subscribe(id)).await.unwrap();
    let reject_frame =
        r#"{"identifier":"{\"channel\":\"ForbiddenChannel\"}","type":"reject_subscription"}"#;
    assert_eq!(
        sink.take(),
        vec![
            r#"{"identifier":"{\"channel\":\"ForbiddenChannel\"}","message":"before reject"}"#,
            reject_frame,
        ]
    );
    // unsubscribed ran (with the stream still listed), before the rejection was sent.
    assert_eq!(
        log.take(),
        vec![
            "subscribed".to_owned(),
            format!(
                "frame:{}",
                r#"{"identifier":"{\"channel\":\"ForbiddenChannel\"}","message":"before reject"}"#
            ),
            "is_rejected:false".to_owned(),
            "is_rejected:true".to_owned(),
            "unsubscribed streams=forbidden".to_owned(),
            format!("frame:{reject_frame}"),
        ]
    );
    // Its stream is gone and never delivers; no timers run.
    assert_eq!(pubsub.local_count("forbidden"), 0);
    cable
        .broadcast("forbidden", &json!("secret"))
        .await
        .unwrap();
    assert!(sink.take().is_empty());
    assert_eq!(conn.next_timer_due(), None);
    assert_eq!(
        conn.run_periodic_timers(Instant::now() + Duration::from_secs(60))
            .await,
        0
    );
    assert_eq!(
        conn.subscription_identifiers().collect::<Vec<_>>(),
        vec![ECHO_ID]
    );

    // A message to it is an unknown subscription.
    let err = send(&mut conn, &message(id, &json!({"action": "echo"})))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CommandError::UnknownSubscription(i) if i == id),
        "{err:?}"
    );
    assert!(sink.take().is_empty());

    // The same identifier can subscribe again (and is rejected again).
    log.take();
    send(&mut conn, &subscribe(id)).await.unwrap();
    assert_eq!(sink.take().last().unwrap(), reject_frame);
    assert_eq!(log.count("subscribed"), 1);
    assert_alive(&mut conn, &sink, "alive").await;
}

#[tokio::test]
async fn add_subscription_reports_the_rejection() {
    let log = Log::new();
    let (cable, _) = cable_with(&log, |b| b);
    let (mut conn, sink) = open(&cable).await;
    let outcome = conn
        .add_subscription(
            r#"{"channel":"ForbiddenChannel"}"#,
            ForbiddenChannel { log: log.clone() },
        )
        .await
        .unwrap();
    assert_eq!(outcome, keayl_cable::SubscribeOutcome::Rejected);
    assert_eq!(
        sink.take().last().unwrap(),
        r#"{"identifier":"{\"channel\":\"ForbiddenChannel\"}","type":"reject_subscription"}"#
    );
}

/// `subscribed` streams, then fails (`Err`) or panics, depending on `panic`.
#[derive(Clone)]
struct BrokenChannel {
    panic: bool,
    log: Log,
}

impl Channel for BrokenChannel {
    const NAME: &'static str = "BrokenChannel";
    type Action = EchoAction;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        self.log.push("subscribed");
        ctx.stream_from("broken");
        if self.panic {
            panic!("subscribed exploded");
        }
        Err(ChannelError::msg("database down"))
    }

    async fn unsubscribed(&mut self, _ctx: &mut ChannelContext<'_>) {
        self.log.push("unsubscribed");
    }
}

async fn broken_subscribed_is_rejected_and_forgotten(panic: bool) {
    let log = Log::new();
    let l = log.clone();
    let name = "BrokenChannel";
    let (cable, pubsub) = cable_with(&Log::new(), |b| {
        b.channel_with(move || BrokenChannel {
            panic,
            log: l.clone(),
        })
    });
    let (mut conn, sink) = open(&cable).await;
    let id = json!({"channel": name}).to_string();
    for round in 0..2 {
        send(&mut conn, &subscribe(&id)).await.unwrap();
        assert_eq!(sink.take(), vec![reject(&id)], "round {round}");
        assert_eq!(
            log.take(),
            vec!["subscribed", "unsubscribed"],
            "round {round}"
        );
        assert_eq!(pubsub.local_count("broken"), 0);
        let err = send(&mut conn, &message(&id, &json!({"action": "echo"})))
            .await
            .unwrap_err();
        assert!(
            matches!(err, CommandError::UnknownSubscription(_)),
            "{err:?}"
        );
    }
    cable.broadcast("broken", &json!("x")).await.unwrap();
    assert!(sink.take().is_empty());
    assert_alive(&mut conn, &sink, "alive").await;
}

#[tokio::test]
async fn subscribed_returning_err_rejects_and_forgets_the_subscription() {
    broken_subscribed_is_rejected_and_forgotten(false).await;
}

#[tokio::test]
async fn subscribed_panicking_rejects_and_forgets_the_subscription() {
    broken_subscribed_is_rejected_and_forgotten(true).await;
}

// ---------------------------------------------------------------------------------------
// Coders

/// Not a JSON passthrough: decodes any payload as text and upper-cases it; payloads that
/// start with `!` fail to decode.
#[derive(Debug)]
struct ShoutCoder;

impl Coder for ShoutCoder {
    fn encode(&self, value: &Value) -> Result<Bytes, CoderError> {
        Ok(Bytes::from(value.as_str().unwrap_or_default().to_owned()))
    }
    fn decode(&self, bytes: &[u8]) -> Result<Value, CoderError> {
        let text = std::str::from_utf8(bytes).map_err(|e| CoderError(e.to_string()))?;
        if text.starts_with('!') {
            return Err(CoderError("refused".into()));
        }
        Ok(Value::String(text.to_uppercase()))
    }
}

#[derive(Default)]
struct CoderChannel;

impl Channel for CoderChannel {
    const NAME: &'static str = "CoderChannel";
    type Action = keayl_cable::NoActions;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        ctx.stream_from_with_coder("shout", Arc::new(ShoutCoder));
        ctx.stream_from_with_coder("json", Arc::new(JsonCoder));
        Ok(())
    }
}

#[tokio::test]
async fn a_custom_coder_decodes_what_the_client_receives() {
    let (cable, _) = cable_with(&Log::new(), |b| b.channel::<CoderChannel>());
    let (mut conn, sink) = open(&cable).await;
    let id = r#"{"channel":"CoderChannel"}"#;
    send(&mut conn, &subscribe(id)).await.unwrap();
    assert_eq!(sink.take(), vec![confirm(id)]);

    let encoded = ShoutCoder.encode(&json!("hello wörld")).unwrap();
    cable.broadcast_raw("shout", encoded).await.unwrap();
    cable
        .broadcast_raw("shout", Bytes::from_static(b"!undecodable"))
        .await
        .unwrap();
    cable
        .broadcast_raw("shout", Bytes::from_static(b"again"))
        .await
        .unwrap();
    assert_eq!(
        sink.take(),
        vec![data(id, r#""HELLO WÖRLD""#), data(id, r#""AGAIN""#)],
        "decode errors are dropped, later messages still flow"
    );

    // JsonCoder: JSON round trip; non-JSON payloads dropped.
    let encoded = JsonCoder.encode(&json!({"k": [1, 2]})).unwrap();
    assert_eq!(&encoded[..], br#"{"k":[1,2]}"#);
    assert_eq!(JsonCoder.decode(&encoded).unwrap(), json!({"k": [1, 2]}));
    assert!(JsonCoder.is_json_passthrough());
    assert!(!ShoutCoder.is_json_passthrough());
    cable.broadcast_raw("json", encoded).await.unwrap();
    cable
        .broadcast_raw("json", Bytes::from_static(b"{oops"))
        .await
        .unwrap();
    assert_eq!(sink.take(), vec![data(id, r#"{"k":[1,2]}"#)]);
}

// ---------------------------------------------------------------------------------------
// Periodic timers

/// `tick` every second from `PERIODICALLY`, `beat` every 2 s from `ctx.periodically`, and
/// a zero-interval timer that must be ignored. Each transmits its own count.
#[derive(Default)]
struct TimerChannel {
    ticks: u32,
    beats: u32,
}

impl Channel for TimerChannel {
    const NAME: &'static str = "TimerChannel";
    type Action = EchoAction;
    const PERIODICALLY: &'static [(&'static str, Duration)] =
        &[("tick", Duration::from_secs(1)), ("never", Duration::ZERO)];

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        if ctx.param_str("beat").is_some() {
            ctx.periodically("beat", Duration::from_secs(2));
        }
        ctx.periodically("zero", Duration::ZERO);
        Ok(())
    }

    async fn perform(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        _: EchoAction,
    ) -> Result<(), ChannelError> {
        ctx.transmit(json!({"unexpected": "echo"}));
        Ok(())
    }

    async fn periodic(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        timer: &'static str,
    ) -> Result<(), ChannelError> {
        match timer {
            "tick" => {
                self.ticks += 1;
                ctx.transmit(json!({"tick": self.ticks}));
            }
            "beat" => {
                self.beats += 1;
                ctx.transmit(json!({"beat": self.beats}));
            }
            other => ctx.transmit(json!({"unexpected": other})),
        }
        Ok(())
    }
}

const TIMER_ID: &str = r#"{"channel":"TimerChannel"}"#;

#[tokio::test(start_paused = true)]
async fn periodically_timers_fire_every_interval_first_after_one_interval() {
    let (cable, _) = cable_with(&Log::new(), |b| b.channel::<TimerChannel>());
    let (mut conn, sink) = open(&cable).await;
    assert_eq!(conn.next_timer_due(), None);
    let t0 = Instant::now();
    send(&mut conn, &subscribe(TIMER_ID)).await.unwrap();
    assert_eq!(sink.take(), vec![confirm(TIMER_ID)]);
    assert_eq!(conn.next_timer_due(), Some(t0 + Duration::from_secs(1)));

    // Not due yet.
    assert_eq!(conn.run_periodic_timers(Instant::now()).await, 0);
    tokio::time::advance(Duration::from_millis(999)).await;
    assert_eq!(conn.run_periodic_timers(Instant::now()).await, 0);
    assert!(sink.take().is_empty());

    for n in 1..=3 {
        tokio::time::advance(Duration::from_millis(if n == 1 { 1 } else { 1000 })).await;
        assert_eq!(conn.run_periodic_timers(Instant::now()).await, 1);
        assert_eq!(
            sink.take(),
            vec![data(TIMER_ID, &format!(r#"{{"tick":{n}}}"#))]
        );
        assert_eq!(conn.next_timer_due(), Some(t0 + Duration::from_secs(n + 1)));
    }
    // A timer's name is not a client-callable action.
    let err = send(&mut conn, &message(TIMER_ID, &json!({"action": "tick"})))
        .await
        .unwrap_err();
    assert!(matches!(err, CommandError::InvalidAction { .. }), "{err:?}");
    assert!(sink.take().is_empty());

    // Unsubscribe stops the timers.
    send(&mut conn, &unsubscribe(TIMER_ID)).await.unwrap();
    assert_eq!(conn.next_timer_due(), None);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(conn.run_periodic_timers(Instant::now()).await, 0);
    assert!(sink.take().is_empty());
}

#[tokio::test(start_paused = true)]
async fn ctx_periodically_registers_a_timer_and_zero_intervals_are_ignored() {
    let (cable, _) = cable_with(&Log::new(), |b| b.channel::<TimerChannel>());
    let (mut conn, sink) = open(&cable).await;
    let id = r#"{"channel":"TimerChannel","beat":"yes"}"#;
    send(&mut conn, &subscribe(id)).await.unwrap();
    sink.take();
    let t0 = Instant::now();
    let mut got = Vec::new();
    for _ in 0..4 {
        tokio::time::advance(Duration::from_secs(1)).await;
        let fired = conn.run_periodic_timers(Instant::now()).await;
        let mut frames = sink.take();
        assert_eq!(fired, frames.len());
        // Timers due at the same instant may fire in any order.
        frames.sort();
        got.push(frames);
    }
    assert_eq!(
        got,
        vec![
            vec![data(id, r#"{"tick":1}"#)],
            vec![data(id, r#"{"beat":1}"#), data(id, r#"{"tick":2}"#)],
            vec![data(id, r#"{"tick":3}"#)],
            vec![data(id, r#"{"beat":2}"#), data(id, r#"{"tick":4}"#)],
        ]
    );
    assert_eq!(conn.next_timer_due(), Some(t0 + Duration::from_secs(5)));
    // Disconnect stops them too.
    conn.disconnect().await;
    assert_eq!(conn.next_timer_due(), None);
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(conn.run_periodic_timers(Instant::now()).await, 0);
}

#[tokio::test(start_paused = true)]
async fn a_late_timer_run_fires_once_not_a_burst() {
    let (cable, _) = cable_with(&Log::new(), |b| b.channel::<TimerChannel>());
    let (mut conn, sink) = open(&cable).await;
    send(&mut conn, &subscribe(TIMER_ID)).await.unwrap();
    sink.take();
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(conn.run_periodic_timers(Instant::now()).await, 1);
    assert_eq!(sink.take(), vec![data(TIMER_ID, r#"{"tick":1}"#)]);
    let due = conn.next_timer_due().unwrap();
    assert!(due > Instant::now(), "next run is in the future");
}

#[tokio::test(start_paused = true)]
async fn timers_of_several_subscriptions_are_independent() {
    let (cable, _) = cable_with(&Log::new(), |b| b.channel::<TimerChannel>());
    let (mut conn, sink) = open(&cable).await;
    let other = r#"{"channel":"TimerChannel","n":2}"#;
    send(&mut conn, &subscribe(TIMER_ID)).await.unwrap();
    tokio::time::advance(Duration::from_millis(500)).await;
    send(&mut conn, &subscribe(other)).await.unwrap();
    sink.take();
    tokio::time::advance(Duration::from_millis(500)).await;
    assert_eq!(conn.run_periodic_timers(Instant::now()).await, 1);
    assert_eq!(sink.take(), vec![data(TIMER_ID, r#"{"tick":1}"#)]);
    tokio::time::advance(Duration::from_millis(500)).await;
    assert_eq!(conn.run_periodic_timers(Instant::now()).await, 1);
    assert_eq!(sink.take(), vec![data(other, r#"{"tick":1}"#)]);
    send(&mut conn, &unsubscribe(TIMER_ID)).await.unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(conn.run_periodic_timers(Instant::now()).await, 1);
    assert_eq!(sink.take(), vec![data(other, r#"{"tick":2}"#)]);
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

#[tokio::test]
async fn connection_perform_dispatches_like_a_message() {
    let (cable, _) = cable_with(&Log::new(), |b| b.channel::<ReceiveChannel>());
    let (mut conn, sink) = open(&cable).await;
    let id = r#"{"channel":"ReceiveChannel"}"#;
    send(&mut conn, &subscribe(id)).await.unwrap();
    sink.take();
    let d: Data = serde_json::from_value(json!({"text": "hi"})).unwrap();
    conn.perform(id, None, &d).await.unwrap();
    conn.perform(id, Some(""), &d).await.unwrap();
    assert_eq!(
        sink.take(),
        vec![
            data(id, r#"{"action":"receive","data":{"text":"hi"}}"#),
            data(id, r#"{"action":"receive","data":{"text":"hi"}}"#),
        ]
    );
    let err = conn.perform(id, Some("other"), &d).await.unwrap_err();
    assert!(matches!(err, CommandError::InvalidAction { .. }), "{err:?}");
    let err = conn.perform("nope", None, &d).await.unwrap_err();
    assert!(
        matches!(err, CommandError::UnknownSubscription(_)),
        "{err:?}"
    );
    assert!(sink.take().is_empty());
}

/// `unsubscribed` panics after logging.
#[derive(Clone)]
struct GrumpyChannel {
    log: Log,
}

impl Channel for GrumpyChannel {
    const NAME: &'static str = "GrumpyChannel";
    type Action = keayl_cable::NoActions;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        ctx.stream_from("grumpy");
        Ok(())
    }

    async fn unsubscribed(&mut self, _ctx: &mut ChannelContext<'_>) {
        self.log.push("unsubscribed");
        panic!("unsubscribed exploded");
    }
}

#[tokio::test]
async fn a_panicking_unsubscribed_still_stops_the_streams_and_is_not_fatal() {
    let log = Log::new();
    let l = log.clone();
    let (cable, pubsub) = cable_with(&Log::new(), |b| {
        b.channel_with(move || GrumpyChannel { log: l.clone() })
    });
    let (mut conn, sink) = open(&cable).await;
    let id = r#"{"channel":"GrumpyChannel"}"#;
    send(&mut conn, &subscribe(id)).await.unwrap();
    sink.take();
    send(&mut conn, &unsubscribe(id)).await.unwrap();
    assert_eq!(log.take(), vec!["unsubscribed"]);
    assert_eq!(pubsub.local_count("grumpy"), 0);
    cable.broadcast("grumpy", &json!("x")).await.unwrap();
    assert!(sink.take().is_empty());
    assert_alive(&mut conn, &sink, "alive").await;
    // On disconnect too: the other subscriptions are still torn down.
    send(&mut conn, &subscribe(id)).await.unwrap();
    send(&mut conn, &subscribe(ROOM1)).await.unwrap();
    conn.disconnect().await;
    assert_eq!(log.take(), vec!["unsubscribed"]);
    assert_eq!(pubsub.local_count("grumpy"), 0);
    assert_eq!(pubsub.local_count("room:1"), 0);
}
