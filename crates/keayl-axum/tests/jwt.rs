//! JWT identification over a real socket: a token in `?jid=`, the `X-JID`
//! header or an `anycable-token.<token>` subprotocol identifies the
//! connection without `connect`; expired → `token_expired`, tampered →
//! `unauthorized` (both without reconnect); no token → `connect` runs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use keayl_axum::cable::{CableServer, OriginPolicy, ServerConfig};
use keayl_cable::connection::{ConnectError, Connection, ConnectionHandler};
use keayl_cable::jwt::JwtIdentifier;
use keayl_cable::{Cable, Channel, ChannelContext, ChannelError, InMemory, NoActions};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Counts `connect` calls; identifies as `guest`.
struct Counting(Arc<AtomicUsize>);

impl ConnectionHandler for Counting {
    const IDENTIFIED_BY: &'static [&'static str] = &["current_user"];

    async fn connect(&self, conn: &mut Connection) -> Result<(), ConnectError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        conn.set_identifier("current_user", "guest".to_owned());
        Ok(())
    }
}

/// Transmits who the connection is, on subscribe.
#[derive(Default)]
struct WhoAmI;

impl Channel for WhoAmI {
    const NAME: &'static str = "WhoAmI";
    type Action = NoActions;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        let who = ctx.identifiers().get::<String>("current_user").cloned();
        ctx.transmit(json!({ "user": who }));
        Ok(())
    }
}

async fn start() -> (SocketAddr, Arc<AtomicUsize>) {
    let connects = Arc::new(AtomicUsize::new(0));
    let cable = Cable::builder(InMemory::new())
        .connection_handler(Counting(connects.clone()))
        .channel::<WhoAmI>()
        .jwt(JwtIdentifier::new("qwerty"))
        .build();
    let config = ServerConfig {
        origins: OriginPolicy::AllowAll,
        ..ServerConfig::default()
    };
    let server = CableServer::new(cable, config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = server.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, connects)
}

async fn connect(
    addr: SocketAddr,
    query: &str,
    header: Option<&str>,
    protocols: &str,
) -> (Ws, Option<String>) {
    let mut req = format!("ws://{addr}/cable{query}")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", protocols.parse().unwrap());
    if let Some(token) = header {
        req.headers_mut().insert("x-jid", token.parse().unwrap());
    }
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    let chosen = resp
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_owned());
    (ws, chosen)
}

async fn next(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame in time")
            .expect("not ended")
            .expect("read");
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] != "ping" {
                return v;
            }
        }
    }
}

/// Who the server thinks the connection is.
async fn whoami(ws: &mut Ws) -> Value {
    let id = json!({"channel": "WhoAmI"}).to_string();
    ws.send(Message::text(
        json!({"command": "subscribe", "identifier": id}).to_string(),
    ))
    .await
    .unwrap();
    let frame = next(ws).await;
    frame["message"]["user"].clone()
}

#[tokio::test]
async fn a_token_in_any_carrier_identifies_without_connect() {
    let (addr, connects) = start().await;
    let jwt = JwtIdentifier::new("qwerty");
    let token = jwt.issue(&[("current_user", "alice")], Duration::from_secs(60));
    let by_subprotocol = format!("actioncable-v1-json, anycable-token.{token}");
    for (query, header, protocols) in [
        (format!("?jid={token}"), None, "actioncable-v1-json"),
        (String::new(), Some(token.as_str()), "actioncable-v1-json"),
        (String::new(), None, by_subprotocol.as_str()),
    ] {
        let (mut ws, chosen) = connect(addr, &query, header, protocols).await;
        assert_eq!(
            chosen.as_deref(),
            Some("actioncable-v1-json"),
            "the token is not a protocol"
        );
        assert_eq!(next(&mut ws).await, json!({"type": "welcome"}));
        assert_eq!(
            whoami(&mut ws).await,
            "alice",
            "{query} {header:?} {protocols}"
        );
    }
    assert_eq!(connects.load(Ordering::SeqCst), 0, "connect never ran");
    // No token: connect runs.
    let (mut ws, _) = connect(addr, "", None, "actioncable-v1-json").await;
    next(&mut ws).await;
    assert_eq!(whoami(&mut ws).await, "guest");
    assert_eq!(connects.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn expired_and_tampered_tokens_are_refused_for_good() {
    let (addr, connects) = start().await;
    // Signed with the right key, expired a minute ago.
    let expired = {
        #[derive(serde::Serialize)]
        struct Claims {
            ext: String,
            exp: u64,
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &Claims {
                ext: r#"{"current_user":"alice"}"#.into(),
                exp: now - 60,
            },
            &jsonwebtoken::EncodingKey::from_secret(b"qwerty"),
        )
        .unwrap()
    };
    let forged = JwtIdentifier::new("not-qwerty")
        .issue(&[("current_user", "mallory")], Duration::from_secs(60));
    for (token, reason) in [(expired, "token_expired"), (forged, "unauthorized")] {
        let (mut ws, _) = connect(
            addr,
            &format!("?jid={token}"),
            None,
            "actioncable-v1-ext-json",
        )
        .await;
        assert_eq!(
            next(&mut ws).await,
            json!({"type": "disconnect", "reason": reason, "reconnect": false})
        );
    }
    assert_eq!(connects.load(Ordering::SeqCst), 0);
}
