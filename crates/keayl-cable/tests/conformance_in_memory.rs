//! The shared pub/sub conformance suite (`keayl_cable::pubsub::conformance`)
//! against the in-memory backend: one process, so every instance the suite
//! asks for is the same backend.
//!
//! The suite's source is compiled in here directly, so it runs with or
//! without the `conformance` feature (`cargo test -p keayl-cable`).

use std::sync::Arc;

use keayl_cable::pubsub::InMemory;
// The names the suite's `use super::…` expects.
use keayl_cable::pubsub::{BoxFuture, Callback, Delivery, PubSub, SubscriptionId};

#[path = "../src/pubsub/conformance.rs"]
#[allow(dead_code)]
mod conformance;

use conformance::Options;

fn factory() -> impl conformance::Factory {
    let shared: Arc<dyn PubSub> = Arc::new(InMemory::new());
    move || {
        let p = shared.clone();
        async move { p }
    }
}

#[tokio::test]
async fn subscribe_broadcast_unsubscribe() {
    conformance::subscribe_broadcast_unsubscribe(&factory(), &Options::in_process()).await;
}

#[tokio::test]
async fn many_streams() {
    conformance::many_streams(&factory(), &Options::in_process()).await;
}

#[tokio::test]
async fn many_subscribers_per_stream() {
    conformance::many_subscribers_per_stream(&factory(), &Options::in_process()).await;
}

#[tokio::test]
async fn large_and_non_ascii_payloads() {
    conformance::large_and_non_ascii_payloads(&factory(), &Options::in_process()).await;
}

#[tokio::test]
async fn unusual_stream_names() {
    conformance::unusual_stream_names(&factory(), &Options::in_process()).await;
}

#[tokio::test]
async fn ordering_on_one_stream() {
    conformance::ordering_on_one_stream(&factory(), &Options::in_process()).await;
}

#[tokio::test]
async fn confirmation_after_acknowledgement() {
    conformance::confirmation_after_acknowledgement(&factory(), &Options::in_process()).await;
}

#[tokio::test]
async fn subscriber_count() {
    conformance::subscriber_count(&factory(), &Options::in_process()).await;
}

#[tokio::test]
async fn run_all_in_one_go() {
    conformance::run_all(&factory(), &Options::in_process()).await;
}
