//! `keayl_cable::protocol::parse_command` on arbitrary bytes.
//!
//! The contract under test: any byte sequence is accepted and the function never panics
//! (invalid UTF-8, invalid JSON, wrong types, hostile nesting all come back as a
//! `ProtocolError`). On top of "no panic", a few cheap invariants of the documented
//! behaviour are asserted for the inputs that do decode:
//!
//! * `Subscribe`: `params` is exactly the identifier decoded as JSON, and `channel` is its
//!   `"channel"` string.
//! * `Message`: `action` is `data["action"]` when it is a non-blank string, else `None`.
//! * Re-encoding the decoded command as a canonical frame decodes to the same command
//!   (floats compared to within a few ULPs: without serde_json's `float_roundtrip`
//!   feature, parse → print → parse is not guaranteed to be bit-exact).
//! * The identifier round-trips through the server encoders (`confirm_subscription`).
//!
//! Input format: the raw WebSocket text-frame payload.
#![no_main]

use keayl_cable::protocol::{Command, EncodedIdentifier, parse_command};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

fuzz_target!(|frame: &[u8]| {
    match parse_command(frame) {
        Err(e) => {
            // Formatting the error (it echoes parts of the input) must not panic either.
            let _ = e.to_string();
            let _ = format!("{e:?}");
        }
        Ok(cmd) => check_command(frame, &cmd),
    }
});

fn check_command(frame: &[u8], cmd: &Command) {
    // A decoded frame was valid UTF-8 JSON.
    assert!(std::str::from_utf8(frame).is_ok());
    let _ = cmd.name();
    let identifier = cmd
        .identifier()
        .expect("actioncable-v1-json commands all have an identifier");

    match cmd {
        Command::Subscribe {
            identifier,
            channel,
            params,
            history,
            presence,
        } => {
            assert!(history.is_none(), "history decoded in actioncable-v1-json");
            assert!(presence.is_none(), "presence decoded in actioncable-v1-json");
            let decoded: Value =
                serde_json::from_str(identifier).expect("subscribe identifier is JSON");
            assert_eq!(
                decoded,
                Value::Object(params.clone()),
                "params != identifier"
            );
            assert_eq!(
                params.get("channel"),
                Some(&Value::String(channel.clone())),
                "channel != params[\"channel\"]"
            );
        }
        Command::Unsubscribe { .. } => {}
        // Whispers are accepted in both protocols; the data is JSON text
        // (checked below).
        Command::Whisper { .. } => {}
        other @ (Command::History { .. }
        | Command::Join { .. }
        | Command::Leave { .. }
        | Command::Presence { .. }
        | Command::Ping
        | Command::Pong) => {
            panic!("an extended command decoded in actioncable-v1-json: {other:?}")
        }
        Command::Message { action, data, .. } => {
            let expected = match data.get("action") {
                Some(Value::String(a)) if !a.trim().is_empty() => Some(a.clone()),
                None | Some(Value::Null) | Some(Value::String(_)) => None,
                Some(other) => panic!("decoded a message with a non-string action {other:?}"),
            };
            assert_eq!(action, &expected, "action != data[\"action\"]");
        }
    }

    // Canonical re-encoding decodes to the same command.
    let mut envelope = Map::new();
    envelope.insert("command".into(), Value::String(cmd.name().into()));
    envelope.insert("identifier".into(), Value::String(identifier.into()));
    if let Command::Message { data, .. } = cmd {
        let data = serde_json::to_string(data).expect("serialise data");
        envelope.insert("data".into(), Value::String(data));
    }
    if let Command::Whisper { data, .. } = cmd {
        // Valid JSON text; a number beyond f64 (`1e400`) is passed through
        // as sent but has no `Value`, so it cannot be re-encoded here.
        match serde_json::from_str::<Value>(data) {
            Ok(data) => envelope.insert("data".into(), data),
            Err(_) => return,
        };
    }
    let reencoded = serde_json::to_vec(&Value::Object(envelope)).expect("serialise frame");
    let again = parse_command(&reencoded).unwrap_or_else(|e| {
        panic!(
            "re-encoded frame {:?} fails to decode: {e}",
            String::from_utf8_lossy(&reencoded)
        )
    });
    assert!(
        same_command(&again, cmd),
        "re-encoded frame decodes differently: {again:?} vs {cmd:?}"
    );

    // The identifier survives the server side encoder unchanged.
    let confirm = EncodedIdentifier::new(identifier).confirm_subscription();
    let v: Value = serde_json::from_slice(&confirm).expect("confirm frame is JSON");
    assert_eq!(v["identifier"], Value::String(identifier.into()));
}

fn same_command(a: &Command, b: &Command) -> bool {
    match (a, b) {
        (
            Command::Message {
                identifier: ia,
                action: aa,
                data: da,
            },
            Command::Message {
                identifier: ib,
                action: ab,
                data: db,
            },
        ) => ia == ib && aa == ab && same_map(da.as_map(), db.as_map()),
        (
            Command::Whisper {
                identifier: ia,
                data: da,
            },
            Command::Whisper {
                identifier: ib,
                data: db,
            },
        ) => {
            ia == ib
                && match (
                    serde_json::from_str::<Value>(da),
                    serde_json::from_str::<Value>(db),
                ) {
                    (Ok(va), Ok(vb)) => same_value(&va, &vb),
                    _ => false,
                }
        }
        // Subscribe params are decoded from the identical identifier string both times.
        _ => a == b,
    }
}

fn same_map(a: &Map<String, Value>, b: &Map<String, Value>) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|(k, va)| b.get(k).is_some_and(|vb| same_value(va, vb)))
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => {
                    x == y || (x.signum() == y.signum() && x.to_bits().abs_diff(y.to_bits()) <= 4)
                }
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_value(x, y))
        }
        (Value::Object(x), Value::Object(y)) => same_map(x, y),
        _ => a == b,
    }
}
