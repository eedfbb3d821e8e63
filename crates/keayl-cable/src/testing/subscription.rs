//! [`TestSubscription`]: one subscription of a [`TestConnection`](super::TestConnection),
//! and the probe that reports its streams.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use super::connection::Shared;
use crate::channel::{Call, Channel, ChannelContext, ChannelError, Data, DynChannel};
use crate::coder::Coder;
use crate::connection::CommandError;
use crate::naming::Streamable;
use crate::protocol::ProtocolError;

/// The streams of one subscription, as its context last reported them.
pub(super) type StreamList = Arc<Mutex<Vec<String>>>;

fn lock(streams: &StreamList) -> std::sync::MutexGuard<'_, Vec<String>> {
    streams.lock().unwrap_or_else(|e| e.into_inner())
}

/// Wraps the app's channel value (from the cable's registry, or given) and
/// forwards every callback to it unchanged, then writes down the streams of
/// the subscription. Its action type is the raw data: the wrapped channel
/// decodes its own [`Channel::Action`], so unknown actions fail exactly as
/// they do on a real connection.
pub(super) struct Probe<C> {
    inner: Box<dyn DynChannel>,
    streams: StreamList,
    _channel: PhantomData<fn() -> C>,
}

impl<C: Channel> Probe<C> {
    pub(super) fn new(inner: Box<dyn DynChannel>, streams: StreamList) -> Self {
        Probe {
            inner,
            streams,
            _channel: PhantomData,
        }
    }

    fn record(&self, ctx: &ChannelContext<'_>) {
        let mut now: Vec<String> = ctx.streams().map(str::to_owned).collect();
        now.sort();
        *lock(&self.streams) = now;
    }
}

impl<C: Channel> Channel for Probe<C> {
    const NAME: &'static str = C::NAME;
    type Action = Data;
    const PERIODICALLY: &'static [(&'static str, Duration)] = C::PERIODICALLY;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        let result = DynChannel::subscribed(&mut *self.inner, ctx).await;
        self.record(ctx);
        result
    }

    async fn unsubscribed(&mut self, ctx: &mut ChannelContext<'_>) {
        DynChannel::unsubscribed(&mut *self.inner, ctx).await;
        // The connection stops every stream right after this callback.
        lock(&self.streams).clear();
    }

    async fn perform(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        data: Data,
    ) -> Result<(), ChannelError> {
        let result = self.inner.call(ctx, Call::Action(&data)).await;
        self.record(ctx);
        result
    }

    async fn receive(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        data: &Data,
    ) -> Result<(), ChannelError> {
        let result = self.inner.call(ctx, Call::Receive(data)).await;
        self.record(ctx);
        result
    }

    async fn periodic(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        timer: &'static str,
    ) -> Result<(), ChannelError> {
        let result = self.inner.call(ctx, Call::Timer(timer)).await;
        self.record(ctx);
        result
    }

    fn coder() -> Arc<dyn Coder> {
        C::coder()
    }
}

/// The identifier a client subscribing to `C` with `params` sends:
/// `{"channel":C::NAME, …params}`, compact, `channel` first.
pub(super) fn identifier_for<C: Channel>(params: impl Serialize) -> Result<String, CommandError> {
    let params = serde_json::to_string(&params).map_err(|e| ProtocolError::IdentifierNotJson {
        reason: e.to_string(),
    })?;
    let rest = match params.as_str() {
        "null" => String::new(),
        text => match serde_json::from_str::<Data>(text) {
            // `params`' own key order after `channel`, as a client writes it.
            Ok(params) => {
                let json = params.without("channel").as_json().to_owned();
                // `{…}` → `…`
                json[1..json.len() - 1].to_owned()
            }
            Err(_) => {
                return Err(ProtocolError::IdentifierNotObject {
                    found: crate::protocol::raw_kind(text),
                }
                .into());
            }
        },
    };
    let comma = if rest.is_empty() { "" } else { "," };
    Ok(format!(
        "{{\"channel\":{}{comma}{rest}}}",
        Value::from(C::NAME)
    ))
}

