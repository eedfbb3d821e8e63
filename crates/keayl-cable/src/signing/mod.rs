//! Rails-compatible signed stream names (Turbo's `signed_stream_name`).
//!
//! A Turbo page subscribes to `Turbo::StreamsChannel` with a `signed_stream_name` that the
//! Rails app generated with `ActiveSupport::MessageVerifier`; the server must check that
//! signature before streaming, or any visitor could subscribe to any stream. This module
//! verifies (and generates) such names byte-compatibly with Rails, so pages rendered by a
//! Rails app work against this server and vice versa.
//!
//! Format (no purpose, no expiry, so no metadata envelope):
//!
//! ```text
//! strict_base64(JSON.dump(name)) + "--" + hex(HMAC-SHA256(key, <the base64 text>))
//! ```
//!
//! The key is either configured explicitly (`config.turbo.signed_stream_verifier_key`,
//! use [`StreamVerifier::new`]) or derived from the app's `secret_key_base` with
//! `ActiveSupport::KeyGenerator` (use [`StreamVerifier::from_secret_key_base`] with
//! [`TURBO_STREAM_SALT`]; SHA256 for apps with `load_defaults` 7.0 or later, SHA1 before).
//! The name to sign is Turbo's `stream_name_from`:
//! [`naming::stream_name_from`](crate::naming::stream_name_from).
//!
//! ```
//! use keayl_cable::naming::{GlobalId, stream_name_from};
//! use keayl_cable::signing::{StreamVerifier, VerifyError};
//!
//! let verifier = StreamVerifier::new("s3Krit");
//! let signed = "ImNoYXQvMjAyMyI=--2b2e054b6413bf3bc7e8bbad2f68962aa2ba19821800ccbd8de6fd7314e8320c";
//! assert_eq!(verifier.verify(signed)?, "chat/2023");
//! assert_eq!(verifier.generate("chat/2023"), signed);
//!
//! // `turbo_stream_from @room, :messages` streams from the joined name.
//! let room = GlobalId::new("chat-app", "Room", 42);
//! let name = stream_name_from(&[&room, &"messages"]);
//! assert_eq!(name, "Z2lkOi8vY2hhdC1hcHAvUm9vbS80Mg:messages");
//! assert_eq!(verifier.verify(&verifier.generate(&name))?, name);
//! # Ok::<(), VerifyError>(())
//! ```

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The key-generator salt turbo-rails uses for its verifier key
/// (`Rails.application.key_generator.generate_key("turbo/signed_stream_verifier_key")`).
pub const TURBO_STREAM_SALT: &str = "turbo/signed_stream_verifier_key";

/// PBKDF2 iterations of `Rails.application.key_generator`.
pub const KEY_GENERATOR_ITERATIONS: u32 = 1000;

/// Length in bytes of keys produced by `ActiveSupport::KeyGenerator#generate_key`.
pub const KEY_LENGTH: usize = 64;

/// Separator between the payload and the digest.
const SEPARATOR: &[u8] = b"--";

/// Length of a hex-encoded SHA-256 digest.
const DIGEST_HEX_LEN: usize = 64;

/// The hash function of the PBKDF2 key derivation
/// (`config.active_support.key_generator_hash_digest_class`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyDigest {
    /// SHA-1: Rails 6.1 and older, or apps without `load_defaults 7.0`.
    Sha1,
    /// SHA-256: the default for apps with `load_defaults 7.0` or later.
    Sha256,
}

/// Derives a key the way `ActiveSupport::KeyGenerator#generate_key(salt)` does for a Rails
/// application: PBKDF2-HMAC over `secret_key_base`, [`KEY_GENERATOR_ITERATIONS`] iterations,
/// [`KEY_LENGTH`] bytes.
pub fn generate_key(secret_key_base: &str, salt: &str, digest: KeyDigest) -> [u8; KEY_LENGTH] {
    let mut key = [0u8; KEY_LENGTH];
    let (password, salt) = (secret_key_base.as_bytes(), salt.as_bytes());
    match digest {
        KeyDigest::Sha1 => {
            pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password, salt, KEY_GENERATOR_ITERATIONS, &mut key);
        }
        KeyDigest::Sha256 => {
            pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, KEY_GENERATOR_ITERATIONS, &mut key);
        }
    }
    key
}

/// Why a signed stream name was refused. Rails treats all of these as "not verified" and
/// the channel rejects the subscription.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The value does not end in `--` followed by 64 characters, or the payload before the
    /// separator is empty.
    #[error("signed message is malformed")]
    Malformed,
    /// The digest does not match the payload (tampered, or signed with another key).
    #[error("signature mismatch")]
    InvalidSignature,
    /// The signed payload is not strict (padded, standard-alphabet) Base64.
    #[error("signed payload is not valid base64")]
    InvalidBase64,
    /// The decoded payload is not JSON.
    #[error("signed payload is not JSON")]
    InvalidJson,
    /// The decoded payload is JSON but not a string.
    #[error("signed payload is JSON {found}, expected a string")]
    NotAString {
        /// The JSON type that was found.
        found: &'static str,
    },
}

