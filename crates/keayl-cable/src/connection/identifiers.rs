use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use crate::naming::Streamable;

/// A value that can identify a connection: anything [`Streamable`] (its
/// param names the connection for remote disconnects), readable back with
/// its own type.
pub trait IdentifierValue: Any + Send + Sync + std::fmt::Debug {
    /// The value's param (Rails' `to_gid_param` / `to_s`).
    fn param(&self) -> String;
    /// The value as `Any`, for typed reads.
    fn as_any(&self) -> &dyn Any;
}

impl<T: Streamable + Any + Send + Sync + std::fmt::Debug> IdentifierValue for T {
    fn param(&self) -> String {
        self.to_param()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The identifiers of a connection: whatever identifies the client (the
/// current user, a room, a token from the request), by name.
///
/// ```
/// use keayl_cable::connection::Identifiers;
///
/// let ids = Identifiers::new().with("user_id", 7u64).with("room", "lobby".to_string());
/// assert_eq!(ids.get::<u64>("user_id"), Some(&7));
/// assert_eq!(ids.get::<String>("room").map(String::as_str), Some("lobby"));
/// assert_eq!(ids.get::<String>("user_id"), None); // wrong type
/// ```
#[derive(Debug, Clone, Default)]
pub struct Identifiers {
    values: HashMap<String, Arc<dyn IdentifierValue>>,
}

impl Identifiers {
    /// No identifiers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add (or replace) an identifier, builder style.
    pub fn with(mut self, name: impl Into<String>, value: impl IdentifierValue) -> Self {
        self.set(name, value);
        self
    }

    /// Add (or replace) an identifier.
    pub fn set(&mut self, name: impl Into<String>, value: impl IdentifierValue) {
        self.values.insert(name.into(), Arc::new(value));
    }

    /// Read an identifier as type `T`; `None` when absent or of another type.
    pub fn get<T: Any>(&self, name: &str) -> Option<&T> {
        self.values.get(name)?.as_any().downcast_ref::<T>()
    }

    /// The param of an identifier (its string form), whatever its type.
    pub fn param(&self, name: &str) -> Option<String> {
        self.values.get(name).map(|v| v.param())
    }

    /// Whether an identifier is set.
    pub fn contains(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// Remove an identifier.
    pub fn remove(&mut self, name: &str) {
        self.values.remove(name);
    }

    /// Rails' `connection_identifier` over the `declared` names: the params of
    /// those that are set, sorted, joined with `:`. `None` when none is set.
    pub fn connection_identifier(&self, declared: &[&str]) -> Option<String> {
        let mut params: Vec<String> = declared.iter().filter_map(|n| self.param(n)).collect();
        if params.is_empty() {
            return None;
        }
        params.sort();
        Some(params.join(":"))
    }
}
