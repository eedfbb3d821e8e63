//! A connection's subscriptions: subscribing (memory budgets, streams going
//! live, the confirmation or rejection), unsubscribing.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use tokio::time::Instant;

use futures_util::FutureExt;
use serde_json::Value;

use super::history::Replay;
use super::{CommandError, ConnShared, Connection, ConnectionState, panic_message};
use crate::channel::{Channel, ChannelContext, DynChannel, Params, SubState, Timer};
use crate::protocol::HistoryRequest;
use crate::registry::Registry;

/// How a subscribe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeOutcome {
    /// `confirm_subscription` was sent.
    Confirmed,
    /// `reject_subscription` was sent.
    Rejected,
    /// Its streams are not live yet and confirmations are deferred
    /// ([`Connection::set_deferred_confirmations`]): the confirmation (or
    /// rejection) follows from [`Connection::confirm_settled`].
    Pending,
}

/// Poll a subscription's pending stream subscriptions once: drop those that
/// went live; a failure marks the subscription rejected.
fn settle_ready(registry: &Registry, state: &mut SubState, cx: &mut std::task::Context<'_>) {
    let mut i = 0;
    while i < state.pending.len() {
        match state.pending[i].ready.as_mut().poll(cx) {
            std::task::Poll::Ready(Ok(())) => {
                state.pending.swap_remove(i);
            }
            std::task::Poll::Ready(Err(e)) => {
                if registry.log_allowed() {
                    tracing::error!(identifier = %state.identifier, stream = %state.pending[i].stream, error = %e, "stream subscription failed; rejecting");
                }
                state.pending.swap_remove(i);
                state.rejected = true;
            }
            std::task::Poll::Pending => i += 1,
        }
    }
}

pub(super) struct Subscription {
    pub(super) channel: Box<dyn DynChannel>,
    pub(super) state: SubState,
    charge: Charge,
    /// The extended protocol's `history` attached to the subscribe: served
    /// right after the confirmation.
    pub(super) history: Option<HistoryRequest>,
    /// The extended protocol's `presence` attached to a subscribe still
    /// waiting for the broker: joined once confirmed.
    pub(super) join_on_confirm: Option<crate::protocol::PresenceRequest>,
}

