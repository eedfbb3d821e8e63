//! The app's connection class: [`ConnectionHandler`] (identifiers,
//! `connect`, `disconnect`) and why `connect` refuses.

use std::future::Future;

use super::Connection;

/// An app's connection class: which identifiers it declares, how it
/// authenticates, what it does on disconnect.
pub trait ConnectionHandler: Send + Sync + 'static {
    /// The identifiers a connection carries (`identified_by`). Their values,
    /// once set, name the connection for remote disconnects.
    const IDENTIFIED_BY: &'static [&'static str] = &[];

    /// Authenticate: read [`Connection::request`] and
    /// [`Connection::identifiers`], call
    /// [`set_identifier`](Connection::set_identifier), or return
    /// [`reject_unauthorized_connection`](Connection::reject_unauthorized_connection).
    fn connect(
        &self,
        conn: &mut Connection,
    ) -> impl Future<Output = Result<(), ConnectError>> + Send {
        let _ = conn;
        async { Ok(()) }
    }

    /// Rebuild the identifiers of a restored session (extended protocol: a
    /// client reconnecting with its `sid`) or of a verified JWT (its `ext`
    /// claim, see [`jwt`](crate::jwt)), instead of `connect`. `saved`
    /// holds each identifier's param as it was when the session was live
    /// (what [`IdentifierValue::param`](super::IdentifierValue::param)
    /// gave). The default sets each one not already set as a `String`;
    /// an app with typed identifiers loads them here (its user by id, say),
    /// and refusing (any error) sends the client through `connect` as a
    /// new session.
    fn restore(
        &self,
        conn: &mut Connection,
        saved: &[(String, String)],
    ) -> impl Future<Output = Result<(), ConnectError>> + Send {
        for (name, param) in saved {
            if !conn.identifiers().contains(name) {
                conn.set_identifier(name.clone(), param.clone());
            }
        }
        async { Ok(()) }
    }

    /// Called last when the connection closes, after every subscription was
    /// torn down.
    fn disconnect(&self, conn: &mut Connection) -> impl Future<Output = ()> + Send {
        let _ = conn;
        async {}
    }
}

/// Accepts every connection and declares no identifiers.
#[derive(Debug, Clone, Copy, Default)]
pub struct AcceptAll;

impl ConnectionHandler for AcceptAll {}

pub(crate) trait DynHandler: Send + Sync {
    fn identified_by(&self) -> &'static [&'static str];
    fn connect<'a>(
        &'a self,
        conn: &'a mut Connection,
    ) -> crate::pubsub::BoxFuture<'a, Result<(), ConnectError>>;
    fn restore<'a>(
        &'a self,
        conn: &'a mut Connection,
        saved: &'a [(String, String)],
    ) -> crate::pubsub::BoxFuture<'a, Result<(), ConnectError>>;
    fn disconnect<'a>(&'a self, conn: &'a mut Connection) -> crate::pubsub::BoxFuture<'a, ()>;
}

impl<H: ConnectionHandler> DynHandler for H {
    fn identified_by(&self) -> &'static [&'static str] {
        H::IDENTIFIED_BY
    }
    fn connect<'a>(
        &'a self,
        conn: &'a mut Connection,
    ) -> crate::pubsub::BoxFuture<'a, Result<(), ConnectError>> {
        Box::pin(ConnectionHandler::connect(self, conn))
    }
    fn restore<'a>(
        &'a self,
        conn: &'a mut Connection,
        saved: &'a [(String, String)],
    ) -> crate::pubsub::BoxFuture<'a, Result<(), ConnectError>> {
        Box::pin(ConnectionHandler::restore(self, conn, saved))
    }
    fn disconnect<'a>(&'a self, conn: &'a mut Connection) -> crate::pubsub::BoxFuture<'a, ()> {
        Box::pin(ConnectionHandler::disconnect(self, conn))
    }
}

/// Why `connect` refused a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// `reject_unauthorized_connection`: the client gets
    /// `{"type":"disconnect","reason":"unauthorized","reconnect":false}`.
    #[error("unauthorized connection")]
    Unauthorized,
    /// `connect` failed for another reason (a database down, say): the
    /// client is told to reconnect later.
    #[error("connect failed: {0}")]
    Failed(String),
}
