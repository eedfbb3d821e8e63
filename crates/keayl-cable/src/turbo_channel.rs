//! `Turbo::StreamsChannel`: the channel turbo-rails pages subscribe to with a
//! `<turbo-cable-stream-source>` element.
//!
//! The page sends a `signed_stream_name`; the channel verifies it as Rails'
//! `MessageVerifier` does and streams from the decoded name (no channel
//! prefix). A tampered, malformed or missing name is rejected.
//!
//! ```
//! use keayl_cable::{Cable, InMemory};
//! use keayl_cable::signing::StreamVerifier;
//! use keayl_cable::turbo_channel::TurboStreamsChannel;
//!
//! let verifier = StreamVerifier::new("s3Krit");
//! let cable = Cable::builder(InMemory::new())
//!     .channel_with(move || TurboStreamsChannel::new(verifier.clone()))
//!     .build();
//! assert!(cable.has_channel("Turbo::StreamsChannel"));
//! ```

use crate::channel::{Channel, ChannelContext, ChannelError};
use crate::signing::StreamVerifier;

/// turbo-rails' streams channel, verifying names with a [`StreamVerifier`].
#[derive(Debug, Clone)]
pub struct TurboStreamsChannel {
    verifier: StreamVerifier,
}

impl TurboStreamsChannel {
    /// The channel name pages subscribe with.
    pub const NAME: &'static str = "Turbo::StreamsChannel";

    /// A channel verifying with `verifier`.
    pub fn new(verifier: StreamVerifier) -> Self {
        TurboStreamsChannel { verifier }
    }
}

impl Channel for TurboStreamsChannel {
    const NAME: &'static str = "Turbo::StreamsChannel";
    type Action = crate::NoActions;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        let verified = ctx
            .param_str("signed_stream_name")
            .map(|signed| self.verifier.verify(signed));
        match verified {
            Some(Ok(name)) => {
                ctx.stream_from(name);
            }
            Some(Err(e)) => {
                tracing::info!(error = %e, "rejecting Turbo stream subscription: bad signed name");
                ctx.reject();
            }
            None => {
                tracing::info!("rejecting Turbo stream subscription: no signed_stream_name");
                ctx.reject();
            }
        }
        Ok(())
    }
}
