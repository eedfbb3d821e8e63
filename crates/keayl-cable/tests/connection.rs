//! Connections: creation, identifiers, authentication, rejection, remote disconnect,
//! teardown order. Black-box, through a recording sink.

mod common;

use std::sync::Arc;

use common::*;
use keayl_cable::Cable;
use keayl_cable::cable::InvalidIdentifiers;
use keayl_cable::channel::{Channel, ChannelContext, ChannelError};
use keayl_cable::connection::{
    CommandError, ConnectError, Connection, ConnectionHandler, ConnectionState, Identifiers,
    Request,
};
use keayl_cable::naming::{GlobalId, Streamable};
use keayl_cable::pubsub::{InMemory, PubSub};
use serde_json::json;

const UNAUTHORIZED: &str = r#"{"type":"disconnect","reason":"unauthorized","reconnect":false}"#;
const REMOTE_NO_RECONNECT: &str = r#"{"type":"disconnect","reason":"remote","reconnect":false}"#;
const REMOTE_RECONNECT: &str = r#"{"type":"disconnect","reason":"remote","reconnect":true}"#;
const SERVER_ERROR: &str = r#"{"type":"disconnect","reason":"server_error","reconnect":true}"#;

/// The spec's `AppConnection`: identified by `current_user`, authenticated from the
/// request's `token` query parameter (or a `token` identifier given at creation).
#[derive(Clone, Default)]
struct AppConnection {
    log: Log,
}

impl ConnectionHandler for AppConnection {
    const IDENTIFIED_BY: &'static [&'static str] = &["current_user"];

    async fn connect(&self, conn: &mut Connection) -> Result<(), ConnectError> {
        let token = conn
            .request()
            .query("token")
            .map(str::to_owned)
            .or_else(|| conn.identifiers().get::<String>("token").cloned());
        self.log
            .push(format!("connect:{}", token.as_deref().unwrap_or("-")));
        match token.as_deref() {
            None | Some("bad") => conn.reject_unauthorized_connection(),
            Some("boom") => panic!("database exploded"),
            Some("down") => Err(ConnectError::Failed("database down".into())),
            Some(user) => {
                conn.set_identifier("current_user", user.to_owned());
                Ok(())
            }
        }
    }

    async fn disconnect(&self, conn: &mut Connection) {
        let remaining = conn.subscription_identifiers().count();
        let user = conn
            .identifier::<String>("current_user")
            .cloned()
            .unwrap_or_default();
        let internal = conn
            .cable()
            .pubsub()
            .subscriber_count(&format!("action_cable/{user}"))
            .await
            .unwrap();
        self.log.push(format!(
            "disconnect:{user} remaining={remaining} internal={internal}"
        ));
    }
}

fn request_with_token(token: &str) -> Request {
    Request::from(
        http::Request::get(format!("/cable?token={token}"))
            .body(())
            .unwrap(),
    )
}

fn app_cable(pubsub: Arc<InMemory>, log: &Log) -> Cable {
    let chat_log = log.clone();
    Cable::builder_shared(pubsub)
        .connection_handler(AppConnection { log: log.clone() })
        .channel::<EchoChannel>()
        .channel_with(move || ChatChannel {
            log: chat_log.clone(),
        })
        .build()
}

async fn open_as(cable: &Cable, token: &str) -> (Connection, RecordingSink) {
    let sink = RecordingSink::new();
    let mut conn = cable
        .connection(sink.sink(), Identifiers::new())
        .with_request(request_with_token(token));
    conn.open().await;
    (conn, sink)
}

// ---------------------------------------------------------------------------------------
// Connection::new(pubsub, sink, identifiers)

