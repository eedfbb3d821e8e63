//! Every row of the malformed-input table (actioncable.md §3.6, plus §3.3–§3.5 and §10):
//! over `handle_frame` each returns the right error, sends **no frame**, and leaves the
//! connection and its subscriptions working (probed with an echo action after each).

mod common;

use std::sync::Arc;

use common::*;
use keayl_cable::Cable;
use keayl_cable::connection::{CommandError, Connection, Identifiers};
use keayl_cable::protocol::ProtocolError;
use keayl_cable::pubsub::InMemory;
use serde_json::json;

const ROOM1: &str = r#"{"channel":"ChatChannel","room":"1"}"#;

async fn open() -> (Connection, RecordingSink, Cable) {
    let cable = Cable::builder_shared(Arc::new(InMemory::new()))
        .channel::<EchoChannel>()
        .channel::<ChatChannel>()
        .build();
    let sink = RecordingSink::new();
    let mut conn = cable.connection(sink.sink(), Identifiers::new());
    conn.open().await;
    conn.handle_frame(subscribe(ECHO_ID).as_bytes())
        .await
        .unwrap();
    conn.handle_frame(subscribe(ROOM1).as_bytes())
        .await
        .unwrap();
    assert_eq!(
        sink.take(),
        vec![WELCOME.to_owned(), confirm(ECHO_ID), confirm(ROOM1)]
    );
    (conn, sink, cable)
}

/// Sends `frame`, expects the error of kind `kind`, no frame, and a working connection.
async fn check(
    conn: &mut Connection,
    sink: &RecordingSink,
    cable: &Cable,
    row: &str,
    frame: &[u8],
    kind: &str,
) {
    let err = match conn.handle_frame(frame).await {
        Ok(()) => panic!("{row}: accepted"),
        Err(e) => e,
    };
    assert_eq!(err.kind(), kind, "{row}: {err:?}");
    assert!(!err.to_string().is_empty());
    assert!(sink.events().is_empty(), "{row}: sent {:?}", sink.events());
    // The connection and its subscriptions still work.
    let (probe, answer) = echo_probe(row);
    conn.handle_frame(probe.as_bytes()).await.unwrap();
    cable.broadcast("room:1", &json!(row)).await.unwrap();
    assert_eq!(
        sink.take(),
        vec![answer, data(ROOM1, &json_str(row))],
        "{row}: connection no longer works"
    );
    assert_eq!(
        conn.subscription_identifiers().collect::<Vec<_>>(),
        vec![ECHO_ID, ROOM1],
        "{row}"
    );
}

fn deep(n: usize) -> String {
    format!("{}{}", "[".repeat(n), "]".repeat(n))
}

