//! Channels: the units a client subscribes to.
//!
//! An app defines a channel type implementing [`Channel`]:
//! [`subscribed`](Channel::subscribed) starts streaming,
//! [`unsubscribed`](Channel::unsubscribed) cleans up, and
//! [`perform`](Channel::perform) handles what clients may call, typed as the
//! channel's [`Action`](Channel::Action) (decoded with serde from the
//! message's data). Only that type's values are ever dispatched from the
//! wire: framework operations ([`ChannelContext::stream_from`],
//! [`ChannelContext::transmit`], the lifecycle callbacks, timers) are
//! methods of the context or the trait, never actions, so no client message
//! reaches them. A message without an action goes to
//! [`receive`](Channel::receive).
//!
//! ```
//! use keayl_cable::channel::{Channel, ChannelContext, ChannelError};
//! use serde::Deserialize;
//! use serde_json::json;
//!
//! #[derive(Deserialize)]
//! struct Room {
//!     room: String,
//! }
//!
//! #[derive(Deserialize)]
//! #[serde(tag = "action", rename_all = "snake_case")]
//! enum ChatAction {
//!     Speak { message: String },
//! }
//!
//! #[derive(Default)]
//! struct ChatChannel;
//!
//! impl Channel for ChatChannel {
//!     const NAME: &'static str = "ChatChannel";
//!     type Action = ChatAction;
//!
//!     async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
//!         let Room { room } = ctx.params_as()?;
//!         ctx.stream_from(format!("room:{room}"));
//!         Ok(())
//!     }
//!
//!     async fn perform(&mut self, ctx: &mut ChannelContext<'_>, action: ChatAction)
//!         -> Result<(), ChannelError>
//!     {
//!         match action {
//!             ChatAction::Speak { message } => {
//!                 let Room { room } = ctx.params_as()?;
//!                 ctx.broadcast_to(&format!("room:{room}"), &json!({ "message": message })).await?;
//!             }
//!         }
//!         Ok(())
//!     }
//! }
//! ```

mod context;
mod data;
mod dynamic;

use std::future::Future;
use std::time::Duration;

pub use context::{ChannelContext, StreamFrom};
pub(crate) use context::{Gate, SubState, Timer};
pub use data::Data;
pub(crate) use dynamic::{Call, ChannelFactory, DynChannel};

use crate::naming::{self, Streamable};
use crate::pubsub::{BoxFuture, PubSubError};

/// The decoded identifier of a subscription: a JSON object, `channel`
/// included, JSON types preserved.
pub type Params = serde_json::Map<String, serde_json::Value>;

/// An error from a channel callback or action. Any error converts into it
/// with `?`. The cable logs it; a failing `subscribed` rejects the
/// subscription, a failing action leaves the subscription as it was.
pub struct ChannelError(Repr);

enum Repr {
    /// The client's message did not decode into the channel's
    /// [`Channel::Action`] (an unknown action or ill-typed data).
    Invalid(String),
    /// The channel does not handle this kind of message (the default
    /// [`Channel::receive`]).
    Unhandled,
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl ChannelError {
    /// An error with a message.
    pub fn msg(message: impl Into<String>) -> Self {
        ChannelError(Repr::Other(message.into().into()))
    }

    /// The answer of a callback that does not handle the message (what the
    /// default [`Channel::receive`] returns): reported as an unknown action,
    /// not as a failure.
    pub fn unhandled() -> Self {
        ChannelError(Repr::Unhandled)
    }

    /// Whether this is [`unhandled`](Self::unhandled).
    pub fn is_unhandled(&self) -> bool {
        matches!(self.0, Repr::Unhandled)
    }

    /// Client input that does not have the shape the channel asks for (an
    /// action or params that do not decode).
    pub fn invalid(message: impl Into<String>) -> Self {
        ChannelError(Repr::Invalid(message.into()))
    }

    /// Whether this is [`invalid`](Self::invalid) client input.
    pub fn is_invalid(&self) -> bool {
        matches!(self.0, Repr::Invalid(_))
    }
}

impl<E: Into<Box<dyn std::error::Error + Send + Sync>>> From<E> for ChannelError {
    fn from(e: E) -> Self {
        ChannelError(Repr::Other(e.into()))
    }
}

impl std::fmt::Debug for ChannelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Repr::Invalid(m) => write!(f, "Invalid({m:?})"),
            Repr::Unhandled => f.write_str("Unhandled"),
            Repr::Other(e) => std::fmt::Debug::fmt(e, f),
        }
    }
}

impl std::fmt::Display for ChannelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Repr::Invalid(m) => f.write_str(m),
            Repr::Unhandled => f.write_str("not handled by this channel"),
            Repr::Other(e) => std::fmt::Display::fmt(e, f),
        }
    }
}

