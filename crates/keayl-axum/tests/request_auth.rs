//! `connect` sees the real upgrade request: a tower layer's extension, the
//! app's state, and an `axum-extra` signed cookie authenticate a cable
//! connection exactly as they would an HTTP handler.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::FromRef;
use axum::response::IntoResponse;
use axum_extra::extract::cookie::{Cookie, Key, SignedCookieJar};
use futures_util::StreamExt;
use keayl_axum::cable::{CableServer, OriginPolicy, ServerConfig};
use keayl_cable::connection::{ConnectError, Connection, ConnectionHandler};
use keayl_cable::{Cable, InMemory};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[derive(Clone)]
struct AppState {
    key: Key,
}

impl FromRef<AppState> for Key {
    fn from_ref(state: &AppState) -> Key {
        state.key.clone()
    }
}

/// What the app's own auth layer puts in the request.
#[derive(Clone)]
struct Tenant(&'static str);

/// `current_user` from the signed `user_id` cookie (verified with the app
/// state's key), `tenant` from the layer.
struct AppConnection;

impl ConnectionHandler for AppConnection {
    const IDENTIFIED_BY: &'static [&'static str] = &["current_user"];

    async fn connect(&self, conn: &mut Connection) -> Result<(), ConnectError> {
        let request = conn.request();
        let Some(state) = request.extension::<AppState>() else {
            return conn.reject_unauthorized_connection();
        };
        let jar = SignedCookieJar::from_headers(request.headers(), state.key.clone());
        let user = jar.get("user_id").map(|c| c.value().to_owned());
        let tenant = request.extension::<Tenant>().map(|t| t.0);
        match (user, tenant) {
            (Some(user), Some(tenant)) => {
                conn.set_identifier("current_user", format!("{tenant}/{user}"));
                Ok(())
            }
            _ => conn.reject_unauthorized_connection(),
        }
    }
}

/// Transmits who the connection is.
#[derive(Default)]
struct WhoAmI;

impl keayl_cable::Channel for WhoAmI {
    const NAME: &'static str = "WhoAmI";
    type Action = keayl_cable::NoActions;
    async fn subscribed(
        &mut self,
        ctx: &mut keayl_cable::ChannelContext<'_>,
    ) -> Result<(), keayl_cable::ChannelError> {
        ctx.transmit(ctx.identifiers().param("current_user"));
        Ok(())
    }
}

async fn start(key: Key) -> (SocketAddr, CableServer) {
    let cable = Cable::builder(InMemory::new())
        .connection_handler(AppConnection)
        .channel::<WhoAmI>()
        .build();
    let server = CableServer::new(
        cable,
        ServerConfig {
            origins: OriginPolicy::AllowAll,
            ..ServerConfig::default()
        },
    )
    .unwrap();
    let app: Router = Router::new()
        .route(
            "/login",
            axum::routing::get(|jar: SignedCookieJar| async move {
                jar.add(Cookie::new("user_id", "42")).into_response()
            }),
        )
        .merge(server.router())
        .layer(axum::middleware::from_fn(
            |mut req: axum::extract::Request, next: axum::middleware::Next| async move {
                req.extensions_mut().insert(Tenant("acme"));
                next.run(req).await
            },
        ))
        .with_state(AppState { key });
    let tcp = keayl_axum::listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = keayl_axum::listener::Listener::new(tcp, Default::default()).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(listener.serve(app));
    (addr, server)
}

/// The `Set-Cookie` value the app's own `/login` handler signs.
async fn login(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /login HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let line = out
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .expect("a signed cookie");
    let value = line.split_once(':').unwrap().1.trim();
    value.split(';').next().unwrap().to_owned()
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_text(ws: &mut Ws) -> String {
    let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("a frame")
        .expect("open")
        .expect("readable");
    match msg {
        Message::Text(t) => t.to_string(),
        other => panic!("{other:?}"),
    }
}

/// Connect with `cookie`: the first frame and the socket.
async fn connect(addr: SocketAddr, cookie: &str) -> (String, Ws) {
    let mut req = format!("ws://{addr}/cable").into_client_request().unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    (next_text(&mut ws).await, ws)
}

#[tokio::test]
async fn a_signed_cookie_and_a_layer_extension_authenticate_the_connection() {
    let (addr, server) = start(Key::generate()).await;
    let cookie = login(addr).await;
    assert!(cookie.starts_with("user_id=") && cookie.len() > "user_id=42".len());
    let (welcome, mut ws) = connect(addr, &cookie).await;
    assert_eq!(welcome, r#"{"type":"welcome"}"#);
    use futures_util::SinkExt;
    ws.send(Message::text(
        r#"{"command":"subscribe","identifier":"{\"channel\":\"WhoAmI\"}"}"#,
    ))
    .await
    .unwrap();
    // Identified as the layer's tenant and the cookie's user.
    assert_eq!(
        next_text(&mut ws).await,
        r#"{"identifier":"{\"channel\":\"WhoAmI\"}","message":"acme/42"}"#
    );
    drop(server);

    // The same cookie unsigned, or signed with another key, is refused.
    for forged in ["user_id=42".to_owned(), {
        let (other, _) = start(Key::generate()).await;
        login(other).await
    }] {
        assert_eq!(
            connect(addr, &forged).await.0,
            r#"{"type":"disconnect","reason":"unauthorized","reconnect":false}"#
        );
    }
}
