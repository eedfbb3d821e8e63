//! Connection-URL helpers shared by the backends.

/// Remove query parameter `name` from `url`; returns the URL without it and
/// its percent-decoded value (how Rails' `channel_prefix` travels in a
/// broker URL: `redis://host/0?channel_prefix=myapp`).
///
/// ```
/// use keayl_broker::take_query_param;
/// let (url, prefix) = take_query_param("redis://h/0?channel_prefix=my%20app&x=1", "channel_prefix");
/// assert_eq!(url, "redis://h/0?x=1");
/// assert_eq!(prefix.as_deref(), Some("my app"));
/// ```
pub fn take_query_param(url: &str, name: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut value = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if k == name {
                value = Some(percent_decode(v));
                false
            } else {
                !pair.is_empty()
            }
        })
        .collect();
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (url, value)
}

/// Decode `%XX` escapes and `+` (a space) in a query value; malformed
/// escapes are kept as they are, invalid UTF-8 is replaced.
pub fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = match bytes[i] {
            b'%' if i + 2 < bytes.len() => hex(bytes[i + 1]).zip(hex(bytes[i + 2])),
            _ => None,
        };
        match (decoded, bytes[i]) {
            (Some((hi, lo)), _) => {
                out.push(hi << 4 | lo);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%3Ab"), "a:b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("x%zz"), "x%zz");
        assert_eq!(percent_decode("%E6%97%A5"), "日");
    }

    #[test]
    fn query_parameters() {
        assert_eq!(
            take_query_param("redis://h/?channel_prefix=", "channel_prefix"),
            ("redis://h/".to_owned(), Some(String::new()))
        );
        assert_eq!(
            take_query_param("redis://h", "channel_prefix"),
            ("redis://h".to_owned(), None)
        );
    }
}
