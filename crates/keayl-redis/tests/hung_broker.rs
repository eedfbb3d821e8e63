//! A Redis that hangs for 20 s (SIGSTOP: connections stay open, nothing
//! answers) while clients subscribe through the connection driver: their
//! other commands keep being handled, and every subscribe is confirmed once
//! Redis answers again (none is rejected for good).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use keayl_cable::channel::{Channel, ChannelContext, ChannelError, Data};
use keayl_cable::socket::{Hub, Incoming, Outgoing, ReadError, SocketConfig};
use keayl_cable::{Cable, PubSub, Request};
use serde_json::{Value, json};

#[derive(Default)]
struct Room;

impl Channel for Room {
    const NAME: &'static str = "Room";
    // `echo` transmits the data back whole (`action` included, keys in the
    // client's order); any other action is invalid.
    type Action = Data;
    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        let name = ctx.param_str("name").unwrap_or("x").to_owned();
        ctx.stream_from(name);
        Ok(())
    }
    async fn perform(
        &mut self,
        ctx: &mut ChannelContext<'_>,
        data: Data,
    ) -> Result<(), ChannelError> {
        if data.get("action").and_then(|a| a.as_str()) != Some("echo") {
            return Err(ChannelError::invalid("unknown action"));
        }
        ctx.transmit(&data);
        Ok(())
    }
}

async fn next_message(rx: &mut futures_channel::mpsc::Receiver<Outgoing>) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(60), rx.next()).await {
            Ok(Some(Outgoing::Text(t))) => {
                let v: Value = serde_json::from_slice(&t).unwrap();
                if v["type"] != "ping" {
                    return v;
                }
            }
            Ok(Some(Outgoing::Ping)) => {}
            other => panic!("connection ended: {other:?}"),
        }
    }
}

#[tokio::test]
async fn subscribes_made_while_redis_hangs_are_confirmed_when_it_returns() {
    let Some(redis) = PrivateRedis::start() else {
        return;
    };
    let mut config = fast_config(&redis.url());
    config.health_check_interval = Duration::from_millis(500);
    let backend = connected(config).await;
    let pubsub: Arc<dyn PubSub> = Arc::new(backend);
    let cable = Cable::builder_shared(pubsub.clone())
        .channel::<Room>()
        .build();
    let hub = Hub::new(cable, SocketConfig::default()).unwrap();

    let (to_server, mut incoming) =
        futures_channel::mpsc::unbounded::<Result<Incoming, ReadError>>();
    let (to_client, mut from_server) = futures_channel::mpsc::channel::<Outgoing>(64);
    let slot = hub.reserve().unwrap();
    let server_hub = hub.clone();
    let server = tokio::spawn(async move {
        let mut outgoing = to_client.sink_map_err(|e| e.to_string());
        server_hub
            .serve(slot, &mut incoming, &mut outgoing, Request::default())
            .await
    });
    let send = |v: Value| {
        to_server
            .unbounded_send(Ok(Incoming::Text(v.to_string().into())))
            .unwrap()
    };
    assert_eq!(next_message(&mut from_server).await["type"], "welcome");
    let live = json!({"channel": "Room", "name": "hung-before"}).to_string();
    send(json!({"command": "subscribe", "identifier": live}));
    assert_eq!(
        next_message(&mut from_server).await["type"],
        "confirm_subscription"
    );

    redis.freeze();
    let names: Vec<String> = (0..3)
        .map(|i| json!({"channel": "Room", "name": format!("hung-{i}")}).to_string())
        .collect();
    for id in &names {
        send(json!({"command": "subscribe", "identifier": id}));
    }
    // The connection keeps handling commands meanwhile.
    send(
        json!({"command": "message", "identifier": live, "data": json!({"action": "echo", "n": 1}).to_string()}),
    );
    assert_eq!(next_message(&mut from_server).await["message"]["n"], 1);
    tokio::time::sleep(Duration::from_secs(20)).await;
    redis.thaw();

    let mut confirmed = Vec::new();
    while confirmed.len() < names.len() {
        let v = next_message(&mut from_server).await;
        assert_eq!(v["type"], "confirm_subscription", "{v}");
        confirmed.push(v["identifier"].as_str().unwrap().to_owned());
    }
    confirmed.sort();
    let mut want = names.clone();
    want.sort();
    assert_eq!(confirmed, want);
    // And they deliver.
    let mut delivered = false;
    for _ in 0..50 {
        let _ = pubsub.broadcast("hung-1", "\"after\"".into()).await;
        if let Ok(v) =
            tokio::time::timeout(Duration::from_millis(200), next_message(&mut from_server)).await
        {
            assert_eq!(v["message"], "after");
            delivered = true;
            break;
        }
    }
    assert!(
        delivered,
        "a subscription confirmed after the hang delivers"
    );
    drop(to_server);
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
}
