//! [`Background`]: the handle on a broker client's supervisor task.

use std::future::Future;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::ConfigError;

/// The handle a broker client keeps on its background work (the supervisor
/// task, and whatever else watches its token): the Tokio runtime it was
/// created in and one [`CancellationToken`], cancelled by
/// [`cancel`](Self::cancel) or when the handle is dropped. Holding it in
/// the client makes dropping the client end its tasks, and
/// [`BrokerClient::shutdown`](crate::BrokerClient::shutdown) is
/// [`cancel`](Self::cancel).
///
/// A [`BrokerClient::start`](crate::BrokerClient::start) takes it first
/// (so that a client created outside a runtime fails with
/// [`ConfigError::NoRuntime`] before anything else), builds the state it
/// shares with its supervisor (which may keep a clone of
/// [`token`](Self::token)), then [`spawn`](Self::spawn)s the supervisor:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use keayl_broker::Background;
///
/// let task = Background::current("redis").unwrap();
/// task.spawn(|cancel| async move { cancel.cancelled().await });
/// drop(task); // the task ends
/// # }
/// ```
#[derive(Debug)]
pub struct Background {
    runtime: Handle,
    cancel: CancellationToken,
}

impl Background {
    /// A handle on the current Tokio runtime with a fresh token, or
    /// [`ConfigError::NoRuntime`] for the backend named `backend` when
    /// called outside a runtime.
    ///
    /// ```
    /// let err = keayl_broker::Background::current("postgres").unwrap_err();
    /// assert!(matches!(err, keayl_broker::ConfigError::NoRuntime { backend: "postgres" }));
    /// ```
    pub fn current(backend: &'static str) -> Result<Self, ConfigError> {
        let runtime = Handle::try_current().map_err(|_| ConfigError::NoRuntime { backend })?;
        Ok(Background {
            runtime,
            cancel: CancellationToken::new(),
        })
    }

    /// Spawn `task(token)` on the runtime the handle was created in; the
    /// task should end soon after the token (a clone of
    /// [`token`](Self::token)) is cancelled.
    pub fn spawn<F>(&self, task: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.runtime.spawn(task(self.cancel.clone()));
    }

    /// The token [`cancel`](Self::cancel) (or dropping the handle) cancels,
    /// for state shared with tasks spawned elsewhere.
    pub fn token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Cancel the token: every task watching it ends. Calling it again does
    /// nothing.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dropping_or_cancelling_ends_the_tasks() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = Background::current("test").unwrap();
        let token = task.token().clone();
        task.spawn(|cancel| async move {
            cancel.cancelled().await;
            drop(tx);
        });
        assert!(!token.is_cancelled());
        drop(task);
        assert!(token.is_cancelled());
        assert!(rx.await.is_err(), "the task ended without sending");

        let task = Background::current("test").unwrap();
        task.cancel();
        task.cancel();
        assert!(task.token().is_cancelled());
    }

    #[test]
    fn outside_a_runtime_it_names_the_backend() {
        let err = Background::current("nats").unwrap_err();
        assert_eq!(err.backend(), "nats");
        assert!(matches!(err, ConfigError::NoRuntime { .. }));
    }
}
