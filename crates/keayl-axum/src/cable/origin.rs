//! Origin checking (CSRF protection for WebSocket upgrades), as Rails does it.

use http::HeaderMap;

/// One allowed origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigin {
    /// Exactly this origin (`https://example.com`).
    Exact(String),
    /// `http://` or `https://` + this host + `:` + any port, or no port
    /// (Rails' development default is this for `localhost`).
    AnyPort(String),
}

impl AllowedOrigin {
    fn matches(&self, origin: &str) -> bool {
        match self {
            AllowedOrigin::Exact(o) => o == origin,
            AllowedOrigin::AnyPort(host) => {
                let rest = origin
                    .strip_prefix("http://")
                    .or_else(|| origin.strip_prefix("https://"));
                let Some(rest) = rest.and_then(|r| r.strip_prefix(host.as_str())) else {
                    return false;
                };
                rest.is_empty()
                    || rest
                        .strip_prefix(':')
                        .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            }
        }
    }
}

/// Which origins may open a WebSocket.
///
/// Default: [`OriginPolicy::Check`] allowing only the same origin as the
/// request's `Host`. A refused origin (or a missing `Origin` header) gets
/// HTTP 404 and no upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPolicy {
    /// Accept every origin, and requests without one (Rails'
    /// `disable_request_forgery_protection`).
    AllowAll,
    /// Accept listed origins, and optionally the same origin as the host.
    Check {
        /// Allowed origins.
        allowed: Vec<AllowedOrigin>,
        /// Accept `Origin` equal to `http(s)://` + the `Host` header
        /// (scheme `https` when `X-Forwarded-Proto: https`).
        allow_same_origin_as_host: bool,
    },
}

impl Default for OriginPolicy {
    fn default() -> Self {
        OriginPolicy::Check {
            allowed: Vec::new(),
            allow_same_origin_as_host: true,
        }
    }
}

impl OriginPolicy {
    /// Rails' development default: same origin as host, plus
    /// `http(s)://localhost:<any port>`.
    pub fn development() -> Self {
        OriginPolicy::Check {
            allowed: vec![
                AllowedOrigin::AnyPort("localhost".into()),
                AllowedOrigin::AnyPort("127.0.0.1".into()),
            ],
            allow_same_origin_as_host: true,
        }
    }

    /// Whether a request with these headers may upgrade.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        match self {
            OriginPolicy::AllowAll => true,
            OriginPolicy::Check {
                allowed,
                allow_same_origin_as_host,
            } => {
                let Some(origin) = headers
                    .get(http::header::ORIGIN)
                    .and_then(|v| v.to_str().ok())
                else {
                    return false;
                };
                if *allow_same_origin_as_host
                    && let Some(host) = headers
                        .get(http::header::HOST)
                        .and_then(|v| v.to_str().ok())
                {
                    let https = headers
                        .get("x-forwarded-proto")
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
                    let scheme = if https { "https" } else { "http" };
                    if origin.len() == scheme.len() + 3 + host.len()
                        && origin.starts_with(scheme)
                        && origin[scheme.len()..].starts_with("://")
                        && &origin[scheme.len() + 3..] == host
                    {
                        return true;
                    }
                }
                allowed.iter().any(|a| a.matches(origin))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::HOST, host.parse().unwrap());
        if let Some(o) = origin {
            h.insert(http::header::ORIGIN, o.parse().unwrap());
        }
        h
    }

    #[test]
    fn rails_rules() {
        let p = OriginPolicy::Check {
            allowed: vec![AllowedOrigin::Exact("http://allowed.example".into())],
            allow_same_origin_as_host: true,
        };
        assert!(p.allows(&headers(Some("http://allowed.example"), "x:1")));
        assert!(p.allows(&headers(Some("http://x:1"), "x:1")));
        assert!(!p.allows(&headers(Some("https://x:1"), "x:1")));
        assert!(!p.allows(&headers(Some("http://allowed.example.evil"), "x:1")));
        assert!(
            !p.allows(&headers(None, "x:1")),
            "missing Origin is refused"
        );
        assert!(OriginPolicy::AllowAll.allows(&headers(None, "x")));
        let dev = OriginPolicy::development();
        assert!(dev.allows(&headers(Some("http://localhost:3000"), "y")));
        assert!(!dev.allows(&headers(Some("http://localhost.evil:3000"), "y")));
        assert!(!dev.allows(&headers(Some("http://localhost:"), "y")));
    }
}
