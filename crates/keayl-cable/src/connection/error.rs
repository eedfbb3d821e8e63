//! [`CommandError`]: why a client command produced no effect.

use crate::protocol::ProtocolError;
use crate::pubsub::PubSubError;

/// Why a client command produced no effect. Logged and counted by the
/// transport; never sent to the client, never fatal to the connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The frame is not a valid command (§3.6 of the protocol notes).
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// No channel of that name is registered.
    #[error("subscription class not found: {0:?}")]
    UnknownChannel(String),
    /// A subscribe for an identifier already subscribed (ignored).
    #[error("already subscribed to {0}")]
    AlreadySubscribed(String),
    /// The connection holds the maximum number of subscriptions.
    #[error("too many subscriptions (limit {0})")]
    TooManySubscriptions(usize),
    /// A subscribe whose identifier is longer than the limit (in bytes).
    #[error("identifier of {0} bytes is over the limit of {1}")]
    IdentifierTooLong(usize, usize),
    /// An unsubscribe or message for an identifier not subscribed.
    #[error("unable to find subscription with identifier: {0}")]
    UnknownSubscription(String),
    /// A message the channel does not handle: without an action on a
    /// channel that does not [`receive`](crate::Channel::receive).
    #[error("unable to process {channel}#{action}")]
    UnknownAction {
        /// Channel class.
        channel: String,
        /// The action requested.
        action: String,
    },
    /// A message that does not decode as the channel's
    /// [`Action`](crate::Channel::Action): an action it does not define,
    /// or data of the wrong shape.
    #[error("unable to process {channel}#{action}: {message}")]
    InvalidAction {
        /// Channel class.
        channel: String,
        /// The action requested.
        action: String,
        /// What did not decode.
        message: String,
    },
    /// The action ran and failed (error or panic).
    #[error("{channel}#{action} failed: {message}")]
    ActionFailed {
        /// Channel class.
        channel: String,
        /// The action.
        action: String,
        /// The error or panic message.
        message: String,
    },
    /// The connection is not open (not yet opened, rejected or closed).
    #[error("connection is not open")]
    NotOpen,
    /// The subscription would take the connection's (or the process's)
    /// subscriptions over their memory budget.
    #[error("subscription of ~{needed} bytes is over the memory budget ({budget})")]
    OverBudget {
        /// The subscription's estimated bytes.
        needed: usize,
        /// Which budget: `"connection"` or `"process"`.
        budget: &'static str,
    },
    /// A presence command (`join`, `leave`, `presence`) that could not be
    /// served: the subscription has no presence stream, the info is too
    /// large, the set is full, or the backend keeps no presence. The client
    /// got `{"type":"presence",…,"message":{"type":"error"}}`.
    #[error("presence: {0}")]
    Presence(String),
    /// A presence or whisper command over
    /// [`CableConfig::max_presence_commands_per_second`](crate::CableConfig::max_presence_commands_per_second):
    /// dropped.
    #[error("{command} over {per_second} presence and whisper commands per second; dropped")]
    RateLimited {
        /// The command dropped.
        command: &'static str,
        /// The limit.
        per_second: u32,
    },
}

impl CommandError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            CommandError::Protocol(e) => e.kind(),
            CommandError::UnknownChannel(_) => "unknown_channel",
            CommandError::AlreadySubscribed(_) => "already_subscribed",
            CommandError::TooManySubscriptions(_) => "too_many_subscriptions",
            CommandError::IdentifierTooLong(..) => "identifier_too_long",
            CommandError::UnknownSubscription(_) => "unknown_subscription",
            CommandError::UnknownAction { .. } => "unknown_action",
            CommandError::InvalidAction { .. } => "invalid_action",
            CommandError::ActionFailed { .. } => "action_failed",
            CommandError::NotOpen => "not_open",
            CommandError::OverBudget { .. } => "over_budget",
            CommandError::Presence(_) => "presence",
            CommandError::RateLimited { .. } => "rate_limited",
        }
    }
}

impl From<PubSubError> for CommandError {
    fn from(e: PubSubError) -> Self {
        CommandError::ActionFailed {
            channel: String::new(),
            action: String::new(),
            message: e.to_string(),
        }
    }
}
