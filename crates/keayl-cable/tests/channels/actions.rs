//! Actions: transmit, broadcast_to, typed `perform`, `receive`, what is never callable.

use keayl_cable::channel::{Channel, ChannelContext, ChannelError, Data};
use keayl_cable::connection::{CommandError, Identifiers};
use serde_json::{Value, json};

use crate::common::*;
use crate::support::*;

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