/// One subscription made with [`TestConnection::subscribe`](super::TestConnection::subscribe)
/// (Rails' `subscription` in a `ActionCable::Channel::TestCase`).
///
/// A cheap handle (clone it freely) on the connection it belongs to: several
/// may exist for one connection. Actions go to the real
/// [`Connection`](crate::Connection) as the client's `message` commands;
/// what the client received under this subscription's identifier is
/// readable with [`transmissions`](Self::transmissions).
pub struct TestSubscription<C> {
    pub(super) identifier: String,
    /// Frames from this sequence number on belong to this subscription.
    pub(super) since: u64,
    pub(super) confirmed: bool,
    pub(super) rejected: bool,
    pub(super) streams: StreamList,
    pub(super) shared: Arc<Shared>,
    pub(super) _channel: PhantomData<fn() -> C>,
}

impl<C> Clone for TestSubscription<C> {
    fn clone(&self) -> Self {
        TestSubscription {
            identifier: self.identifier.clone(),
            since: self.since,
            confirmed: self.confirmed,
            rejected: self.rejected,
            streams: self.streams.clone(),
            shared: self.shared.clone(),
            _channel: PhantomData,
        }
    }
}

impl<C: Channel> std::fmt::Debug for TestSubscription<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestSubscription")
            .field("channel", &C::NAME)
            .field("identifier", &self.identifier)
            .field("confirmed", &self.confirmed)
            .field("rejected", &self.rejected)
            .field("streams", &self.streams())
            .finish_non_exhaustive()
    }
}

impl<C: Channel> TestSubscription<C> {
    /// The subscription identifier, as the client sent it
    /// (`{"channel":"ChatChannel","room":"lobby"}`).
    pub fn identifier(&self) -> &str {
        &self.identifier
    }

    /// Whether the client got `confirm_subscription` for it.
    pub fn is_confirmed(&self) -> bool {
        self.confirmed
    }

    /// Whether the client got `reject_subscription` for it (the channel
    /// called [`reject`](ChannelContext::reject), `subscribed` failed, or a
    /// stream could not go live). A rejected subscription is not on the
    /// connection: its streams are torn down and `unsubscribed` ran.
    pub fn is_rejected(&self) -> bool {
        self.rejected
    }

    /// The streams it streams from, sorted, as the channel's context
    /// reported them after its last callback (empty once unsubscribed or
    /// rejected).
    pub fn streams(&self) -> Vec<String> {
        lock(&self.streams).clone()
    }

    /// Whether it streams from `stream` (Rails' `assert_has_stream`).
    pub fn has_stream(&self, stream: &str) -> bool {
        lock(&self.streams).iter().any(|s| s == stream)
    }

    /// Whether it streams `target`'s broadcasting under `C`
    /// ([`stream_for`](ChannelContext::stream_for); Rails'
    /// `assert_has_stream_for`).
    pub fn has_stream_for(&self, target: &dyn Streamable) -> bool {
        self.has_stream(&C::broadcasting_for(target))
    }

    /// What the client received under this identifier since the subscribe
    /// and not yet [taken](Self::take_transmissions), oldest first: the
    /// `message` of every data frame, both [`transmit`](ChannelContext::transmit)s
    /// and messages from its streams. Confirmations are not included.
    /// Peeks: calling it again returns the same values and more.
    pub fn transmissions(&self) -> Vec<Value> {
        self.shared
            .frames()
            .messages(&self.identifier, self.since, false)
    }

    /// [`transmissions`](Self::transmissions), draining them: the next call
    /// returns only what arrives after this one.
    pub fn take_transmissions(&self) -> Vec<Value> {
        self.shared
            .frames()
            .messages(&self.identifier, self.since, true)
    }

    /// The latest of [`transmissions`](Self::transmissions).
    pub fn last_transmission(&self) -> Option<Value> {
        self.transmissions().pop()
    }