#[tokio::test]
async fn new_connection_sends_welcome_on_open_and_reads_identifiers_typed() {
    let sink = RecordingSink::new();
    let mut conn = Connection::new(
        InMemory::new(),
        sink.sink(),
        Identifiers::new()
            .with("user_id", 7u64)
            .with("room", "lobby".to_string()),
    );
    assert_eq!(conn.state(), ConnectionState::New);
    assert!(sink.events().is_empty(), "nothing is sent before open");

    assert_eq!(conn.open().await, ConnectionState::Open);
    assert_eq!(sink.events(), vec![Event::Frame(WELCOME.into())]);
    assert!(!conn.is_rejected());

    assert_eq!(conn.identifier::<u64>("user_id"), Some(&7));
    assert_eq!(
        conn.identifier::<String>("room").map(String::as_str),
        Some("lobby")
    );
    assert_eq!(
        conn.identifier::<String>("user_id"),
        None,
        "wrong type reads as None"
    );
    assert_eq!(conn.identifier::<u64>("missing"), None);
    assert_eq!(conn.identifiers().param("user_id").as_deref(), Some("7"));
}

#[tokio::test]
async fn open_twice_sends_a_single_welcome() {
    let sink = RecordingSink::new();
    let mut conn = Connection::new(InMemory::new(), sink.sink(), Identifiers::new());
    conn.open().await;
    assert_eq!(conn.open().await, ConnectionState::Open);
    assert_eq!(sink.frames(), vec![WELCOME]);
}

#[tokio::test]
async fn commands_before_open_are_refused_with_not_open() {
    let sink = RecordingSink::new();
    let mut conn = Connection::new(InMemory::new(), sink.sink(), Identifiers::new());
    let err = conn
        .handle_frame(subscribe(ECHO_ID).as_bytes())
        .await
        .unwrap_err();
    assert!(matches!(err, CommandError::NotOpen), "{err:?}");
    let err = conn
        .add_subscription(ECHO_ID, EchoChannel)
        .await
        .unwrap_err();
    assert!(matches!(err, CommandError::NotOpen), "{err:?}");
    conn.ping(1);
    assert!(sink.events().is_empty());
}