/// What a client may call on a channel: any type serde can decode from the
/// message's data object, `action` key included. An enum tagged by
/// `action` is the usual shape, and the compiler then checks that every
/// callable action has its arm:
///
/// ```
/// #[derive(serde::Deserialize)]
/// #[serde(tag = "action", rename_all = "snake_case")]
/// enum ChatAction {
///     Speak { message: String },
///     Typing,
/// }
/// ```
///
/// An unknown action, a missing field or a field of the wrong type is a
/// [`CommandError::InvalidAction`](crate::CommandError::InvalidAction):
/// logged, no frame, the connection stays open. [`NoActions`] is the type
/// of a channel with nothing to call.
pub trait Action: serde::de::DeserializeOwned + Send + 'static {}

impl<T: serde::de::DeserializeOwned + Send + 'static> Action for T {}

/// The [`Channel::Action`] of a channel clients cannot call: every message
/// is an [`InvalidAction`](crate::CommandError::InvalidAction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoActions {}

impl<'de> serde::Deserialize<'de> for NoActions {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom("this channel has no actions"))
    }
}

/// A channel type. One value is created per subscription (so fields are
/// per-subscription state) and is driven by its connection, one callback at
/// a time, in the order the client's commands arrived.
pub trait Channel: Send + 'static {
    /// The class name clients subscribe with (`{"channel":"ChatChannel"}`);
    /// also the base of [`broadcasting_for`](Channel::broadcasting_for).
    const NAME: &'static str;

    /// What clients may call ([`perform`](Channel::perform) gets it
    /// decoded). Nothing else is ever dispatched from the wire. Use
    /// [`NoActions`] for a channel with none.
    type Action: Action;

    /// Timers started after a successful subscribe and stopped on
    /// unsubscribe: each `(name, every)` calls
    /// [`periodic`](Channel::periodic) with `name` every `every`, first
    /// after one interval. Never callable by clients.
    const PERIODICALLY: &'static [(&'static str, Duration)] = &[];

    /// Called when a client subscribes: start streams, check access, maybe
    /// [`reject`](ChannelContext::reject). Returning an error rejects the
    /// subscription too.
    fn subscribed(
        &mut self,
        ctx: &mut ChannelContext<'_>,
    ) -> impl Future<Output = Result<(), ChannelError>> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// Called when the subscription ends (client unsubscribe, disconnect or
    /// rejection), before its streams and timers are dropped.
    fn unsubscribed(&mut self, ctx: &mut ChannelContext<'_>) -> impl Future<Output = ()> + Send {
        let _ = ctx;
        async {}
    }

    /// Handle a client message decoded as one of the channel's
    /// [`Action`](Channel::Action)s.
    fn perform(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        action: Self::Action,
    ) -> impl Future<Output = Result<(), ChannelError>> + Send {
        let _ = (ctx, action);
        async { Ok(()) }
    }

    /// Handle a client message without an action (or with the action
    /// `receive`), Rails' `receive(data)`. `data` is the whole data object.
    /// The default does not handle it: the message is logged as an unknown
    /// action.
    fn receive(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        data: &Data,
    ) -> impl Future<Output = Result<(), ChannelError>> + Send {
        let _ = (ctx, data);
        async { Err(ChannelError::unhandled()) }
    }

    /// Handle a timer from [`PERIODICALLY`](Channel::PERIODICALLY) or
    /// [`ChannelContext::periodically`].
    fn periodic(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        timer: &'static str,
    ) -> impl Future<Output = Result<(), ChannelError>> + Send {
        let _ = (ctx, timer);
        async { Ok(()) }
    }

    /// The broadcasting name for `target` under this channel
    /// (`chat:Z2lkOi8v…`), as [`stream_for`](ChannelContext::stream_for)
    /// uses it.
    fn broadcasting_for(target: &dyn Streamable) -> String
    where
        Self: Sized,
    {
        naming::broadcasting_for(Self::NAME, &[target])
    }

    /// How this channel's broadcasts travel through pub/sub: what
    /// [`ChannelContext::broadcast_for`] and [`Broadcaster::broadcast_for`]
    /// encode with, and [`ChannelContext::stream_for`] decodes with.
    /// Default: [`JsonCoder`](crate::coder::JsonCoder) (what Rails sends).
    ///
    /// [`Broadcaster::broadcast_for`]: crate::Broadcaster::broadcast_for
    fn coder() -> std::sync::Arc<dyn crate::coder::Coder>
    where
        Self: Sized,
    {
        std::sync::Arc::new(crate::coder::JsonCoder)
    }

    /// Publish `data` to `target`'s broadcasting through the process-wide
    /// default pub/sub set with [`set_cable_pubsub`](crate::set_cable_pubsub)
    /// (the spec's `broadcast_to_target`). Without a global:
    /// [`Broadcaster::broadcast_for`](crate::Broadcaster::broadcast_for).
    fn broadcast_to_target(
        target: &dyn Streamable,
        data: &serde_json::Value,
    ) -> BoxFuture<'static, Result<(), PubSubError>>
    where
        Self: Sized,
    {
        match crate::Broadcaster::process_default() {
            Ok(b) => b.broadcast_for::<Self>(target, data),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}