    /// Call `action` with `data` (any `Serialize` giving a JSON object, or
    /// `()` / `null` for none), `action` merged in: the client's
    /// `perform(action, data)`, sent to the connection as a `message`
    /// command. Errors are the connection's: an action the channel's
    /// [`Action`](Channel::Action) does not decode is
    /// [`CommandError::InvalidAction`], a failing one
    /// [`CommandError::ActionFailed`], a subscription that is gone
    /// [`CommandError::UnknownSubscription`]. Data that is not an object is
    /// refused as on the wire ([`ProtocolError::DataNotObject`]).
    pub async fn perform(&self, action: &str, data: impl Serialize) -> Result<(), CommandError> {
        let data = to_data(data)?.unwrap_or_default();
        self.message(data.with_action(action)).await
    }

    /// Send `data` without an action (the client's `send(data)`), which the
    /// channel's [`receive`](Channel::receive) handles. As on the wire, an
    /// `action` key in `data` still names an action. A channel that does
    /// not override `receive` answers [`CommandError::UnknownAction`].
    pub async fn receive(&self, data: impl Serialize) -> Result<(), CommandError> {
        self.message(to_data(data)?.unwrap_or_default()).await
    }

    async fn message(&self, data: Data) -> Result<(), CommandError> {
        let frame = json!({
            "command": "message",
            "identifier": self.identifier,
            "data": data.as_json(),
        });
        self.shared.handle_frame(&frame).await
    }

    /// The presence events this client got under this identifier (the
    /// `message` of each `{"type":"presence",…}` frame: `join`, `leave`,
    /// `info`, `error`) not yet taken, oldest first; taking them.
    pub fn take_presence_events(&self) -> Vec<Value> {
        self.shared
            .frames()
            .presence(&self.identifier, self.since, true)
    }

    /// Join the subscription's presence stream as `id` with `info`, as the
    /// client's `presence.join(id, info)` does (whatever the protocol of
    /// the test connection).
    pub async fn join(&self, id: &str, info: impl Serialize) -> Result<(), CommandError> {
        let info = serde_json::to_string(&info).map_err(|e| ProtocolError::InvalidPresence {
            reason: e.to_string(),
        })?;
        let request = crate::protocol::PresenceRequest {
            id: id.to_owned(),
            info,
        };
        self.shared
            .conn()
            .await
            .join_presence(&self.identifier, request)
            .await
    }

    /// Leave the presence stream, as the client's `presence.leave()` does.
    pub async fn leave(&self) -> Result<(), CommandError> {
        self.shared
            .conn()
            .await
            .leave_presence(&self.identifier)
            .await
    }

    /// Ask for the presence set, as the client's `presence.info()` does:
    /// the answer is a presence event (`{"type":"info","total":…,"records":[…]}`).
    pub async fn request_presence(&self) -> Result<(), CommandError> {
        self.shared
            .conn()
            .await
            .presence_info(&self.identifier, true)
            .await
    }

    /// Whisper `data` to the other subscribers of the whisper stream, as
    /// the client's `channel.whisper(data)` does.
    pub async fn whisper(&self, data: impl Serialize) -> Result<(), CommandError> {
        let frame = json!({ "command": "whisper", "identifier": self.identifier, "data": data });
        self.shared.handle_frame(&frame).await
    }

    /// Unsubscribe, as the client's `unsubscribe` command does: the
    /// channel's `unsubscribed` runs, then its streams and timers stop.
    /// Errors with [`CommandError::UnknownSubscription`] when not
    /// subscribed (rejected, or already unsubscribed).
    pub async fn unsubscribe(&self) -> Result<(), CommandError> {
        let frame = json!({ "command": "unsubscribe", "identifier": self.identifier });
        self.shared.handle_frame(&frame).await
    }
}

/// `data` as the client would send it: a JSON object in `data`'s own key
/// order (a struct's field order, a map's order), `None` for `()` / `null`.
fn to_data(data: impl Serialize) -> Result<Option<Data>, CommandError> {
    let text = serde_json::to_string(&data).map_err(|e| ProtocolError::DataNotJson {
        reason: e.to_string(),
    })?;
    if text == "null" {
        return Ok(None);
    }
    serde_json::from_str::<Data>(&text).map(Some).map_err(|_| {
        ProtocolError::DataNotObject {
            found: crate::protocol::raw_kind(&text),
        }
        .into()
    })
}
