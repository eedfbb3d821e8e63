//! Broadcasting names derived from models, in Rails' format.
//!
//! A model that has a GlobalID (`gid://app/Model/id`) is named by its GlobalID
//! param: the URL-safe Base64 of the GID without padding. Plain values are
//! named by their string form. [`broadcasting_for`] prefixes the channel
//! name (what `stream_for` uses); [`stream_name_from`] does not (what Turbo
//! streams use). Rails and Keayl processes sharing a broker therefore agree
//! on every name.
//!
//! ```
//! use keayl_cable::naming::{GlobalId, broadcasting_for, channel_name};
//!
//! let room = GlobalId::new("chat-app", "Room", "42");
//! assert_eq!(channel_name("ChatChannel"), "chat");
//! assert_eq!(
//!     broadcasting_for("ChatChannel", &[&room]),
//!     "chat:Z2lkOi8vY2hhdC1hcHAvUm9vbS80Mg"
//! );
//! ```

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Something that names (part of) a broadcasting: a model with a GlobalID, or
/// a plain value.
pub trait Streamable {
    /// The name segment: the GlobalID param for models, the string form for
    /// plain values (Rails' `to_gid_param` / `to_param`).
    fn to_param(&self) -> String;
}

impl Streamable for str {
    fn to_param(&self) -> String {
        self.to_owned()
    }
}
impl Streamable for &str {
    fn to_param(&self) -> String {
        (*self).to_owned()
    }
}
impl Streamable for String {
    fn to_param(&self) -> String {
        self.clone()
    }
}
macro_rules! streamable_int {
    ($($t:ty),*) => {$(
        impl Streamable for $t {
            fn to_param(&self) -> String { self.to_string() }
        }
    )*};
}
streamable_int!(i32, i64, u32, u64, usize);

/// A GlobalID: `gid://<app>/<model>/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GlobalId {
    uri: String,
}

impl GlobalId {
    /// The GlobalID of `model` number `id` in `app`.
    pub fn new(app: &str, model: &str, id: impl std::fmt::Display) -> Self {
        GlobalId {
            uri: format!("gid://{app}/{model}/{id}"),
        }
    }

    /// The `gid://…` URI.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// URL-safe Base64 of the URI without padding (Rails' `to_gid_param`).
    pub fn to_gid_param(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.uri.as_bytes())
    }
}

impl Streamable for GlobalId {
    fn to_param(&self) -> String {
        self.to_gid_param()
    }
}

/// A model identified by a [`GlobalId`]: implement this and the model can be
/// streamed for and broadcast to.
pub trait HasGlobalId {
    /// The model's GlobalID.
    fn global_id(&self) -> GlobalId;
}

/// Rails' channel name: the class name without its `Channel` suffix, `::`
/// turned into `:`, underscored (`Admin::NotesChannel` → `admin:notes`,
/// `WebNotificationsChannel` → `web_notifications`).
pub fn channel_name(class_name: &str) -> String {
    let base = class_name.strip_suffix("Channel").unwrap_or(class_name);
    base.split("::")
        .map(underscore)
        .collect::<Vec<_>>()
        .join(":")
}

