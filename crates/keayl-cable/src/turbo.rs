//! Turbo Streams payloads: the `<turbo-stream>` HTML that turbo-rails broadcasts.
//!
//! A Turbo page listens on `Turbo::StreamsChannel` and applies every received message as a
//! `<turbo-stream>` element (append this HTML to `#messages`, remove `#message_1`, …). This
//! module renders those elements exactly as turbo-rails' `turbo_stream_action_tag` does, so
//! a Rust broadcaster can drive the same pages.
//!
//! Attribute values (`target`, `targets`, `request-id`) are HTML-escaped, so a target taken
//! from user input cannot inject markup. The template **content is HTML and is inserted
//! unescaped**: escape any untrusted text inside it yourself.
//!
//! On the wire the element travels as a JSON **string** in the `message` of a data frame, so
//! JSON-encode it before broadcasting:
//!
//! ```
//! use keayl_cable::protocol;
//! use keayl_cable::turbo::{TurboAction, turbo_stream};
//!
//! let html = turbo_stream(TurboAction::Append, "messages", Some("<p>hi</p>"));
//! assert_eq!(
//!     html,
//!     r#"<turbo-stream action="append" target="messages"><template><p>hi</p></template></turbo-stream>"#
//! );
//!
//! let message_json = serde_json::to_string(&html).unwrap();
//! let frame = protocol::message(r#"{"channel":"Turbo::StreamsChannel"}"#, &message_json);
//! assert!(frame.ends_with(br#","message":"<turbo-stream action=\"append\" target=\"messages\"><template><p>hi</p></template></turbo-stream>"}"#));
//! ```

use std::fmt;

/// A Turbo Streams action that addresses a target element.
///
/// For `refresh`, which has no target, see [`turbo_stream_refresh`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TurboAction {
    /// Append the template's content inside the target, after its existing children.
    Append,
    /// Prepend the template's content inside the target, before its existing children.
    Prepend,
    /// Replace the whole target element with the template's content.
    Replace,
    /// Replace the target's children with the template's content.
    Update,
    /// Remove the target element. Rendered without a `<template>`.
    Remove,
    /// Insert the template's content before the target element.
    Before,
    /// Insert the template's content after the target element.
    After,
}

impl TurboAction {
    /// The value of the `action` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Append => "append",
            Self::Prepend => "prepend",
            Self::Replace => "replace",
            Self::Update => "update",
            Self::Remove => "remove",
            Self::Before => "before",
            Self::After => "after",
        }
    }

    /// Whether the element carries a `<template>` (every action except `remove`).
    pub fn has_template(self) -> bool {
        !matches!(self, Self::Remove)
    }
}

impl fmt::Display for TurboAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Renders `<turbo-stream action="…" target="…"><template>…</template></turbo-stream>`.
///
/// `target` is the DOM id of the element to act on; it is HTML-escaped. `content` is HTML
/// and is inserted **unescaped**; `None` renders an empty `<template></template>`, like
/// turbo-rails. For [`TurboAction::Remove`] there is no template and `content` is ignored:
/// `<turbo-stream action="remove" target="message_1"></turbo-stream>`.
pub fn turbo_stream(action: TurboAction, target: &str, content: Option<&str>) -> String {
    render(action, "target", target, content)
}

/// Like [`turbo_stream`] but addresses every element matching the CSS selector `targets`
/// (rendered as a `targets="…"` attribute instead of `target="…"`).
pub fn turbo_stream_targets(action: TurboAction, targets: &str, content: Option<&str>) -> String {
    render(action, "targets", targets, content)
}

/// Renders the `refresh` action: `<turbo-stream action="refresh"></turbo-stream>`, or with
/// a request id `<turbo-stream request-id="123" action="refresh"></turbo-stream>` (the page
/// that made request `123` ignores its own refresh).
pub fn turbo_stream_refresh(request_id: Option<&str>) -> String {
    let mut out = String::with_capacity(64);
    out.push_str("<turbo-stream ");
    if let Some(request_id) = request_id {
        out.push_str("request-id=\"");
        push_attribute_escaped(&mut out, request_id);
        out.push_str("\" ");
    }
    out.push_str("action=\"refresh\"></turbo-stream>");
    out
}

fn render(action: TurboAction, attribute: &str, target: &str, content: Option<&str>) -> String {
    let content = if action.has_template() {
        Some(content.unwrap_or(""))
    } else {
        None
    };
    let mut out = String::with_capacity(
        64 + target.len() + content.map_or(0, |c| c.len() + "<template></template>".len()),
    );
    out.push_str("<turbo-stream action=\"");
    out.push_str(action.as_str());
    out.push_str("\" ");
    out.push_str(attribute);
    out.push_str("=\"");
    push_attribute_escaped(&mut out, target);
    out.push_str("\">");
    if let Some(content) = content {
        out.push_str("<template>");
        out.push_str(content);
        out.push_str("</template>");
    }
    out.push_str("</turbo-stream>");
    out
}

