//! Broadcasting from models through the server-wide pub/sub.
//!
//! [`set_cable_pubsub`] sets the backend models broadcast through. A model
//! that implements [`Broadcastable`] gets Turbo Streams-style broadcasts:
//! `broadcast_append_to`, `broadcast_replace_to`, `broadcast_remove_to` send
//! a `<turbo-stream>` payload naming action, target and content;
//! `broadcast_to` sends any payload. Stream names follow Turbo (no channel
//! prefix), so a `<turbo-cable-stream-source>` signed for the same
//! streamables receives them.
//!
//! ```
//! use std::sync::Arc;
//! use keayl_cable::broadcasting::{Broadcastable, set_cable_pubsub};
//! use keayl_cable::naming::{GlobalId, HasGlobalId};
//! use keayl_cable::pubsub::InMemory;
//!
//! struct Post { id: u64 }
//! impl HasGlobalId for Post {
//!     fn global_id(&self) -> GlobalId { GlobalId::new("blog", "Post", self.id) }
//! }
//! impl Broadcastable for Post {}
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! set_cable_pubsub(Arc::new(InMemory::new()));
//! let post = Post { id: 1 };
//! post.broadcast_append_to(&post.global_id(), "posts", "<p>hi</p>").await.unwrap();
//! # }
//! ```

use std::sync::{Arc, RwLock};

use serde_json::Value;

use crate::naming::{Streamable, stream_name_from};
use crate::pubsub::{BoxFuture, PubSub, PubSubError};
use crate::turbo::{TurboAction, turbo_stream};

static CABLE_PUBSUB: RwLock<Option<Arc<dyn PubSub>>> = RwLock::new(None);

/// Set the server-wide pub/sub that models and
/// [`Channel::broadcast_to_target`](crate::channel::Channel::broadcast_to_target)
/// broadcast through.
pub fn set_cable_pubsub(pubsub: Arc<dyn PubSub>) {
    *CABLE_PUBSUB.write().unwrap_or_else(|e| e.into_inner()) = Some(pubsub);
}

/// The server-wide pub/sub, if set.
pub fn cable_pubsub() -> Option<Arc<dyn PubSub>> {
    CABLE_PUBSUB
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// Publish `data` (JSON-encoded) to `stream` through the server-wide pub/sub.
pub fn broadcast(stream: &str, data: &Value) -> BoxFuture<'static, Result<(), PubSubError>> {
    match cable_pubsub() {
        Some(p) => p.broadcast(stream, data.to_string().into()),
        None => Box::pin(std::future::ready(Err(PubSubError::Failed(
            "no cable pub/sub set (call set_cable_pubsub)".into(),
        )))),
    }
}

/// A model that broadcasts updates to streams through the server pub/sub.
pub trait Broadcastable {
    /// Send `<turbo-stream action="append" target=…><template>content</template></turbo-stream>`
    /// to `streamable`'s stream.
    fn broadcast_append_to(
        &self,
        streamable: &dyn Streamable,
        target: &str,
        content: &str,
    ) -> BoxFuture<'static, Result<(), PubSubError>> {
        broadcast_action(streamable, TurboAction::Append, target, Some(content))
    }

    /// Send a `replace` Turbo Stream with `content`.
    fn broadcast_replace_to(
        &self,
        streamable: &dyn Streamable,
        target: &str,
        content: &str,
    ) -> BoxFuture<'static, Result<(), PubSubError>> {
        broadcast_action(streamable, TurboAction::Replace, target, Some(content))
    }

    /// Send a `remove` Turbo Stream (no template).
    fn broadcast_remove_to(
        &self,
        streamable: &dyn Streamable,
        target: &str,
    ) -> BoxFuture<'static, Result<(), PubSubError>> {
        broadcast_action(streamable, TurboAction::Remove, target, None)
    }

    /// Send an arbitrary payload to `streamable`'s stream.
    fn broadcast_to(
        &self,
        streamable: &dyn Streamable,
        payload: &Value,
    ) -> BoxFuture<'static, Result<(), PubSubError>> {
        broadcast(&stream_name_from(&[streamable]), payload)
    }
}

fn broadcast_action(
    streamable: &dyn Streamable,
    action: TurboAction,
    target: &str,
    content: Option<&str>,
) -> BoxFuture<'static, Result<(), PubSubError>> {
    let html = turbo_stream(action, target, content);
    broadcast(&stream_name_from(&[streamable]), &Value::String(html))
}
