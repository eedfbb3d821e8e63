//! Unit and property tests for the wire codec. Inputs are taken from the specification's
//! malformed-input table (§3.6) and the Rails 6.1 transcripts in `shared/protocol/rails-transcripts`.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

const ROOM1: &str = r#"{"channel":"ChatChannel","room":"1"}"#;

fn err(frame: &str) -> ProtocolError {
    match parse_command(frame.as_bytes()) {
        Ok(command) => panic!("{frame:?} parsed as {command:?}"),
        Err(e) => e,
    }
}

fn ok(frame: &str) -> Command {
    match parse_command(frame.as_bytes()) {
        Ok(command) => command,
        Err(e) => panic!("{frame:?} failed: {e}"),
    }
}

// ---------------------------------------------------------------------------------------
// Well-formed commands (transcripts).

#[test]
fn subscribe_from_transcript() {
    let command = ok(
        r#"{"command":"subscribe","identifier":"{\"channel\":\"ChatChannel\",\"room\":\"1\"}"}"#,
    );
    assert_eq!(command.name(), "subscribe");
    assert_eq!(command.identifier(), Some(ROOM1));
    let Command::Subscribe {
        identifier,
        channel,
        params,
        ..
    } = command
    else {
        panic!("not a subscribe")
    };
    assert_eq!(identifier, ROOM1);
    assert_eq!(channel, "ChatChannel");
    assert_eq!(
        Value::Object(params),
        json!({"channel": "ChatChannel", "room": "1"})
    );
}

#[test]
fn unsubscribe_from_transcript() {
    assert_eq!(
        ok(
            r#"{"command":"unsubscribe","identifier":"{\"channel\":\"ChatChannel\",\"room\":\"1\"}"}"#
        ),
        Command::Unsubscribe {
            identifier: ROOM1.to_owned()
        }
    );
}

#[test]
fn message_from_transcript() {
    let command = ok(
        r#"{"command":"message","identifier":"{\"channel\":\"ChatChannel\",\"room\":\"1\"}","data":"{\"action\":\"speak\",\"message\":\"hi\"}"}"#,
    );
    let Command::Message {
        identifier,
        action,
        data,
    } = command
    else {
        panic!("not a message")
    };
    assert_eq!(identifier, ROOM1);
    assert_eq!(action.as_deref(), Some("speak"));
    // The action stays in the data handed to the channel.
    assert_eq!(
        Value::Object(data.into_map()),
        json!({"action": "speak", "message": "hi"})
    );
}

#[test]
fn echo_json_encoding_payload_is_decoded_with_types() {
    let frame = r#"{"command":"message","identifier":"{\"channel\":\"ChatChannel\",\"room\":\"1\"}","data":"{\"action\":\"echo\",\"html\":\"<b>&'\\\"</b>\",\"ls\":\"\u2028\u2029\",\"uni\":\"hé 😀\",\"f\":1.0,\"e\":1e20,\"big\":12345678901234567890,\"neg0\":-0.0,\"n\":null,\"t\":true,\"arr\":[1,\"2\",{\"k\":[]}],\"esc\":\"\\u0041\\/\"}"}"#;
    let Command::Message { action, data, .. } = ok(frame) else {
        panic!("not a message")
    };
    assert_eq!(action.as_deref(), Some("echo"));
    assert_eq!(data["html"], "<b>&'\"</b>");
    assert_eq!(data["ls"], "\u{2028}\u{2029}");
    assert_eq!(data["uni"], "hé 😀");
    assert_eq!(data["big"], json!(12345678901234567890u64));
    assert_eq!(data["n"], Value::Null);
    assert_eq!(data["arr"], json!([1, "2", {"k": []}]));
    assert_eq!(data["esc"], "A/");
}

