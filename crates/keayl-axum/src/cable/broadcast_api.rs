//! `POST /_broadcast`: publish from other services over HTTP.
//!
//! Body: `{"stream":"…","data":"<JSON text>"}` (the shape AnyCable's HTTP
//! broadcaster takes), or an array of them. `data` must itself be JSON text;
//! it is published verbatim.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::CableServer;

/// Who may use `POST /_broadcast`.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum BroadcastAuth {
    /// The endpoint answers 404 (the production default when no secret is
    /// configured).
    #[default]
    Disabled,
    /// Open to anyone: only for development, when no secret is configured.
    OpenForDevelopment,
    /// Requires `Authorization: Bearer <secret>` (compared in constant time).
    Secret(String),
}

impl std::fmt::Debug for BroadcastAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BroadcastAuth::Disabled => f.write_str("Disabled"),
            BroadcastAuth::OpenForDevelopment => f.write_str("OpenForDevelopment"),
            BroadcastAuth::Secret(_) => f.write_str("Secret(…)"),
        }
    }
}

#[derive(Deserialize)]
struct Broadcast {
    stream: String,
    data: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Body {
    One(Broadcast),
    Many(Vec<Broadcast>),
}

/// `None` when the request may broadcast, else the response refusing it.
fn refusal(auth: &BroadcastAuth, headers: &HeaderMap) -> Option<Response> {
    match auth {
        BroadcastAuth::Disabled => Some(super::page_not_found()),
        BroadcastAuth::OpenForDevelopment => None,
        BroadcastAuth::Secret(secret) => {
            let given = headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            if bool::from(given.as_bytes().ct_eq(secret.as_bytes())) {
                None
            } else {
                tracing::warn!("refused /_broadcast: bad or missing bearer secret");
                Some((StatusCode::UNAUTHORIZED, "unauthorized").into_response())
            }
        }
    }
}

pub(crate) async fn handler(
    State(server): State<CableServer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(resp) = refusal(&server.inner.config.broadcast_auth, &headers) {
        return resp;
    }
    let parsed: Body = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("expected {{\"stream\":…,\"data\":\"<JSON text>\"}}: {e}"),
            )
                .into_response();
        }
    };
    let list = match parsed {
        Body::One(b) => vec![b],
        Body::Many(v) => v,
    };
    for b in &list {
        if serde_json::from_str::<serde::de::IgnoredAny>(&b.data).is_err() {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("data for stream {:?} is not JSON text", b.stream),
            )
                .into_response();
        }
    }
    for b in list {
        if let Err(e) = server
            .inner
            .cable
            .broadcast_raw(&b.stream, b.data.into_bytes().into())
            .await
        {
            tracing::error!(error = %e, "broadcast from /_broadcast failed");
            return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response();
        }
    }
    StatusCode::CREATED.into_response()
}
