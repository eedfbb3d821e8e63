//! Decoding client → server commands.

use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::ext::decode_history;
use super::presence::decode_presence;
use super::{HistoryRequest, PresenceRequest, Protocol, ProtocolError};
use crate::channel::Data;

/// A decoded client → server command.
///
/// Identifiers are kept as the **exact raw string** received on the wire: Action Cable keys
/// subscriptions by that string, without any normalisation, and echoes it back unchanged
/// (`{"channel":"X","room":"1"}` and `{"room":"1","channel":"X"}` are two subscriptions).
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `{"command":"subscribe","identifier":"{\"channel\":…}"}`.
    Subscribe {
        /// The raw identifier string (the subscription key).
        identifier: String,
        /// The identifier's `"channel"` value, e.g. `ChatChannel`.
        channel: String,
        /// The decoded identifier object, **including** the `"channel"` key, with JSON
        /// types preserved (`"room":1` and `"room":"1"` stay distinct).
        params: Map<String, Value>,
        /// The extended protocol's `history` attached to the subscribe (run right after
        /// the confirmation); always `None` in `actioncable-v1-json`.
        history: Option<HistoryRequest>,
        /// The extended protocol's `presence` attached to the subscribe (a
        /// `join` right after the confirmation); always `None` in
        /// `actioncable-v1-json`.
        presence: Option<PresenceRequest>,
    },
    /// `{"command":"unsubscribe","identifier":"…"}`.
    ///
    /// The identifier only needs to be a string; it is not decoded. A string that matches no
    /// subscription is the caller's "unknown subscription" case.
    Unsubscribe {
        /// The raw identifier string.
        identifier: String,
    },
    /// `{"command":"message","identifier":"…","data":"{\"action\":…}"}`.
    ///
    /// As for [`Command::Unsubscribe`], the identifier is not decoded.
    Message {
        /// The raw identifier string.
        identifier: String,
        /// The action to perform: `data["action"]` when it is a non-blank string. `None`
        /// (absent, `null`, `""` or whitespace only) means the channel's `receive` action.
        action: Option<String>,
        /// The decoded `data` object, **including** its `"action"` key (Rails passes the
        /// whole object to the action), keys in the client's order.
        data: Data,
    },
    /// Extended protocol: `{"command":"history","identifier":"…","history":{…}}`.
    History {
        /// The raw identifier string.
        identifier: String,
        /// What the client missed.
        history: HistoryRequest,
    },
    /// Extended protocol: `{"command":"join","identifier":"…","presence":{"id":"42","info":{…}}}`.
    Join {
        /// The raw identifier string.
        identifier: String,
        /// Who joins.
        presence: PresenceRequest,
    },
    /// Extended protocol: `{"command":"leave","identifier":"…"}`.
    Leave {
        /// The raw identifier string.
        identifier: String,
    },
    /// Extended protocol: `{"command":"presence","identifier":"…","data":{"return_records":true}}`,
    /// answered with the presence set.
    Presence {
        /// The raw identifier string.
        identifier: String,
        /// Whether the reply lists the members (`data.return_records`,
        /// default true) or only counts them.
        return_records: bool,
    },
    /// `{"command":"whisper","identifier":"…","data":{…}}` (`data` is JSON,
    /// not JSON text in a string): sent to the other subscribers of the
    /// subscription's whisper stream. Accepted in both protocols, as
    /// `@anycable/core` sends it in both.
    Whisper {
        /// The raw identifier string.
        identifier: String,
        /// The payload, as JSON text.
        data: String,
    },
    /// Extended protocol: `{"command":"ping"}`, answered with `{"type":"pong"}`.
    Ping,
    /// Extended protocol: `{"command":"pong"}`, the client's answer to a ping.
    Pong,
}

impl Command {
    /// The raw identifier string this command refers to (`None` for `ping` and `pong`).
    pub fn identifier(&self) -> Option<&str> {
        match self {
            Self::Subscribe { identifier, .. }
            | Self::Unsubscribe { identifier }
            | Self::Message { identifier, .. }
            | Self::History { identifier, .. }
            | Self::Join { identifier, .. }
            | Self::Leave { identifier }
            | Self::Presence { identifier, .. }
            | Self::Whisper { identifier, .. } => Some(identifier),
            Self::Ping | Self::Pong => None,
        }
    }

    /// The wire name of the command: `"subscribe"`, `"unsubscribe"`, `"message"`, and in
    /// the extended protocol `"history"`, `"ping"`, `"pong"`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Subscribe { .. } => "subscribe",
            Self::Unsubscribe { .. } => "unsubscribe",
            Self::Message { .. } => "message",
            Self::History { .. } => "history",
            Self::Join { .. } => "join",
            Self::Leave { .. } => "leave",
            Self::Presence { .. } => "presence",
            Self::Whisper { .. } => "whisper",
            Self::Ping => "ping",
            Self::Pong => "pong",
        }
    }
}