#[test]
fn identifier_variants_are_distinct_raw_strings() {
    // TX identifier_variant_duplicate: four strings, four subscriptions.
    let variants = [
        r#"{"command":"subscribe","identifier":"{\"channel\":\"ChatChannel\",\"room\":\"1\"}"}"#,
        r#"{"command":"subscribe","identifier":"{\"room\":\"1\",\"channel\":\"ChatChannel\"}"}"#,
        r#"{"command":"subscribe","identifier":"{\"channel\": \"ChatChannel\", \"room\": \"1\"}"}"#,
        r#"{"command":"subscribe","identifier":"{\"channel\":\"ChatChannel\",\"room\":1}"}"#,
    ];
    let expected = [
        r#"{"channel":"ChatChannel","room":"1"}"#,
        r#"{"room":"1","channel":"ChatChannel"}"#,
        r#"{"channel": "ChatChannel", "room": "1"}"#,
        r#"{"channel":"ChatChannel","room":1}"#,
    ];
    let mut seen = std::collections::HashSet::new();
    for (frame, expected) in variants.iter().zip(expected) {
        let Command::Subscribe {
            identifier,
            channel,
            params,
            ..
        } = ok(frame)
        else {
            panic!("not a subscribe")
        };
        assert_eq!(identifier, expected);
        assert_eq!(channel, "ChatChannel");
        assert!(seen.insert(identifier));
        // Number vs string survives in params.
        if expected.ends_with("1}") {
            assert_eq!(params["room"], json!(1));
        } else {
            assert_eq!(params["room"], json!("1"));
        }
    }
}

