//! Before `set_cable_pubsub`, model broadcasts fail instead of vanishing. Its own test
//! binary: nothing here ever sets the process-global pub/sub.

use keayl_cable::broadcasting::{Broadcastable, cable_pubsub};
use keayl_cable::channel::Channel;
use keayl_cable::naming::GlobalId;
use keayl_cable::pubsub::PubSubError;
use serde_json::json;

struct Post;
impl Broadcastable for Post {}

#[derive(Default)]
struct ChatChannel;
impl Channel for ChatChannel {
    const NAME: &'static str = "ChatChannel";
    type Action = keayl_cable::NoActions;
}

#[tokio::test]
async fn broadcasting_without_a_cable_pubsub_is_an_error() {
    assert!(cable_pubsub().is_none());
    let room = GlobalId::new("chat-app", "Room", 1);
    let err = Post.broadcast_append_to(&room, "t", "x").await.unwrap_err();
    assert!(matches!(err, PubSubError::Failed(_)), "{err:?}");
    let err = ChatChannel::broadcast_to_target(&room, &json!(1))
        .await
        .unwrap_err();
    assert!(matches!(err, PubSubError::Failed(_)), "{err:?}");
}