/// Decodes one client text frame into a [`Command`].
///
/// `frame` is the payload of a WebSocket text frame. Any byte sequence is accepted as input
/// and the function never panics: invalid UTF-8, invalid JSON, wrong types and hostile
/// nesting all come back as a [`ProtocolError`] (see its variants for the mapping to the
/// specification's malformed-input table). Command names are matched exactly and
/// case-sensitively. Unknown top-level keys are ignored; when a key is repeated the last
/// value wins, as with Ruby's `JSON.parse`.
///
/// ```
/// use keayl_cable::protocol::{Command, parse_command};
///
/// let frame = br#"{"command":"subscribe","identifier":"{\"channel\":\"ChatChannel\",\"room\":1}"}"#;
/// let Command::Subscribe { identifier, channel, params, .. } = parse_command(frame)? else {
///     unreachable!()
/// };
/// assert_eq!(identifier, r#"{"channel":"ChatChannel","room":1}"#);
/// assert_eq!(channel, "ChatChannel");
/// assert_eq!(params["room"], 1);
/// # Ok::<(), keayl_cable::protocol::ProtocolError>(())
/// ```
pub fn parse_command(frame: &[u8]) -> Result<Command, ProtocolError> {
    parse_command_with(frame, Protocol::V1Json)
}

/// [`parse_command`] for a connection speaking `protocol`: the extended protocol
/// also decodes `history` (alone or attached to `subscribe`), `ping` and `pong`,
/// which `actioncable-v1-json` treats as unknown commands.
///
/// ```
/// use keayl_cable::protocol::{Command, Protocol, parse_command_with};
///
/// let ping = br#"{"command":"ping"}"#;
/// assert_eq!(parse_command_with(ping, Protocol::V1ExtJson)?, Command::Ping);
/// assert!(parse_command_with(ping, Protocol::V1Json).is_err());
/// # Ok::<(), keayl_cable::protocol::ProtocolError>(())
/// ```
pub fn parse_command_with(frame: &[u8], protocol: Protocol) -> Result<Command, ProtocolError> {
    let text = std::str::from_utf8(frame).map_err(|e| ProtocolError::NotJson {
        reason: format!("invalid UTF-8: {e}"),
    })?;
    let envelope = parse_envelope(text)?;
    let extended = protocol.is_extended();

    match command_name(envelope.command, extended)? {
        Name::Subscribe => {
            let identifier = required_string(envelope.identifier)?;
            let (channel, params) = decode_identifier(&identifier)?;
            let history = match envelope.history {
                Some(raw) if extended && raw.get() != "null" => Some(decode_history(raw)?),
                _ => None,
            };
            let presence = match envelope.presence {
                Some(raw) if extended && raw.get() != "null" => Some(decode_presence(raw)?),
                _ => None,
            };
            Ok(Command::Subscribe {
                identifier,
                channel,
                params,
                history,
                presence,
            })
        }
        Name::History => {
            let identifier = required_string(envelope.identifier)?;
            let history = match envelope.history {
                Some(raw) if raw.get() != "null" => decode_history(raw)?,
                _ => {
                    return Err(ProtocolError::InvalidHistory {
                        reason: "no \"history\"".into(),
                    });
                }
            };
            Ok(Command::History {
                identifier,
                history,
            })
        }
        Name::Join => {
            let identifier = required_string(envelope.identifier)?;
            let presence = match envelope.presence {
                Some(raw) if raw.get() != "null" => decode_presence(raw)?,
                _ => {
                    return Err(ProtocolError::InvalidPresence {
                        reason: "no \"presence\"".into(),
                    });
                }
            };
            Ok(Command::Join {
                identifier,
                presence,
            })
        }
        Name::Leave => Ok(Command::Leave {
            identifier: required_string(envelope.identifier)?,
        }),
        Name::Presence => {
            let identifier = required_string(envelope.identifier)?;
            let return_records = match envelope.data {
                None => true,
                Some(raw) => match serde_json::from_str::<Value>(raw.get()) {
                    Ok(Value::Object(data)) => data
                        .get("return_records")
                        .and_then(Value::as_bool)
                        .unwrap_or(true),
                    _ => true,
                },
            };
            Ok(Command::Presence {
                identifier,
                return_records,
            })
        }
        Name::Whisper => {
            let identifier = required_string(envelope.identifier)?;
            let data = match envelope.data {
                None => return Err(ProtocolError::MissingData),
                Some(raw) if raw.get() == "null" => return Err(ProtocolError::MissingData),
                Some(raw) => raw.get().to_owned(),
            };
            Ok(Command::Whisper { identifier, data })
        }
        Name::Ping => Ok(Command::Ping),
        Name::Pong => Ok(Command::Pong),
        Name::Unsubscribe => Ok(Command::Unsubscribe {
            identifier: required_string(envelope.identifier)?,
        }),
        Name::Message => {
            let identifier = required_string(envelope.identifier)?;
            let (action, data) = decode_data(envelope.data)?;
            Ok(Command::Message {
                identifier,
                action,
                data,
            })
        }
    }
}