/// (row, frame, expected kind)
fn rows() -> Vec<(String, Vec<u8>, &'static str)> {
    let e = json_str(ECHO_ID);
    let mut rows: Vec<(String, Vec<u8>, &'static str)> = vec![
        // Not JSON.
        ("truncated JSON".into(), br#"{"command":"subscribe","#.to_vec(), "not_json"),
        ("plain text".into(), b"hello".to_vec(), "not_json"),
        ("empty frame".into(), b"".to_vec(), "not_json"),
        ("trailing garbage".into(), format!(r#"{{"command":"subscribe","identifier":{e}}} x"#).into_bytes(), "not_json"),
        ("invalid UTF-8".into(), vec![0xff, 0xfe, b'{', b'}'], "not_json"),
        ("binary-ish".into(), vec![0x00, 0x01, 0x02], "not_json"),
        // JSON but not an object.
        ("null".into(), b"null".to_vec(), "not_an_object"),
        ("array".into(), b"[]".to_vec(), "not_an_object"),
        ("number".into(), b"42".to_vec(), "not_an_object"),
        ("boolean".into(), b"true".to_vec(), "not_an_object"),
        ("JSON string \"subscribe\"".into(), br#""subscribe""#.to_vec(), "not_an_object"),
        // Missing / unknown / wrong-case command.
        ("no command".into(), format!(r#"{{"identifier":{e}}}"#).into_bytes(), "missing_command"),
        ("empty object".into(), b"{}".to_vec(), "missing_command"),
        ("null command".into(), format!(r#"{{"command":null,"identifier":{e}}}"#).into_bytes(), "missing_command"),
        ("unknown command".into(), format!(r#"{{"command":"dance","identifier":{e}}}"#).into_bytes(), "unknown_command"),
        ("wrong-case command".into(), format!(r#"{{"command":"Subscribe","identifier":{e}}}"#).into_bytes(), "unknown_command"),
        ("numeric command".into(), format!(r#"{{"command":5,"identifier":{e}}}"#).into_bytes(), "unknown_command"),
        ("AnyCable-only command".into(), format!(r#"{{"command":"history","identifier":{e}}}"#).into_bytes(), "unknown_command"),
        // subscribe without identifier.
        ("subscribe without identifier".into(), br#"{"command":"subscribe"}"#.to_vec(), "missing_identifier"),
        ("subscribe with null identifier".into(), br#"{"command":"subscribe","identifier":null}"#.to_vec(), "missing_identifier"),
        ("unsubscribe without identifier".into(), br#"{"command":"unsubscribe"}"#.to_vec(), "missing_identifier"),
        ("message without identifier".into(), br#"{"command":"message","data":"{\"action\":\"echo\"}"}"#.to_vec(), "missing_identifier"),
        // identifier is not a string.
        ("subscribe identifier is an object".into(), br#"{"command":"subscribe","identifier":{"channel":"EchoChannel"}}"#.to_vec(), "identifier_not_string"),
        ("message identifier is an object".into(), br#"{"command":"message","identifier":{"channel":"EchoChannel"},"data":"{\"action\":\"echo\"}"}"#.to_vec(), "identifier_not_string"),
        ("unsubscribe identifier is a number".into(), br#"{"command":"unsubscribe","identifier":5}"#.to_vec(), "identifier_not_string"),
        // identifier string is not JSON / not an object.
        ("identifier not JSON".into(), br#"{"command":"subscribe","identifier":"ChatChannel"}"#.to_vec(), "identifier_not_json"),
        ("identifier 42".into(), br#"{"command":"subscribe","identifier":"42"}"#.to_vec(), "identifier_not_object"),
        ("identifier array".into(), br#"{"command":"subscribe","identifier":"[\"ChatChannel\"]"}"#.to_vec(), "identifier_not_object"),
        ("identifier null".into(), br#"{"command":"subscribe","identifier":"null"}"#.to_vec(), "identifier_not_object"),
        ("identifier too deep".into(), subscribe(&deep(300)).into_bytes(), "too_deep"),
        // No / bad channel (§3.5).
        ("identifier {}".into(), subscribe("{}").into_bytes(), "missing_channel"),
        ("identifier without channel".into(), subscribe(r#"{"room":"1"}"#).into_bytes(), "missing_channel"),
        ("channel null".into(), subscribe(r#"{"channel":null}"#).into_bytes(), "missing_channel"),
        ("channel not a string".into(), subscribe(r#"{"channel":5}"#).into_bytes(), "channel_not_string"),
        ("unknown channel".into(), subscribe(r#"{"channel":"NopeChannel"}"#).into_bytes(), "unknown_channel"),
        ("String channel".into(), subscribe(r#"{"channel":"String"}"#).into_bytes(), "unknown_channel"),
        ("Base channel".into(), subscribe(r#"{"channel":"ActionCable::Channel::Base"}"#).into_bytes(), "unknown_channel"),
        // Duplicate subscribe (§3.3).
        ("duplicate subscribe".into(), subscribe(ECHO_ID).into_bytes(), "already_subscribed"),
        // message data problems.
        ("message without data".into(), format!(r#"{{"command":"message","identifier":{e}}}"#).into_bytes(), "missing_data"),
        ("message with null data".into(), format!(r#"{{"command":"message","identifier":{e},"data":null}}"#).into_bytes(), "missing_data"),
        ("data is an object".into(), format!(r#"{{"command":"message","identifier":{e},"data":{{"action":"echo"}}}}"#).into_bytes(), "data_not_string"),
        ("data decodes to an array".into(), format!(r#"{{"command":"message","identifier":{e},"data":"[1,2]"}}"#).into_bytes(), "data_not_object"),
        ("data decodes to a string".into(), format!(r#"{{"command":"message","identifier":{e},"data":"\"echo\""}}"#).into_bytes(), "data_not_object"),
        ("data not JSON".into(), format!(r#"{{"command":"message","identifier":{e},"data":"{{not json"}}"#).into_bytes(), "data_not_json"),
        ("data too deep".into(), message(ECHO_ID, &json!("placeholder")).replace(r#"\"placeholder\""#, &deep(300)).into_bytes(), "too_deep"),
        ("action is a number".into(), message(ECHO_ID, &json!({"action": 5})).into_bytes(), "action_not_string"),
        ("action is an array".into(), message(ECHO_ID, &json!({"action": ["echo"]})).into_bytes(), "action_not_string"),
        ("action is false".into(), message(ECHO_ID, &json!({"action": false})).into_bytes(), "action_not_string"),
        // Unknown subscription / action.
        ("message to an identifier never subscribed".into(), message(r#"{"channel":"EchoChannel","x":1}"#, &json!({"action": "echo"})).into_bytes(), "unknown_subscription"),
        ("unsubscribe an identifier never subscribed".into(), unsubscribe(r#"{"channel":"NopeChannel"}"#).into_bytes(), "unknown_subscription"),
        ("message with a garbage identifier".into(), message("not json at all", &json!({"action": "echo"})).into_bytes(), "unknown_subscription"),
        ("unknown action".into(), message(ECHO_ID, &json!({"action": "dance"})).into_bytes(), "invalid_action"),
        ("action data of the wrong shape".into(), message(ROOM1, &json!({"action": "follow", "stream": {"a": 1}})).into_bytes(), "invalid_action"),
        ("action as a number".into(), message(ECHO_ID, &json!({"action": 7})).into_bytes(), "action_not_string"),
        ("no action and no receive".into(), message(ECHO_ID, &json!({"text": "x"})).into_bytes(), "unknown_action"),
        ("framework method as action".into(), message(ECHO_ID, &json!({"action": "stream_from"})).into_bytes(), "invalid_action"),
    ];
    // A command name spelled with a JSON escape is still that command.
    rows.push((
        "subscribe identifier with a JSON escape in the command".into(),
        format!(r#"{{"command":"subscrib\u0065","identifier":{e}}}"#).into_bytes(),
        "already_subscribed",
    ));
    rows
}

#[tokio::test]
async fn every_malformed_row_is_refused_without_a_frame_and_the_connection_keeps_working() {
    let (mut conn, sink, cable) = open().await;
    let rows = rows();
    assert!(rows.len() > 50);
    for (row, frame, kind) in &rows {
        check(&mut conn, &sink, &cable, row, frame, kind).await;
    }
}

#[tokio::test]
async fn protocol_errors_are_wrapped_and_carry_details() {
    let (mut conn, sink, _cable) = open().await;
    let err = conn
        .handle_frame(br#"{"command":"dance","identifier":"x"}"#)
        .await
        .unwrap_err();
    match err {
        CommandError::Protocol(ProtocolError::UnknownCommand { command }) => {
            assert_eq!(command, "dance")
        }
        other => panic!("{other:?}"),
    }
    let err = conn.handle_frame(b"[]").await.unwrap_err();
    assert!(
        matches!(
            err,
            CommandError::Protocol(ProtocolError::NotAnObject { found: "array" })
        ),
        "{err:?}"
    );
    let err = conn
        .handle_frame(subscribe(r#"{"channel":"NopeChannel"}"#).as_bytes())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CommandError::UnknownChannel(c) if c == "NopeChannel"),
        "{err:?}"
    );
    assert!(sink.events().is_empty());
}

#[tokio::test]
async fn errors_interleaved_with_commands_do_not_disturb_their_order() {
    let (mut conn, sink, cable) = open().await;
    let room2 = r#"{"channel":"ChatChannel","room":"2"}"#;
    let frames: Vec<Vec<u8>> = vec![
        b"garbage".to_vec(),
        subscribe(room2).into_bytes(),
        b"null".to_vec(),
        message(room2, &json!({"action": "echo", "i": 1})).into_bytes(),
        message(room2, &json!({"action": 1})).into_bytes(),
        message(room2, &json!({"action": "echo", "i": 2})).into_bytes(),
        unsubscribe(room2).into_bytes(),
        message(room2, &json!({"action": "echo", "i": 3})).into_bytes(),
    ];
    let mut errors = 0;
    for f in &frames {
        if conn.handle_frame(f).await.is_err() {
            errors += 1;
        }
    }
    assert_eq!(errors, 4);
    assert_eq!(
        sink.take(),
        vec![
            confirm(room2),
            data(room2, r#"{"action":"echo","i":1}"#),
            data(room2, r#"{"action":"echo","i":2}"#),
        ]
    );
    cable.broadcast("room:2", &json!("x")).await.unwrap();
    assert!(sink.take().is_empty());
}
