use std::collections::HashMap;

use crate::protocol::Protocol;

/// The HTTP upgrade request a connection came from, as the web framework
/// saw it: method, URI, headers and **extensions** (what tower layers put
/// there: a session, an authenticated user, a signed cookie jar, the app's
/// state), so `connect` authenticates with the tools the rest of the app
/// uses. The query and cookies are parsed once, for convenience.
///
/// `Debug` shows cookie names but not their values, and hides credential
/// headers (`Authorization`, `Cookie`, `Proxy-Authorization`), so a logged
/// request leaks no session.
///
/// ```
/// use keayl_cable::connection::Request;
///
/// #[derive(Clone)]
/// struct CurrentUser(String);
///
/// let mut http = http::Request::builder()
///     .uri("/cable?token=abc")
///     .header("cookie", "session=s1; theme=dark")
///     .body(())
///     .unwrap();
/// http.extensions_mut().insert(CurrentUser("alice".into()));
/// let request = Request::from(http);
/// assert_eq!(request.query("token"), Some("abc"));
/// assert_eq!(request.cookie("theme"), Some("dark"));
/// assert_eq!(request.extension::<CurrentUser>().map(|u| u.0.as_str()), Some("alice"));
/// ```
#[derive(Clone)]
pub struct Request {
    parts: http::request::Parts,
    query: HashMap<String, String>,
    cookies: HashMap<String, String>,
    protocol: Protocol,
}

/// Headers whose values `Debug` never shows.
const SECRET_HEADERS: [http::HeaderName; 3] = [
    http::header::AUTHORIZATION,
    http::header::COOKIE,
    http::header::PROXY_AUTHORIZATION,
];

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut headers: Vec<(&str, &str)> = self
            .parts
            .headers
            .iter()
            .map(|(k, v)| {
                let shown = if SECRET_HEADERS.contains(k) {
                    "[redacted]"
                } else {
                    v.to_str().unwrap_or("[not text]")
                };
                (k.as_str(), shown)
            })
            .collect();
        headers.sort_unstable();
        let mut cookies: Vec<&str> = self.cookies.keys().map(String::as_str).collect();
        cookies.sort_unstable();
        f.debug_struct("Request")
            .field("method", &self.parts.method)
            .field("path", &self.path())
            .field("query", &self.query)
            .field("cookies", &cookies)
            .field("headers", &headers)
            .finish_non_exhaustive()
    }
}

impl Default for Request {
    /// `GET /` with nothing else.
    fn default() -> Self {
        Request::from_parts(http::Request::new(()).into_parts().0)
    }
}

impl<B> From<http::Request<B>> for Request {
    fn from(request: http::Request<B>) -> Self {
        Request::from_parts(request.into_parts().0)
    }
}

impl Request {
    /// The request from its parts (what a web framework hands over).
    ///
    /// Header names and values and the URI are copied: a server's parser
    /// hands out slices of its read buffer (hyper's are), and a connection
    /// that kept them would pin that buffer (8 KiB) for its whole life.
    pub fn from_parts(mut parts: http::request::Parts) -> Self {
        parts.headers = owned_headers(&parts.headers);
        if let Ok(uri) = parts.uri.to_string().parse() {
            parts.uri = uri;
        }
        let query = parts
            .uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let cookies = parts
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(parse_cookie_header)
            .collect();
        Request {
            parts,
            query,
            cookies,
            protocol: Protocol::default(),
        }
    }

    /// The wire protocol the transport negotiated for this connection
    /// (the WebSocket subprotocol): the connection speaks it.
    pub fn with_protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// The negotiated wire protocol ([`Protocol::V1Json`] unless the
    /// transport said otherwise).
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The whole request head: method, URI, version, headers, extensions.
    pub fn parts(&self) -> &http::request::Parts {
        &self.parts
    }

    /// The request path (`/cable`).
    pub fn path(&self) -> &str {
        self.parts.uri.path()
    }

    /// The URI.
    pub fn uri(&self) -> &http::Uri {
        &self.parts.uri
    }

    /// The headers.
    pub fn headers(&self) -> &http::HeaderMap {
        &self.parts.headers
    }

    /// The extensions layers and the framework set (a session, the app's
    /// state, …).
    pub fn extensions(&self) -> &http::Extensions {
        &self.parts.extensions
    }

    /// One extension by type.
    pub fn extension<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.parts.extensions.get::<T>()
    }

    /// A query parameter (the last value wins for repeated keys).
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    /// Every query parameter.
    pub fn query_pairs(&self) -> &HashMap<String, String> {
        &self.query
    }

    /// A cookie, as sent (not verified: use the app's signed or private
    /// cookie jar for that, from [`extensions`](Self::extensions) or
    /// [`headers`](Self::headers)).
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies.get(name).map(String::as_str)
    }

    /// A header's first value, when it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.parts.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A copy of `headers` that shares no buffer with them.
fn owned_headers(headers: &http::HeaderMap) -> http::HeaderMap {
    let mut owned = http::HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let name =
            http::HeaderName::from_bytes(name.as_str().as_bytes()).unwrap_or_else(|_| name.clone());
        let mut copy =
            http::HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        copy.set_sensitive(value.is_sensitive());
        owned.append(name, copy);
    }
    owned
}

/// Name/value pairs of a `Cookie:` header value.
fn parse_cookie_header(value: &str) -> impl Iterator<Item = (String, String)> + '_ {
    value.split(';').filter_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        Some((k.trim().to_owned(), v.trim().to_owned()))
    })
}

#[cfg(test)]
mod tests {
    use super::Request;

    #[test]
    fn debug_hides_cookie_values_and_credentials() {
        let r = Request::from(
            http::Request::builder()
                .header("authorization", "Bearer s3cr3t-token")
                .header("cookie", "session=s3cr3t-cookie")
                .header("user-agent", "test-agent")
                .body(())
                .unwrap(),
        );
        assert_eq!(r.cookie("session"), Some("s3cr3t-cookie"));
        let shown = format!("{r:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(
            shown.contains("session") && shown.contains("test-agent"),
            "{shown}"
        );
    }

    #[test]
    fn query_and_cookies_are_parsed_once_from_every_header() {
        let r = Request::from(
            http::Request::builder()
                .uri("/cable?a=1&b=x%20y&a=2")
                .header("cookie", "k=v")
                .header("cookie", "m=n; o=p")
                .body(())
                .unwrap(),
        );
        assert_eq!(r.path(), "/cable");
        assert_eq!((r.query("a"), r.query("b")), (Some("2"), Some("x y")));
        assert_eq!(
            (r.cookie("k"), r.cookie("m"), r.cookie("o")),
            (Some("v"), Some("n"), Some("p"))
        );
    }
}