/// Appends `value` escaped like Rails' `ERB::Util.html_escape`.
fn push_attribute_escaped(out: &mut String, value: &str) {
    let mut start = 0;
    for (i, c) in value.char_indices() {
        let escape = match c {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            '"' => "&quot;",
            '\'' => "&#39;",
            _ => continue,
        };
        out.push_str(&value[start..i]);
        out.push_str(escape);
        start = i + c.len_utf8();
    }
    out.push_str(&value[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_matches_turbo_rails() {
        // §7.3: broadcast_append_to "s", target: "messages", html: "<p>hi</p>".
        assert_eq!(
            turbo_stream(TurboAction::Append, "messages", Some("<p>hi</p>")),
            r#"<turbo-stream action="append" target="messages"><template><p>hi</p></template></turbo-stream>"#
        );
    }

    #[test]
    fn every_template_action_has_the_same_shape() {
        for (action, name) in [
            (TurboAction::Append, "append"),
            (TurboAction::Prepend, "prepend"),
            (TurboAction::Replace, "replace"),
            (TurboAction::Update, "update"),
            (TurboAction::Before, "before"),
            (TurboAction::After, "after"),
        ] {
            assert_eq!(action.as_str(), name);
            assert_eq!(action.to_string(), name);
            assert!(action.has_template());
            assert_eq!(
                turbo_stream(action, "t", Some("<i>x</i>")),
                format!(
                    r#"<turbo-stream action="{name}" target="t"><template><i>x</i></template></turbo-stream>"#
                )
            );
        }
    }

    #[test]
    fn empty_content_renders_an_empty_template() {
        // §7.3: content: "".
        let expected = r#"<turbo-stream action="append" target="message_1"><template></template></turbo-stream>"#;
        assert_eq!(
            turbo_stream(TurboAction::Append, "message_1", Some("")),
            expected
        );
        assert_eq!(
            turbo_stream(TurboAction::Append, "message_1", None),
            expected
        );
    }

    #[test]
    fn remove_has_no_template() {
        let expected = r#"<turbo-stream action="remove" target="message_1"></turbo-stream>"#;
        assert!(!TurboAction::Remove.has_template());
        assert_eq!(
            turbo_stream(TurboAction::Remove, "message_1", None),
            expected
        );
        assert_eq!(
            turbo_stream(TurboAction::Remove, "message_1", Some("<p>ignored</p>")),
            expected
        );
    }

    #[test]
    fn targets_selector() {
        assert_eq!(
            turbo_stream_targets(TurboAction::Update, ".message", Some("x")),
            r#"<turbo-stream action="update" targets=".message"><template>x</template></turbo-stream>"#
        );
        assert_eq!(
            turbo_stream_targets(TurboAction::Remove, "li > a[href='x']", None),
            r#"<turbo-stream action="remove" targets="li &gt; a[href=&#39;x&#39;]"></turbo-stream>"#
        );
    }

    #[test]
    fn refresh() {
        assert_eq!(
            turbo_stream_refresh(None),
            r#"<turbo-stream action="refresh"></turbo-stream>"#
        );
        assert_eq!(
            turbo_stream_refresh(Some("123")),
            r#"<turbo-stream request-id="123" action="refresh"></turbo-stream>"#
        );
        assert_eq!(
            turbo_stream_refresh(Some("\"><x")),
            r#"<turbo-stream request-id="&quot;&gt;&lt;x" action="refresh"></turbo-stream>"#
        );
    }

    #[test]
    fn target_cannot_inject_markup() {
        assert_eq!(
            turbo_stream(
                TurboAction::Append,
                r#""><script>alert('x')</script>&"#,
                Some("<b>ok</b>")
            ),
            r#"<turbo-stream action="append" target="&quot;&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;"><template><b>ok</b></template></turbo-stream>"#
        );
        // Non-ASCII passes through.
        assert_eq!(
            turbo_stream(TurboAction::Remove, "é😀", None),
            r#"<turbo-stream action="remove" target="é😀"></turbo-stream>"#
        );
    }

    #[test]
    fn content_is_inserted_verbatim() {
        let content = r#"<div id="a" data-x='1'>&amp; & <</div>"#;
        let html = turbo_stream(TurboAction::Replace, "a", Some(content));
        assert!(html.contains(&format!("<template>{content}</template>")));
    }
}
