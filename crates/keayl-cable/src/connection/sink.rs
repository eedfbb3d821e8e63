use std::sync::Arc;

use bytes::Bytes;

/// The transport's function for sending one message to the client, plus an
/// optional one for closing the connection.
///
/// `send` receives a complete JSON text frame. It is called from the
/// connection's task and from broadcasters' tasks, and must not block: a
/// transport enqueues the frame (the Keayl WebSocket transport pushes onto a
/// byte-bounded outbound queue) and returns.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use keayl_cable::connection::Sink;
///
/// let sent = Arc::new(Mutex::new(Vec::new()));
/// let s = sent.clone();
/// let sink = Sink::new(move |frame| s.lock().unwrap().push(frame));
/// sink.send("{\"type\":\"welcome\"}".into());
/// assert_eq!(sent.lock().unwrap().len(), 1);
/// ```
#[derive(Clone)]
pub struct Sink {
    send: Arc<dyn Fn(Bytes) + Send + Sync>,
    close: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").finish_non_exhaustive()
    }
}

impl Sink {
    /// A sink sending with `send`; closing does nothing.
    pub fn new(send: impl Fn(Bytes) + Send + Sync + 'static) -> Self {
        Sink {
            send: Arc::new(send),
            close: None,
        }
    }

    /// Also call `close` when the server closes the connection (after a
    /// `disconnect` message: rejection, remote disconnect, restart).
    pub fn on_close(mut self, close: impl Fn() + Send + Sync + 'static) -> Self {
        self.close = Some(Arc::new(close));
        self
    }

    /// Send one frame.
    pub fn send(&self, frame: Bytes) {
        (self.send)(frame)
    }

    /// Ask the transport to close the connection.
    pub fn close(&self) {
        if let Some(close) = &self.close {
            close()
        }
    }
}
