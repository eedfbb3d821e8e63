//! Stream names as NATS subjects.
//!
//! A cable stream name may hold anything (`chat:room 1`, `a.b`, `*`, `é`,
//! or nothing at all); a NATS subject is dot-separated tokens of printable
//! ASCII where `*` and `>` are wildcards, and the server refuses a control
//! line (and so a subject) longer than 4 KiB by default. So the subject of a
//! broker channel (the stream, prefixed as every backend prefixes it) is one
//! token:
//!
//! * printable ASCII stays as it is, except `.` `*` `>` `$` and `%`, which are
//!   percent-encoded (`%2E`, `%2A`, `%3E`, `%24`, `%25`), as are spaces,
//!   control characters and every byte of a non-ASCII character;
//! * the empty name is `%` (no encoding produces a lone `%`);
//! * an encoding longer than [`MAX_SUBJECT_LEN`] bytes is replaced by `%h`
//!   and the SHA-256 of the name in hex (66 bytes; `%h` is never produced
//!   by the encoding, so the two forms cannot meet).
//!
//! The mapping is a function of the name alone, so every process (and any
//! other NATS client that wants to join in) computes the same subject.

use sha2::{Digest, Sha256};

/// Longest subject used as is; longer encodings are hashed.
pub const MAX_SUBJECT_LEN: usize = 1024;

/// Root token of the subjects [`census`](crate) requests travel on:
/// `_keayl_census.<subject>`.
pub(crate) const CENSUS_ROOT: &str = "_keayl_census";

/// The NATS subject of broker channel `name` (see the module docs).
///
/// ```
/// use keayl_nats::subject_for;
/// assert_eq!(subject_for("chat:lobby"), "chat:lobby");
/// assert_eq!(subject_for("a.b c"), "a%2Eb%20c");
/// assert_eq!(subject_for(""), "%");
/// assert!(subject_for(&"x".repeat(5000)).starts_with("%h"));
/// ```
pub fn subject_for(name: &str) -> String {
    if name.is_empty() {
        return "%".to_owned();
    }
    let mut out = String::with_capacity(name.len());
    for &b in name.as_bytes() {
        let plain = b.is_ascii_graphic() && !matches!(b, b'.' | b'*' | b'>' | b'$' | b'%');
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
        if out.len() > MAX_SUBJECT_LEN {
            return format!("%h{}", hex::encode(Sha256::digest(name.as_bytes())));
        }
    }
    out
}

/// The subject a census of `subject`'s subscribers is requested on.
pub(crate) fn census_subject(subject: &str) -> String {
    format!("{CENSUS_ROOT}.{subject}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the NATS server accepts as one literal token.
    fn is_literal_token(s: &str) -> bool {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'.' | b'*' | b'>'))
    }

    #[test]
    fn every_name_becomes_one_literal_token() {
        for name in [
            "",
            " ",
            "a b",
            "a.b",
            "*",
            ">",
            "a.>",
            "$SYS.REQ",
            "tab\there",
            "new\nline",
            "ünïcödé",
            "日本",
            "%",
            "%25",
            "%h00",
            "chat:room/1?x=y",
        ] {
            let s = subject_for(name);
            assert!(is_literal_token(&s), "{name:?} -> {s:?}");
        }
    }

    #[test]
    fn distinct_names_get_distinct_subjects() {
        let names = ["", "%", "%25", "a.b", "a%2Eb", "a b", "a+b", "é", "%C3%A9"];
        let subjects: std::collections::HashSet<String> =
            names.iter().map(|n| subject_for(n)).collect();
        assert_eq!(subjects.len(), names.len());
    }

    #[test]
    fn long_names_are_hashed_and_stay_distinct() {
        let a = "a".repeat(MAX_SUBJECT_LEN + 1);
        let b = format!("{}b", "a".repeat(MAX_SUBJECT_LEN));
        assert_eq!(subject_for(&a).len(), 66);
        assert_ne!(subject_for(&a), subject_for(&b));
        assert_eq!(subject_for(&a), subject_for(&a.clone()));
        // Exactly at the limit: kept.
        assert_eq!(
            subject_for(&"a".repeat(MAX_SUBJECT_LEN)).len(),
            MAX_SUBJECT_LEN
        );
        // Non-ASCII triples in length when encoded.
        assert!(subject_for(&"é".repeat(200)).starts_with("%h"));
    }
}
