//! The SSE wire format, as pure functions over byte buffers.
//!
//! ```
//! use keayl_live::sse::Frame;
//!
//! let mut out = Vec::new();
//! Frame::new("hello").event("greeting").encode(&mut out).unwrap();
//! assert_eq!(out, b"event: greeting\ndata: hello\n\n");
//! ```

use crate::{LiveError, SseField};

/// Options of a frame: an event name, an id and a reconnection time.
///
/// Used both as per-stream defaults ([`Sse`](crate::Sse)) and per-write
/// overrides; a field set on the write wins over the default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseOptions {
    /// The `event:` name (the browser dispatches the event under this type).
    pub event: Option<String>,
    /// The `id:` (the browser sends it back as `Last-Event-ID` on reconnect).
    pub id: Option<String>,
    /// The `retry:` reconnection time, in milliseconds.
    pub retry: Option<u64>,
}

impl SseOptions {
    /// `self`'s fields where set, else `defaults`'.
    pub fn or(&self, defaults: &SseOptions) -> SseOptions {
        SseOptions {
            event: self.event.clone().or_else(|| defaults.event.clone()),
            id: self.id.clone().or_else(|| defaults.id.clone()),
            retry: self.retry.or(defaults.retry),
        }
    }

    /// Check that every set field can be encoded without breaking the frame.
    pub fn validate(&self) -> Result<(), LiveError> {
        if let Some(e) = &self.event {
            validate_event(e)?;
        }
        if let Some(id) = &self.id {
            validate_id(id)?;
        }
        Ok(())
    }
}

/// One SSE frame, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The payload; every line becomes a `data:` line.
    pub data: &'a str,
    /// The `event:` line.
    pub event: Option<&'a str>,
    /// The `id:` line.
    pub id: Option<&'a str>,
    /// The `retry:` line, in milliseconds.
    pub retry: Option<u64>,
}

impl<'a> Frame<'a> {
    /// A frame carrying `data` and nothing else.
    pub fn new(data: &'a str) -> Self {
        Frame {
            data,
            event: None,
            id: None,
            retry: None,
        }
    }

    /// A frame carrying `data` with `options`.
    pub fn with_options(data: &'a str, options: &'a SseOptions) -> Self {
        Frame {
            data,
            event: options.event.as_deref(),
            id: options.id.as_deref(),
            retry: options.retry,
        }
    }

    /// Set the event name.
    pub fn event(mut self, event: &'a str) -> Self {
        self.event = Some(event);
        self
    }

    /// Set the id.
    pub fn id(mut self, id: &'a str) -> Self {
        self.id = Some(id);
        self
    }

    /// Set the retry time in milliseconds.
    pub fn retry(mut self, retry: u64) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Append the encoded frame to `out`.
    ///
    /// Order: `event`, `id`, `retry`, then the data lines, then a blank line.
    /// LF, CRLF and a lone CR all end a data line. A line break in `event` or
    /// `id`, or a NUL in `id`, is refused with
    /// [`LiveError::InvalidSseField`] and nothing is appended.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), LiveError> {
        if let Some(e) = self.event {
            validate_event(e)?;
        }
        if let Some(id) = self.id {
            validate_id(id)?;
        }
        out.reserve(self.data.len() + 16);
        if let Some(e) = self.event {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(e.as_bytes());
            out.push(b'\n');
        }
        if let Some(id) = self.id {
            out.extend_from_slice(b"id: ");
            out.extend_from_slice(id.as_bytes());
            out.push(b'\n');
        }
        if let Some(r) = self.retry {
            out.extend_from_slice(b"retry: ");
            out.extend_from_slice(r.to_string().as_bytes());
            out.push(b'\n');
        }
        for line in lines(self.data) {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
        Ok(())
    }

    /// The encoded frame as a new buffer.
    pub fn to_bytes(&self) -> Result<Vec<u8>, LiveError> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }
}