impl VerifyError {
    /// A short, stable, snake_case name for this error, suitable as a metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::InvalidSignature => "invalid_signature",
            Self::InvalidBase64 => "invalid_base64",
            Self::InvalidJson => "invalid_json",
            Self::NotAString { .. } => "not_a_string",
        }
    }
}

/// Verifies and generates stream names signed like `ActiveSupport::MessageVerifier`
/// with `digest: "SHA256", serializer: JSON` (turbo-rails' `Turbo.signed_stream_verifier`).
///
/// Cheap to clone; the keyed HMAC state is computed once at construction.
#[derive(Clone)]
pub struct StreamVerifier {
    mac: HmacSha256,
}

impl StreamVerifier {
    /// A verifier using `key` as the raw HMAC key (for example the value of
    /// `config.turbo.signed_stream_verifier_key`, or AnyCable's `--turbo_streams_secret`).
    pub fn new(key: impl Into<Vec<u8>>) -> Self {
        let key = key.into();
        Self::from_key_bytes(&key)
    }

    /// A verifier using the key Rails derives from `secret_key_base` for `salt`
    /// (see [`generate_key`]). For Turbo pass [`TURBO_STREAM_SALT`].
    pub fn from_secret_key_base(secret_key_base: &str, salt: &str, digest: KeyDigest) -> Self {
        Self::from_key_bytes(&generate_key(secret_key_base, salt, digest))
    }

    fn from_key_bytes(key: &[u8]) -> Self {
        let mac = match HmacSha256::new_from_slice(key) {
            Ok(mac) => mac,
            // HMAC accepts keys of any length; this arm cannot be reached.
            Err(_) => unreachable!("HMAC-SHA256 accepts keys of any length"),
        };
        Self { mac }
    }

    /// Checks `signed` and returns the stream name it carries.
    ///
    /// Mirrors `MessageVerifier#verified`: the digest is located at a fixed distance from the
    /// end (`--` + 64 lowercase hex characters), compared in constant time against
    /// HMAC-SHA256 of everything before the separator, and only then is the payload
    /// strict-Base64-decoded and JSON-parsed. Never panics, whatever the input.
    pub fn verify(&self, signed: &str) -> Result<String, VerifyError> {
        let bytes = signed.as_bytes();
        let payload_len = bytes
            .len()
            .checked_sub(SEPARATOR.len() + DIGEST_HEX_LEN)
            .filter(|&len| len > 0)
            .ok_or(VerifyError::Malformed)?;
        let (payload, rest) = bytes.split_at(payload_len);
        let (separator, digest) = rest.split_at(SEPARATOR.len());
        if separator != SEPARATOR {
            return Err(VerifyError::Malformed);
        }

        let expected = self.hex_digest(payload);
        if !bool::from(expected.as_slice().ct_eq(digest)) {
            return Err(VerifyError::InvalidSignature);
        }

        let json = STANDARD
            .decode(payload)
            .map_err(|_| VerifyError::InvalidBase64)?;
        match serde_json::from_slice::<Value>(&json) {
            Ok(Value::String(name)) => Ok(name),
            Ok(other) => Err(VerifyError::NotAString {
                found: crate::protocol::value_kind(&other),
            }),
            Err(_) => Err(VerifyError::InvalidJson),
        }
    }

    /// Signs `name`, like `Turbo::StreamsChannel.signed_stream_name`.
    ///
    /// The name is serialised as a JSON string the way Ruby's `JSON.dump` does (UTF-8 kept
    /// as is, only `"`, `\` and control characters escaped).
    pub fn generate(&self, name: &str) -> String {
        // Serialising a `&str` cannot fail; fall back to an empty JSON string regardless.
        let json = serde_json::to_string(name).unwrap_or_else(|_| String::from("\"\""));
        let payload = STANDARD.encode(json);
        let digest = self.hex_digest(payload.as_bytes());
        let mut signed = String::with_capacity(payload.len() + SEPARATOR.len() + DIGEST_HEX_LEN);
        signed.push_str(&payload);
        signed.push_str("--");
        // The digest buffer is ASCII hex.
        signed.extend(digest.iter().map(|&b| char::from(b)));
        signed
    }

    /// Lowercase hex HMAC-SHA256 of `data`.
    fn hex_digest(&self, data: &[u8]) -> [u8; DIGEST_HEX_LEN] {
        let mut mac = self.mac.clone();
        mac.update(data);
        let digest = mac.finalize().into_bytes();
        let mut hex = [0u8; DIGEST_HEX_LEN];
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for (pair, byte) in hex.chunks_exact_mut(2).zip(digest.iter()) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0x0f)];
        }
        hex
    }
}

impl fmt::Debug for StreamVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("StreamVerifier").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
