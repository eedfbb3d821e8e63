//! AnyCable's `$pubsub` channel: subscribing to a stream by name, without
//! a channel class of the app ("signed streams").
//!
//! A client subscribes with `{"channel":"$pubsub","signed_stream_name":"…"}`
//! (a name signed like Turbo's `signed_stream_name`, verified with a
//! [`StreamVerifier`]), or, when public streams are enabled, with
//! `{"channel":"$pubsub","stream_name":"…"}`. Anything else is rejected.
//! The `@anycable/web` client's `cable.streamFrom(name)` and
//! `cable.streamFromSigned(signed)` subscribe this way.
//!
//! A public stream is also its subscription's presence stream and whisper
//! stream; a signed one is its presence stream, and its whisper stream
//! only [when enabled](PubSubChannel::with_signed_whispers).
//!
//! ```
//! use keayl_cable::{Cable, InMemory};
//! use keayl_cable::pubsub_channel::PubSubChannel;
//! use keayl_cable::signing::StreamVerifier;
//!
//! let channel = PubSubChannel::signed(StreamVerifier::new("s3Krit")).with_public_streams(true);
//! let cable = Cable::builder(InMemory::new())
//!     .channel_with(move || channel.clone())
//!     .build();
//! assert!(cable.has_channel("$pubsub"));
//! ```

use crate::channel::{Channel, ChannelContext, ChannelError};
use crate::signing::StreamVerifier;

/// The `$pubsub` channel: signed stream names, and public ones when
/// enabled.
#[derive(Debug, Clone)]
pub struct PubSubChannel {
    verifier: Option<StreamVerifier>,
    public: bool,
    signed_presence: bool,
    signed_whispers: bool,
}

impl PubSubChannel {
    /// The channel name clients subscribe with.
    pub const NAME: &'static str = "$pubsub";

    /// Signed stream names verified with `verifier`; public names refused.
    pub fn signed(verifier: StreamVerifier) -> Self {
        PubSubChannel {
            verifier: Some(verifier),
            public: false,
            signed_presence: true,
            signed_whispers: false,
        }
    }

    /// Public stream names only (any client may stream any name: for
    /// development, or streams that are public by nature).
    pub fn public() -> Self {
        PubSubChannel {
            verifier: None,
            public: true,
            signed_presence: true,
            signed_whispers: false,
        }
    }

    /// Whether public stream names (`stream_name`) are accepted too.
    pub fn with_public_streams(mut self, public: bool) -> Self {
        self.public = public;
        self
    }

    /// Whether a signed stream is its subscription's presence stream
    /// (AnyCable's `--streams_presence`). Default: true. Public streams
    /// always are.
    pub fn with_signed_presence(mut self, presence: bool) -> Self {
        self.signed_presence = presence;
        self
    }

    /// Whether clients may whisper on a signed stream (AnyCable's
    /// `--streams_whisper`). Default: false. Public streams always allow
    /// whispers.
    pub fn with_signed_whispers(mut self, whispers: bool) -> Self {
        self.signed_whispers = whispers;
        self
    }

    /// The stream a subscription's params name, or why it is refused.
    pub fn stream_for(&self, params: &crate::Params) -> Result<String, String> {
        let text = |key: &str| params.get(key).and_then(serde_json::Value::as_str);
        if let Some(signed) = text("signed_stream_name") {
            let Some(verifier) = &self.verifier else {
                return Err("signed streams are not enabled".into());
            };
            return verifier
                .verify(signed)
                .map_err(|e| format!("bad signed stream name: {e}"));
        }
        match text("stream_name") {
            // Keayl's own streams (presence events, whispers) are not
            // public, whatever else is.
            Some(name) if crate::naming::is_reserved(name) => Err("reserved stream name".into()),
            Some(name) if self.public && !name.is_empty() => Ok(name.to_owned()),
            Some(_) if !self.public => Err("public streams are not enabled".into()),
            _ => Err("no stream_name or signed_stream_name".into()),
        }
    }
}

impl Channel for PubSubChannel {
    const NAME: &'static str = "$pubsub";
    type Action = crate::NoActions;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        match self.stream_for(ctx.params()) {
            Ok(stream) => {
                let signed = ctx.params().contains_key("signed_stream_name");
                let (presence, whispers) = if signed {
                    (self.signed_presence, self.signed_whispers)
                } else {
                    (true, true)
                };
                let mut from = ctx.stream_from(stream);
                if presence {
                    from = from.with_presence();
                }
                if whispers {
                    from.with_whispers();
                }
            }
            Err(reason) => {
                tracing::info!(%reason, "rejecting a $pubsub subscription");
                ctx.reject();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(v: serde_json::Value) -> crate::Params {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn names_are_checked() {
        let verifier = StreamVerifier::new("s3Krit");
        let signed = verifier.generate("room:1");
        let both = PubSubChannel::signed(verifier.clone()).with_public_streams(true);
        let only_signed = PubSubChannel::signed(verifier);
        let public = serde_json::json!({"channel": "$pubsub", "stream_name": "news"});
        let good = serde_json::json!({"channel": "$pubsub", "signed_stream_name": signed});
        let forged =
            serde_json::json!({"channel": "$pubsub", "signed_stream_name": "cm9vbToy--00"});
        assert_eq!(both.stream_for(&params(public.clone())), Ok("news".into()));
        assert_eq!(both.stream_for(&params(good.clone())), Ok("room:1".into()));
        assert!(only_signed.stream_for(&params(public)).is_err());
        assert_eq!(
            only_signed.stream_for(&params(good.clone())),
            Ok("room:1".into())
        );
        assert!(both.stream_for(&params(forged)).is_err());
        let reserved =
            serde_json::json!({"channel": "$pubsub", "stream_name": "$keayl:presence:room:1"});
        assert!(both.stream_for(&params(reserved)).is_err());
        assert!(PubSubChannel::public().stream_for(&params(good)).is_err());
        assert!(
            both.stream_for(&params(serde_json::json!({"channel": "$pubsub"})))
                .is_err()
        );
    }
}
