//! Channels over `handle_frame`: subscribe/confirm, streams, transmit, broadcast,
//! action dispatch, duplicate and unknown subscriptions, unsubscribe, reject, coders and
//! periodic timers. Every assertion is on the exact frames the client would receive.
//!
//! One test binary, a module per concern: `subscriptions` (subscribe and
//! confirm, duplicates and unknowns, unsubscribe, reject), `streams`,
//! `actions` (transmit, broadcast_to, perform, receive), `coders`, `timers`.

#[path = "../common/mod.rs"]
mod common;

mod actions;
mod coders;
mod streams;
mod subscriptions;
mod timers;

/// What every module uses: the cable, an open connection, the probes.
mod support {
    use std::sync::Arc;

    use crate::common::*;
    use keayl_cable::Cable;
    use keayl_cable::cable::CableBuilder;
    use keayl_cable::connection::{CommandError, Connection, Identifiers};
    use keayl_cable::pubsub::InMemory;

    pub const ROOM1: &str = r#"{"channel":"ChatChannel","room":"1"}"#;
    pub const ROOM1_CONFIRM: &str = r#"{"identifier":"{\"channel\":\"ChatChannel\",\"room\":\"1\"}","type":"confirm_subscription"}"#;

    pub fn base(pubsub: &Arc<InMemory>, log: &Log) -> CableBuilder {
        let chat_log = log.clone();
        Cable::builder_shared(pubsub.clone())
            .channel::<EchoChannel>()
            .channel_with(move || ChatChannel {
                log: chat_log.clone(),
            })
    }

    /// A cable with `EchoChannel`, `ChatChannel` (logging into `log`) and whatever `extra`
    /// registers.
    pub fn cable_with(
        log: &Log,
        extra: impl FnOnce(CableBuilder) -> CableBuilder,
    ) -> (Cable, Arc<InMemory>) {
        let pubsub = Arc::new(InMemory::new());
        let cable = extra(base(&pubsub, log)).build();
        (cable, pubsub)
    }

    /// An open connection with the welcome already taken and `EchoChannel` subscribed (the
    /// probe), its confirmation taken too.
    pub async fn open(cable: &Cable) -> (Connection, RecordingSink) {
        let sink = RecordingSink::new();
        let mut conn = cable.connection(sink.sink(), Identifiers::new());
        conn.open().await;
        assert_eq!(sink.take(), vec![WELCOME]);
        conn.handle_frame(subscribe(ECHO_ID).as_bytes())
            .await
            .unwrap();
        assert_eq!(sink.take(), vec![confirm(ECHO_ID)]);
        (conn, sink)
    }

    /// The connection still works: the echo probe gets exactly its answer.
    pub async fn assert_alive(conn: &mut Connection, sink: &RecordingSink, text: &str) {
        let (probe, answer) = echo_probe(text);
        conn.handle_frame(probe.as_bytes()).await.unwrap();
        assert_eq!(sink.take(), vec![answer]);
    }

    pub async fn send(conn: &mut Connection, frame: &str) -> Result<(), CommandError> {
        conn.handle_frame(frame.as_bytes()).await
    }
}
