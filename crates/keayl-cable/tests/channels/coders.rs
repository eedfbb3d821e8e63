//! Coders: what the client receives through a custom coder.

use std::sync::Arc;

use bytes::Bytes;
use keayl_cable::channel::{Channel, ChannelContext, ChannelError};
use keayl_cable::coder::{Coder, CoderError, JsonCoder};
use serde_json::{Value, json};

use crate::common::*;
use crate::support::*;

// ---------------------------------------------------------------------------------------
// Coders

/// Not a JSON passthrough: decodes any payload as text and upper-cases it; payloads that
/// start with `!` fail to decode.
#[derive(Debug)]
struct ShoutCoder;

impl Coder for ShoutCoder {
    fn encode(&self, value: &Value) -> Result<Bytes, CoderError> {
        Ok(Bytes::from(value.as_str().unwrap_or_default().to_owned()))
    }
    fn decode(&self, bytes: &[u8]) -> Result<Value, CoderError> {
        let text = std::str::from_utf8(bytes).map_err(|e| CoderError(e.to_string()))?;
        if text.starts_with('!') {
            return Err(CoderError("refused".into()));
        }
        Ok(Value::String(text.to_uppercase()))
    }
}

#[derive(Default)]
struct CoderChannel;

impl Channel for CoderChannel {
    const NAME: &'static str = "CoderChannel";
    type Action = keayl_cable::NoActions;

    async fn subscribed(&mut self, ctx: &mut ChannelContext<'_>) -> Result<(), ChannelError> {
        ctx.stream_from_with_coder("shout", Arc::new(ShoutCoder));
        ctx.stream_from_with_coder("json", Arc::new(JsonCoder));
        Ok(())
    }
}

#[tokio::test]
async fn a_custom_coder_decodes_what_the_client_receives() {
    let (cable, _) = cable_with(&Log::new(), |b| b.channel::<CoderChannel>());
    let (mut conn, sink) = open(&cable).await;
    let id = r#"{"channel":"CoderChannel"}"#;
    send(&mut conn, &subscribe(id)).await.unwrap();
    assert_eq!(sink.take(), vec![confirm(id)]);

    let encoded = ShoutCoder.encode(&json!("hello wörld")).unwrap();
    cable.broadcast_raw("shout", encoded).await.unwrap();
    cable
        .broadcast_raw("shout", Bytes::from_static(b"!undecodable"))
        .await
        .unwrap();
    cable
        .broadcast_raw("shout", Bytes::from_static(b"again"))
        .await
        .unwrap();
    assert_eq!(
        sink.take(),
        vec![data(id, r#""HELLO WÖRLD""#), data(id, r#""AGAIN""#)],
        "decode errors are dropped, later messages still flow"
    );

    // JsonCoder: JSON round trip; non-JSON payloads dropped.
    let encoded = JsonCoder.encode(&json!({"k": [1, 2]})).unwrap();
    assert_eq!(&encoded[..], br#"{"k":[1,2]}"#);
    assert_eq!(JsonCoder.decode(&encoded).unwrap(), json!({"k": [1, 2]}));
    assert!(JsonCoder.is_json_passthrough());
    assert!(!ShoutCoder.is_json_passthrough());
    cable.broadcast_raw("json", encoded).await.unwrap();
    cable
        .broadcast_raw("json", Bytes::from_static(b"{oops"))
        .await
        .unwrap();
    assert_eq!(sink.take(), vec![data(id, r#"{"k":[1,2]}"#)]);
}