#[test]
fn escaped_identifier_characters_round_trip() {
    let Command::Subscribe { identifier, .. } =
        ok(r#"{"command":"subscribe","identifier":"{\"channel\":\"C\",\"q\":\"\\u003c\/\\\\\"}"}"#)
    else {
        panic!("not a subscribe")
    };
    // The raw identifier is the decoded outer string, inner escapes untouched.
    assert_eq!(identifier, r#"{"channel":"C","q":"\u003c/\\"}"#);
}

#[test]
fn command_key_order_and_unknown_keys_do_not_matter() {
    assert_eq!(
        ok(r#"{"identifier":"x","extra":[{"deep":[1,2,{}]}],"command":"unsubscribe"}"#),
        Command::Unsubscribe {
            identifier: "x".to_owned()
        }
    );
}

#[test]
fn duplicate_keys_last_wins() {
    assert_eq!(
        ok(r#"{"command":"subscribe","command":"unsubscribe","identifier":"a","identifier":"b"}"#),
        Command::Unsubscribe {
            identifier: "b".to_owned()
        }
    );
}

#[test]
fn escaped_command_name_matches() {
    assert_eq!(
        ok(r#"{"command":"unsubscrib\u0065","identifier":"x"}"#).name(),
        "unsubscribe"
    );
    assert_eq!(
        ok(r#"{"comm\u0061nd":"unsubscribe","identifier":"x"}"#).name(),
        "unsubscribe"
    );
}

#[test]
fn unsubscribe_and_message_accept_non_json_identifiers() {
    // Lookup is by raw string; an unparseable one is simply an unknown subscription.
    assert_eq!(
        ok(r#"{"command":"unsubscribe","identifier":"ChatChannel"}"#),
        Command::Unsubscribe {
            identifier: "ChatChannel".to_owned()
        }
    );
    let Command::Message { identifier, .. } =
        ok(r#"{"command":"message","identifier":"not json {","data":"{}"}"#)
    else {
        panic!("not a message")
    };
    assert_eq!(identifier, "not json {");
}

#[test]
fn blank_action_means_receive() {
    for data in [
        r#"{}"#,
        r#"{\"action\":null}"#,
        r#"{\"action\":\"\"}"#,
        r#"{\"action\":\"  \"}"#,
        r#"{\"message\":\"x\"}"#,
    ] {
        let frame = format!(r#"{{"command":"message","identifier":"i","data":"{data}"}}"#);
        let Command::Message { action, .. } = ok(&frame) else {
            panic!("not a message")
        };
        assert_eq!(action, None, "{data}");
    }
}

#[test]
fn action_is_case_sensitive_and_untrimmed() {
    let Command::Message { action, .. } =
        ok(r#"{"command":"message","identifier":"i","data":"{\"action\":\" Echo\"}"}"#)
    else {
        panic!("not a message")
    };
    assert_eq!(action.as_deref(), Some(" Echo"));
}

// ---------------------------------------------------------------------------------------
// §3.6 malformed input, one test per row, inputs from the table and the transcripts.

#[test]
fn row_not_json() {
    // TX malformed_json: truncated JSON, plain text, empty frame.
    for frame in [
        r#"{"command":"subscribe","#,
        "hello",
        "",
        "   ",
        "{} x",
        "{'a':1}",
    ] {
        let e = err(frame);
        assert!(
            matches!(e, ProtocolError::NotJson { .. }),
            "{frame:?}: {e:?}"
        );
        assert_eq!(e.kind(), "not_json");
    }
    // Invalid UTF-8 and truncated multi-byte sequences.
    for frame in [&b"\xff"[..], b"{\"command\":\"\xc3\"}", b"\xe2\x82"] {
        assert!(matches!(
            parse_command(frame),
            Err(ProtocolError::NotJson { .. })
        ));
    }
    // Starts like an array but is not JSON: still "not JSON", not "not an object".
    assert!(matches!(err("[1,2"), ProtocolError::NotJson { .. }));
}

#[test]
fn row_json_but_not_an_object() {
    // TX malformed_json: null, [], 42.
    for (frame, found) in [
        ("null", "null"),
        ("[]", "array"),
        ("42", "number"),
        ("-1.5e3", "number"),
        ("true", "boolean"),
        (" [ {\"command\":\"subscribe\"} ] ", "array"),
    ] {
        let e = err(frame);
        assert_eq!(e, ProtocolError::NotAnObject { found }, "{frame:?}");
        assert_eq!(e.kind(), "not_an_object");
    }
}

#[test]
fn row_json_string_subscribe() {
    // TX malformed_json: `"subscribe"`. Rails reports "unrecognized command" (String#[]
    // quirk); the accurate cause here is "not an object".
    assert_eq!(
        err(r#""subscribe""#),
        ProtocolError::NotAnObject { found: "string" }
    );
}

#[test]
fn row_missing_unknown_or_wrong_case_command() {
    // TX unknown_command.
    let e =
        err(r#"{"command":"dance","identifier":"{\"channel\":\"ChatChannel\",\"room\":\"1\"}"}"#);
    assert_eq!(
        e,
        ProtocolError::UnknownCommand {
            command: "dance".to_owned()
        }
    );
    assert_eq!(e.kind(), "unknown_command");

    let e = err(
        r#"{"identifier":"{\"channel\":\"ChatChannel\",\"room\":\"1\"}","data":"{\"action\":\"echo\"}"}"#,
    );
    assert_eq!(e, ProtocolError::MissingCommand);
    assert_eq!(e.kind(), "missing_command");
    assert_eq!(err(r#"{"command":null}"#), ProtocolError::MissingCommand);
    assert_eq!(err("{}"), ProtocolError::MissingCommand);

    assert_eq!(
        err(
            r#"{"command":"Subscribe","identifier":"{\"channel\":\"ChatChannel\",\"room\":\"3\"}"}"#
        ),
        ProtocolError::UnknownCommand {
            command: "Subscribe".to_owned()
        }
    );
    assert_eq!(
        err(r#"{"command":"subscribe ","identifier":"x"}"#),
        ProtocolError::UnknownCommand {
            command: "subscribe ".to_owned()
        }
    );
    // Non-string command: its raw JSON is reported.
    assert_eq!(
        err(r#"{"command":["subscribe"]}"#),
        ProtocolError::UnknownCommand {
            command: r#"["subscribe"]"#.to_owned()
        }
    );
    assert_eq!(
        err(r#"{"command":5}"#),
        ProtocolError::UnknownCommand {
            command: "5".to_owned()
        }
    );
}

#[test]
fn unknown_command_text_is_truncated() {
    let long = "é".repeat(200);
    let ProtocolError::UnknownCommand { command } = err(&format!(r#"{{"command":"{long}"}}"#))
    else {
        panic!("wrong error")
    };
    assert_eq!(command.chars().count(), ProtocolError::MAX_ECHOED_CHARS);
    let raw_array = format!("[{}]", "1,".repeat(100) + "1");
    let ProtocolError::UnknownCommand { command } = err(&format!(r#"{{"command":{raw_array}}}"#))
    else {
        panic!("wrong error")
    };
    assert_eq!(command.len(), ProtocolError::MAX_ECHOED_CHARS);
}

#[test]
fn row_subscribe_without_identifier() {
    // TX malformed_fields: {"command":"subscribe"}.
    let e = err(r#"{"command":"subscribe"}"#);
    assert_eq!(e, ProtocolError::MissingIdentifier);
    assert_eq!(e.kind(), "missing_identifier");
    assert_eq!(
        err(r#"{"command":"subscribe","identifier":null}"#),
        ProtocolError::MissingIdentifier
    );
    // TX malformed_fields: {"command":"unsubscribe"}.
    assert_eq!(
        err(r#"{"command":"unsubscribe"}"#),
        ProtocolError::MissingIdentifier
    );
    assert_eq!(
        err(r#"{"command":"message","data":"{}"}"#),
        ProtocolError::MissingIdentifier
    );
}

#[test]
fn row_identifier_is_an_object_not_a_string() {
    // TX identifier_not_json_string (subscribe) and malformed_fields (message).
    let e = err(r#"{"command":"subscribe","identifier":{"channel":"ChatChannel","room":"5"}}"#);
    assert_eq!(e, ProtocolError::IdentifierNotString { found: "object" });
    assert_eq!(e.kind(), "identifier_not_string");
    assert_eq!(
        err(
            r#"{"command":"message","identifier":{"channel":"ChatChannel","room":"1"},"data":"{\"action\":\"echo\"}"}"#
        ),
        ProtocolError::IdentifierNotString { found: "object" }
    );
    assert_eq!(
        err(r#"{"command":"unsubscribe","identifier":{"channel":"ChatChannel"}}"#),
        ProtocolError::IdentifierNotString { found: "object" }
    );
    // TX identifier_not_json_string: "identifier":12.
    assert_eq!(
        err(r#"{"command":"subscribe","identifier":12}"#),
        ProtocolError::IdentifierNotString { found: "number" }
    );
    assert_eq!(
        err(r#"{"command":"unsubscribe","identifier":false}"#),
        ProtocolError::IdentifierNotString { found: "boolean" }
    );
}

#[test]
fn row_identifier_string_is_not_json() {
    // TX identifier_not_json_string: "ChatChannel".
    let e = err(r#"{"command":"subscribe","identifier":"ChatChannel"}"#);
    assert!(
        matches!(e, ProtocolError::IdentifierNotJson { .. }),
        "{e:?}"
    );
    assert_eq!(e.kind(), "identifier_not_json");
    assert!(matches!(
        err(r#"{"command":"subscribe","identifier":""}"#),
        ProtocolError::IdentifierNotJson { .. }
    ));
}

#[test]
fn row_identifier_json_is_not_an_object() {
    // TX identifier_not_json_string: "42", "[\"ChatChannel\"]", "null".
    for (identifier, found) in [
        (r#""42""#, "number"),
        (r#""[\"ChatChannel\"]""#, "array"),
        (r#""null""#, "null"),
        (r#""\"ChatChannel\"""#, "string"),
    ] {
        let e = err(&format!(
            r#"{{"command":"subscribe","identifier":{identifier}}}"#
        ));
        assert_eq!(
            e,
            ProtocolError::IdentifierNotObject { found },
            "{identifier}"
        );
        assert_eq!(e.kind(), "identifier_not_object");
    }
}

#[test]
fn row_identifier_without_channel() {
    // §3.5 / TX identifier_not_json_string: "{}" and "{\"room\":\"1\"}".
    for identifier in [
        r#""{}""#,
        r#""{\"room\":\"1\"}""#,
        r#""{\"channel\":null}""#,
    ] {
        let e = err(&format!(
            r#"{{"command":"subscribe","identifier":{identifier}}}"#
        ));
        assert_eq!(e, ProtocolError::MissingChannel, "{identifier}");
        assert_eq!(e.kind(), "missing_channel");
    }
    let e = err(r#"{"command":"subscribe","identifier":"{\"channel\":5}"}"#);
    assert_eq!(e, ProtocolError::ChannelNotString { found: "number" });
    assert_eq!(e.kind(), "channel_not_string");
}

#[test]
fn unknown_channel_names_still_parse() {
    // Whether a channel exists is the registry's business (§3.5), not the codec's.
    for channel in ["NopeChannel", "String", "chatchannel", ""] {
        let frame =
            format!(r#"{{"command":"subscribe","identifier":"{{\"channel\":\"{channel}\"}}"}}"#);
        let Command::Subscribe { channel: got, .. } = ok(&frame) else {
            panic!("not a subscribe")
        };
        assert_eq!(got, channel);
    }
}

#[test]
fn row_message_without_data() {
    // TX malformed_fields.
    let e =
        err(r#"{"command":"message","identifier":"{\"channel\":\"ChatChannel\",\"room\":\"1\"}"}"#);
    assert_eq!(e, ProtocolError::MissingData);
    assert_eq!(e.kind(), "missing_data");
    assert_eq!(
        err(r#"{"command":"message","identifier":"i","data":null}"#),
        ProtocolError::MissingData
    );
}

#[test]
fn row_data_is_an_object_not_a_string() {
    // TX malformed_fields.
    let e = err(
        r#"{"command":"message","identifier":"{\"channel\":\"ChatChannel\",\"room\":\"1\"}","data":{"action":"echo","x":1}}"#,
    );
    assert_eq!(e, ProtocolError::DataNotString { found: "object" });
    assert_eq!(e.kind(), "data_not_string");
    assert_eq!(
        err(r#"{"command":"message","identifier":"i","data":[1]}"#),
        ProtocolError::DataNotString { found: "array" }
    );
}

#[test]
fn row_data_decodes_to_a_non_object() {
    // TX malformed_fields: "[1,2]" and "\"echo\"".
    let e = err(
        r#"{"command":"message","identifier":"{\"channel\":\"ChatChannel\",\"room\":\"1\"}","data":"[1,2]"}"#,
    );
    assert_eq!(e, ProtocolError::DataNotObject { found: "array" });
    assert_eq!(e.kind(), "data_not_object");
    assert_eq!(
        err(
            r#"{"command":"message","identifier":"{\"channel\":\"ChatChannel\",\"room\":\"1\"}","data":"\"echo\""}"#
        ),
        ProtocolError::DataNotObject { found: "string" }
    );
    assert_eq!(
        err(r#"{"command":"message","identifier":"i","data":"null"}"#),
        ProtocolError::DataNotObject { found: "null" }
    );
}

#[test]
fn row_data_is_not_json() {
    // TX malformed_json: "{not json".
    let e = err(
        r#"{"command":"message","identifier":"{\"channel\":\"ChatChannel\",\"room\":\"1\"}","data":"{not json"}"#,
    );
    assert!(matches!(e, ProtocolError::DataNotJson { .. }), "{e:?}");
    assert_eq!(e.kind(), "data_not_json");
    assert!(matches!(
        err(r#"{"command":"message","identifier":"i","data":""}"#),
        ProtocolError::DataNotJson { .. }
    ));
}

#[test]
fn row_action_not_a_string() {
    // TX malformed_fields: 5 and ["echo"].
    let e = err(
        r#"{"command":"message","identifier":"{\"channel\":\"ChatChannel\",\"room\":\"1\"}","data":"{\"action\":5}"}"#,
    );
    assert_eq!(e, ProtocolError::ActionNotString { found: "number" });
    assert_eq!(e.kind(), "action_not_string");
    assert_eq!(
        err(
            r#"{"command":"message","identifier":"{\"channel\":\"ChatChannel\",\"room\":\"1\"}","data":"{\"action\":[\"echo\"]}"}"#
        ),
        ProtocolError::ActionNotString { found: "array" }
    );
    assert_eq!(
        err(r#"{"command":"message","identifier":"i","data":"{\"action\":{}}"}"#),
        ProtocolError::ActionNotString { found: "object" }
    );
}

#[test]
fn row_message_to_unknown_identifier_parses() {
    // TX message_unsubscribed_identifier: not a codec error; the caller finds no subscription.
    let Command::Message { identifier, .. } = ok(
        r#"{"command":"message","identifier":"{\"channel\":\"ChatChannel\",\"room\":\"never\"}","data":"{\"action\":\"echo\"}"}"#,
    ) else {
        panic!("not a message")
    };
    assert_eq!(identifier, r#"{"channel":"ChatChannel","room":"never"}"#);
}

#[test]
fn invalid_string_escapes_are_not_json() {
    // A lone surrogate escape inside the identifier string of the outer frame.
    assert!(matches!(
        err(r#"{"command":"unsubscribe","identifier":"\ud800"}"#),
        ProtocolError::NotJson { .. }
    ));
}

#[test]
fn deep_nesting_is_rejected_without_overflowing() {
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    // Inside the identifier document.
    let identifier = format!(r#"{{"channel":"C","x":{}}}"#, deep(10_000));
    let frame = json!({"command": "subscribe", "identifier": identifier}).to_string();
    let e = err(&frame);
    assert_eq!(e, ProtocolError::TooDeep);
    assert_eq!(e.kind(), "too_deep");
    // Inside the data document.
    let data = format!(r#"{{"action":"a","x":{}}}"#, deep(10_000));
    let frame = json!({"command": "message", "identifier": "i", "data": data}).to_string();
    assert_eq!(err(&frame), ProtocolError::TooDeep);
    // Just under the limit is fine.
    let data = format!(r#"{{"x":{}}}"#, deep(100));
    let frame = json!({"command": "message", "identifier": "i", "data": data}).to_string();
    ok(&frame);
    // In the frame itself: skipped iteratively (unknown key) or rejected as not-an-object.
    let frame = format!(
        r#"{{"command":"unsubscribe","identifier":"i","x":{}}}"#,
        deep(100_000)
    );
    ok(&frame);
    assert_eq!(
        err(&deep(100_000)),
        ProtocolError::NotAnObject { found: "array" }
    );
    let objects = format!("{}1{}", r#"{"a":"#.repeat(100_000), "}".repeat(100_000));
    assert_eq!(err(&objects), ProtocolError::MissingCommand);
}

#[test]
fn error_kinds_are_distinct() {
    let errors = [
        ProtocolError::NotJson {
            reason: String::new(),
        },
        ProtocolError::NotAnObject { found: "null" },
        ProtocolError::MissingCommand,
        ProtocolError::UnknownCommand {
            command: String::new(),
        },
        ProtocolError::MissingIdentifier,
        ProtocolError::IdentifierNotString { found: "null" },
        ProtocolError::IdentifierNotJson {
            reason: String::new(),
        },
        ProtocolError::IdentifierNotObject { found: "null" },
        ProtocolError::MissingChannel,
        ProtocolError::ChannelNotString { found: "null" },
        ProtocolError::MissingData,
        ProtocolError::DataNotString { found: "null" },
        ProtocolError::DataNotJson {
            reason: String::new(),
        },
        ProtocolError::DataNotObject { found: "null" },
        ProtocolError::ActionNotString { found: "null" },
        ProtocolError::TooDeep,
    ];
    let kinds: std::collections::HashSet<_> = errors.iter().map(ProtocolError::kind).collect();
    assert_eq!(kinds.len(), errors.len());
    for e in &errors {
        assert!(!e.to_string().is_empty());
    }
}

// ---------------------------------------------------------------------------------------
// Encoders, byte-exact against transcript frames.

#[test]
fn welcome_frame() {
    assert_eq!(&welcome()[..], br#"{"type":"welcome"}"#);
}

#[test]
fn ping_frame() {
    // TX connect_welcome.
    assert_eq!(
        &ping(1795305129)[..],
        br#"{"type":"ping","message":1795305129}"#
    );
    assert_eq!(&ping(0)[..], br#"{"type":"ping","message":0}"#);
    assert_eq!(
        &ping(u64::MAX)[..],
        br#"{"type":"ping","message":18446744073709551615}"#
    );
}

#[test]
fn confirm_and_reject_frames() {
    // TX subscribe_confirm.
    let confirm =
        br#"{"identifier":"{\"channel\":\"ChatChannel\",\"room\":\"1\"}","type":"confirm_subscription"}"#;
    assert_eq!(&confirm_subscription(ROOM1)[..], confirm);
    assert_eq!(
        &EncodedIdentifier::new(ROOM1).confirm_subscription()[..],
        confirm
    );
    // TX identifier_variant_duplicate.
    assert_eq!(
        &confirm_subscription(r#"{"channel": "ChatChannel", "room": "1"}"#)[..],
        br#"{"identifier":"{\"channel\": \"ChatChannel\", \"room\": \"1\"}","type":"confirm_subscription"}"#
    );
    // TX subscribe_reject_forbidden.
    let forbidden = r#"{"channel":"ChatChannel","room":"forbidden"}"#;
    let reject = br#"{"identifier":"{\"channel\":\"ChatChannel\",\"room\":\"forbidden\"}","type":"reject_subscription"}"#;
    assert_eq!(&reject_subscription(forbidden)[..], reject);
    assert_eq!(
        &EncodedIdentifier::new(forbidden).reject_subscription()[..],
        reject
    );
}

#[test]
fn disconnect_frames() {
    // TX rejected_connection and server_restart.
    assert_eq!(
        &disconnect(DisconnectReason::Unauthorized, false)[..],
        br#"{"type":"disconnect","reason":"unauthorized","reconnect":false}"#
    );
    assert_eq!(
        &disconnect(DisconnectReason::ServerRestart, true)[..],
        br#"{"type":"disconnect","reason":"server_restart","reconnect":true}"#
    );
    assert_eq!(
        &disconnect(DisconnectReason::Remote, true)[..],
        br#"{"type":"disconnect","reason":"remote","reconnect":true}"#
    );
    assert_eq!(
        &disconnect(DisconnectReason::InvalidRequest, true)[..],
        br#"{"type":"disconnect","reason":"invalid_request","reconnect":true}"#
    );
    assert_eq!(
        &disconnect(DisconnectReason::TooSlow, true)[..],
        br#"{"type":"disconnect","reason":"too_slow","reconnect":true}"#
    );
    assert_eq!(
        &disconnect(DisconnectReason::Other("idle_timeout"), false)[..],
        br#"{"type":"disconnect","reason":"idle_timeout","reconnect":false}"#
    );
    assert_eq!(
        &disconnect(DisconnectReason::Other("a\"b"), false)[..],
        br#"{"type":"disconnect","reason":"a\"b","reconnect":false}"#
    );
    assert_eq!(DisconnectReason::TooSlow.to_string(), "too_slow");
}

#[test]
fn data_frames() {
    // TX no_token and identifier_variant_duplicate.
    let expected = br#"{"identifier":"{\"channel\":\"ChatChannel\",\"room\":\"1\"}","message":{"message":"anonymous","from":null}}"#;
    let body = r#"{"message":"anonymous","from":null}"#;
    assert_eq!(&message(ROOM1, body)[..], expected);
    assert_eq!(&EncodedIdentifier::new(ROOM1).frame(body)[..], expected);
    assert_eq!(
        &message(r#"{"channel":"ChatChannel","room":1}"#, r#"{"message":"fan","from":"alice"}"#)[..],
        br#"{"identifier":"{\"channel\":\"ChatChannel\",\"room\":1}","message":{"message":"fan","from":"alice"}}"#
    );
    // Any JSON value, spliced verbatim (spacing preserved).
    assert_eq!(
        &message("i", r#""tock""#)[..],
        br#"{"identifier":"i","message":"tock"}"#
    );
    assert_eq!(
        &message("i", "[1, 2]")[..],
        br#"{"identifier":"i","message":[1, 2]}"#
    );
}

#[test]
fn identifier_escaping_matches_active_support() {
    // Rails escapes <, >, &, U+2028 and U+2029 (TX echo_json_encoding shows it for values).
    let identifier = "{\"channel\":\"C\",\"h\":\"<b>&'\\\"</b>\",\"ls\":\"\u{2028}\u{2029}\",\"u\":\"hé 😀\",\"c\":\"\u{0}\u{1f}\n\t\u{8}\u{c}\r/\"}";
    let frame = confirm_subscription(identifier);
    let text = std::str::from_utf8(&frame).unwrap();
    assert_eq!(
        text,
        r#"{"identifier":"{\"channel\":\"C\",\"h\":\"\u003cb\u003e\u0026'\\\"\u003c/b\u003e\",\"ls\":\"\u2028\u2029\",\"u\":\"hé 😀\",\"c\":\"\u0000\u001f\n\t\b\f\r/\"}","type":"confirm_subscription"}"#
    );
    let parsed: Value = serde_json::from_str(text).unwrap();
    assert_eq!(parsed["identifier"], identifier);
    // DEL and other non-control characters pass through unescaped, like Ruby's generator.
    assert_eq!(EncodedIdentifier::new("\u{7f}é").as_json(), "\"\u{7f}é\"");

    let id = EncodedIdentifier::new(identifier);
    assert_eq!(id.as_json().len(), super::encode::escaped_len(identifier));
    assert_eq!(
        serde_json::from_str::<String>(id.as_json()).unwrap(),
        identifier
    );
}

#[test]
fn encoded_identifier_basics() {
    let id = EncodedIdentifier::from("a\"b");
    assert_eq!(id.as_json(), r#""a\"b""#);
    assert_eq!(id.clone(), id);
    assert_eq!(format!("{id:?}"), r#"EncodedIdentifier("\"a\\\"b\"")"#);
    assert_eq!(EncodedIdentifier::new("").as_json(), r#""""#);
    assert_eq!(
        &EncodedIdentifier::new("").frame("1")[..],
        br#"{"identifier":"","message":1}"#
    );
}

// ---------------------------------------------------------------------------------------
// Property tests.

fn json_value() -> impl Strategy<Value = Value> {
    // No floats: serde_json's default float parser is not guaranteed to round-trip exactly.
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        "[<>&\"\\\\\u{2028}\u{2029}\u{0}-\u{1f}a-z]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn jsonish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just(":".to_owned()),
        Just(",".to_owned()),
        Just("\"".to_owned()),
        Just("\\".to_owned()),
        Just("\\\"".to_owned()),
        Just("\"command\"".to_owned()),
        Just("\"subscribe\"".to_owned()),
        Just("\"unsubscribe\"".to_owned()),
        Just("\"message\"".to_owned()),
        Just("\"identifier\"".to_owned()),
        Just("\"data\"".to_owned()),
        Just("\"action\"".to_owned()),
        Just("\"channel\"".to_owned()),
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("1e999".to_owned()),
        Just("-0".to_owned()),
        Just("\\u0000".to_owned()),
        Just("\\ud800".to_owned()),
        "[ -~]{0,4}",
        any::<String>(),
    ];
    prop::collection::vec(token, 0..40).prop_map(|tokens| tokens.concat())
}

fn command_like() -> impl Strategy<Value = String> {
    let field = prop_oneof![
        json_value(),
        json_value().prop_map(|v| Value::String(v.to_string()))
    ];
    (
        prop_oneof![
            Just(json!("subscribe")),
            Just(json!("unsubscribe")),
            Just(json!("message")),
            json_value(),
        ],
        prop::option::of(field.clone()),
        prop::option::of(field),
    )
        .prop_map(|(command, identifier, data)| {
            let mut object = serde_json::Map::new();
            object.insert("command".into(), command);
            if let Some(identifier) = identifier {
                object.insert("identifier".into(), identifier);
            }
            if let Some(data) = data {
                object.insert("data".into(), data);
            }
            Value::Object(object).to_string()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_never_panics_on_bytes(frame in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_command(&frame);
    }

    #[test]
    fn parse_never_panics_on_jsonish(frame in jsonish()) {
        let _ = parse_command(frame.as_bytes());
    }

    #[test]
    fn parse_never_panics_on_command_like(frame in command_like()) {
        if let Ok(command) = parse_command(frame.as_bytes()) {
            // The raw identifier is exactly the string value on the wire.
            let envelope: Value = serde_json::from_str(&frame).unwrap();
            prop_assert_eq!(envelope["identifier"].as_str(), command.identifier());
        }
    }

    #[test]
    fn subscribe_round_trips_any_object_identifier(
        params in prop::collection::btree_map(any::<String>(), json_value(), 0..5),
        channel in any::<String>(),
    ) {
        let mut object: serde_json::Map<String, Value> = params.into_iter().collect();
        object.insert("channel".into(), Value::String(channel.clone()));
        let identifier = Value::Object(object.clone()).to_string();
        let frame = json!({"command": "subscribe", "identifier": identifier}).to_string();
        let parsed = parse_command(frame.as_bytes());
        prop_assert_eq!(
            parsed,
            Ok(Command::Subscribe { identifier, channel, params: object, history: None, presence: None })
        );
    }

    #[test]
    fn data_frame_round_trips(identifier in any::<String>(), value in json_value()) {
        let body = value.to_string();
        let expected = json!({"identifier": identifier.clone(), "message": value});
        for frame in [message(&identifier, &body), EncodedIdentifier::new(&identifier).frame(&body)] {
            let parsed: Value = serde_json::from_slice(&frame).unwrap();
            prop_assert_eq!(&parsed, &expected);
            // Key order is Rails': identifier first.
            let starts_with_identifier = frame.starts_with(br#"{"identifier":""#);
            prop_assert!(starts_with_identifier, "identifier is not the first key");
        }
    }

    #[test]
    fn control_frames_round_trip(identifier in any::<String>()) {
        for (frame, kind) in [
            (confirm_subscription(&identifier), "confirm_subscription"),
            (reject_subscription(&identifier), "reject_subscription"),
        ] {
            let parsed: Value = serde_json::from_slice(&frame).unwrap();
            prop_assert_eq!(parsed, json!({"identifier": identifier.clone(), "type": kind}));
            let text = std::str::from_utf8(&frame).unwrap();
            let html_safe = !text.contains(['<', '>', '&', '\u{2028}', '\u{2029}']);
            prop_assert!(html_safe, "unescaped HTML-sensitive character");
        }
    }
}
