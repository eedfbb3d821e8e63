use std::collections::HashMap;

/// What a connection knows of the HTTP upgrade request it came from, so
/// `connect` can authenticate from the query, cookies or headers.
///
/// Header names are stored lower-case. `Debug` shows cookie names but not
/// their values, and hides credential headers (`Authorization`, `Cookie`,
/// `Proxy-Authorization`), so a logged request leaks no session.
#[derive(Clone, Default)]
pub struct Request {
    /// The request path (`/cable`).
    pub path: String,
    /// Decoded query parameters (the last value wins for repeated keys).
    pub query: HashMap<String, String>,
    /// Cookies by name.
    pub cookies: HashMap<String, String>,
    /// Headers by lower-case name (repeated headers joined with `, `).
    pub headers: HashMap<String, String>,
}

/// Headers whose values `Debug` never shows.
const SECRET_HEADERS: [&str; 3] = ["authorization", "cookie", "proxy-authorization"];

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| {
                let shown = if SECRET_HEADERS.contains(&k.as_str()) {
                    "[redacted]"
                } else {
                    v.as_str()
                };
                (k.as_str(), shown)
            })
            .collect();
        headers.sort_unstable();
        let mut cookies: Vec<&str> = self.cookies.keys().map(String::as_str).collect();
        cookies.sort_unstable();
        f.debug_struct("Request")
            .field("path", &self.path)
            .field("query", &self.query)
            .field("cookies", &cookies)
            .field("headers", &headers)
            .finish()
    }
}

impl Request {
    /// A query parameter.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    /// A cookie.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies.get(name).map(String::as_str)
    }

    /// A header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// Parse a `Cookie:` header value into name/value pairs.
    pub fn parse_cookie_header(value: &str) -> HashMap<String, String> {
        value
            .split(';')
            .filter_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                Some((k.trim().to_owned(), v.trim().to_owned()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Request;

    #[test]
    fn debug_hides_cookie_values_and_credentials() {
        let mut r = Request::default();
        r.cookies.insert("session".into(), "s3cr3t-cookie".into());
        r.headers
            .insert("authorization".into(), "Bearer s3cr3t-token".into());
        r.headers
            .insert("cookie".into(), "session=s3cr3t-cookie".into());
        r.headers.insert("user-agent".into(), "test-agent".into());
        let shown = format!("{r:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(
            shown.contains("session") && shown.contains("test-agent"),
            "{shown}"
        );
    }
}
