//! Broadcasting from anywhere: [`Broadcaster`], and models that broadcast.
//!
//! A [`Broadcaster`] is a cheap, cloneable handle on one cable's pub/sub
//! ([`Cable::broadcaster`](crate::Cable::broadcaster)): put it in your axum
//! state and publish from handlers, jobs or models, with no global. It
//! sends raw streams ([`broadcast`](Broadcaster::broadcast)), a channel's
//! broadcasting for a model ([`broadcast_for`](Broadcaster::broadcast_for),
//! what the channel's [`stream_for`](crate::ChannelContext::stream_for)
//! streams), and Turbo Streams for a model
//! ([`broadcast_append_to`](Broadcaster::broadcast_append_to) and family,
//! what [`stream_from_model`](crate::ChannelContext::stream_from_model) and
//! a signed `<turbo-cable-stream-source>` stream).
//!
//! The spec's [`Broadcastable`] models broadcast the same Turbo Streams
//! through [`Broadcastable::broadcaster`], by default the process-wide one
//! set with [`set_cable_pubsub`] (optional: nothing else needs it).
//!
//! ```
//! use keayl_cable::naming::{GlobalId, HasGlobalId};
//! use keayl_cable::{Cable, Channel, ChannelContext, ChannelError, InMemory, NoActions};
//!
//! struct TodoList { id: u64 }
//! impl HasGlobalId for TodoList {
//!     fn global_id(&self) -> GlobalId { GlobalId::new("todo-app", "TodoList", self.id) }
//! }
//!
//! /// Streams what is broadcast about the list in its params.
//! #[derive(Default)]
//! struct ListChannel;
//! impl Channel for ListChannel {
//!     const NAME: &'static str = "ListChannel";
//!     type Action = NoActions;
//!     async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
//!         #[derive(serde::Deserialize)]
//!         struct P { list: u64 }
//!         let P { list } = ctx.params_as()?;
//!         ctx.stream_from_model(&TodoList { id: list }.global_id());
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let cable = Cable::builder(InMemory::new()).channel::<ListChannel>().build();
//! let broadcaster = cable.broadcaster(); // Clone, Send, Sync: fits in axum state
//! let list = TodoList { id: 1 };
//! broadcaster
//!     .broadcast_append_to(&list.global_id(), "todos", "<li>milk</li>")
//!     .await
//!     .unwrap();
//! # }
//! ```

use std::sync::{Arc, RwLock};

use serde::Serialize;
use serde_json::Value;

use crate::channel::Channel;
use crate::coder::{Coder, JsonCoder};
use crate::naming::{Streamable, stream_name_from};
use crate::pubsub::{BoxFuture, PubSub, PubSubError};
use crate::turbo::{TurboAction, turbo_stream};

static CABLE_PUBSUB: RwLock<Option<Arc<dyn PubSub>>> = RwLock::new(None);

/// Set the process-wide default pub/sub that [`Broadcastable`] models and
/// [`Channel::broadcast_to_target`] use (the spec's `set_cable_pubsub`).
/// Optional: a [`Broadcaster`] does the same without it.
pub fn set_cable_pubsub(pubsub: Arc<dyn PubSub>) {
    *CABLE_PUBSUB.write().unwrap_or_else(|e| e.into_inner()) = Some(pubsub);
}

/// The process-wide default pub/sub, if set.
pub fn cable_pubsub() -> Option<Arc<dyn PubSub>> {
    CABLE_PUBSUB
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// Publishes through one pub/sub backend; cheap to clone.
#[derive(Clone)]
pub struct Broadcaster {
    pubsub: Arc<dyn PubSub>,
}

impl std::fmt::Debug for Broadcaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broadcaster").finish_non_exhaustive()
    }
}

impl Broadcaster {
    /// A broadcaster publishing through `pubsub`.
    pub fn new(pubsub: Arc<dyn PubSub>) -> Self {
        Broadcaster { pubsub }
    }

    /// The one over the process-wide default set with [`set_cable_pubsub`],
    /// or an error saying it is not set.
    pub fn process_default() -> Result<Self, PubSubError> {
        cable_pubsub().map(Broadcaster::new).ok_or_else(|| {
            PubSubError::Failed(
                "no process-wide cable pub/sub (call set_cable_pubsub, or use Cable::broadcaster)"
                    .into(),
            )
        })
    }

    /// The backend.
    pub fn pubsub(&self) -> &Arc<dyn PubSub> {
        &self.pubsub
    }

