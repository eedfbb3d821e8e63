//! Channels: the units a client subscribes to.
//!
//! An app defines a channel type implementing [`Channel`]:
//! [`subscribed`](Channel::subscribed) starts streaming,
//! [`unsubscribed`](Channel::unsubscribed) cleans up, and
//! [`perform`](Channel::perform) handles the client-callable actions listed in
//! [`Channel::ACTIONS`]. Only those names are ever dispatched from the wire:
//! framework operations ([`ChannelContext::stream_from`],
//! [`ChannelContext::transmit`], the lifecycle callbacks, …) are methods of
//! the context or the trait, never actions, so no client message reaches them.
//! A message without an action is dispatched as `receive` (when listed).
//!
//! ```
//! use keayl_cable::channel::{Channel, ChannelContext, ChannelError, Data};
//! use serde_json::json;
//!
//! #[derive(Default)]
//! struct ChatChannel;
//!
//! impl Channel for ChatChannel {
//!     const NAME: &'static str = "ChatChannel";
//!     const ACTIONS: &'static [&'static str] = &["speak"];
//!
//!     async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
//!         let room = ctx.param_str("room").unwrap_or("lobby").to_owned();
//!         ctx.stream_from(format!("room:{room}"));
//!         Ok(())
//!     }
//!
//!     async fn perform(&mut self, ctx: &mut ChannelContext<'_>, action: &str, data: &Data)
//!         -> Result<(), ChannelError>
//!     {
//!         match action {
//!             "speak" => {
//!                 let room = ctx.param_str("room").unwrap_or("lobby");
//!                 ctx.broadcast_to(&format!("room:{room}"), &json!(data["message"])).await?;
//!             }
//!             _ => {}
//!         }
//!         Ok(())
//!     }
//! }
//! ```

mod context;
mod dynamic;

use std::future::Future;
use std::time::Duration;

pub use context::ChannelContext;
pub(crate) use context::{SubState, Timer};
pub(crate) use dynamic::{ChannelFactory, DynChannel};

use crate::naming::{self, Streamable};
use crate::pubsub::{BoxFuture, PubSubError};

/// The decoded `data` of a client message: a JSON object, `action` included.
pub type Data = serde_json::Map<String, serde_json::Value>;

/// The decoded identifier of a subscription: a JSON object, `channel`
/// included, JSON types preserved.
pub type Params = serde_json::Map<String, serde_json::Value>;

/// An error from a channel callback or action. Any error converts into it
/// with `?`. The cable logs it; a failing `subscribed` rejects the
/// subscription, a failing action leaves the subscription as it was.
pub struct ChannelError(Box<dyn std::error::Error + Send + Sync>);

impl ChannelError {
    /// An error with a message.
    pub fn msg(message: impl Into<String>) -> Self {
        ChannelError(message.into().into())
    }
}

impl<E: Into<Box<dyn std::error::Error + Send + Sync>>> From<E> for ChannelError {
    fn from(e: E) -> Self {
        ChannelError(e.into())
    }
}

impl std::fmt::Debug for ChannelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

impl std::fmt::Display for ChannelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

/// A channel type. One value is created per subscription (so fields are
/// per-subscription state) and is driven by its connection, one callback at
/// a time, in the order the client's commands arrived.
pub trait Channel: Send + 'static {
    /// The class name clients subscribe with (`{"channel":"ChatChannel"}`);
    /// also the base of [`broadcasting_for`](Channel::broadcasting_for).
    const NAME: &'static str;

    /// The client-callable actions. Nothing else is ever dispatched from the
    /// wire. Include `"receive"` to accept messages without an action.
    const ACTIONS: &'static [&'static str] = &[];

    /// Timers started after a successful subscribe and stopped on
    /// unsubscribe: each `(name, every)` calls [`perform`](Channel::perform)
    /// with `name` and empty data every `every`, first after one interval.
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

    /// Handle an action listed in [`ACTIONS`](Channel::ACTIONS) (or a timer
    /// from [`PERIODICALLY`](Channel::PERIODICALLY) /
    /// [`ChannelContext::periodically`]). `data` is the client's whole data
    /// object, `action` included.
    fn perform(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        action: &str,
        data: &Data,
    ) -> impl Future<Output = Result<(), ChannelError>> + Send {
        let _ = (ctx, action, data);
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

    /// Publish `data` to `target`'s broadcasting through the server-wide
    /// pub/sub set with [`set_cable_pubsub`](crate::set_cable_pubsub).
    fn broadcast_to_target(
        target: &dyn Streamable,
        data: &serde_json::Value,
    ) -> BoxFuture<'static, Result<(), PubSubError>>
    where
        Self: Sized,
    {
        crate::broadcasting::broadcast(&Self::broadcasting_for(target), data)
    }
}
