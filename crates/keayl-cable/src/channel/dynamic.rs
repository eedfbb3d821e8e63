//! Type erasure: the connection stores channels as `Box<dyn DynChannel>`.

use std::time::Duration;

use super::{Channel, ChannelContext, ChannelError, Data};
use crate::pubsub::BoxFuture;

pub(crate) trait DynChannel: Send {
    fn name(&self) -> &'static str;
    fn actions(&self) -> &'static [&'static str];
    fn periodically(&self) -> &'static [(&'static str, Duration)];
    fn subscribed<'a>(
        &'a mut self,
        ctx: &'a mut ChannelContext<'_>,
    ) -> BoxFuture<'a, Result<(), ChannelError>>;
    fn unsubscribed<'a>(&'a mut self, ctx: &'a mut ChannelContext<'_>) -> BoxFuture<'a, ()>;
    fn perform<'a>(
        &'a mut self,
        ctx: &'a mut ChannelContext<'_>,
        action: &'a str,
        data: &'a Data,
    ) -> BoxFuture<'a, Result<(), ChannelError>>;
}

impl<C: Channel> DynChannel for C {
    fn name(&self) -> &'static str {
        C::NAME
    }
    fn actions(&self) -> &'static [&'static str] {
        C::ACTIONS
    }
    fn periodically(&self) -> &'static [(&'static str, Duration)] {
        C::PERIODICALLY
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
    fn perform<'a>(
        &'a mut self,
        ctx: &'a mut ChannelContext<'_>,
        action: &'a str,
        data: &'a Data,
    ) -> BoxFuture<'a, Result<(), ChannelError>> {
        Box::pin(Channel::perform(self, ctx, action, data))
    }
}

/// Builds a fresh channel value per subscription.
pub(crate) type ChannelFactory = std::sync::Arc<dyn Fn() -> Box<dyn DynChannel> + Send + Sync>;
