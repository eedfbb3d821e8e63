//! The Action Cable envelope encoder: `EncodedIdentifier::new(identifier)` with
//! `.frame(message_json)`, `.confirm_subscription()` and `.reject_subscription()` (and the
//! free functions `message`, `confirm_subscription`, `reject_subscription`, which must give
//! the same bytes).
//!
//! Properties, for any identifier string and any `message_json` that serde_json accepts:
//!
//! * the frame parses as a JSON object with exactly the keys `identifier` and `message`,
//!   `identifier` equal to the input string and `message` equal to the parsed `message_json`;
//! * the control frames parse as `{"identifier":<input>,"type":"confirm_subscription"}` /
//!   `"reject_subscription"`, byte for byte in Rails' key order;
//! * the escaped identifier contains no raw `<`, `>`, `&`, U+2028, U+2029
//!   (the `ActiveSupport::JSON` escaping the module documents).
//!
//! Input format: `identifier 0xFF message_json` (0xFF never occurs in UTF-8, so it is an
//! unambiguous separator; both halves are decoded lossily). Without a 0xFF the whole input is
//! both the identifier and the message. Anything after a second 0xFF is ignored.
#![no_main]

use keayl_cable::protocol::{self, EncodedIdentifier};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

const SEP: u8 = 0xFF;

fuzz_target!(|input: &[u8]| {
    let mut parts = input.split(|&b| b == SEP);
    let identifier = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let message_json = match parts.next() {
        Some(m) => String::from_utf8_lossy(m),
        None => identifier.clone(),
    };
    check(&identifier, &message_json);
});

/// What a data frame must decode to. `deny_unknown_fields` plus serde's duplicate-field
/// check mean "exactly these two keys". `RawValue` skips the message without a recursion
/// limit, so this also works when the message is nested right up to serde_json's limit.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DataFrame<'a> {
    identifier: String,
    #[serde(borrow)]
    message: &'a RawValue,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlFrame {
    identifier: String,
    #[serde(rename = "type")]
    kind: String,
}

fn check(identifier: &str, message_json: &str) {
    let id = EncodedIdentifier::new(identifier);

    // The cached escaped form is a JSON string literal of the identifier, HTML-safe.
    let as_json = id.as_json();
    let decoded: String = serde_json::from_str(as_json)
        .unwrap_or_else(|e| panic!("as_json {as_json:?} is not a JSON string: {e}"));
    assert_eq!(
        decoded, identifier,
        "as_json does not decode to the identifier"
    );
    assert!(
        !as_json.contains(['<', '>', '&', '\u{2028}', '\u{2029}']),
        "as_json {as_json:?} contains an HTML-unsafe character"
    );

    // Control frames.
    for (kind, bytes, free) in [
        (
            "confirm_subscription",
            id.confirm_subscription(),
            protocol::confirm_subscription(identifier),
        ),
        (
            "reject_subscription",
            id.reject_subscription(),
            protocol::reject_subscription(identifier),
        ),
    ] {
        assert_eq!(
            bytes, free,
            "EncodedIdentifier and free function differ ({kind})"
        );
        let expected = format!(r#"{{"identifier":{as_json},"type":"{kind}"}}"#);
        assert_eq!(&bytes[..], expected.as_bytes(), "unexpected {kind} bytes");
        let parsed: ControlFrame = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{kind} frame {:?} is not valid: {e}",
                String::from_utf8_lossy(&bytes)
            )
        });
        assert_eq!(parsed.identifier, identifier);
        assert_eq!(parsed.kind, kind);
        // Also through the generic `Value` path.
        let v: Value = serde_json::from_slice(&bytes).expect("control frame is JSON");
        assert_eq!(v.as_object().map(|o| o.len()), Some(2));
        assert_eq!(v["identifier"], Value::String(identifier.into()));
    }

    // Data frame. Always build it (must not panic, whatever the message), but the
    // properties only hold for a message that is valid JSON.
    let frame = id.frame(message_json);
    assert_eq!(
        frame,
        protocol::message(identifier, message_json),
        "EncodedIdentifier::frame and protocol::message differ"
    );
    let Ok(message) = serde_json::from_str::<Value>(message_json) else {
        return;
    };

    let text = std::str::from_utf8(&frame).expect("frame is UTF-8");
    let parsed: DataFrame<'_> = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("data frame {text:?} is not a valid envelope: {e}"));
    assert_eq!(
        parsed.identifier, identifier,
        "identifier differs in {text:?}"
    );
    // The message is spliced in verbatim: the raw value is the input minus surrounding
    // JSON whitespace.
    assert_eq!(
        parsed.message.get(),
        message_json.trim_matches([' ', '\t', '\n', '\r']),
        "message not spliced verbatim"
    );
    let reparsed: Value = serde_json::from_str(parsed.message.get()).expect("message reparses");
    assert_eq!(reparsed, message, "message differs in {text:?}");

    // And through the generic `Value` path, the way a client would read it. The frame
    // nests the message one level deeper, so a message right at serde_json's recursion
    // limit (128) makes the frame exceed it: that is the parser's limit, not an encoding
    // error, and is recognised by the message failing the same way once wrapped in `[…]`.
    match serde_json::from_str::<Value>(text) {
        Ok(v) => {
            let obj = v.as_object().expect("frame is an object");
            assert_eq!(obj.len(), 2, "frame has extra keys: {text:?}");
            assert_eq!(
                obj.get("identifier"),
                Some(&Value::String(identifier.into()))
            );
            assert_eq!(obj.get("message"), Some(&message));
        }
        Err(e) => {
            let wrapped = serde_json::from_str::<Value>(&format!("[{message_json}]"));
            assert!(
                is_recursion_limit(&e) && wrapped.as_ref().is_err_and(is_recursion_limit),
                "data frame {text:?} does not parse: {e}"
            );
        }
    }
}

fn is_recursion_limit(e: &serde_json::Error) -> bool {
    e.to_string().starts_with("recursion limit exceeded")
}
