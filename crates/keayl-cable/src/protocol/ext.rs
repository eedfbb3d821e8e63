//! AnyCable's extended protocol, `actioncable-v1-ext-json`: the same frames
//! as `actioncable-v1-json` plus a session id in `welcome`, client pings
//! and pongs, and history requests (reliable streams).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::ProtocolError;
use super::encode::write_escaped;

/// The wire protocol of a connection, negotiated as the WebSocket
/// subprotocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Protocol {
    /// Rails' `actioncable-v1-json` (also what a client that offers no
    /// subprotocol gets).
    #[default]
    V1Json,
    /// AnyCable's `actioncable-v1-ext-json`: `welcome` carries a `sid`, the
    /// client may send `ping`, `pong` and `history`.
    V1ExtJson,
}

impl Protocol {
    /// The subprotocols a server offers, in the order it prefers them when
    /// a client offers several it supports (the client's order wins).
    pub const ALL: [Protocol; 2] = [Protocol::V1ExtJson, Protocol::V1Json];

    /// The subprotocol name (`actioncable-v1-json`).
    pub fn subprotocol(self) -> &'static str {
        match self {
            Protocol::V1Json => "actioncable-v1-json",
            Protocol::V1ExtJson => "actioncable-v1-ext-json",
        }
    }

    /// The protocol a subprotocol name stands for.
    ///
    /// ```
    /// use keayl_cable::protocol::Protocol;
    /// assert_eq!(Protocol::from_subprotocol("actioncable-v1-ext-json"), Some(Protocol::V1ExtJson));
    /// assert_eq!(Protocol::from_subprotocol("actioncable-unsupported"), None);
    /// ```
    pub fn from_subprotocol(name: &str) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|p| p.subprotocol() == name)
    }

    /// Whether this is the extended protocol.
    pub fn is_extended(self) -> bool {
        self == Protocol::V1ExtJson
    }
}

/// A stream position a client has seen: the stream's epoch and the offset
/// of the last message it got.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StreamPosition {
    /// The offset of the last message seen.
    pub offset: u64,
    /// The history's epoch (it changes when the history was lost).
    pub epoch: String,
}

/// A `history` request (also attached to `subscribe`): what the client
/// missed, by stream position and/or since a time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryRequest {
    /// Unix seconds: messages since then, for streams without a position.
    pub since: Option<u64>,
    /// Stream name → the last position seen.
    pub streams: BTreeMap<String, StreamPosition>,
}

impl HistoryRequest {
    /// Whether it asks for nothing (neither `since` nor a stream).
    pub fn is_empty(&self) -> bool {
        self.since.is_none() && self.streams.is_empty()
    }
}

#[derive(Deserialize)]
struct RawHistory {
    since: Option<u64>,
    #[serde(default)]
    streams: Option<BTreeMap<String, StreamPosition>>,
}

/// Decode a command's `history` value.
pub(super) fn decode_history(raw: &RawValue) -> Result<HistoryRequest, ProtocolError> {
    let history: RawHistory =
        serde_json::from_str(raw.get()).map_err(|e| ProtocolError::InvalidHistory {
            reason: e.to_string(),
        })?;
    Ok(HistoryRequest {
        since: history.since,
        streams: history.streams.unwrap_or_default(),
    })
}

/// `{"type":"welcome","sid":"<sid>"}`: the extended protocol's welcome.
pub fn welcome_with_sid(sid: &str) -> Bytes {
    let mut out = Vec::with_capacity(32 + sid.len());
    out.extend_from_slice(br#"{"type":"welcome","sid":"#);
    write_escaped(&mut out, sid);
    out.push(b'}');
    Bytes::from(out)
}

/// `{"type":"welcome","sid":"<sid>","restored":true,"restored_ids":[…]}`:
/// the welcome of a restored session, with the identifiers of the
/// subscriptions it restored (the client does not subscribe them again).
pub fn welcome_restored<'a>(sid: &str, restored_ids: impl IntoIterator<Item = &'a str>) -> Bytes {
    let mut out = Vec::with_capacity(64 + sid.len());
    out.extend_from_slice(br#"{"type":"welcome","sid":"#);
    write_escaped(&mut out, sid);
    out.extend_from_slice(br#","restored":true,"restored_ids":["#);
    for (i, id) in restored_ids.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_escaped(&mut out, id);
    }
    out.extend_from_slice(b"]}");
    Bytes::from(out)
}

/// `{"type":"pong"}`: the answer to a client's `ping`.
pub fn pong() -> Bytes {
    Bytes::from_static(br#"{"type":"pong"}"#)
}

/// `{"type":"confirm_history","identifier":"<identifier>"}`: the history
/// request was served in full.
pub fn confirm_history(identifier: &str) -> Bytes {
    typed_with_identifier("confirm_history", identifier)
}

/// `{"type":"reject_history","identifier":"<identifier>"}`: the history
/// cannot cover the request (unknown epoch, evicted offset, no history).
pub fn reject_history(identifier: &str) -> Bytes {
    typed_with_identifier("reject_history", identifier)
}

fn typed_with_identifier(kind: &str, identifier: &str) -> Bytes {
    let mut out = Vec::with_capacity(48 + identifier.len());
    out.extend_from_slice(br#"{"type":""#);
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(br#"","identifier":"#);
    write_escaped(&mut out, identifier);
    out.push(b'}');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        assert_eq!(
            &welcome_with_sid("a\"b")[..],
            br#"{"type":"welcome","sid":"a\"b"}"#
        );
        assert_eq!(&pong()[..], br#"{"type":"pong"}"#);
        assert_eq!(
            &welcome_restored("s", [r#"{"channel":"A"}"#, "b"])[..],
            br#"{"type":"welcome","sid":"s","restored":true,"restored_ids":["{\"channel\":\"A\"}","b"]}"#
        );
        assert_eq!(
            &welcome_restored("s", [])[..],
            br#"{"type":"welcome","sid":"s","restored":true,"restored_ids":[]}"#
        );
        assert_eq!(
            &reject_history(r#"{"channel":"X"}"#)[..],
            br#"{"type":"reject_history","identifier":"{\"channel\":\"X\"}"}"#
        );
        assert_eq!(
            &confirm_history("i")[..],
            br#"{"type":"confirm_history","identifier":"i"}"#
        );
    }

    #[test]
    fn history_requests() {
        let raw = |s: &str| RawValue::from_string(s.to_owned()).unwrap();
        let h = decode_history(&raw(
            r#"{"since":1681828329,"streams":{"chat_42":{"offset":32,"epoch":"x123"}}}"#,
        ))
        .unwrap();
        assert_eq!(h.since, Some(1681828329));
        assert_eq!(
            h.streams["chat_42"],
            StreamPosition {
                offset: 32,
                epoch: "x123".into()
            }
        );
        assert!(decode_history(&raw("{}")).unwrap().is_empty());
        for bad in [
            r#"[]"#,
            r#"{"since":"yesterday"}"#,
            r#"{"streams":{"s":{"offset":-1,"epoch":"e"}}}"#,
            r#"{"streams":{"s":{"epoch":"e"}}}"#,
        ] {
            let e = decode_history(&raw(bad)).unwrap_err();
            assert_eq!(e.kind(), "invalid_history", "{bad}");
        }
    }
}
