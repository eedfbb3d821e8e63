//! The SSE encoder `keayl_live::sse::Frame::encode` and `sse::frame::encode_comment`,
//! checked against a small parser that follows the WHATWG "interpreting an event stream"
//! algorithm (HTML Living Standard §9.2.6), written here independently of the encoder.
//!
//! Properties:
//!
//! * `encode` fails exactly when `event` contains CR or LF, or `id` contains CR, LF or NUL,
//!   and then appends nothing to the buffer;
//! * otherwise the appended bytes, parsed as an event stream, dispatch exactly one event
//!   whose data is the input data with CRLF / lone CR normalised to LF, whose event type and
//!   last event id are the given ones, and which sets the reconnection time to `retry`;
//!   nothing is left pending after it;
//! * `to_bytes` and `Frame::with_options` agree with `encode`, `SseOptions::validate` with
//!   its success;
//! * `encode_comment` output consists only of lines that start with `:` and empty lines, is
//!   one comment line per line of the text (recoverable from it), dispatches no event and
//!   changes no parser state, even when interleaved with frames.
//!
//! Input format: `data 0xFF event 0xFF id 0xFF retry 0xFF comment`, each part decoded
//! lossily as UTF-8 (0xFF never occurs in UTF-8). A missing part is `None` (for `data` and
//! `comment`: empty). `retry` is a decimal `u64` when it parses as one, else a number
//! derived from its bytes.
#![no_main]

use keayl_live::sse::frame::{Frame, SseOptions, encode_comment};
use libfuzzer_sys::fuzz_target;

const SEP: u8 = 0xFF;

fuzz_target!(|input: &[u8]| {
    let mut parts = input.split(|&b| b == SEP).map(String::from_utf8_lossy);
    let data = parts.next().unwrap_or_default();
    let event = parts.next();
    let id = parts.next();
    let retry = parts.next().map(|r| {
        r.parse::<u64>().unwrap_or_else(|_| {
            r.bytes().fold(0u64, |acc, b| {
                acc.wrapping_mul(257).wrapping_add(u64::from(b))
            })
        })
    });
    let comment = parts.next().unwrap_or_default();

    let frame = Frame {
        data: &data,
        event: event.as_deref(),
        id: id.as_deref(),
        retry,
    };
    check_frame(&frame);
    check_comment(&comment);
    check_stream(&frame, &comment);
});

fn should_fail(frame: &Frame<'_>) -> bool {
    frame.event.is_some_and(|e| e.contains(['\r', '\n']))
        || frame.id.is_some_and(|i| i.contains(['\r', '\n', '\0']))
}

fn normalise_newlines(s: &str) -> String {
    s.replace("\r\n", "\n").replace('\r', "\n")
}

fn check_frame(frame: &Frame<'_>) {
    const PREFIX: &[u8] = b"data: earlier\n\n";
    let mut out = PREFIX.to_vec();
    let result = frame.encode(&mut out);

    let options = SseOptions {
        event: frame.event.map(str::to_owned),
        id: frame.id.map(str::to_owned),
        retry: frame.retry,
    };
    assert_eq!(
        options.validate().is_ok(),
        result.is_ok(),
        "validate disagrees with encode"
    );
    let via_options = Frame::with_options(frame.data, &options);
    assert_eq!(&via_options, frame);

    if should_fail(frame) {
        assert!(result.is_err(), "invalid field accepted: {frame:?}");
        assert_eq!(out, PREFIX, "a refused frame appended bytes");
        assert!(frame.to_bytes().is_err());
        return;
    }
    result.unwrap_or_else(|e| panic!("valid frame refused: {e} ({frame:?})"));
    assert!(out.starts_with(PREFIX), "encode modified existing bytes");
    let encoded = &out[PREFIX.len()..];
    assert_eq!(frame.to_bytes().expect("to_bytes"), encoded);

    let text = std::str::from_utf8(encoded).expect("encoded frame is UTF-8");
    let mut parser = Parser::default();
    let events = parser.feed_all(text);
    assert_eq!(
        events.len(),
        1,
        "expected exactly one event from {text:?}, got {events:?}"
    );
    let ev = &events[0];
    assert_eq!(
        ev.data,
        normalise_newlines(frame.data),
        "data differs in {text:?}"
    );
    assert_eq!(
        ev.event_type,
        frame.event.unwrap_or(""),
        "event differs in {text:?}"
    );
    assert_eq!(
        ev.last_event_id.as_deref(),
        frame.id,
        "id differs in {text:?}"
    );
    assert_eq!(parser.retry, frame.retry, "retry differs in {text:?}");
    assert!(parser.is_idle(), "data left pending after {text:?}");
}

