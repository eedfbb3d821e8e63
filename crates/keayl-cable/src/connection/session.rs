//! Session restore (extended protocol): a connection's identifiers and
//! subscriptions, saved in the pub/sub backend while it is live and after
//! it closes, for [`CableConfig::session_ttl`]; a client that reconnects
//! with its `sid` (the `X-ANYCABLE-RESTORE-SID` header, else the `sid`
//! query parameter) gets them back without `connect` and without
//! subscribing again.
//!
//! What is saved is each identifier's param and each subscription's
//! identifier; a restore rebuilds the identifiers with
//! [`ConnectionHandler::restore`](super::ConnectionHandler::restore) and
//! runs each channel's `subscribed` again (a Rust channel's state lives
//! in the channel value, which is not saved; this also makes a restore on
//! another process the same as on this one). `unsubscribed` and the
//! handler's `disconnect` ran when the old connection closed, as on any
//! close. A restored subscription sends no confirmation (the client has
//! it in `restored_ids`); its live messages are held until the client
//! asks for what it missed, or for [`CableConfig::restore_hold`].
//!
//! The session ends (is removed) when the server closes the connection
//! with a `disconnect` message: the client forgets its `sid` then too.
//!
//! [`CableConfig::session_ttl`]: crate::CableConfig::session_ttl
//! [`CableConfig::restore_hold`]: crate::CableConfig::restore_hold

use std::panic::AssertUnwindSafe;

use bytes::Bytes;
use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Connection, panic_message};
use crate::channel::Params;

/// The header a reconnecting client names its previous session with.
pub const RESTORE_SID_HEADER: &str = "x-anycable-restore-sid";

/// Longest session id looked up (ours are 32 hex digits).
const MAX_SID_LEN: usize = 64;

#[derive(Serialize, Deserialize)]
struct Snapshot {
    /// Identifier name → param.
    ids: Vec<(String, String)>,
    /// Subscription identifiers, in subscription order.
    subs: Vec<String>,
}

impl Connection {
    /// The session id a reconnecting client asks to restore.
    fn restore_sid(&self) -> Option<String> {
        let request = &self.shared.request;
        let sid = request
            .header(RESTORE_SID_HEADER)
            .or_else(|| request.query("sid"))?;
        (!sid.is_empty() && sid.len() <= MAX_SID_LEN).then(|| sid.to_owned())
    }

    /// Whether sessions are saved for this connection.
    fn keeps_session(&self) -> bool {
        self.sessions
            && self.shared.request.protocol().is_extended()
            && !self.shared.registry.config().session_ttl.is_zero()
    }

    /// Take the saved session the client names and rebuild its
    /// identifiers; `None` (and the identifiers as they were) when there is
    /// none or the handler refuses it.
    pub(super) async fn restore_identifiers(&mut self) -> Option<Vec<String>> {
        if !self.keeps_session() {
            return None;
        }
        let sid = self.restore_sid()?;
        let timeout = self.shared.registry.config().history_timeout;
        let taken = tokio::time::timeout(timeout, self.shared.registry.pubsub().take_session(&sid));
        let snapshot = match taken.await {
            Ok(Ok(Some(snapshot))) => snapshot,
            Ok(Ok(None)) => return None,
            Ok(Err(e)) => {
                if self.shared.registry.log_allowed() {
                    tracing::warn!(error = %e, "could not read a session to restore; connecting anew");
                }
                return None;
            }
            Err(_) => {
                if self.shared.registry.log_allowed() {
                    tracing::warn!("reading a session to restore timed out; connecting anew");
                }
                return None;
            }
        };
        let Ok(snapshot) = serde_json::from_slice::<Snapshot>(&snapshot) else {
            tracing::warn!("a saved session could not be decoded; connecting anew");
            return None;
        };
        let before = self.shared.identifiers.clone();
        let handler = self.shared.handler.clone();
        let outcome = AssertUnwindSafe(handler.restore(self, &snapshot.ids))
            .catch_unwind()
            .await;
        match outcome {
            Ok(Ok(())) => Some(snapshot.subs),
            Ok(Err(e)) => {
                tracing::info!(error = %e, "session restore refused; connecting anew");
                self.shared.identifiers = before;
                None
            }
            Err(panic) => {
                if self.shared.registry.log_allowed() {
                    tracing::error!(message = %panic_message(&*panic), "restore panicked; connecting anew");
                }
                self.shared.identifiers = before;
                None
            }
        }
    }

