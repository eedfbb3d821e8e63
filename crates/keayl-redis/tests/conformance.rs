//! The shared pub/sub conformance suite against Redis (the machine's,
//! `KEAYL_REDIS_URL`), with and without Rails' `channel_prefix`, plus Rails
//! wire compatibility: a plain Redis client (standing in for a Rails
//! process) sees Keayl's broadcasts on Rails' channel names, and Keayl sees
//! its publishes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use keayl_cable::pubsub::PubSub;
use keayl_cable::pubsub::conformance::{self, Factory, Inbox, Options};

fn factory(prefix: Option<&'static str>) -> impl Factory {
    move || async move {
        let mut config = keayl_redis::config_from_url(&redis_url()).unwrap();
        config.channel_prefix = prefix.map(str::to_owned);
        Arc::new(connected(config).await) as Arc<dyn PubSub>
    }
}

// Every check of the suite, one test each.
conformance::conformance_tests! {
    factory: factory(None),
    options: Options::networked(),
    run_if: require_service("Redis", &host_port(&redis_url())),
}

#[tokio::test]
async fn whole_suite_with_a_channel_prefix() {
    if !require_service("Redis", &host_port(&redis_url())) {
        return;
    }
    conformance::run_all(&factory(Some("keayl-test-prefix")), &Options::networked()).await;
}

#[tokio::test]
async fn prefixed_and_unprefixed_processes_do_not_mix() {
    if require_service("Redis", &host_port(&redis_url())) {
        conformance::prefixes_do_not_mix(
            &factory(None),
            &factory(Some("app1")),
            &Options::networked(),
        )
        .await;
    }
}

/// A plain Redis client plays the Rails process: it subscribes to
/// `"<prefix>:<stream>"` (Rails' `ChannelPrefix`) and publishes there.
#[tokio::test]
async fn rails_channel_names_both_ways() {
    if !require_service("Redis", &host_port(&redis_url())) {
        return;
    }
    for prefix in [None, Some("rails_app_production")] {
        let keayl = factory(prefix).instance().await;
        let stream = conformance::unique_stream("rails");
        // Rails: `[channel_prefix, broadcasting].compact.join(":")`.
        let channel = match prefix {
            Some(p) => format!("{p}:{stream}"),
            None => stream.clone(),
        };

        // Rails -> Keayl.
        let got = Inbox::new();
        let id = conformance::subscribe_live(&*keayl, &stream, &got, Duration::from_secs(5)).await;
        let client = redis::Client::open(redis_url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(r#"{"from":"rails"}"#)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(receivers, 1, "Keayl is not subscribed to {channel:?}");
        assert!(got.wait_for(1, Duration::from_secs(5)).await);
        assert_eq!(got.texts(), [r#"{"from":"rails"}"#]);
        assert_eq!(
            got.streams(),
            std::slice::from_ref(&stream),
            "delivered under the unprefixed stream name"
        );

        // Keayl -> Rails.
        let mut rails = client.get_async_pubsub().await.unwrap();
        rails.subscribe(&channel).await.unwrap();
        let count = keayl.subscriber_count(&stream).await.unwrap();
        assert_eq!(
            count, 2,
            "PUBSUB NUMSUB counts the Keayl and the Rails connection"
        );
        keayl
            .broadcast(&stream, r#"{"from":"keayl"}"#.into())
            .await
            .unwrap();
        let msg = tokio::time::timeout(Duration::from_secs(5), rails.on_message().next())
            .await
            .expect("the Rails side got nothing")
            .unwrap();
        assert_eq!(msg.get_channel_name(), channel);
        assert_eq!(msg.get_payload_bytes(), br#"{"from":"keayl"}"#);
        keayl.unsubscribe(id);
    }
}

/// Remote disconnects travel on `action_cable/<connection identifier>`,
/// prefixed like every channel: what a Rails app's
/// `ActionCable.server.remote_connections.where(current_user: …).disconnect`
/// publishes reaches Keayl's internal channel.
#[tokio::test]
async fn remote_disconnect_channel_is_rails_compatible() {
    if !require_service("Redis", &host_port(&redis_url())) {
        return;
    }
    let prefix = Some("myapp");
    let keayl = factory(prefix).instance().await;
    let user = conformance::unique_stream("user");
    let stream = keayl_cable::naming::internal_stream(&user);
    let got = Inbox::new();
    let id = conformance::subscribe_live(&*keayl, &stream, &got, Duration::from_secs(5)).await;
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg(format!("myapp:action_cable/{user}"))
        .arg(r#"{"type":"disconnect","reconnect":true}"#)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(got.wait_for(1, Duration::from_secs(5)).await);
    keayl.unsubscribe(id);
}
