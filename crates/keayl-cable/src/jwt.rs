//! JWT identification (AnyCable's): a connection that brings a signed token
//! is identified by it, without calling the app's `connect`.
//!
//! The token travels in the `jid` query parameter (name configurable), the
//! `X-JID` header, or a WebSocket subprotocol `anycable-token.<token>`
//! offered beside the real one. It is an HS256 JWT whose claim `ext` holds
//! the connection's identifiers as a JSON object in a string (what
//! `AnyCable::JWT.encode` in anycable-rails issues) and `exp` its expiry.
//! A valid token's identifiers are set through
//! [`ConnectionHandler::restore`](crate::connection::ConnectionHandler::restore)
//! (by default as strings); an expired one closes the connection with
//! `{"type":"disconnect","reason":"token_expired","reconnect":false}`, a bad
//! one with `unauthorized`; without a token the handler's `connect` runs.
//!
//! ```
//! use std::time::Duration;
//! use keayl_cable::jwt::JwtIdentifier;
//!
//! let jwt = JwtIdentifier::new("qwerty");
//! let token = jwt.issue(&[("current_user", "alice")], Duration::from_secs(60));
//! assert_eq!(jwt.verify(&token).unwrap(), [("current_user".to_owned(), "alice".to_owned())]);
//! assert!(JwtIdentifier::new("other").verify(&token).is_err());
//! ```

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::connection::Request;

/// The subprotocol prefix that carries a token.
pub const TOKEN_SUBPROTOCOL_PREFIX: &str = "anycable-token.";

/// The header that carries a token.
pub const TOKEN_HEADER: &str = "x-jid";

/// Longest token looked at (a few identifiers take a few hundred bytes).
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Why a token does not identify a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// The token's `exp` has passed: `token_expired`.
    #[error("the token has expired")]
    Expired,
    /// Bad signature, malformed, another algorithm, no `ext`: `unauthorized`.
    #[error("invalid token: {0}")]
    Invalid(String),
}

#[derive(Serialize, Deserialize)]
struct Claims {
    ext: String,
    exp: u64,
}

/// Verifies (and issues) identification tokens with one HS256 secret.
#[derive(Clone)]
pub struct JwtIdentifier {
    decoding: DecodingKey,
    encoding: EncodingKey,
    param: String,
}

impl std::fmt::Debug for JwtIdentifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtIdentifier")
            .field("param", &self.param)
            .finish_non_exhaustive()
    }
}

impl JwtIdentifier {
    /// Tokens signed with `secret` (HS256), read from `?jid=`.
    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        let secret = secret.as_ref();
        JwtIdentifier {
            decoding: DecodingKey::from_secret(secret),
            encoding: EncodingKey::from_secret(secret),
            param: "jid".into(),
        }
    }

    /// Read the token from query parameter `name` instead of `jid`.
    pub fn with_param(mut self, name: impl Into<String>) -> Self {
        self.param = name.into();
        self
    }

    /// A token for `identifiers` (name, param), valid for `ttl`: what an
    /// app's login endpoint hands its page.
    pub fn issue(&self, identifiers: &[(&str, &str)], ttl: Duration) -> String {
        let ext: serde_json::Map<String, Value> = identifiers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
            .collect();
        let claims = Claims {
            ext: Value::Object(ext).to_string(),
            exp: crate::pubsub::unix_now() + ttl.as_secs().max(1),
        };
        // HS256 over serialisable claims cannot fail.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .unwrap_or_default()
    }

    /// The identifiers (name, param) a token carries, sorted by name.
    pub fn verify(&self, token: &str) -> Result<Vec<(String, String)>, JwtError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtError::Invalid("token too long".into()));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => JwtError::Expired,
                _ => JwtError::Invalid(e.to_string()),
            },
        )?;
        let Ok(Value::Object(ext)) = serde_json::from_str::<Value>(&data.claims.ext) else {
            return Err(JwtError::Invalid("`ext` is not a JSON object".into()));
        };
        let mut ids: Vec<(String, String)> = ext
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// The token a request carries: the query parameter, else the `X-JID`
    /// header, else an `anycable-token.<token>` subprotocol.
    pub fn token_of(&self, request: &Request) -> Option<String> {
        if let Some(t) = request.query(&self.param).filter(|t| !t.is_empty()) {
            return Some(t.to_owned());
        }
        if let Some(t) = request.header(TOKEN_HEADER).filter(|t| !t.is_empty()) {
            return Some(t.to_owned());
        }
        request
            .headers()
            .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .find_map(|p| p.trim().strip_prefix(TOKEN_SUBPROTOCOL_PREFIX))
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_tampered_and_foreign_tokens_are_refused() {
        let jwt = JwtIdentifier::new("qwerty");
        let claims = Claims {
            ext: r#"{"current_user":"bob"}"#.into(),
            exp: crate::pubsub::unix_now() - 10,
        };
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"qwerty"),
        )
        .unwrap();
        assert_eq!(jwt.verify(&expired), Err(JwtError::Expired));
        let good = jwt.issue(&[("current_user", "bob")], Duration::from_secs(60));
        let mut tampered = good.clone();
        tampered.pop();
        tampered.push(if good.ends_with('A') { 'B' } else { 'A' });
        assert!(matches!(jwt.verify(&tampered), Err(JwtError::Invalid(_))));
        assert!(matches!(
            jwt.verify("not.a.token"),
            Err(JwtError::Invalid(_))
        ));
        // Another algorithm (none) is refused.
        let none = format!(
            "{}.{}.",
            base64_url(r#"{"alg":"none","typ":"JWT"}"#),
            base64_url(r#"{"ext":"{}","exp":9999999999}"#)
        );
        assert!(matches!(jwt.verify(&none), Err(JwtError::Invalid(_))));
        // Numbers in `ext` become their JSON text.
        let claims = Claims {
            ext: r#"{"id":7,"b":"x"}"#.into(),
            exp: crate::pubsub::unix_now() + 60,
        };
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"qwerty"),
        )
        .unwrap();
        assert_eq!(
            jwt.verify(&t).unwrap(),
            [("b".into(), "x".into()), ("id".into(), "7".into())]
        );
    }

    fn base64_url(s: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn the_three_carriers() {
        let jwt = JwtIdentifier::new("k");
        let req = |b: http::request::Builder| Request::from(b.body(()).unwrap());
        let q = req(http::Request::get("/cable?jid=abc"));
        assert_eq!(jwt.token_of(&q).as_deref(), Some("abc"));
        let h = req(http::Request::get("/cable").header("X-JID", "def"));
        assert_eq!(jwt.token_of(&h).as_deref(), Some("def"));
        let p = req(http::Request::get("/cable").header(
            "sec-websocket-protocol",
            "actioncable-v1-ext-json, anycable-token.ghi",
        ));
        assert_eq!(jwt.token_of(&p).as_deref(), Some("ghi"));
        let none = req(http::Request::get("/cable"));
        assert_eq!(jwt.token_of(&none), None);
        let other = JwtIdentifier::new("k").with_param("token");
        assert_eq!(
            other
                .token_of(&req(http::Request::get("/cable?token=x")))
                .as_deref(),
            Some("x")
        );
    }
}