#[tokio::test]
async fn ping_is_sent_only_when_open() {
    let sink = RecordingSink::new();
    let mut conn = Connection::new(InMemory::new(), sink.sink(), Identifiers::new());
    conn.ping(1795304748);
    conn.open().await;
    conn.ping(1795304749);
    assert_eq!(
        sink.frames(),
        vec![WELCOME, r#"{"type":"ping","message":1795304749}"#]
    );
}

#[tokio::test]
async fn add_subscription_registers_and_subscribes_a_channel() {
    let sink = RecordingSink::new();
    let mut conn = Connection::new(InMemory::new(), sink.sink(), Identifiers::new());
    conn.open().await;
    sink.take();
    let log = Log::new();
    let id = r#"{"channel":"ChatChannel","room":"1"}"#;
    let outcome = conn
        .add_subscription(id, ChatChannel { log: log.clone() })
        .await
        .unwrap();
    assert_eq!(outcome, keayl_cable::SubscribeOutcome::Confirmed);
    assert_eq!(
        sink.take(),
        vec![
            r#"{"identifier":"{\"channel\":\"ChatChannel\",\"room\":\"1\"}","type":"confirm_subscription"}"#
        ]
    );
    assert_eq!(
        conn.subscription_identifiers().collect::<Vec<_>>(),
        vec![id]
    );
    // Its stream is live: a broadcast through the connection's cable reaches it.
    conn.cable()
        .broadcast("room:1", &json!("hi"))
        .await
        .unwrap();
    assert_eq!(sink.take(), vec![data(id, r#""hi""#)]);
    // disconnect tears every subscription down.
    conn.disconnect().await;
    assert_eq!(
        log.entries().last().unwrap(),
        &format!("unsubscribed:{id} streams=room:1")
    );
    conn.cable()
        .broadcast("room:1", &json!("late"))
        .await
        .unwrap();
    assert!(sink.take().is_empty());
}

// ---------------------------------------------------------------------------------------
// Identification and authentication

#[tokio::test]
async fn accepted_connection_gets_welcome_and_a_typed_identifier() {
    let log = Log::new();
    let pubsub = Arc::new(InMemory::new());
    let cable = app_cable(pubsub.clone(), &log);
    let (conn, sink) = open_as(&cable, "alice").await;

    assert_eq!(sink.events(), vec![Event::Frame(WELCOME.into())]);
    assert_eq!(conn.state(), ConnectionState::Open);
    assert!(!conn.is_rejected());
    assert_eq!(
        conn.identifier::<String>("current_user")
            .map(String::as_str),
        Some("alice")
    );
    assert_eq!(conn.connection_identifier().as_deref(), Some("alice"));
    assert_eq!(cable.identified_by(), &["current_user"]);
    // The internal stream for remote disconnects is live before the welcome.
    assert_eq!(pubsub.local_count("action_cable/alice"), 1);
    assert_eq!(log.entries(), vec!["connect:alice"]);
}

#[tokio::test]
async fn connect_can_authenticate_from_identifiers_given_at_creation() {
    let log = Log::new();
    let cable = app_cable(Arc::new(InMemory::new()), &log);
    let sink = RecordingSink::new();
    let mut conn = cable.connection(
        sink.sink(),
        Identifiers::new().with("token", "carol".to_string()),
    );
    conn.open().await;
    assert_eq!(sink.frames(), vec![WELCOME]);
    assert_eq!(
        conn.identifier::<String>("current_user")
            .map(String::as_str),
        Some("carol")
    );
}

#[tokio::test]
async fn connect_sees_cookies_and_headers_of_the_request() {
    struct CookieAuth;
    impl ConnectionHandler for CookieAuth {
        const IDENTIFIED_BY: &'static [&'static str] = &["current_user"];
        async fn connect(&self, conn: &mut Connection) -> Result<(), ConnectError> {
            let user = conn.request().cookie("user").map(str::to_owned);
            let agent_ok = conn.request().header("X-Client") == Some("test");
            match user {
                Some(u) if agent_ok => {
                    conn.set_identifier("current_user", u);
                    Ok(())
                }
                _ => conn.reject_unauthorized_connection(),
            }
        }
    }
    let cable = Cable::builder(InMemory::new())
        .connection_handler(CookieAuth)
        .build();
    let request = Request::from(
        http::Request::get("/cable")
            .header("cookie", "a=1; user=dora")
            .header("x-client", "test")
            .body(())
            .unwrap(),
    );
    let sink = RecordingSink::new();
    let mut conn = cable
        .connection(sink.sink(), Identifiers::new())
        .with_request(request);
    conn.open().await;
    assert_eq!(sink.frames(), vec![WELCOME]);
    assert_eq!(conn.connection_identifier().as_deref(), Some("dora"));
}

#[tokio::test]
async fn rejected_connection_gets_exactly_the_unauthorized_disconnect_then_close() {
    let log = Log::new();
    let pubsub = Arc::new(InMemory::new());
    let cable = app_cable(pubsub.clone(), &log);
    let (mut conn, sink) = open_as(&cable, "bad").await;

    assert_eq!(
        sink.events(),
        vec![Event::Frame(UNAUTHORIZED.into()), Event::Close],
        "no welcome; the disconnect frame precedes the close"
    );
    assert!(conn.is_rejected());
    assert_eq!(conn.state(), ConnectionState::Rejected);
    assert_eq!(conn.identifier::<String>("current_user"), None);
    // No internal stream for a rejected connection.
    assert_eq!(pubsub.stream_count(), 0);

    // Later commands are refused and send nothing.
    for frame in [subscribe(ECHO_ID), echo_probe("x").0, unsubscribe(ECHO_ID)] {
        let err = conn.handle_frame(frame.as_bytes()).await.unwrap_err();
        assert!(matches!(err, CommandError::NotOpen), "{err:?}");
    }
    let err = conn
        .add_subscription(ECHO_ID, EchoChannel)
        .await
        .unwrap_err();
    assert!(matches!(err, CommandError::NotOpen), "{err:?}");
    conn.ping(1);
    // Re-opening does not run connect again.
    assert_eq!(conn.open().await, ConnectionState::Rejected);
    assert_eq!(sink.events().len(), 2);
    assert_eq!(log.entries(), vec!["connect:bad"]);
}

#[tokio::test]
async fn missing_token_is_rejected_too() {
    let cable = app_cable(Arc::new(InMemory::new()), &Log::new());
    let sink = RecordingSink::new();
    let mut conn = cable.connection(sink.sink(), Identifiers::new());
    conn.open().await;
    assert!(conn.is_rejected());
    assert_eq!(
        sink.events(),
        vec![Event::Frame(UNAUTHORIZED.into()), Event::Close]
    );
}

#[tokio::test]
async fn connect_panicking_closes_with_reconnect_true() {
    let cable = app_cable(Arc::new(InMemory::new()), &Log::new());
    let (mut conn, sink) = open_as(&cable, "boom").await;
    assert_eq!(
        sink.events(),
        vec![Event::Frame(SERVER_ERROR.into()), Event::Close]
    );
    let frame: serde_json::Value = serde_json::from_str(&sink.frames()[0]).unwrap();
    assert_eq!(frame["type"], "disconnect");
    assert_eq!(frame["reconnect"], true);
    assert!(conn.is_rejected());
    let err = conn
        .handle_frame(subscribe(ECHO_ID).as_bytes())
        .await
        .unwrap_err();
    assert!(matches!(err, CommandError::NotOpen), "{err:?}");
}

#[tokio::test]
async fn connect_failing_closes_with_reconnect_true() {
    let cable = app_cable(Arc::new(InMemory::new()), &Log::new());
    let (mut conn, sink) = open_as(&cable, "down").await;
    assert_eq!(
        sink.events(),
        vec![Event::Frame(SERVER_ERROR.into()), Event::Close]
    );
    assert!(conn.is_rejected());
    let err = conn
        .handle_frame(echo_probe("x").0.as_bytes())
        .await
        .unwrap_err();
    assert!(matches!(err, CommandError::NotOpen), "{err:?}");
}

#[test]
fn connect_error_variants_are_distinct() {
    assert_eq!(
        ConnectError::Unauthorized.to_string(),
        "unauthorized connection"
    );
    assert_ne!(ConnectError::Unauthorized, ConnectError::Failed("x".into()));
}

// ---------------------------------------------------------------------------------------
// Remote disconnect

#[tokio::test]
async fn remote_disconnect_reaches_only_the_matching_connection() {
    let cable = app_cable(Arc::new(InMemory::new()), &Log::new());
    let (_alice, alice_sink) = open_as(&cable, "alice").await;
    let (_bob, bob_sink) = open_as(&cable, "bob").await;

    let target = cable
        .remote_connections()
        .where_(&[("current_user", &"alice")])
        .unwrap();
    assert_eq!(target.stream(), "action_cable/alice");
    target.disconnect(false).await.unwrap();

    assert_eq!(
        alice_sink.events(),
        vec![
            Event::Frame(WELCOME.into()),
            Event::Frame(REMOTE_NO_RECONNECT.into()),
            Event::Close
        ]
    );
    assert_eq!(bob_sink.events(), vec![Event::Frame(WELCOME.into())]);
}

#[tokio::test]
async fn remote_disconnect_with_reconnect_true() {
    let cable = app_cable(Arc::new(InMemory::new()), &Log::new());
    let (_alice, alice_sink) = open_as(&cable, "alice").await;
    let (_alice2, alice2_sink) = open_as(&cable, "alice").await;
    cable
        .remote_connections()
        .where_(&[("current_user", &"alice".to_string())])
        .unwrap()
        .disconnect(true)
        .await
        .unwrap();
    // Every connection of that identity is closed.
    for sink in [alice_sink, alice2_sink] {
        assert_eq!(
            sink.events(),
            vec![
                Event::Frame(WELCOME.into()),
                Event::Frame(REMOTE_RECONNECT.into()),
                Event::Close
            ]
        );
    }
}

#[tokio::test]
async fn internal_stream_message_without_reconnect_defaults_to_true_and_other_types_are_ignored() {
    let cable = app_cable(Arc::new(InMemory::new()), &Log::new());
    let (_alice, sink) = open_as(&cable, "alice").await;
    sink.take();
    cable
        .broadcast("action_cable/alice", &json!({"type": "something_else"}))
        .await
        .unwrap();
    cable
        .broadcast_raw("action_cable/alice", bytes::Bytes::from_static(b"not json"))
        .await
        .unwrap();
    assert!(sink.events().is_empty(), "{:?}", sink.events());
    cable
        .broadcast("action_cable/alice", &json!({"type": "disconnect"}))
        .await
        .unwrap();
    assert_eq!(
        sink.events(),
        vec![Event::Frame(REMOTE_RECONNECT.into()), Event::Close]
    );
}

#[tokio::test]
async fn where_requires_exactly_the_declared_identifiers() {
    let cable = app_cable(Arc::new(InMemory::new()), &Log::new());
    let expected = InvalidIdentifiers {
        declared: vec!["current_user"],
    };
    let rc = cable.remote_connections();
    assert_eq!(rc.where_(&[]).unwrap_err(), expected, "missing");
    assert_eq!(
        rc.where_(&[("current_user", &"alice"), ("room", &"1")])
            .unwrap_err(),
        expected,
        "extra"
    );
    assert_eq!(
        rc.where_(&[("user", &"alice")]).unwrap_err(),
        expected,
        "wrong name"
    );
    assert!(rc.where_(&[("current_user", &"alice")]).is_ok());

    // A cable whose connections declare no identifiers cannot find any.
    let plain = Cable::builder(InMemory::new()).build();
    assert_eq!(
        plain
            .remote_connections()
            .where_(&[("current_user", &"alice")])
            .unwrap_err(),
        InvalidIdentifiers { declared: vec![] }
    );
}

#[tokio::test]
async fn where_rejects_a_repeated_identifier() {
    let cable = app_cable(Arc::new(InMemory::new()), &Log::new());
    let result = cable
        .remote_connections()
        .where_(&[("current_user", &"alice"), ("current_user", &"bob")]);
    assert!(
        result.is_err(),
        "got {:?}",
        result.map(|r| r.stream().to_owned())
    );
}

#[derive(Debug, Clone, PartialEq)]
struct User {
    id: u64,
}

impl Streamable for User {
    fn to_param(&self) -> String {
        GlobalId::new("chat-app", "User", self.id).to_gid_param()
    }
}

struct UserConnection;

impl ConnectionHandler for UserConnection {
    const IDENTIFIED_BY: &'static [&'static str] = &["current_user", "account"];

    async fn connect(&self, conn: &mut Connection) -> Result<(), ConnectError> {
        let id: u64 = conn
            .request()
            .query("user")
            .and_then(|u| u.parse().ok())
            .ok_or(ConnectError::Unauthorized)?;
        conn.set_identifier("current_user", User { id });
        conn.set_identifier("account", "acme".to_string());
        Ok(())
    }
}

#[tokio::test]
async fn model_identifiers_name_the_connection_by_gid_param_sorted() {
    let pubsub = Arc::new(InMemory::new());
    let cable = Cable::builder_shared(pubsub.clone())
        .connection_handler(UserConnection)
        .build();
    let open_user = |id: u64| {
        let cable = cable.clone();
        async move {
            let sink = RecordingSink::new();
            let request = Request::from(
                http::Request::get(format!("/cable?user={id}"))
                    .body(())
                    .unwrap(),
            );
            let mut conn = cable
                .connection(sink.sink(), Identifiers::new())
                .with_request(request);
            conn.open().await;
            (conn, sink)
        }
    };
    let (seven, seven_sink) = open_user(7).await;
    let (_eight, eight_sink) = open_user(8).await;
    assert_eq!(
        seven.identifier::<User>("current_user"),
        Some(&User { id: 7 })
    );
    // gid://chat-app/User/7 → Z2lkOi8vY2hhdC1hcHAvVXNlci83; sorted with "acme".
    assert_eq!(
        seven.connection_identifier().as_deref(),
        Some("Z2lkOi8vY2hhdC1hcHAvVXNlci83:acme")
    );
    assert_eq!(
        pubsub.local_count("action_cable/Z2lkOi8vY2hhdC1hcHAvVXNlci83:acme"),
        1
    );

    // Any order of the identifiers finds the connection.
    cable
        .remote_connections()
        .where_(&[("account", &"acme"), ("current_user", &User { id: 7 })])
        .unwrap()
        .disconnect(false)
        .await
        .unwrap();
    assert_eq!(
        seven_sink.events(),
        vec![
            Event::Frame(WELCOME.into()),
            Event::Frame(REMOTE_NO_RECONNECT.into()),
            Event::Close
        ]
    );
    assert_eq!(eight_sink.events(), vec![Event::Frame(WELCOME.into())]);
}

// ---------------------------------------------------------------------------------------
// Close / cleanup ordering (§4.4)

/// Which of two channels of one shape.
trait Which: Send + Sync + 'static {
    const CLASS: &'static str;
    const LABEL: &'static str;
}
struct First;
impl Which for First {
    const CLASS: &'static str = "FirstChannel";
    const LABEL: &'static str = "first";
}
struct Second;
impl Which for Second {
    const CLASS: &'static str = "SecondChannel";
    const LABEL: &'static str = "second";
}

/// Logs its unsubscribe and broadcasts "<user> left <channel>" to `room:1`.
struct LeavingChannel<W> {
    log: Log,
    which: std::marker::PhantomData<W>,
}

impl<W: Which> LeavingChannel<W> {
    fn new(log: Log) -> Self {
        LeavingChannel {
            log,
            which: std::marker::PhantomData,
        }
    }
}

impl<W: Which> Channel for LeavingChannel<W> {
    const NAME: &'static str = W::CLASS;
    type Action = keayl_cable::NoActions;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        ctx.stream_from(format!("presence:{}", W::LABEL));
        Ok(())
    }

    async fn unsubscribed(&mut self, ctx: &mut ChannelContext<'_>) {
        let streams: Vec<&str> = ctx.streams().collect();
        self.log.push(format!(
            "unsubscribed:{} streams={}",
            W::LABEL,
            streams.join(",")
        ));
        let user = ctx.identifiers().param("current_user").unwrap_or_default();
        let _ = ctx
            .broadcast_to("room:1", &format!("{user} left {}", W::LABEL))
            .await;
    }
}