/// The top-level keys we care about, borrowed unparsed from the frame.
struct Envelope<'a> {
    command: Option<&'a RawValue>,
    identifier: Option<&'a RawValue>,
    data: Option<&'a RawValue>,
    history: Option<&'a RawValue>,
    presence: Option<&'a RawValue>,
}

impl<'de> Deserialize<'de> for Envelope<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // `deserialize_map` (unlike a derived struct) refuses JSON arrays.
        deserializer.deserialize_map(EnvelopeVisitor)
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Field {
    Command,
    Identifier,
    Data,
    History,
    Presence,
    #[serde(other)]
    Other,
}

struct EnvelopeVisitor;

impl<'de> Visitor<'de> for EnvelopeVisitor {
    type Value = Envelope<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut envelope = Envelope {
            command: None,
            identifier: None,
            data: None,
            history: None,
            presence: None,
        };
        while let Some(field) = map.next_key::<Field>()? {
            // Later duplicates overwrite earlier ones (Ruby `JSON.parse` semantics).
            // `IgnoredAny` and `RawValue` skip values iteratively: deep nesting here cannot
            // exhaust the stack.
            match field {
                Field::Command => envelope.command = Some(map.next_value()?),
                Field::Identifier => envelope.identifier = Some(map.next_value()?),
                Field::Data => envelope.data = Some(map.next_value()?),
                Field::History => envelope.history = Some(map.next_value()?),
                Field::Presence => envelope.presence = Some(map.next_value()?),
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(envelope)
    }
}

fn parse_envelope(text: &str) -> Result<Envelope<'_>, ProtocolError> {
    serde_json::from_str::<Envelope<'_>>(text).map_err(|e| {
        if e.classify() == serde_json::error::Category::Data {
            // The top-level value is not an object. serde_json reports the type mismatch as
            // soon as it sees the first byte, so make sure the rest is valid JSON too.
            match serde_json::from_str::<IgnoredAny>(text) {
                Ok(_) => ProtocolError::NotAnObject {
                    found: raw_kind(text.trim_start()),
                },
                Err(e) => not_json(&e),
            }
        } else {
            not_json(&e)
        }
    })
}

fn not_json(e: &serde_json::Error) -> ProtocolError {
    ProtocolError::NotJson {
        reason: e.to_string(),
    }
}

enum Name {
    Subscribe,
    Unsubscribe,
    Message,
    History,
    Join,
    Leave,
    Presence,
    Whisper,
    Ping,
    Pong,
}

fn command_name(raw: Option<&RawValue>, extended: bool) -> Result<Name, ProtocolError> {
    let raw = match raw {
        None => return Err(ProtocolError::MissingCommand),
        Some(raw) if raw.get() == "null" => return Err(ProtocolError::MissingCommand),
        Some(raw) => raw.get(),
    };
    // Fast path: the usual unescaped spelling, no allocation.
    match raw {
        r#""subscribe""# => return Ok(Name::Subscribe),
        r#""unsubscribe""# => return Ok(Name::Unsubscribe),
        r#""message""# => return Ok(Name::Message),
        r#""history""# if extended => return Ok(Name::History),
        r#""join""# if extended => return Ok(Name::Join),
        r#""leave""# if extended => return Ok(Name::Leave),
        r#""presence""# if extended => return Ok(Name::Presence),
        r#""whisper""# => return Ok(Name::Whisper),
        r#""ping""# if extended => return Ok(Name::Ping),
        r#""pong""# if extended => return Ok(Name::Pong),
        _ => {}
    }
    let unknown = |text: &str| ProtocolError::UnknownCommand {
        command: truncate_chars(text, ProtocolError::MAX_ECHOED_CHARS).to_owned(),
    };
    if !raw.starts_with('"') {
        return Err(unknown(raw));
    }
    // A string with escapes (`"subscrib\u0065"` is still `subscribe` to Ruby).
    let name: String = serde_json::from_str(raw).map_err(|e| not_json(&e))?;
    match name.as_str() {
        "subscribe" => Ok(Name::Subscribe),
        "unsubscribe" => Ok(Name::Unsubscribe),
        "message" => Ok(Name::Message),
        "history" if extended => Ok(Name::History),
        "join" if extended => Ok(Name::Join),
        "leave" if extended => Ok(Name::Leave),
        "presence" if extended => Ok(Name::Presence),
        "whisper" => Ok(Name::Whisper),
        "ping" if extended => Ok(Name::Ping),
        "pong" if extended => Ok(Name::Pong),
        other => Err(unknown(other)),
    }
}