/// A subscription's share of the memory budgets; released when dropped.
struct Charge {
    bytes: usize,
    total: Arc<std::sync::atomic::AtomicUsize>,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.total
            .fetch_sub(self.bytes, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The estimated memory of a subscription (see
/// [`CableConfig::max_subscription_bytes`](crate::CableConfig::max_subscription_bytes)).
fn estimated_bytes(identifier: &str, params: &Params) -> usize {
    fn values(v: &Value) -> usize {
        match v {
            Value::Array(a) => 1 + a.iter().map(values).sum::<usize>(),
            Value::Object(m) => 1 + m.values().map(values).sum::<usize>(),
            _ => 1,
        }
    }
    let n: usize = params.values().map(values).sum();
    identifier.len() * 7 + n * 160 + 1024
}

impl Connection {
    /// Register `channel` under `identifier` (a JSON object with a `channel`
    /// key, as a client sends it) and subscribe it: `subscribed` runs, its
    /// streams go live, then the client gets `confirm_subscription` — or
    /// `reject_subscription` if it rejected.
    pub async fn add_subscription<C: Channel>(
        &mut self,
        identifier: &str,
        channel: C,
    ) -> Result<SubscribeOutcome, CommandError> {
        if self.state != ConnectionState::Open {
            return Err(CommandError::NotOpen);
        }
        if self.position(identifier).is_some() {
            return Err(CommandError::AlreadySubscribed(identifier.to_owned()));
        }
        let params = match serde_json::from_str::<Value>(identifier) {
            Ok(Value::Object(map)) => map,
            _ => Params::new(),
        };
        self.subscribe_dyn(
            None,
            identifier.to_owned(),
            C::NAME.into(),
            params,
            Box::new(channel),
        )
        .await
    }

    pub(super) async fn subscribe_dyn(
        &mut self,
        mut history: Option<HistoryRequest>,
        identifier: String,
        channel_class: Arc<str>,
        params: Params,
        channel: Box<dyn DynChannel>,
    ) -> Result<SubscribeOutcome, CommandError> {
        self.subscribe_as(
            false,
            history.take(),
            identifier,
            channel_class,
            params,
            channel,
        )
        .await
    }

    /// Subscribe; `restored`: from a session, without frames (the client
    /// learns from `restored_ids`) and always waiting for the broker.
    pub(super) async fn subscribe_as(
        &mut self,
        restored: bool,
        mut history: Option<HistoryRequest>,
        identifier: String,
        channel_class: Arc<str>,
        params: Params,
        mut channel: Box<dyn DynChannel>,
    ) -> Result<SubscribeOutcome, CommandError> {
        let limit = self.shared.registry.config().max_subscriptions;
        if self.subscriptions.len() >= limit {
            return Err(CommandError::TooManySubscriptions(limit));
        }
        let charge = self.charge(&identifier, &params)?;
        let pending_limit = self.shared.registry.config().max_pending_bytes;
        let mut state = SubState::new(
            &identifier,
            channel_class,
            channel.name(),
            channel.coder(),
            params,
            pending_limit,
        );
        state.restored = restored;
        let mut ctx = ChannelContext {
            state: &mut state,
            conn: &self.shared,
        };
        let result = AssertUnwindSafe(channel.subscribed(&mut ctx))
            .catch_unwind()
            .await;
        let failure = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(panic) => Some(panic_message(&*panic)),
        };
        if let Some(message) = &failure {
            if self.shared.registry.log_allowed() {
                tracing::error!(identifier = %identifier, %message, "subscribed failed; rejecting");
            }
            state.rejected = true;
        }
        if !state.rejected {
            // Streams already live (in memory, or a broker stream another
            // subscriber made live) need no wait.
            settle_ready(
                &self.shared.registry,
                &mut state,
                &mut std::task::Context::from_waker(std::task::Waker::noop()),
            );
        }
        if state.rejected {
            Self::reject(&self.shared, channel.as_mut(), &mut state).await;
            return Ok(SubscribeOutcome::Rejected);
        }
        if state.pending.is_empty() {
            let replay = Self::confirm(&self.shared, channel.as_ref(), &mut state, &mut history);
            self.subscriptions.push((
                identifier,
                Box::new(Subscription {
                    channel,
                    state,
                    charge,
                    history,
                    join_on_confirm: None,
                }),
            ));
            if let Some(replay) = replay {
                Self::replay_history(&self.shared, replay).await;
            }
            if let Some((_, sub)) = self.subscriptions.last_mut() {
                super::presence::announce_held(&self.shared, &mut sub.state).await;
            }
            return Ok(SubscribeOutcome::Confirmed);
        }
        // Waiting for the broker: the subscription exists (its actions can
        // run), its confirmation follows once every stream is live.
        self.subscriptions.push((
            identifier.clone(),
            Box::new(Subscription {
                channel,
                state,
                charge,
                history,
                join_on_confirm: None,
            }),
        ));
        if self.deferred_confirmations && !restored {
            return Ok(SubscribeOutcome::Pending);
        }
        loop {
            self.pending_settled().await;
            self.confirm_settled().await;
            match self.position(&identifier) {
                None => return Ok(SubscribeOutcome::Rejected),
                Some(i) if self.subscriptions[i].1.state.confirmed => {
                    return Ok(SubscribeOutcome::Confirmed);
                }
                Some(_) => {}
            }
        }
    }

    /// Reserve a new subscription's share of the memory budgets.
    fn charge(&self, identifier: &str, params: &Params) -> Result<Charge, CommandError> {
        use std::sync::atomic::Ordering;
        let config = self.shared.registry.config();
        let needed = estimated_bytes(identifier, params);
        let held: usize = self.subscriptions.iter().map(|(_, s)| s.charge.bytes).sum();
        if held + needed > config.max_subscription_bytes {
            return Err(CommandError::OverBudget {
                needed,
                budget: "connection",
            });
        }
        let total = self.shared.registry.subscription_budget();
        let before = total.fetch_add(needed, Ordering::Relaxed);
        let charge = Charge {
            bytes: needed,
            total: total.clone(),
        };
        if before + needed > config.max_total_subscription_bytes {
            return Err(CommandError::OverBudget {
                needed,
                budget: "process",
            });
        }
        Ok(charge)
    }

    /// Send `confirm_subscription` (then the messages held back meanwhile)
    /// and start the channel's declared timers. With a history request
    /// attached, live messages stay held: the returned replay serves the
    /// history, then lets them through.
    #[must_use]
    fn confirm(
        shared: &ConnShared,
        channel: &dyn DynChannel,
        state: &mut SubState,
        history: &mut Option<HistoryRequest>,
    ) -> Option<Replay> {
        state.confirmed = true;
        let request = history.take();
        if !state.restored {
            state.gate.open(
                &shared.sink,
                Some(state.encoded.confirm_subscription()),
                request.is_some(),
            );
        }
        let replay = request.map(|r| Replay::new(state, &r));
        let now = Instant::now();
        for &(name, every) in channel.periodically() {
            if !every.is_zero() && !state.timers.iter().any(|t| t.name == name) {
                state.timers.push(Timer {
                    name,
                    every,
                    due: now + every,
                });
            }
        }
        replay
    }

    /// Rails' order for a rejection: stream messages stop, `unsubscribed`
    /// runs, streams and timers stop, then `reject_subscription`.
    async fn reject(shared: &ConnShared, channel: &mut dyn DynChannel, state: &mut SubState) {
        state.gate.close();
        let mut ctx = ChannelContext {
            state,
            conn: shared,
        };
        let _ = AssertUnwindSafe(channel.unsubscribed(&mut ctx))
            .catch_unwind()
            .await;
        ctx.drop_streams();
        state.pending.clear();
        state.timers.clear();
        // A join made in `subscribed` ends with the subscription.
        super::presence::end_presence(shared, state, super::presence::Leave::Now).await;
        if !state.restored {
            shared.sink.send(state.encoded.reject_subscription());
        }
    }

    /// Whether a subscription waits for its streams to go live (see
    /// [`set_deferred_confirmations`](Self::set_deferred_confirmations)).
    pub fn has_pending(&self) -> bool {
        self.subscriptions.iter().any(|(_, s)| !s.state.confirmed)
    }

    /// How a subscribe whose streams are not live yet behaves. By default
    /// (`false`) [`handle_frame`](Self::handle_frame) waits for the broker
    /// and returns after the confirmation, so each command finishes before
    /// the next. A driver that must keep handling commands while a broker is
    /// slow (the socket driver does) sets `true`: the subscribe returns
    /// [`SubscribeOutcome::Pending`], later commands run, and the driver
    /// awaits [`pending_settled`](Self::pending_settled) and then calls
    /// [`confirm_settled`](Self::confirm_settled), which sends the
    /// confirmation (or the rejection, if the broker refused).
    pub fn set_deferred_confirmations(&mut self, deferred: bool) {
        self.deferred_confirmations = deferred;
    }

    /// Wait until some subscription's streams went live or failed. Cancel
    /// safe (nothing is lost if the wait is dropped); returns at once when a
    /// subscription is already settled, and never when none is pending.
    pub async fn pending_settled(&mut self) {
        std::future::poll_fn(|cx| {
            let mut settled = false;
            for (_, sub) in self.subscriptions.iter_mut() {
                let state = &mut sub.state;
                if state.confirmed {
                    continue;
                }
                settle_ready(&self.shared.registry, state, cx);
                settled |= state.rejected || state.pending.is_empty();
            }
            if settled {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await
    }

    /// Confirm every pending subscription whose streams are all live, and
    /// reject those whose broker subscription failed.
    pub async fn confirm_settled(&mut self) {
        let mut i = 0;
        while i < self.subscriptions.len() {
            let state = &self.subscriptions[i].1.state;
            if state.confirmed || (!state.rejected && !state.pending.is_empty()) {
                i += 1;
                continue;
            }
            if state.rejected {
                let (_, mut sub) = self.subscriptions.remove(i);
                let Subscription { channel, state, .. } = &mut *sub;
                Self::reject(&self.shared, channel.as_mut(), state).await;
                continue;
            }
            let Subscription {
                channel,
                state,
                history,
                join_on_confirm,
                ..
            } = &mut *self.subscriptions[i].1;
            let replay = Self::confirm(&self.shared, channel.as_ref(), state, history);
            if let Some(replay) = replay {
                Self::replay_history(&self.shared, replay).await;
            }
            super::presence::announce_held(&self.shared, state).await;
            if let Some(request) = join_on_confirm.take()
                && let Err(e) = super::presence::join(&self.shared, state, request, true).await
            {
                tracing::info!(error = %e, "presence join with a subscribe failed");
            }
            i += 1;
        }
    }

    /// Unsubscribe `identifier`: its streams and timers stop, `unsubscribed`
    /// runs. No frame is sent.
    pub async fn remove_subscription(&mut self, identifier: &str) -> Result<(), CommandError> {
        let Some(index) = self.position(identifier) else {
            return Err(CommandError::UnknownSubscription(identifier.to_owned()));
        };
        let (_, mut sub) = self.subscriptions.remove(index);
        Self::unsubscribe(&self.shared, &mut sub, super::presence::Leave::Now).await;
        Ok(())
    }

    // Takes the shared parts, not `&self`: a future holding `&Connection`
    // would need `Connection: Sync`, which channels need not be.
    pub(super) async fn unsubscribe(
        shared: &ConnShared,
        sub: &mut Subscription,
        leave: super::presence::Leave,
    ) {
        let Subscription { channel, state, .. } = sub;
        state.timers.clear();
        let mut ctx = ChannelContext {
            state,
            conn: shared,
        };
        if let Err(panic) = AssertUnwindSafe(channel.unsubscribed(&mut ctx))
            .catch_unwind()
            .await
            && shared.registry.log_allowed()
        {
            tracing::error!(message = %panic_message(&*panic), "unsubscribed panicked");
        }
        ctx.drop_streams();
        state.gate.close();
        super::presence::end_presence(shared, state, leave).await;
    }
}
