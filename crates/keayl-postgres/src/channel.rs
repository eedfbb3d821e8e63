//! Rails' channel naming: the prefixed stream, hashed over 63 bytes; and
//! identifier quoting for `LISTEN`/`UNLISTEN`.

use sha1::{Digest, Sha1};

/// Rails' PostgreSQL channel for `stream`: the prefixed name
/// (`"<prefix>:<stream>"`), or its lowercase hex SHA-1 when it is longer
/// than 63 bytes.
///
/// ```
/// use keayl_postgres::channel_name;
/// assert_eq!(channel_name(None, "chat:1"), "chat:1");
/// assert_eq!(channel_name(Some("app"), "chat:1"), "app:chat:1");
/// let long = "x".repeat(64);
/// assert_eq!(channel_name(None, &long).len(), 40);
/// assert_eq!(channel_name(None, &"x".repeat(63)), "x".repeat(63));
/// ```
pub fn channel_name(prefix: Option<&str>, stream: &str) -> String {
    let full = match prefix {
        Some(p) => format!("{p}:{stream}"),
        None => stream.to_owned(),
    };
    if full.len() > 63 {
        hex::encode(Sha1::digest(full.as_bytes()))
    } else {
        full
    }
}

/// `name` quoted as an SQL identifier.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_rails() {
        assert_eq!(channel_name(None, "room:1"), "room:1");
        assert_eq!(channel_name(Some("p"), "room:1"), "p:room:1");
        let s63 = "a".repeat(63);
        assert_eq!(channel_name(None, &s63), s63);
        let s64 = "a".repeat(64);
        assert_eq!(
            channel_name(None, &s64),
            hex::encode(Sha1::digest(s64.as_bytes()))
        );
        // The prefix counts, and is hashed with the name.
        let s60 = "b".repeat(60);
        assert_eq!(
            channel_name(Some("pfx"), &s60),
            hex::encode(Sha1::digest(format!("pfx:{s60}").as_bytes()))
        );
        // Bytes, not characters: 32 two-byte characters are 64 bytes.
        let cyr = "ж".repeat(32);
        assert_eq!(channel_name(None, &cyr).len(), 40);
        // Known value: SHA1("a" * 64).
        assert_eq!(
            channel_name(None, &s64),
            "0098ba824b5c16427bd7a1122a5a442a25ec644d"
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
