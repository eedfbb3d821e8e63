//! Coders: how broadcasts are encoded for the pub/sub and decoded for the
//! client.
//!
//! Cable broadcasts travel through pub/sub as JSON text, as Rails'
//! `ActiveSupport::JSON` coder produces, so Rails and Keayl processes sharing
//! a broker read each other's messages. [`JsonCoder`] is that coder.
//!
//! ```
//! use keayl_cable::coder::{Coder, JsonCoder};
//! use serde_json::json;
//!
//! let bytes = JsonCoder.encode(&json!({"message": "hi"})).unwrap();
//! assert_eq!(&bytes[..], br#"{"message":"hi"}"#);
//! assert_eq!(JsonCoder.decode(&bytes).unwrap(), json!({"message": "hi"}));
//! ```

use bytes::Bytes;
use serde_json::Value;

/// Error from a [`Coder`].
#[derive(Debug, thiserror::Error)]
#[error("coder error: {0}")]
pub struct CoderError(pub String);

/// Encodes values for broadcasting and decodes received messages.
pub trait Coder: Send + Sync + std::fmt::Debug + 'static {
    /// Encode a value as a pub/sub payload.
    fn encode(&self, value: &Value) -> Result<Bytes, CoderError>;
    /// Decode a pub/sub payload into the value transmitted to the client.
    fn decode(&self, bytes: &[u8]) -> Result<Value, CoderError>;
    /// True when payloads are already the JSON the client frame carries, so
    /// the transport can splice them without decoding (the fast path).
    fn is_json_passthrough(&self) -> bool {
        false
    }
}

/// Serialises to and from JSON (Rails' `ActiveSupport::JSON`).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonCoder;

impl Coder for JsonCoder {
    fn encode(&self, value: &Value) -> Result<Bytes, CoderError> {
        serde_json::to_vec(value)
            .map(Bytes::from)
            .map_err(|e| CoderError(e.to_string()))
    }

    fn decode(&self, bytes: &[u8]) -> Result<Value, CoderError> {
        serde_json::from_slice(bytes).map_err(|e| CoderError(e.to_string()))
    }

    fn is_json_passthrough(&self) -> bool {
        true
    }
}
