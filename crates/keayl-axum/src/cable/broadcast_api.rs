//! `POST /_broadcast`: publish from other services over HTTP.
//!
//! Body: `{"stream":"…","data":"<JSON text>"}` (the shape AnyCable's HTTP
//! broadcaster takes), or an array of them. `data` must itself be JSON text;
//! it is published verbatim.
//!
//! The secret is checked from the headers before any of the body is read;
//! the body is bounded in bytes ([`ServerConfig::broadcast_body_bytes`](super::ServerConfig::broadcast_body_bytes))
//! and in time ([`ServerConfig::broadcast_body_timeout`](super::ServerConfig::broadcast_body_timeout)).
//! Only `Content-Type: application/json` is accepted and requests a browser
//! marks as cross-site are refused, so no web page can broadcast through a
//! visitor's browser. Refusals are logged, rate-limited.

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
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
enum BroadcastBody {
    One(Broadcast),
    Many(Vec<Broadcast>),
}

/// `None` when the request may broadcast, else the response refusing it.
/// Looks at the headers only: an unauthenticated body is never read.
fn refusal(server: &CableServer, headers: &HeaderMap) -> Option<Response> {
    let config = server.config();
    match &config.broadcast_auth {
        BroadcastAuth::Disabled => return Some(super::page_not_found()),
        BroadcastAuth::OpenForDevelopment => {}
        BroadcastAuth::Secret(secret) => {
            let given = headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            if !bool::from(given.as_bytes().ct_eq(secret.as_bytes())) {
                return Some(refuse(
                    server,
                    StatusCode::UNAUTHORIZED,
                    "bad or missing bearer secret",
                ));
            }
        }
    }
    // A web page can POST a form or a `text/plain` body to any site without
    // asking; `application/json` needs a CORS preflight, which this endpoint
    // never grants. And a request a browser marks as coming from another
    // site (or from an origin not allowed) is refused outright.
    let json = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Some(refuse(
            server,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        ));
    }
    let cross_site = headers
        .get("sec-fetch-site")
        .is_some_and(|v| v == "cross-site" || v == "same-site");
    let foreign_origin =
        headers.contains_key(http::header::ORIGIN) && !config.origins.allows(headers);
    if cross_site || foreign_origin {
        return Some(refuse(
            server,
            StatusCode::FORBIDDEN,
            "cross-site requests may not broadcast",
        ));
    }
    if server.is_shutting_down() {
        return Some((StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response());
    }
    None
}

fn refuse(server: &CableServer, status: StatusCode, why: &'static str) -> Response {
    if server.log_allowed() {
        tracing::warn!(status = status.as_u16(), why, "refused POST /_broadcast");
    }
    (status, why).into_response()
}

pub(crate) async fn handler(server: CableServer, request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    if let Some(resp) = refusal(&server, &parts.headers) {
        return resp;
    }
    let config = server.config();
    let limited = http_body_util::Limited::new(body, config.broadcast_body_bytes);
    let body = match tokio::time::timeout(config.broadcast_body_timeout, limited.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return refuse(
                &server,
                StatusCode::PAYLOAD_TOO_LARGE,
                "body over the limit",
            );
        }
        Ok(Err(_)) => return (StatusCode::BAD_REQUEST, "body could not be read").into_response(),
        Err(_) => {
            return refuse(
                &server,
                StatusCode::REQUEST_TIMEOUT,
                "body not received in time",
            );
        }
    };
    let parsed: BroadcastBody = match serde_json::from_slice(&body) {
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
        BroadcastBody::One(b) => vec![b],
        BroadcastBody::Many(v) => v,
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
            .cable()
            .broadcast_raw(&b.stream, b.data.into_bytes().into())
            .await
        {
            tracing::error!(error = %e, "broadcast from /_broadcast failed");
            return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response();
        }
    }
    StatusCode::CREATED.into_response()
}
