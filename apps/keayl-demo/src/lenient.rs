//! Lenient action fields, for the channels of the demo and of the fixture: a
//! field of another JSON type counts as missing rather than making the action
//! invalid (as the fixture always was).

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// A string field; `""` when it is not a string.
pub(crate) fn str_or_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        _ => String::new(),
    })
}

/// A non-negative integer field; 0 when it is not one.
pub(crate) fn u64_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(Value::deserialize(d)?.as_u64().unwrap_or(0))
}

/// A boolean field; `true` when it is not a boolean.
pub(crate) fn bool_or_true<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Value::deserialize(d)?.as_bool().unwrap_or(true))
}

/// `true`: the default of a [`bool_or_true`] field.
pub(crate) fn yes() -> bool {
    true
}