#[tokio::test]
async fn disconnect_runs_every_unsubscribed_then_stops_streams_then_the_handler_last() {
    let log = Log::new();
    let pubsub = Arc::new(InMemory::new());
    let first_log = log.clone();
    let second_log = log.clone();
    let cable = Cable::builder_shared(pubsub.clone())
        .connection_handler(AppConnection { log: log.clone() })
        .channel::<ChatChannel>()
        .channel_with(move || LeavingChannel::<First>::new(first_log.clone()))
        .channel_with(move || LeavingChannel::<Second>::new(second_log.clone()))
        .build();

    let (mut alice, alice_sink) = open_as(&cable, "alice").await;
    let (mut bob, bob_sink) = open_as(&cable, "bob").await;
    let room = r#"{"channel":"ChatChannel","room":"1"}"#;
    bob.handle_frame(subscribe(room).as_bytes()).await.unwrap();
    for id in [
        r#"{"channel":"FirstChannel"}"#,
        r#"{"channel":"SecondChannel"}"#,
    ] {
        alice.handle_frame(subscribe(id).as_bytes()).await.unwrap();
    }
    assert_eq!(pubsub.local_count("presence:first"), 1);
    assert_eq!(pubsub.local_count("action_cable/alice"), 1);
    log.take();
    bob_sink.take();
    alice_sink.take();

    alice.disconnect().await;

    assert_eq!(
        log.entries(),
        vec![
            // Each unsubscribed runs while its streams are still there...
            "unsubscribed:first streams=presence:first",
            "unsubscribed:second streams=presence:second",
            // ...and the handler's disconnect runs last, after every subscription and the
            // internal stream are gone.
            "disconnect:alice remaining=0 internal=0",
        ]
    );
    // Broadcasts made from unsubscribed reach the other connection.
    assert_eq!(
        bob_sink.take(),
        vec![
            data(room, r#""alice left first""#),
            data(room, r#""alice left second""#)
        ]
    );
    // Streams and the internal stream were dropped.
    assert_eq!(pubsub.local_count("presence:first"), 0);
    assert_eq!(pubsub.local_count("presence:second"), 0);
    assert_eq!(pubsub.local_count("action_cable/alice"), 0);
    assert_eq!(alice.state(), ConnectionState::Closed);
    assert_eq!(alice.subscription_identifiers().count(), 0);

    // Nothing reaches the closed connection any more, and it accepts no command.
    cable
        .broadcast("presence:first", &json!("x"))
        .await
        .unwrap();
    cable
        .remote_connections()
        .where_(&[("current_user", &"alice")])
        .unwrap()
        .disconnect(true)
        .await
        .unwrap();
    assert!(alice_sink.events().is_empty(), "{:?}", alice_sink.events());
    let err = alice
        .handle_frame(subscribe(room).as_bytes())
        .await
        .unwrap_err();
    assert!(matches!(err, CommandError::NotOpen), "{err:?}");

    // disconnect is idempotent: the handler runs once.
    alice.disconnect().await;
    assert_eq!(log.count("disconnect:alice remaining=0 internal=0"), 1);
    // No pings after the close either.
    alice.ping(1);
    assert!(alice_sink.events().is_empty());

    // Bob is untouched.
    bob.handle_frame(message(room, &json!({"action": "speak", "message": "hi"})).as_bytes())
        .await
        .unwrap();
    assert_eq!(bob_sink.take(), vec![data(room, r#""hi""#)]);
}

#[tokio::test]
async fn disconnect_of_a_rejected_connection_does_not_run_the_handler_disconnect() {
    let log = Log::new();
    let cable = app_cable(Arc::new(InMemory::new()), &log);
    let (mut conn, _sink) = open_as(&cable, "bad").await;
    conn.disconnect().await;
    assert_eq!(log.entries(), vec!["connect:bad"]);
    assert_eq!(conn.state(), ConnectionState::Closed);
}

#[tokio::test]
async fn server_side_close_sends_the_disconnect_frame_then_closes() {
    let sink = RecordingSink::new();
    let mut conn = Connection::new(InMemory::new(), sink.sink(), Identifiers::new());
    conn.open().await;
    conn.close(keayl_cable::protocol::DisconnectReason::ServerRestart, true);
    assert_eq!(
        sink.events(),
        vec![
            Event::Frame(WELCOME.into()),
            Event::Frame(
                r#"{"type":"disconnect","reason":"server_restart","reconnect":true}"#.into()
            ),
            Event::Close
        ]
    );
}

#[tokio::test]
async fn subscriber_count_sees_the_internal_stream() {
    let pubsub = Arc::new(InMemory::new());
    let cable = app_cable(pubsub.clone(), &Log::new());
    let (_a, _s) = open_as(&cable, "zed").await;
    assert_eq!(
        cable
            .pubsub()
            .subscriber_count("action_cable/zed")
            .await
            .unwrap(),
        1
    );
}
