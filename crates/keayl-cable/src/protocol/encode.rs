//! Encoding server → client frames.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

const IDENTIFIER_PREFIX: &[u8] = br#"{"identifier":"#;
const MESSAGE_INFIX: &[u8] = br#","message":"#;
const CONFIRM_SUFFIX: &[u8] = br#","type":"confirm_subscription"}"#;
const REJECT_SUFFIX: &[u8] = br#","type":"reject_subscription"}"#;

/// `{"type":"welcome"}`, sent once after the connection is accepted.
///
/// Returns a static buffer: no allocation.
pub fn welcome() -> Bytes {
    Bytes::from_static(br#"{"type":"welcome"}"#)
}

/// `{"type":"ping","message":<unix_secs>}`, the 3-second heartbeat.
///
/// The frame is the same for every connection at a given tick; encode it once and clone
/// the [`Bytes`].
pub fn ping(unix_secs: u64) -> Bytes {
    Bytes::from(format!(r#"{{"type":"ping","message":{unix_secs}}}"#))
}

/// `{"identifier":"<identifier>","type":"confirm_subscription"}`.
///
/// `identifier` is the raw identifier string of the `subscribe` command; it is JSON-escaped
/// here.
pub fn confirm_subscription(identifier: &str) -> Bytes {
    with_identifier(identifier, CONFIRM_SUFFIX)
}

/// `{"identifier":"<identifier>","type":"reject_subscription"}`.
pub fn reject_subscription(identifier: &str) -> Bytes {
    with_identifier(identifier, REJECT_SUFFIX)
}

/// `{"type":"disconnect","reason":"<reason>","reconnect":<reconnect>}`.
///
/// Send it, then close the socket with code 1000.
pub fn disconnect(reason: DisconnectReason, reconnect: bool) -> Bytes {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(br#"{"type":"disconnect","reason":"#);
    write_escaped(&mut out, reason.as_str());
    out.extend_from_slice(if reconnect {
        br#","reconnect":true}"#.as_slice()
    } else {
        br#","reconnect":false}"#.as_slice()
    });
    Bytes::from(out)
}

/// A data frame (broadcast or transmission): `{"identifier":"<identifier>","message":<message_json>}`.
///
/// `message_json` must be a complete JSON value; it is spliced in verbatim, not
/// re-serialised or validated. The frame is built in one allocation of the exact size. When
/// the same identifier receives many messages, keep an [`EncodedIdentifier`] instead so the
/// identifier is escaped only once.
pub fn message(identifier: &str, message_json: &str) -> Bytes {
    let escaped_len = escaped_len(identifier);
    let mut out = Vec::with_capacity(data_frame_len(escaped_len, message_json.len()));
    out.extend_from_slice(IDENTIFIER_PREFIX);
    write_escaped(&mut out, identifier);
    out.extend_from_slice(MESSAGE_INFIX);
    out.extend_from_slice(message_json.as_bytes());
    out.push(b'}');
    Bytes::from(out)
}

fn data_frame_len(escaped_identifier_len: usize, message_len: usize) -> usize {
    IDENTIFIER_PREFIX.len() + escaped_identifier_len + MESSAGE_INFIX.len() + message_len + 1
}

fn with_identifier(identifier: &str, suffix: &[u8]) -> Bytes {
    let mut out =
        Vec::with_capacity(IDENTIFIER_PREFIX.len() + escaped_len(identifier) + suffix.len());
    out.extend_from_slice(IDENTIFIER_PREFIX);
    write_escaped(&mut out, identifier);
    out.extend_from_slice(suffix);
    Bytes::from(out)
}

/// Why the server closes a connection, the `reason` of a `disconnect` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// `"unauthorized"`: the connection was rejected while connecting (send with
    /// `reconnect: false`).
    Unauthorized,
    /// `"invalid_request"`: defined by Rails, never reaches the wire there.
    InvalidRequest,
    /// `"server_restart"`: the server is restarting or shutting down (`reconnect: true`).
    ServerRestart,
    /// `"remote"`: disconnected on request of the application (remote connections).
    Remote,
    /// `"too_slow"` (AnyCable): the client does not read fast enough.
    TooSlow,
    /// `"no_pong"` (AnyCable, extended protocol): the client did not answer
    /// pings within the pong timeout (`reconnect: true`).
    NoPong,
    /// Any other reason (AnyCable uses `token_expired`, `idle_timeout`). The text
    /// is JSON-escaped on output.
    Other(&'static str),
}

impl DisconnectReason {
    /// The wire spelling of the reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::InvalidRequest => "invalid_request",
            Self::ServerRestart => "server_restart",
            Self::Remote => "remote",
            Self::TooSlow => "too_slow",
            Self::NoPong => "no_pong",
            Self::Other(reason) => reason,
        }
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A subscription identifier with its JSON-escaped form computed once.
///
/// Every frame sent for a subscription repeats its identifier, so a subscription should
/// hold one of these and call [`EncodedIdentifier::frame`] per message: that does no
/// escaping and exactly one allocation of exactly the frame's size. Cloning is a reference
/// count bump.
///
/// ```
/// use keayl_cable::protocol::EncodedIdentifier;
///
/// let id = EncodedIdentifier::new(r#"{"channel":"ChatChannel","room":"1"}"#);
/// let frame = id.frame(r#"{"text":"hi"}"#);
/// assert_eq!(
///     &frame[..],
///     br#"{"identifier":"{\"channel\":\"ChatChannel\",\"room\":\"1\"}","message":{"text":"hi"}}"#
/// );
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EncodedIdentifier {
    /// The identifier as a JSON string literal, quotes included.
    escaped: Arc<str>,
}

impl EncodedIdentifier {
    /// Escapes `identifier` (the raw identifier string) once.
    pub fn new(identifier: &str) -> Self {
        let mut escaped = String::with_capacity(escaped_len(identifier));
        for_each_escaped_piece(identifier, |piece| escaped.push_str(piece));
        Self {
            escaped: escaped.into(),
        }
    }

    /// The identifier as a JSON string literal, surrounding quotes included
    /// (`"{\"channel\":\"ChatChannel\"}"`).
    pub fn as_json(&self) -> &str {
        &self.escaped
    }

    /// The data frame `{"identifier":…,"message":<message_json>}` for this identifier.
    ///
    /// `message_json` must be a complete JSON value; it is spliced in verbatim. One
    /// allocation of exactly the frame's length.
    pub fn frame(&self, message_json: &str) -> Bytes {
        let mut out = Vec::with_capacity(data_frame_len(self.escaped.len(), message_json.len()));
        out.extend_from_slice(IDENTIFIER_PREFIX);
        out.extend_from_slice(self.escaped.as_bytes());
        out.extend_from_slice(MESSAGE_INFIX);
        out.extend_from_slice(message_json.as_bytes());
        out.push(b'}');
        Bytes::from(out)
    }

    /// The extended protocol's data frame with the message's position:
    /// `{"identifier":…,"message":<message_json>,"stream_id":"<stream>","epoch":"<epoch>","offset":<offset>}`.
    ///
    /// ```
    /// use keayl_cable::protocol::EncodedIdentifier;
    /// use keayl_cable::pubsub::Position;
    /// let id = EncodedIdentifier::new("i");
    /// let at = Position { offset: 32, epoch: "x123".into() };
    /// assert_eq!(
    ///     &id.frame_at("1", "chat_42", &at)[..],
    ///     br#"{"identifier":"i","message":1,"stream_id":"chat_42","epoch":"x123","offset":32}"#
    /// );
    /// ```
    pub fn frame_at(
        &self,
        message_json: &str,
        stream: &str,
        position: &crate::pubsub::Position,
    ) -> Bytes {
        let mut out = Vec::with_capacity(
            data_frame_len(self.escaped.len(), message_json.len())
                + 48
                + escaped_len(stream)
                + escaped_len(&position.epoch),
        );
        out.extend_from_slice(IDENTIFIER_PREFIX);
        out.extend_from_slice(self.escaped.as_bytes());
        out.extend_from_slice(MESSAGE_INFIX);
        out.extend_from_slice(message_json.as_bytes());
        out.extend_from_slice(br#","stream_id":"#);
        write_escaped(&mut out, stream);
        out.extend_from_slice(br#","epoch":"#);
        write_escaped(&mut out, &position.epoch);
        out.extend_from_slice(br#","offset":"#);
        out.extend_from_slice(position.offset.to_string().as_bytes());
        out.push(b'}');
        Bytes::from(out)
    }

    /// The `confirm_subscription` frame for this identifier.
    pub fn confirm_subscription(&self) -> Bytes {
        self.control(CONFIRM_SUFFIX)
    }

    /// The `reject_subscription` frame for this identifier.
    pub fn reject_subscription(&self) -> Bytes {
        self.control(REJECT_SUFFIX)
    }

    fn control(&self, suffix: &[u8]) -> Bytes {
        let mut out =
            Vec::with_capacity(IDENTIFIER_PREFIX.len() + self.escaped.len() + suffix.len());
        out.extend_from_slice(IDENTIFIER_PREFIX);
        out.extend_from_slice(self.escaped.as_bytes());
        out.extend_from_slice(suffix);
        Bytes::from(out)
    }
}

impl fmt::Debug for EncodedIdentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("EncodedIdentifier")
            .field(&&*self.escaped)
            .finish()
    }
}

impl From<&str> for EncodedIdentifier {
    fn from(identifier: &str) -> Self {
        Self::new(identifier)
    }
}

/// The escape sequence for one character, if it needs one. Mirrors `ActiveSupport::JSON`:
/// the JSON-mandatory escapes plus `<`, `>`, `&`, U+2028 and U+2029, so an identifier can
/// never close a `<script>` when a frame is embedded in HTML.
fn escape_for(c: char) -> Option<&'static str> {
    const CONTROL: [&str; 32] = [
        "\\u0000", "\\u0001", "\\u0002", "\\u0003", "\\u0004", "\\u0005", "\\u0006", "\\u0007",
        "\\b", "\\t", "\\n", "\\u000b", "\\f", "\\r", "\\u000e", "\\u000f", "\\u0010", "\\u0011",
        "\\u0012", "\\u0013", "\\u0014", "\\u0015", "\\u0016", "\\u0017", "\\u0018", "\\u0019",
        "\\u001a", "\\u001b", "\\u001c", "\\u001d", "\\u001e", "\\u001f",
    ];
    match c {
        '"' => Some("\\\""),
        '\\' => Some("\\\\"),
        '<' => Some("\\u003c"),
        '>' => Some("\\u003e"),
        '&' => Some("\\u0026"),
        '\u{2028}' => Some("\\u2028"),
        '\u{2029}' => Some("\\u2029"),
        c if (c as u32) < 0x20 => Some(CONTROL[c as usize]),
        _ => None,
    }
}

/// Length of `s` as a JSON string literal, quotes included.
pub(super) fn escaped_len(s: &str) -> usize {
    s.chars()
        .map(|c| escape_for(c).map_or(c.len_utf8(), str::len))
        .sum::<usize>()
        + 2
}

/// Appends `s` as a JSON string literal, quotes included.
pub(super) fn write_escaped(out: &mut Vec<u8>, s: &str) {
    for_each_escaped_piece(s, |piece| out.extend_from_slice(piece.as_bytes()));
}

/// Calls `emit` with consecutive pieces of `s` as a JSON string literal, quotes included:
/// runs of characters that need no escaping, and escape sequences.
fn for_each_escaped_piece(s: &str, mut emit: impl FnMut(&str)) {
    emit("\"");
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if let Some(escape) = escape_for(c) {
            if start < i {
                emit(&s[start..i]);
            }
            emit(escape);
            start = i + c.len_utf8();
        }
    }
    if start < s.len() {
        emit(&s[start..]);
    }
    emit("\"");
}
