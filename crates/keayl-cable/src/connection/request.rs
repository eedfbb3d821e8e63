use std::collections::HashMap;

/// What a connection knows of the HTTP upgrade request it came from, so
/// `connect` can authenticate from the query, cookies or headers.
///
/// Header names are stored lower-case.
#[derive(Debug, Clone, Default)]
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