    /// Publish `data`, JSON-encoded, to `stream` (Rails'
    /// `ActionCable.server.broadcast`).
    pub fn broadcast(
        &self,
        stream: &str,
        data: &impl Serialize,
    ) -> BoxFuture<'static, Result<(), PubSubError>> {
        encode_and_publish(&self.pubsub, &JSON, stream, data)
    }

    /// Publish pre-encoded payload bytes to `stream`.
    pub fn broadcast_raw(
        &self,
        stream: &str,
        payload: bytes::Bytes,
    ) -> BoxFuture<'static, Result<(), PubSubError>> {
        if let Some(refused) = refuse_reserved(stream) {
            return refused;
        }
        self.pubsub.broadcast(stream, payload)
    }

    /// Publish `data` to channel `C`'s broadcasting for `target`, encoded
    /// with [`C::coder`](Channel::coder): what `C`'s
    /// [`stream_for`](crate::ChannelContext::stream_for) receives (Rails'
    /// `ChatChannel.broadcast_to(room, data)`).
    pub fn broadcast_for<C: Channel>(
        &self,
        target: &dyn Streamable,
        data: &impl Serialize,
    ) -> BoxFuture<'static, Result<(), PubSubError>> {
        encode_and_publish(
            &self.pubsub,
            &C::coder(),
            &C::broadcasting_for(target),
            data,
        )
    }

    /// Send `<turbo-stream action="append" target=…><template>content</template></turbo-stream>`
    /// to `streamable`'s stream (Turbo's naming: [`stream_name_from`]).
    pub fn broadcast_append_to(
        &self,
        streamable: &dyn Streamable,
        target: &str,
        content: &str,
    ) -> BoxFuture<'static, Result<(), PubSubError>> {
        self.turbo(streamable, TurboAction::Append, target, Some(content))
    }

    /// Send a `replace` Turbo Stream with `content`.
    pub fn broadcast_replace_to(
        &self,
        streamable: &dyn Streamable,
        target: &str,
        content: &str,
    ) -> BoxFuture<'static, Result<(), PubSubError>> {
        self.turbo(streamable, TurboAction::Replace, target, Some(content))
    }

    /// Send a `remove` Turbo Stream (no template).
    pub fn broadcast_remove_to(
        &self,
        streamable: &dyn Streamable,
        target: &str,
    ) -> BoxFuture<'static, Result<(), PubSubError>> {
        self.turbo(streamable, TurboAction::Remove, target, None)
    }

    /// Send any payload to `streamable`'s stream (Turbo's naming).
    pub fn broadcast_to_model(
        &self,
        streamable: &dyn Streamable,
        payload: &impl Serialize,
    ) -> BoxFuture<'static, Result<(), PubSubError>> {
        self.broadcast(&stream_name_from(&[streamable]), payload)
    }

    fn turbo(
        &self,
        streamable: &dyn Streamable,
        action: TurboAction,
        target: &str,
        content: Option<&str>,
    ) -> BoxFuture<'static, Result<(), PubSubError>> {
        let html = turbo_stream(action, target, content);
        self.broadcast_to_model(streamable, &Value::String(html))
    }
}

static JSON: std::sync::LazyLock<Arc<dyn Coder>> = std::sync::LazyLock::new(|| Arc::new(JsonCoder));

/// Encode `data` with `coder` and publish it to `stream`.
pub(crate) fn encode_and_publish(
    pubsub: &Arc<dyn PubSub>,
    coder: &Arc<dyn Coder>,
    stream: &str,
    data: &impl Serialize,
) -> BoxFuture<'static, Result<(), PubSubError>> {
    let encoded = if coder.is_json_passthrough() {
        serde_json::to_vec(data)
            .map(bytes::Bytes::from)
            .map_err(|e| PubSubError::Failed(e.to_string()))
    } else {
        serde_json::to_value(data)
            .map_err(|e| PubSubError::Failed(e.to_string()))
            .and_then(|v| {
                coder
                    .encode(&v)
                    .map_err(|e| PubSubError::Failed(e.to_string()))
            })
    };
    if let Some(refused) = refuse_reserved(stream) {
        return refused;
    }
    match encoded {
        Ok(payload) => pubsub.broadcast(stream, payload),
        Err(e) => Box::pin(std::future::ready(Err(e))),
    }
}

/// Keayl's own streams (presence events, whispers) take no broadcasts from
/// apps: a stream name from user input cannot forge presence events.
fn refuse_reserved(stream: &str) -> Option<BoxFuture<'static, Result<(), PubSubError>>> {
    crate::naming::is_reserved(stream).then(|| {
        Box::pin(std::future::ready(Err(PubSubError::Failed(format!(
            "{stream:?} is a reserved stream name"
        ))))) as BoxFuture<'static, Result<(), PubSubError>>
    })
}

/// A model that broadcasts Turbo Stream updates about itself or other
/// streamables (the spec's `Broadcastable`). Every method goes through
/// [`broadcaster`](Broadcastable::broadcaster).
pub trait Broadcastable {
    /// Where this model's broadcasts go. Default: the process-wide pub/sub
    /// set with [`set_cable_pubsub`]; override it to return your app's
    /// [`Broadcaster`] and no global is involved.
    fn broadcaster(&self) -> Result<Broadcaster, PubSubError> {
        Broadcaster::process_default()
    }

    /// [`Broadcaster::broadcast_append_to`] through this model's broadcaster.
    fn broadcast_append_to(
        &self,
        streamable: &dyn Streamable,
        target: &str,
        content: &str,
    ) -> BoxFuture<'static, Result<(), PubSubError>> {
        match self.broadcaster() {
            Ok(b) => b.broadcast_append_to(streamable, target, content),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    /// [`Broadcaster::broadcast_replace_to`] through this model's broadcaster.
    fn broadcast_replace_to(
        &self,
        streamable: &dyn Streamable,
        target: &str,
        content: &str,
    ) -> BoxFuture<'static, Result<(), PubSubError>> {
        match self.broadcaster() {
            Ok(b) => b.broadcast_replace_to(streamable, target, content),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    /// [`Broadcaster::broadcast_remove_to`] through this model's broadcaster.
    fn broadcast_remove_to(
        &self,
        streamable: &dyn Streamable,
        target: &str,
    ) -> BoxFuture<'static, Result<(), PubSubError>> {
        match self.broadcaster() {
            Ok(b) => b.broadcast_remove_to(streamable, target),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    /// [`Broadcaster::broadcast_to_model`] through this model's broadcaster:
    /// any payload to `streamable`'s stream.
    fn broadcast_to(
        &self,
        streamable: &dyn Streamable,
        payload: &Value,
    ) -> BoxFuture<'static, Result<(), PubSubError>> {
        match self.broadcaster() {
            Ok(b) => b.broadcast_to_model(streamable, payload),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}