    /// Subscribe the saved subscriptions again, without frames; returns the
    /// identifiers of those that are back.
    pub(super) async fn restore_subscriptions(&mut self, saved: Vec<String>) -> Vec<String> {
        let mut restored = Vec::with_capacity(saved.len());
        for identifier in saved {
            let Ok(Value::Object(params)) = serde_json::from_str::<Value>(&identifier) else {
                continue;
            };
            let params: Params = params;
            let Some(channel) = params.get("channel").and_then(Value::as_str) else {
                continue;
            };
            let Some(factory) = self.shared.registry.channel_factory(channel) else {
                continue;
            };
            if self.position(&identifier).is_some() {
                continue;
            }
            let class = channel.into();
            let outcome = self
                .subscribe_as(true, None, identifier.clone(), class, params, factory())
                .await;
            if matches!(outcome, Ok(super::SubscribeOutcome::Confirmed)) {
                restored.push(identifier);
            }
        }
        if !restored.is_empty() {
            self.restore_hold_until =
                Some(tokio::time::Instant::now() + self.shared.registry.config().restore_hold);
        }
        restored
    }

    /// Let the live messages of restored subscriptions the client sent no
    /// history request for flow.
    pub(super) fn release_restored(&mut self) {
        self.restore_hold_until = None;
        for (_, sub) in &mut self.subscriptions {
            if sub.state.restored {
                sub.state.restored = false;
                sub.state.gate.open(&self.shared.sink, None, false);
            }
        }
    }

    fn snapshot(&self) -> Bytes {
        let declared = self.shared.handler.identified_by();
        let mut ids: Vec<(String, String)> = declared
            .iter()
            .filter_map(|n| Some(((*n).to_owned(), self.shared.identifiers.param(n)?)))
            .collect();
        ids.sort();
        let subs = self
            .subscriptions
            .iter()
            .filter(|(_, s)| s.state.confirmed)
            .map(|(id, _)| id.clone())
            .collect();
        Bytes::from(serde_json::to_vec(&Snapshot { ids, subs }).unwrap_or_default())
    }

    /// Save the session as it is now (after `welcome`, after each
    /// subscription change, and when the connection closes). The future
    /// holds no borrow of the connection (which need not be `Sync`).
    pub(super) fn save_session(&self) -> impl Future<Output = ()> + Send + 'static {
        let job = match self.session_id.as_deref() {
            // With the broker down the save would only wait out its
            // timeout: skip it (the client then resubscribes with its
            // positions, which loses nothing either).
            Some(sid)
                if self.keeps_session()
                    && !self.session_ended
                    && self.shared.registry.pubsub().stats().healthy =>
            {
                let registry = self.shared.registry.clone();
                let config = registry.config();
                let save = registry
                    .pubsub()
                    .save_session(sid, self.snapshot(), config.session_ttl);
                Some((save, config.history_timeout, registry))
            }
            _ => None,
        };
        async move {
            let Some((save, timeout, registry)) = job else {
                return;
            };
            match tokio::time::timeout(timeout, save).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    if registry.log_allowed() {
                        tracing::warn!(error = %e, "could not save the session");
                    }
                }
                Err(_) => {
                    if registry.log_allowed() {
                        tracing::warn!("saving the session timed out");
                    }
                }
            }
        }
    }

    /// Forget the session: the server ended the connection.
    pub(super) async fn end_session(&mut self) {
        self.session_ended = true;
        let Some(sid) = self.session_id.as_deref() else {
            return;
        };
        if !self.keeps_session() {
            return;
        }
        let remove = self.shared.registry.pubsub().remove_session(sid);
        let timeout = self.shared.registry.config().history_timeout;
        let _ = tokio::time::timeout(timeout, remove).await;
    }
}