fn check_comment(text: &str) {
    let mut out = Vec::new();
    encode_comment(text, &mut out);
    let s = std::str::from_utf8(&out).expect("comment is UTF-8");
    // Split on every SSE line terminator (LF, CRLF, CR), as the browser does.
    for line in split_lines(s).0 {
        assert!(
            line.is_empty() || line.starts_with(':'),
            "comment line {line:?} in {s:?} is not a comment"
        );
    }
    // One `:` line per line of the text, then the terminating blank line.
    assert!(
        s.ends_with("\n\n"),
        "comment {s:?} not terminated by a blank line"
    );
    let body = &s[..s.len() - 1];
    let recovered: Vec<&str> = body
        .strip_suffix('\n')
        .expect("lines end in LF")
        .split('\n')
        .map(|l| {
            l.strip_prefix(": ")
                .or_else(|| (l == ":").then_some(""))
                .unwrap_or_else(|| panic!("bad comment line {l:?}"))
        })
        .collect();
    let expected = normalise_newlines(text);
    assert_eq!(
        recovered.join("\n"),
        expected,
        "comment text not recoverable"
    );

    let mut parser = Parser::default();
    let events = parser.feed_all(s);
    assert!(events.is_empty(), "comment {s:?} dispatched {events:?}");
    assert_eq!(
        parser,
        Parser::default(),
        "comment {s:?} changed parser state"
    );
}

/// Comments interleaved with frames on one stream: the frames still decode as before and
/// the comments neither add events nor disturb state.
fn check_stream(frame: &Frame<'_>, comment: &str) {
    if should_fail(frame) {
        return;
    }
    let mut out = Vec::new();
    encode_comment(comment, &mut out);
    frame.encode(&mut out).expect("valid frame");
    encode_comment(comment, &mut out);
    frame.encode(&mut out).expect("valid frame");
    encode_comment(comment, &mut out);
    let s = std::str::from_utf8(&out).expect("UTF-8");
    let mut parser = Parser::default();
    let events = parser.feed_all(s);
    assert_eq!(events.len(), 2, "expected two events from {s:?}");
    assert_eq!(events[0], events[1]);
    assert_eq!(events[0].data, normalise_newlines(frame.data));
    assert!(parser.is_idle());
}

/// Splits an event stream into complete lines (LF, CRLF or CR terminated) and the
/// incomplete remainder.
fn split_lines(s: &str) -> (Vec<&str>, &str) {
    let mut lines = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find(['\r', '\n']) {
        lines.push(&rest[..i]);
        let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
        rest = &rest[i + skip..];
    }
    (lines, rest)
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Event {
    event_type: String,
    data: String,
    last_event_id: Option<String>,
}

/// A minimal, spec-conformant event stream interpreter (whole-buffer variant).
#[derive(Debug, Default, PartialEq, Eq)]
struct Parser {
    data: String,
    event_type: String,
    last_event_id_buffer: Option<String>,
    last_event_id: Option<String>,
    retry: Option<u64>,
    /// Set when a `retry:` value was all digits but does not fit a u64.
    retry_overflow: bool,
}

impl Parser {
    /// Interprets a complete stream. A leading BOM is skipped; an unterminated last line is
    /// discarded, like an incomplete event at end of stream.
    fn feed_all(&mut self, stream: &str) -> Vec<Event> {
        let stream = stream.strip_prefix('\u{FEFF}').unwrap_or(stream);
        let (lines, _incomplete) = split_lines(stream);
        let mut events = Vec::new();
        for line in lines {
            if line.is_empty() {
                if let Some(ev) = self.dispatch() {
                    events.push(ev);
                }
            } else if line.starts_with(':') {
                // Comment: ignored.
            } else if let Some((field, value)) = line.split_once(':') {
                let value = value.strip_prefix(' ').unwrap_or(value);
                self.field(field, value);
            } else {
                self.field(line, "");
            }
        }
        events
    }

    fn field(&mut self, name: &str, value: &str) {
        match name {
            "event" => self.event_type = value.to_owned(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            // An id containing NUL is ignored.
            "id" if !value.contains('\0') => self.last_event_id_buffer = Some(value.to_owned()),
            // Only all-digit values set the reconnection time; anything else is ignored.
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                match value.parse::<u64>() {
                    Ok(r) => self.retry = Some(r),
                    Err(_) => self.retry_overflow = true,
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self) -> Option<Event> {
        self.last_event_id = self.last_event_id_buffer.clone();
        if self.data.is_empty() {
            self.event_type.clear();
            return None;
        }
        let mut data = std::mem::take(&mut self.data);
        if data.ends_with('\n') {
            data.pop();
        }
        Some(Event {
            event_type: std::mem::take(&mut self.event_type),
            data,
            last_event_id: self.last_event_id.clone(),
        })
    }

    fn is_idle(&self) -> bool {
        self.data.is_empty() && self.event_type.is_empty() && !self.retry_overflow
    }
}