fn underscore(segment: &str) -> String {
    let chars: Vec<char> = segment.chars().collect();
    let mut out = String::with_capacity(segment.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev = i.checked_sub(1).map(|j| chars[j]);
            let next = chars.get(i + 1).copied();
            let boundary = match prev {
                Some(p) if p.is_ascii_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_ascii_uppercase() => next.is_some_and(|n| n.is_ascii_lowercase()),
                _ => false,
            };
            if boundary {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `broadcasting_for`: the channel name, then each streamable's param, joined
/// with `:`.
pub fn broadcasting_for(channel_class: &str, streamables: &[&dyn Streamable]) -> String {
    let mut name = channel_name(channel_class);
    for s in streamables {
        name.push(':');
        name.push_str(&s.to_param());
    }
    name
}

/// The internal stream of a connection, `action_cable/<connection
/// identifier>` (Rails' `internal_channel`): what a remote disconnect is
/// broadcast on.
pub fn internal_stream(connection_identifier: &str) -> String {
    format!("action_cable/{connection_identifier}")
}

/// What the pub/sub stream names Keayl uses for presence events and
/// whispers start with. Such streams never keep history.
pub const TRANSIENT_PREFIX: &str = "$keayl:";

/// Whether `stream` is one of Keayl's own ([`TRANSIENT_PREFIX`]): channels
/// cannot stream, stop or publish to such names.
pub fn is_reserved(stream: &str) -> bool {
    stream.starts_with(TRANSIENT_PREFIX)
}

/// The stream that carries the presence events (`join`, `leave`) of
/// `stream`'s presence set: `$keayl:presence:<stream>`.
pub fn presence_events_stream(stream: &str) -> String {
    format!("{TRANSIENT_PREFIX}presence:{stream}")
}

/// The stream whispers on `stream` travel on: `$keayl:whisper:<stream>`.
pub fn whisper_stream(stream: &str) -> String {
    format!("{TRANSIENT_PREFIX}whisper:{stream}")
}

/// Turbo's `stream_name_from`: the streamables' params joined with `:`, no
/// channel prefix (`turbo_stream_from @room, :messages` is
/// `stream_name_from(&[&room, &"messages"])`). The name a
/// [`StreamVerifier`](crate::signing::StreamVerifier) signs for a Turbo page.
pub fn stream_name_from(streamables: &[&dyn Streamable]) -> String {
    streamables
        .iter()
        .map(|s| s.to_param())
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_follow_rails() {
        assert_eq!(channel_name("ChatChannel"), "chat");
        assert_eq!(channel_name("Admin::NotesChannel"), "admin:notes");
        assert_eq!(channel_name("WebNotificationsChannel"), "web_notifications");
        assert_eq!(channel_name("HTMLParserChannel"), "html_parser");
    }

    #[test]
    fn rails_recorded_names() {
        // actioncable.md §5.5: the streams.rb doc example and a recording.
        let post = GlobalId::new("TestApp", "Post", 1);
        assert_eq!(
            broadcasting_for("CommentsChannel", &[&post]),
            "comments:Z2lkOi8vVGVzdEFwcC9Qb3N0LzE"
        );
        let room = GlobalId::new("rails-cable-peer", "Room", 1);
        assert_eq!(
            broadcasting_for("Admin::NotesChannel", &[&room]),
            "admin:notes:Z2lkOi8vcmFpbHMtY2FibGUtcGVlci9Sb29tLzE"
        );
        let room42 = GlobalId::new("chat-app", "Room", 42);
        assert_eq!(
            broadcasting_for("ChatChannel", &[&room42, &"messages"]),
            "chat:Z2lkOi8vY2hhdC1hcHAvUm9vbS80Mg:messages"
        );
        assert_eq!(
            stream_name_from(&[&room42, &"messages"]),
            "Z2lkOi8vY2hhdC1hcHAvUm9vbS80Mg:messages"
        );
    }

    #[test]
    fn stream_names_join_plain_values_with_colons() {
        assert_eq!(
            stream_name_from(&[&"Z2lkOi8vY2hhdC1hcHAvUm9vbS80Mg", &"messages"]),
            "Z2lkOi8vY2hhdC1hcHAvUm9vbS80Mg:messages"
        );
        assert_eq!(stream_name_from(&[&"only"]), "only");
        assert_eq!(stream_name_from(&[]), "");
        let (a, b) = ("a".to_owned(), String::from("b"));
        assert_eq!(stream_name_from(&[&a, &1_u64, &b]), "a:1:b");
        assert_eq!(stream_name_from(&[&a.as_str(), &-2_i64]), "a:-2");
    }
}