/// Decodes the `identifier` field, which must be a JSON string.
fn required_string(raw: Option<&RawValue>) -> Result<String, ProtocolError> {
    let raw = match raw {
        None => return Err(ProtocolError::MissingIdentifier),
        Some(raw) if raw.get() == "null" => return Err(ProtocolError::MissingIdentifier),
        Some(raw) => raw.get(),
    };
    if !raw.starts_with('"') {
        return Err(ProtocolError::IdentifierNotString {
            found: raw_kind(raw),
        });
    }
    serde_json::from_str(raw).map_err(|e| not_json(&e))
}

fn decode_identifier(identifier: &str) -> Result<(String, Map<String, Value>), ProtocolError> {
    let params = match serde_json::from_str::<Value>(identifier) {
        Ok(Value::Object(params)) => params,
        Ok(other) => {
            return Err(ProtocolError::IdentifierNotObject {
                found: value_kind(&other),
            });
        }
        Err(e) if is_recursion_limit(&e) => return Err(ProtocolError::TooDeep),
        Err(e) => {
            return Err(ProtocolError::IdentifierNotJson {
                reason: e.to_string(),
            });
        }
    };
    let channel = match params.get("channel") {
        None | Some(Value::Null) => return Err(ProtocolError::MissingChannel),
        Some(Value::String(channel)) => channel.clone(),
        Some(other) => {
            return Err(ProtocolError::ChannelNotString {
                found: value_kind(other),
            });
        }
    };
    Ok((channel, params))
}

type ActionAndData = (Option<String>, Data);

fn decode_data(raw: Option<&RawValue>) -> Result<ActionAndData, ProtocolError> {
    let raw = match raw {
        None => return Err(ProtocolError::MissingData),
        Some(raw) if raw.get() == "null" => return Err(ProtocolError::MissingData),
        Some(raw) => raw.get(),
    };
    if !raw.starts_with('"') {
        return Err(ProtocolError::DataNotString {
            found: raw_kind(raw),
        });
    }
    let encoded: String = serde_json::from_str(raw).map_err(|e| not_json(&e))?;
    let data = match serde_json::from_str::<Data>(&encoded) {
        Ok(data) => data,
        Err(e) if is_recursion_limit(&e) => return Err(ProtocolError::TooDeep),
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            // Not an object: serde_json stops at the first byte, so check that
            // the rest is JSON (and not too deep) before naming its type.
            return Err(match serde_json::from_str::<Value>(&encoded) {
                Ok(other) => ProtocolError::DataNotObject {
                    found: value_kind(&other),
                },
                Err(e) if is_recursion_limit(&e) => ProtocolError::TooDeep,
                Err(e) => ProtocolError::DataNotJson {
                    reason: e.to_string(),
                },
            });
        }
        Err(e) => {
            return Err(ProtocolError::DataNotJson {
                reason: e.to_string(),
            });
        }
    };
    // Rails: `(data["action"].presence || :receive).to_sym`.
    let action = match data.get("action") {
        None | Some(Value::Null) => None,
        Some(Value::String(action)) if action.trim().is_empty() => None,
        Some(Value::String(action)) => Some(action.clone()),
        Some(other) => {
            return Err(ProtocolError::ActionNotString {
                found: value_kind(other),
            });
        }
    };
    Ok((action, data))
}

/// serde_json reports its nesting limit (128) as a syntax error; tell it apart by message.
fn is_recursion_limit(e: &serde_json::Error) -> bool {
    e.classify() == serde_json::error::Category::Syntax
        && e.to_string().starts_with("recursion limit exceeded")
}

/// The JSON type of a syntactically valid, whitespace-trimmed JSON text.
pub(crate) fn raw_kind(raw: &str) -> &'static str {
    match raw.as_bytes().first() {
        Some(b'{') => "object",
        Some(b'[') => "array",
        Some(b'"') => "string",
        Some(b't' | b'f') => "boolean",
        Some(b'n') => "null",
        _ => "number",
    }
}

/// The JSON type name of `value`, as [`ProtocolError`] spells it.
pub(crate) fn value_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn truncate_chars(s: &str, max_chars: usize) -> &str {
    match s.char_indices().nth(max_chars) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}
