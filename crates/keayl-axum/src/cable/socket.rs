//! The WebSocket adapter: tokio-tungstenite frames to and from the core's
//! connection driver ([`keayl_cable::socket`]).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{Sink, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use keayl_cable::connection::Request;
use keayl_cable::socket::{Incoming, Outgoing, ReadError, Slot};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::CableServer;

pub(crate) type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// A tungstenite read, classified by the error's type.
fn incoming(read: Result<Message, WsError>) -> Result<Incoming, ReadError> {
    match read {
        Ok(Message::Text(text)) => Ok(Incoming::Text(Bytes::from(text))),
        Ok(Message::Binary(data)) => Ok(Incoming::Binary(data)),
        Ok(Message::Ping(_)) => Ok(Incoming::Ping),
        Ok(Message::Pong(_) | Message::Frame(_)) => Ok(Incoming::Pong),
        Ok(Message::Close(_)) => Ok(Incoming::Close),
        Err(WsError::Capacity(CapacityError::MessageTooLong { .. })) => Err(ReadError::TooBig),
        Err(WsError::Utf8(_)) => Err(ReadError::InvalidUtf8),
        Err(e) => Err(ReadError::Other(e.to_string())),
    }
}

/// The driver's frames onto the WebSocket. A text frame that is not UTF-8
/// (a broadcast payload from a foreign publisher, say) is dropped and
/// logged, not fatal.
pub(crate) struct WsSink(SplitSink<Ws, Message>);

impl Sink<Outgoing> for WsSink {
    type Error = WsError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Pin::new(&mut self.0).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, frame: Outgoing) -> Result<(), WsError> {
        let message = match frame {
            Outgoing::Text(bytes) => match Utf8Bytes::try_from(bytes) {
                Ok(text) => Message::Text(text),
                Err(_) => {
                    tracing::error!("dropped a frame that is not UTF-8");
                    return Ok(());
                }
            },
            Outgoing::Ping => Message::Ping(Bytes::new()),
            Outgoing::Close(code) => Message::Close(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: Utf8Bytes::from_static(""),
            })),
        };
        Pin::new(&mut self.0).start_send(message)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

/// Run one upgraded connection through the driver.
pub(crate) async fn run(server: CableServer, slot: Slot, ws: Ws, request: Request) {
    let (sink, stream) = ws.split();
    let mut outgoing = WsSink(sink);
    let mut incoming: futures_util::stream::Map<SplitStream<Ws>, _> = stream.map(incoming);
    let hub = server.hub();
    let finished = hub.serve(slot, &mut incoming, &mut outgoing, request).await;
    if finished.unread_input {
        // The client may still be sending the message that was too big: read
        // and discard for a short while so the kernel does not answer its
        // bytes with a reset before it has read our close frame.
        let Ok(mut ws) = outgoing.0.reunite(incoming.into_inner()) else {
            return;
        };
        drain(ws.get_mut(), hub.config().close_grace).await;
    }
}

async fn drain(io: &mut TokioIo<Upgraded>, grace: Duration) {
    let mut buf = vec![0u8; 16 * 1024];
    let _ = tokio::time::timeout(grace, async {
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
}
