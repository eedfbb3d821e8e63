//! Another application's subscriber to `>` (it sees every subject, and
//! never answers) neither answers nor stalls the backend's round trips.
//! Its own test binary: the listener would slow other tests' plain-client
//! requests on the same server.

mod common;

use std::time::Duration;

use common::*;
use keayl_cable::pubsub::PubSub;
use keayl_cable::pubsub::conformance::{self, Inbox};

#[tokio::test]
async fn a_wildcard_listener_does_not_stall_the_backend() {
    if !require_nats() {
        return;
    }
    // Subscribed to everything, never reading, never answering; the SUB is
    // in place once the server answered the flush's PING.
    let plain = async_nats::connect(nats_url()).await.unwrap();
    let _everything = plain.subscribe(">").await.unwrap();
    plain.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut config = keayl_nats::config_from_url(&nats_url()).unwrap();
    config.command_timeout = Duration::from_secs(1);
    config.health_check_interval = Duration::from_millis(100);
    let started = tokio::time::Instant::now();
    let keayl = connected(config).await; // the first batch's round trip
    let health = keayl.health();

    let stream = conformance::unique_stream("wildcard");
    let got = Inbox::new();
    let id = conformance::subscribe_live(&keayl, &stream, &got, Duration::from_secs(3)).await;
    for i in 0..3 {
        keayl
            .broadcast(&stream, format!("{i}").into())
            .await
            .expect("the broadcast is confirmed");
    }
    assert!(got.wait_for(3, Duration::from_secs(3)).await);
    assert_eq!(got.texts(), ["0", "1", "2"]);
    assert_eq!(keayl.subscriber_count(&stream).await.unwrap(), 1);
    assert!(started.elapsed() < Duration::from_secs(4));

    // Several health checks later the link is still up, never went down.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(health.is_up(), "{health:?}");
    assert_eq!(health.outage_count(), 0, "{health:?}");
    assert_eq!(health.lost_broadcast_count(), 0, "{health:?}");
    keayl.unsubscribe(id);
}
