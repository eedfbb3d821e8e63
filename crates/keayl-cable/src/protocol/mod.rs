//! The Action Cable JSON wire format (`actioncable-v1-json`), without any I/O.
//!
//! This module turns WebSocket text-frame payloads into [`Command`]s and builds the frames
//! the server sends back, byte-compatible with Rails' Action Cable. It owns no sockets, no
//! timers and no subscription state, so the connection logic above it can be tested without
//! a network, and any transport (axum, hyper, a test harness) can reuse it.
//!
//! # Client → server
//!
//! [`parse_command`] decodes `subscribe`, `unsubscribe` and `message`. Two details that are
//! easy to get wrong are handled here:
//!
//! * `identifier` and `data` are JSON documents *encoded as JSON strings* inside the frame.
//! * Subscriptions are keyed by the **raw identifier string**: [`Command`] carries it
//!   verbatim, so `{"channel":"X","room":"1"}`, `{"room":"1","channel":"X"}`,
//!   `{"channel": "X", "room": "1"}` and `{"channel":"X","room":1}` stay four different keys.
//!
//! Malformed input never panics; it yields a [`ProtocolError`], which the caller logs while
//! keeping the connection open and sending nothing back (as Rails does).
//!
//! # Server → client
//!
//! [`welcome`], [`ping`], [`confirm_subscription`], [`reject_subscription`], [`disconnect`]
//! and the data frame [`message`] return ready-to-send [`bytes::Bytes`] with Rails' key order.
//! Identifiers are JSON-escaped the way `ActiveSupport::JSON` does (`<`, `>`, `&`, U+2028 and
//! U+2029 become `\u…` escapes), so control frames match Rails byte for byte. Message bodies
//! are spliced in as already-encoded JSON, never re-serialised; [`EncodedIdentifier`] caches
//! an identifier's escaped form so a broadcast costs one allocation per subscriber.
//!
//! ```
//! use keayl_cable::protocol::{self, Command, EncodedIdentifier};
//!
//! let frame = br#"{"command":"message","identifier":"{\"channel\":\"ChatChannel\"}","data":"{\"action\":\"speak\",\"text\":\"hi\"}"}"#;
//! let Command::Message { identifier, action, data } = protocol::parse_command(frame)? else {
//!     unreachable!()
//! };
//! assert_eq!(action.as_deref(), Some("speak"));
//! assert_eq!(data["text"], "hi");
//!
//! let id = EncodedIdentifier::new(&identifier);
//! assert_eq!(
//!     &id.confirm_subscription()[..],
//!     br#"{"identifier":"{\"channel\":\"ChatChannel\"}","type":"confirm_subscription"}"#
//! );
//! assert_eq!(
//!     &id.frame(r#""tock""#)[..],
//!     br#"{"identifier":"{\"channel\":\"ChatChannel\"}","message":"tock"}"#
//! );
//! # Ok::<(), protocol::ProtocolError>(())
//! ```

mod decode;
mod encode;
mod error;
mod ext;
mod presence;

pub use decode::{Command, parse_command, parse_command_with};
pub(crate) use decode::{raw_kind, value_kind};
pub use encode::{
    DisconnectReason, EncodedIdentifier, confirm_subscription, disconnect, message, ping,
    reject_subscription, welcome,
};
pub use error::ProtocolError;
pub use ext::{
    HistoryRequest, Protocol, StreamPosition, confirm_history, pong, reject_history,
    welcome_restored, welcome_with_sid,
};
pub use presence::{
    MAX_PRESENCE_ID_BYTES, PRESENCE_ERROR, PresenceRequest, presence_frame, presence_info_message,
    presence_join_event, presence_leave_event,
};

#[cfg(test)]
mod tests;
