//! Errors produced while decoding client commands.

/// Why a client text frame could not be turned into a [`Command`](super::Command).
///
/// There is one variant per row of the malformed-input table of the protocol specification
/// (§3.6), plus a few finer-grained ones. Rails logs every one of these and keeps the
/// connection open without sending a frame, and so should the caller: none of them is
/// fatal for the connection or for its other subscriptions.
///
/// Use [`ProtocolError::kind`] as a low-cardinality metrics label; the `Display` text is
/// meant for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The frame is not a JSON document (truncated JSON, plain text, an empty frame,
    /// trailing garbage, invalid UTF-8, an invalid string escape).
    #[error("frame is not valid JSON: {reason}")]
    NotJson {
        /// The decoder's explanation, including the position of the error.
        reason: String,
    },
    /// The frame is valid JSON but not an object (`null`, `[]`, `42`, `"subscribe"`).
    #[error("frame is JSON {found}, expected an object")]
    NotAnObject {
        /// The JSON type that was found (`"null"`, `"array"`, `"number"`, `"string"`, `"boolean"`).
        found: &'static str,
    },
    /// The command object has no `"command"` key (or it is `null`).
    #[error("command object has no \"command\" key")]
    MissingCommand,
    /// The `"command"` value is not one of `subscribe`, `unsubscribe`, `message`
    /// (matching is exact and case-sensitive, so `"Subscribe"` lands here).
    #[error("unrecognized command {command:?}")]
    UnknownCommand {
        /// The command string, truncated to [`ProtocolError::MAX_ECHOED_CHARS`] characters;
        /// for a non-string command, its raw JSON text, truncated the same way.
        command: String,
    },
    /// The command has no `"identifier"` key (or it is `null`).
    #[error("command has no \"identifier\"")]
    MissingIdentifier,
    /// `"identifier"` is not a JSON string (for example a JSON object or a number).
    #[error("\"identifier\" is JSON {found}, expected a JSON-encoded string")]
    IdentifierNotString {
        /// The JSON type that was found.
        found: &'static str,
    },
    /// The `"identifier"` string of a `subscribe` does not itself contain JSON (`"ChatChannel"`).
    #[error("\"identifier\" is not JSON: {reason}")]
    IdentifierNotJson {
        /// The decoder's explanation.
        reason: String,
    },
    /// The `"identifier"` string of a `subscribe` decodes to something other than an object
    /// (`"42"`, `"[\"ChatChannel\"]"`, `"null"`).
    #[error("\"identifier\" decodes to JSON {found}, expected an object")]
    IdentifierNotObject {
        /// The JSON type that was found.
        found: &'static str,
    },
    /// The decoded identifier object has no `"channel"` key, or it is `null` (`{}`, `{"room":"1"}`).
    #[error("identifier has no \"channel\"")]
    MissingChannel,
    /// The identifier's `"channel"` is not a string (`{"channel":5}`).
    #[error("identifier \"channel\" is JSON {found}, expected a string")]
    ChannelNotString {
        /// The JSON type that was found.
        found: &'static str,
    },
    /// A `message` command has no `"data"` key (or it is `null`).
    #[error("message command has no \"data\"")]
    MissingData,
    /// `"data"` is not a JSON string (for example an object sent unencoded).
    #[error("\"data\" is JSON {found}, expected a JSON-encoded string")]
    DataNotString {
        /// The JSON type that was found.
        found: &'static str,
    },
    /// The `"data"` string does not contain JSON (`"{not json"`).
    #[error("\"data\" is not JSON: {reason}")]
    DataNotJson {
        /// The decoder's explanation.
        reason: String,
    },
    /// The `"data"` string decodes to something other than an object (`"[1,2]"`, `"\"echo\""`).
    #[error("\"data\" decodes to JSON {found}, expected an object")]
    DataNotObject {
        /// The JSON type that was found.
        found: &'static str,
    },
    /// `data["action"]` is present but not a string (`5`, `["echo"]`, `false`).
    ///
    /// Deviation: Rails' `presence` would turn the blank non-strings `false`, `[]` and `{}`
    /// into the `receive` action; they are refused here like any other non-string.
    #[error("\"action\" is JSON {found}, expected a string")]
    ActionNotString {
        /// The JSON type that was found.
        found: &'static str,
    },
    /// The `identifier` or `data` document nests deeper than serde_json's recursion limit
    /// (128 levels). Decoding stops at the limit, so hostile input cannot overflow the stack.
    #[error("JSON nested too deeply")]
    TooDeep,
    /// Extended protocol: a `history` request that is not
    /// `{"since":<unix seconds>,"streams":{"<stream>":{"offset":<n>,"epoch":"<e>"}}}`.
    #[error("invalid \"history\": {reason}")]
    InvalidHistory {
        /// What is wrong with it.
        reason: String,
    },
    /// Extended protocol: a `presence` value (of `join`, or attached to
    /// `subscribe`) that is not `{"id":<string or number>,"info":<any>}`.
    #[error("invalid \"presence\": {reason}")]
    InvalidPresence {
        /// What is wrong with it.
        reason: String,
    },
}

impl ProtocolError {
    /// How many characters of an unknown command are echoed back in
    /// [`ProtocolError::UnknownCommand`].
    pub const MAX_ECHOED_CHARS: usize = 64;

    /// A short, stable, snake_case name for this error, suitable as a metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotJson { .. } => "not_json",
            Self::NotAnObject { .. } => "not_an_object",
            Self::MissingCommand => "missing_command",
            Self::UnknownCommand { .. } => "unknown_command",
            Self::MissingIdentifier => "missing_identifier",
            Self::IdentifierNotString { .. } => "identifier_not_string",
            Self::IdentifierNotJson { .. } => "identifier_not_json",
            Self::IdentifierNotObject { .. } => "identifier_not_object",
            Self::MissingChannel => "missing_channel",
            Self::ChannelNotString { .. } => "channel_not_string",
            Self::MissingData => "missing_data",
            Self::DataNotString { .. } => "data_not_string",
            Self::DataNotJson { .. } => "data_not_json",
            Self::DataNotObject { .. } => "data_not_object",
            Self::ActionNotString { .. } => "action_not_string",
            Self::TooDeep => "too_deep",
            Self::InvalidHistory { .. } => "invalid_history",
            Self::InvalidPresence { .. } => "invalid_presence",
        }
    }
}
