//! An allowed-`Host` list, against DNS rebinding.
//!
//! A page on `evil.example` whose name the attacker re-points at your
//! server's address can make the visitor's browser send same-origin
//! requests to it: `Host` and `Origin` both say `evil.example`, so an origin
//! check alone passes. Listing the host names the server is reachable by
//! refuses those requests (HTTP 421, Misdirected Request).
//!
//! ```
//! use keayl_axum::hosts::{AllowedHosts, check_host};
//!
//! let hosts = AllowedHosts::new(["example.com", "localhost"]);
//! let app: axum::Router = axum::Router::new()
//!     .route("/", axum::routing::get(|| async { "hi" }))
//!     .layer(axum::middleware::from_fn_with_state(hosts, check_host));
//! # let _ = app;
//! ```

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Host names (without port) a server answers to; any port is accepted.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    names: Arc<[String]>,
}

impl AllowedHosts {
    /// Allow these host names (case-insensitive, without port).
    pub fn new<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        AllowedHosts {
            names: names
                .into_iter()
                .map(|n| n.into().to_ascii_lowercase())
                .collect(),
        }
    }

    /// Whether a request with these headers names an allowed host (a
    /// request without `Host` is refused).
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(host) = headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
        else {
            return false;
        };
        let name = host_name(host);
        self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }
}

/// Middleware answering HTTP 421 to requests for a host not in the list:
/// `.layer(axum::middleware::from_fn_with_state(hosts, check_host))`.
pub async fn check_host(
    State(hosts): State<AllowedHosts>,
    request: Request,
    next: Next,
) -> Response {
    if hosts.allows(request.headers()) {
        next.run(request).await
    } else {
        (StatusCode::MISDIRECTED_REQUEST, "unknown host").into_response()
    }
}

/// `host[:port]` or `[v6]:port` without the port.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::HOST, host.parse().unwrap());
        h
    }

    #[test]
    fn names_match_without_port_and_case() {
        let hosts = AllowedHosts::new(["Example.com", "::1"]);
        assert!(hosts.allows(&headers("example.com")));
        assert!(hosts.allows(&headers("EXAMPLE.com:3000")));
        assert!(hosts.allows(&headers("[::1]:3000")));
        assert!(!hosts.allows(&headers("evil.example:3000")));
        assert!(!hosts.allows(&headers("example.com.evil.example")));
        assert!(!hosts.allows(&HeaderMap::new()));
    }
}
