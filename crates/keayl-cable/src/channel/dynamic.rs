//! Type erasure: the connection stores channels as `Box<dyn DynChannel>`.

use std::time::Duration;

use super::{Channel, ChannelContext, ChannelError, Data};
use crate::pubsub::BoxFuture;

/// One thing the connection asks of a channel besides the lifecycle.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Call<'a> {
    /// A client message with an action (its data's `action` key), decoded
    /// as the channel's `Action`.
    Action(&'a Data),
    /// A client message without an action.
    Receive(&'a Data),
    /// A periodic timer.
    Timer(&'static str),
}

pub(crate) trait DynChannel: Send {
    fn name(&self) -> &'static str;
    fn periodically(&self) -> &'static [(&'static str, Duration)];
    fn coder(&self) -> std::sync::Arc<dyn crate::coder::Coder>;
    fn subscribed<'a>(
        &'a mut self,
        ctx: &'a mut ChannelContext<'_>,
    ) -> BoxFuture<'a, Result<(), ChannelError>>;
    fn unsubscribed<'a>(&'a mut self, ctx: &'a mut ChannelContext<'_>) -> BoxFuture<'a, ()>;
    fn call<'a>(
        &'a mut self,
        ctx: &'a mut ChannelContext<'_>,
        call: Call<'a>,
    ) -> BoxFuture<'a, Result<(), ChannelError>>;
}

impl<C: Channel> DynChannel for C {
    fn name(&self) -> &'static str {
        C::NAME
    }
    fn periodically(&self) -> &'static [(&'static str, Duration)] {
        C::PERIODICALLY
    }
    fn coder(&self) -> std::sync::Arc<dyn crate::coder::Coder> {
        C::coder()
    }
    fn subscribed<'a>(
        &'a mut self,
        ctx: &'a mut ChannelContext<'_>,
    ) -> BoxFuture<'a, Result<(), ChannelError>> {
        Box::pin(Channel::subscribed(self, ctx))
    }
    fn unsubscribed<'a>(&'a mut self, ctx: &'a mut ChannelContext<'_>) -> BoxFuture<'a, ()> {
        Box::pin(Channel::unsubscribed(self, ctx))
    }
    fn call<'a>(
        &'a mut self,
        ctx: &'a mut ChannelContext<'_>,
        call: Call<'a>,
    ) -> BoxFuture<'a, Result<(), ChannelError>> {
        match call {
            // `data` holds `action` already: the action's name came from it.
            Call::Action(data) => match data.decode::<C::Action>() {
                Ok(action) => Box::pin(Channel::perform(self, ctx, action)),
                Err(e) => Box::pin(std::future::ready(Err(e))),
            },
            Call::Receive(data) => Box::pin(Channel::receive(self, ctx, data)),
            Call::Timer(name) => Box::pin(Channel::periodic(self, ctx, name)),
        }
    }
}

/// Builds a fresh channel value per subscription.
pub(crate) type ChannelFactory = std::sync::Arc<dyn Fn() -> Box<dyn DynChannel> + Send + Sync>;