/// Append a comment (`: text`) to `out`, then a blank line. A comment
/// delivers no event; it keeps idle connections (and proxies) alive. Each
/// line of a multi-line `text` becomes its own comment line, so a comment can
/// never smuggle in a field.
pub fn encode_comment(text: &str, out: &mut Vec<u8>) {
    for line in lines(text) {
        if line.is_empty() {
            out.extend_from_slice(b":\n");
        } else {
            out.extend_from_slice(b": ");
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
    }
    out.push(b'\n');
}

/// Split on LF, CRLF or a lone CR, as the SSE parser does. An empty string is
/// one empty line.
pub fn lines(s: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let s = rest?;
        match s.find(['\r', '\n']) {
            None => {
                rest = None;
                Some(s)
            }
            Some(i) => {
                let skip = if s[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&s[i + skip..]);
                Some(&s[..i])
            }
        }
    })
}

/// An event name must not contain a line break.
pub fn validate_event(event: &str) -> Result<(), LiveError> {
    if event.contains(['\r', '\n']) {
        return Err(LiveError::InvalidSseField {
            field: SseField::Event,
            reason: "contains a line break",
        });
    }
    Ok(())
}

/// An id must not contain a line break or a NUL (browsers ignore such ids).
pub fn validate_id(id: &str) -> Result<(), LiveError> {
    if id.contains(['\r', '\n']) {
        return Err(LiveError::InvalidSseField {
            field: SseField::Id,
            reason: "contains a line break",
        });
    }
    if id.contains('\0') {
        return Err(LiveError::InvalidSseField {
            field: SseField::Id,
            reason: "contains a NUL character",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(f: Frame<'_>) -> String {
        String::from_utf8(f.to_bytes().unwrap()).unwrap()
    }

    #[test]
    fn spec_greeting_example() {
        let mut out = Vec::new();
        Frame::new("hello")
            .event("greeting")
            .encode(&mut out)
            .unwrap();
        Frame::new("world").encode(&mut out).unwrap();
        assert_eq!(out, b"event: greeting\ndata: hello\n\ndata: world\n\n");
    }

    #[test]
    fn field_order_is_event_id_retry_data() {
        assert_eq!(
            enc(Frame::new("d").retry(5).id("7").event("e")),
            "event: e\nid: 7\nretry: 5\ndata: d\n\n"
        );
    }

    #[test]
    fn multi_line_data_splits_on_lf_crlf_and_cr() {
        assert_eq!(
            enc(Frame::new("a\nb\r\nc\rd")),
            "data: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        assert_eq!(enc(Frame::new("a\n")), "data: a\ndata: \n\n");
        assert_eq!(enc(Frame::new("")), "data: \n\n");
    }

    #[test]
    fn injection_through_event_or_id_is_refused() {
        for bad in ["x\ndata: evil", "x\r\n", "\r"] {
            assert!(matches!(
                Frame::new("d").event(bad).to_bytes(),
                Err(LiveError::InvalidSseField {
                    field: SseField::Event,
                    ..
                })
            ));
            assert!(matches!(
                Frame::new("d").id(bad).to_bytes(),
                Err(LiveError::InvalidSseField {
                    field: SseField::Id,
                    ..
                })
            ));
        }
        assert!(Frame::new("d").id("a\0b").to_bytes().is_err());
        let mut out = b"kept".to_vec();
        assert!(Frame::new("d").id("\n").encode(&mut out).is_err());
        assert_eq!(out, b"kept", "a refused frame writes nothing");
    }

    #[test]
    fn comments_cannot_smuggle_fields() {
        let mut out = Vec::new();
        encode_comment("keep-alive", &mut out);
        assert_eq!(out, b": keep-alive\n\n");
        out.clear();
        encode_comment("a\ndata: evil", &mut out);
        assert_eq!(out, b": a\n: data: evil\n\n");
    }

    #[test]
    fn options_override_defaults() {
        let defaults = SseOptions {
            retry: Some(5000),
            event: Some("tick".into()),
            id: None,
        };
        let per_write = SseOptions {
            retry: Some(1000),
            ..Default::default()
        };
        let merged = per_write.or(&defaults);
        assert_eq!(merged.retry, Some(1000));
        assert_eq!(merged.event.as_deref(), Some("tick"));
    }
}
