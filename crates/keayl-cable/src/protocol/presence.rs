//! The extended protocol's presence and whisper frames: `join`, `leave`
//! and `presence` commands, and `{"type":"presence",…}` events.

use bytes::Bytes;
use serde_json::value::RawValue;

use super::ProtocolError;
use super::encode::{EncodedIdentifier, write_escaped};

/// Longest presence id accepted, in bytes.
pub const MAX_PRESENCE_ID_BYTES: usize = 256;

/// A `join` (or a `presence` attached to `subscribe`): the presence id and
/// its info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceRequest {
    /// The presence id (a JSON number is taken as its text).
    pub id: String,
    /// The info, as JSON text (`null` when absent).
    pub info: String,
}

/// Decode a command's `presence` value: `{"id":"42","info":{…}}`.
pub(super) fn decode_presence(raw: &RawValue) -> Result<PresenceRequest, ProtocolError> {
    #[derive(serde::Deserialize)]
    struct Raw<'a> {
        #[serde(borrow)]
        id: Option<&'a RawValue>,
        #[serde(borrow)]
        info: Option<&'a RawValue>,
    }
    let invalid = |reason: String| ProtocolError::InvalidPresence { reason };
    let raw: Raw<'_> = serde_json::from_str(raw.get()).map_err(|e| invalid(e.to_string()))?;
    let id = match raw.id.map(RawValue::get) {
        None | Some("null") => return Err(invalid("no \"id\"".into())),
        Some(text) if text.starts_with('"') => {
            serde_json::from_str::<String>(text).map_err(|e| invalid(e.to_string()))?
        }
        Some(text) if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) => text.to_owned(),
        Some(other) => {
            return Err(invalid(format!(
                "\"id\" must be a string or a number, not {}",
                super::raw_kind(other)
            )));
        }
    };
    if id.trim().is_empty() {
        return Err(invalid("blank \"id\"".into()));
    }
    if id.len() > MAX_PRESENCE_ID_BYTES {
        return Err(invalid(format!(
            "\"id\" is {} bytes, over {MAX_PRESENCE_ID_BYTES}",
            id.len()
        )));
    }
    Ok(PresenceRequest {
        id,
        info: raw.info.map_or("null", RawValue::get).to_owned(),
    })
}

/// `{"type":"presence","identifier":…,"message":<message_json>}`.
pub fn presence_frame(identifier: &EncodedIdentifier, message_json: &str) -> Bytes {
    let mut out = Vec::with_capacity(48 + identifier.as_json().len() + message_json.len());
    out.extend_from_slice(br#"{"type":"presence","identifier":"#);
    out.extend_from_slice(identifier.as_json().as_bytes());
    out.extend_from_slice(br#","message":"#);
    out.extend_from_slice(message_json.as_bytes());
    out.push(b'}');
    Bytes::from(out)
}

/// The event `{"type":"join","id":…,"info":<info>}` (`info`: JSON text).
pub fn presence_join_event(id: &str, info: &str) -> Bytes {
    let mut out = Vec::with_capacity(32 + id.len() + info.len());
    out.extend_from_slice(br#"{"type":"join","id":"#);
    write_escaped(&mut out, id);
    out.extend_from_slice(br#","info":"#);
    out.extend_from_slice(info.as_bytes());
    out.push(b'}');
    Bytes::from(out)
}

/// The event `{"type":"leave","id":…}`.
pub fn presence_leave_event(id: &str) -> Bytes {
    let mut out = Vec::with_capacity(32 + id.len());
    out.extend_from_slice(br#"{"type":"leave","id":"#);
    write_escaped(&mut out, id);
    out.push(b'}');
    Bytes::from(out)
}

/// The reply to `presence`: `{"type":"info","total":…,"records":[{"id":…,"info":…}]}`
/// (`records` only when asked for). Infos are JSON text.
pub fn presence_info_message<'a>(
    total: usize,
    records: Option<impl IntoIterator<Item = (&'a str, &'a str)>>,
) -> String {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(br#"{"type":"info","total":"#);
    out.extend_from_slice(total.to_string().as_bytes());
    if let Some(records) = records {
        out.extend_from_slice(br#","records":["#);
        for (i, (id, info)) in records.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(br#"{"id":"#);
            write_escaped(&mut out, id);
            out.extend_from_slice(br#","info":"#);
            out.extend_from_slice(info.as_bytes());
            out.push(b'}');
        }
        out.push(b']');
    }
    out.push(b'}');
    // Built from JSON strings and JSON texts only.
    String::from_utf8(out).unwrap_or_default()
}

/// `{"type":"error"}`: a presence command that failed.
pub const PRESENCE_ERROR: &str = r#"{"type":"error"}"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn presence_requests() {
        let p = decode_presence(&raw(r#"{"id":"42","info":{"name":"Jack"}}"#)).unwrap();
        assert_eq!(p.id, "42");
        assert_eq!(p.info, r#"{"name":"Jack"}"#);
        let p = decode_presence(&raw(r#"{"id":7}"#)).unwrap();
        assert_eq!((p.id.as_str(), p.info.as_str()), ("7", "null"));
        for bad in [
            "[]",
            "{}",
            r#"{"id":null}"#,
            r#"{"id":" "}"#,
            r#"{"id":{"a":1}}"#,
            r#"{"id":true}"#,
        ] {
            let e = decode_presence(&raw(bad)).unwrap_err();
            assert_eq!(e.kind(), "invalid_presence", "{bad}");
        }
        let long = format!(r#"{{"id":"{}"}}"#, "x".repeat(MAX_PRESENCE_ID_BYTES + 1));
        assert!(decode_presence(&raw(&long)).is_err());
    }

    #[test]
    fn frames() {
        let id = EncodedIdentifier::new(r#"{"channel":"P"}"#);
        assert_eq!(
            &presence_frame(&id, &String::from_utf8_lossy(&presence_join_event("4\"2", "{\"n\":1}")))[..],
            br#"{"type":"presence","identifier":"{\"channel\":\"P\"}","message":{"type":"join","id":"4\"2","info":{"n":1}}}"#
        );
        assert_eq!(
            &presence_leave_event("42")[..],
            br#"{"type":"leave","id":"42"}"#
        );
        assert_eq!(
            presence_info_message(2, Some([("1", "null"), ("2", "{}")])),
            r#"{"type":"info","total":2,"records":[{"id":"1","info":null},{"id":"2","info":{}}]}"#
        );
        assert_eq!(
            presence_info_message(0, None::<[(&str, &str); 0]>),
            r#"{"type":"info","total":0}"#
        );
    }
}
