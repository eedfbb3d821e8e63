//! [`Data`]: a client message's data object, keys kept in the client's order.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};

use super::ChannelError;

/// The decoded `data` of a client message: a JSON object, `action`
/// included.
///
/// Lookups go through [`get`](Data::get), `data["key"]` (`null` when
/// missing, never a panic) and [`as_map`](Data::as_map) (a
/// [`serde_json::Map`]), typed decoding through [`decode`](Data::decode).
/// Serialising a `Data` (for example `ctx.transmit(&data)`) writes the
/// object with its keys in the order the client sent them, nested objects
/// included, as Rails echoes a parsed hash; a key sent twice keeps its
/// first place and its last value (Ruby's `JSON.parse`). This holds
/// whether or not serde_json's `preserve_order` feature is on.
///
/// ```
/// use keayl_cable::Data;
///
/// let data: Data = serde_json::from_str(r#"{"z":1,"action":"echo","a":{"y":2,"b":3}}"#)?;
/// assert_eq!(data.action(), Some("echo"));
/// assert_eq!(data.get("z"), Some(&serde_json::json!(1)));
/// assert_eq!(serde_json::to_string(&data)?, r#"{"z":1,"action":"echo","a":{"y":2,"b":3}}"#);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone)]
pub struct Data {
    map: Map<String, Value>,
    /// The object encoded with the client's key order.
    json: Box<RawValue>,
}

impl Data {
    /// The value under `key`, if any.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key)
    }

    /// The value under `key` when it is a JSON string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.map.get(key).and_then(Value::as_str)
    }

    /// The `action` key when it is a string.
    pub fn action(&self) -> Option<&str> {
        self.get_str("action")
    }

    /// The object as a map (iteration order is serde_json's `Map` order,
    /// not necessarily the client's).
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.map
    }

    /// The object as a map, consuming `self`.
    pub fn into_map(self) -> Map<String, Value> {
        self.map
    }

    /// The object as JSON text, keys in the client's order.
    pub fn as_json(&self) -> &str {
        self.json.get()
    }

    /// This object with `action` set to `name`: in its place when present,
    /// last otherwise (where the JavaScript client's `perform` puts it).
    pub fn with_action(&self, name: &str) -> Data {
        let mut entries = match serde_json::from_str::<OrderedEntries>(self.json.get()) {
            Ok(OrderedEntries(entries)) => entries,
            Err(_) => Vec::new(),
        };
        let name = Ordered::String(name.to_owned());
        match entries.iter_mut().find(|(k, _)| k == "action") {
            Some(slot) => slot.1 = name,
            None => entries.push(("action".to_owned(), name)),
        }
        Data::from_entries(entries).unwrap_or_default()
    }

    /// This object without `key`.
    pub(crate) fn without(&self, key: &str) -> Data {
        let mut entries = match serde_json::from_str::<OrderedEntries>(self.json.get()) {
            Ok(OrderedEntries(entries)) => entries,
            Err(_) => Vec::new(),
        };
        entries.retain(|(k, _)| k != key);
        Data::from_entries(entries).unwrap_or_default()
    }

    fn from_entries(entries: Vec<(String, Ordered)>) -> Result<Data, serde_json::Error> {
        let json = serde_json::to_string(&OrderedObject(&entries))?;
        let map = entries
            .into_iter()
            .map(|(k, v)| (k, v.into_value()))
            .collect();
        Ok(Data {
            map,
            json: raw(json),
        })
    }

    /// Decode the whole object as `T` (a struct or an enum deriving
    /// `Deserialize`). A mismatch is [`ChannelError::invalid`]: logged as an
    /// invalid action, no frame, the connection stays open.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, ChannelError> {
        serde_json::from_str(self.json.get()).map_err(|e| ChannelError::invalid(e.to_string()))
    }
}

impl Default for Data {
    fn default() -> Self {
        Data::from(Map::new())
    }
}

impl From<Map<String, Value>> for Data {
    /// A `Data` whose key order is the map's.
    fn from(map: Map<String, Value>) -> Self {
        let json = serde_json::to_string(&map).unwrap_or_else(|_| "{}".to_owned());
        Data {
            map,
            json: raw(json),
        }
    }
}

impl std::ops::Index<&str> for Data {
    type Output = Value;

    /// `data["key"]`: the value, or `null` when the key is missing (never a
    /// panic, as with [`Value`]'s indexing).
    fn index(&self, key: &str) -> &Value {
        static NULL: Value = Value::Null;
        self.map.get(key).unwrap_or(&NULL)
    }
}

impl PartialEq for Data {
    /// Equal when the same keys hold the same values in the same order.
    fn eq(&self, other: &Self) -> bool {
        self.json.get() == other.json.get()
    }
}

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Data").field(&self.json.get()).finish()
    }
}

impl Serialize for Data {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // serde_json writes a `RawValue` verbatim; `serde_json::to_value`
        // parses it back into a `Value`.
        self.json.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Data {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Through `Ordered`, which any deserializer can fill (also the
        // buffered one behind `#[serde(flatten)]`), unlike `RawValue`.
        let entries = deserializer.deserialize_map(ObjectVisitor)?;
        Data::from_entries(entries).map_err(de::Error::custom)
    }
}

/// A JSON object's entries in arrival order.
struct OrderedEntries(Vec<(String, Ordered)>);

impl<'de> Deserialize<'de> for OrderedEntries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_map(ObjectVisitor)
            .map(OrderedEntries)
    }
}

fn raw(json: String) -> Box<RawValue> {
    // `json` came from serde_json's serialiser: always valid.
    RawValue::from_string(json)
        .unwrap_or_else(|_| RawValue::from_string("{}".to_owned()).expect("`{}` is valid JSON"))
}

/// A JSON value whose objects keep their keys in arrival order.
enum Ordered {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Ordered>),
    Object(Vec<(String, Ordered)>),
}

impl Ordered {
    fn into_value(self) -> Value {
        match self {
            Ordered::Null => Value::Null,
            Ordered::Bool(b) => Value::Bool(b),
            Ordered::Number(n) => Value::Number(n),
            Ordered::String(s) => Value::String(s),
            Ordered::Array(a) => Value::Array(a.into_iter().map(Ordered::into_value).collect()),
            Ordered::Object(o) => {
                Value::Object(o.into_iter().map(|(k, v)| (k, v.into_value())).collect())
            }
        }
    }
}

struct OrderedObject<'a>(&'a [(String, Ordered)]);

impl Serialize for OrderedObject<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl Serialize for Ordered {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Ordered::Null => serializer.serialize_unit(),
            Ordered::Bool(b) => serializer.serialize_bool(*b),
            Ordered::Number(n) => n.serialize(serializer),
            Ordered::String(s) => serializer.serialize_str(s),
            Ordered::Array(a) => {
                let mut seq = serializer.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Ordered::Object(o) => OrderedObject(o).serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Ordered;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Ordered, E> {
        Ok(Ordered::Null)
    }
    fn visit_none<E>(self) -> Result<Ordered, E> {
        Ok(Ordered::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Ordered, D::Error> {
        Ordered::deserialize(d)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Ordered, E> {
        Ok(Ordered::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Ordered, E> {
        Ok(Ordered::Number(n.into()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Ordered, E> {
        Ok(Ordered::Number(n.into()))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Ordered, E> {
        Number::from_f64(n)
            .map(Ordered::Number)
            .ok_or_else(|| E::custom("a number JSON cannot represent"))
    }
    fn visit_str<E>(self, s: &str) -> Result<Ordered, E> {
        Ok(Ordered::String(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Ordered, E> {
        Ok(Ordered::String(s))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Ordered, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(v) = seq.next_element()? {
            items.push(v);
        }
        Ok(Ordered::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Ordered, A::Error> {
        ObjectVisitor.visit_map(map).map(Ordered::Object)
    }
}

struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = Vec<(String, Ordered)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries: Vec<(String, Ordered)> = Vec::new();
        // Where each key sits, once the object is too large to scan: a
        // hostile object of many keys stays linear.
        let mut index: Option<HashMap<String, usize>> = None;
        while let Some((k, v)) = map.next_entry::<String, Ordered>()? {
            // Ruby: a repeated key keeps its first place and takes the last value.
            let at = match &index {
                Some(index) => index.get(&k).copied(),
                None => entries.iter().position(|(key, _)| *key == k),
            };
            match at {
                Some(i) => entries[i].1 = v,
                None => {
                    if let Some(index) = &mut index {
                        index.insert(k.clone(), entries.len());
                    }
                    entries.push((k, v));
                    if index.is_none() && entries.len() > 16 {
                        let built = entries.iter().enumerate().map(|(i, (k, _))| (k.clone(), i));
                        index = Some(built.collect());
                    }
                }
            }
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data(text: &str) -> Data {
        serde_json::from_str(text).expect("an object")
    }

    #[test]
    fn keeps_the_clients_key_order_at_every_depth() {
        let text = r#"{"z":1,"action":"echo","a":[{"y":null,"b":true}],"m":{"q":"x","c":2.5}}"#;
        assert_eq!(serde_json::to_string(&data(text)).unwrap(), text);
    }

    #[test]
    fn a_repeated_key_keeps_its_first_place_and_last_value() {
        let d = data(r#"{"a":1,"b":2,"a":3}"#);
        assert_eq!(d.as_json(), r#"{"a":3,"b":2}"#);
        assert_eq!(d.get("a"), Some(&json!(3)));
        assert_eq!(d["b"], json!(2));
        assert_eq!(d["missing"], Value::Null);
    }

    #[test]
    fn re_encodes_like_rails_whitespace_and_escapes_normalised() {
        let d = data("{ \"a\" : \"\\u0041\" , \"n\" : 1e2 }");
        assert_eq!(d.as_json(), r#"{"a":"A","n":100.0}"#);
    }

    #[test]
    fn many_keys_and_repeats_past_the_index_threshold() {
        let mut text = String::from("{");
        for i in 0..40 {
            text.push_str(&format!("\"k{i}\":{i},"));
        }
        text.push_str("\"k3\":\"last\",\"k39\":0}");
        let d = data(&text);
        assert_eq!(d.as_map().len(), 40);
        assert_eq!(d.get("k3"), Some(&json!("last")));
        assert!(
            d.as_json()
                .starts_with(r#"{"k0":0,"k1":1,"k2":2,"k3":"last","k4":4"#)
        );
        assert!(d.as_json().ends_with(r#""k39":0}"#));
    }

    #[test]
    fn with_action_keeps_its_place_or_comes_last() {
        let d = data(r#"{"z":1,"action":"a","b":2}"#);
        assert_eq!(
            d.with_action("x").as_json(),
            r#"{"z":1,"action":"x","b":2}"#
        );
        let d = data(r#"{"z":1}"#);
        assert_eq!(d.with_action("x").as_json(), r#"{"z":1,"action":"x"}"#);
        assert_eq!(d.with_action("x").action(), Some("x"));
    }

    #[test]
    fn refuses_anything_but_an_object() {
        assert!(serde_json::from_str::<Data>("[1]").is_err());
        assert!(serde_json::from_str::<Data>("\"x\"").is_err());
    }

    #[test]
    fn decodes_typed_and_flattened() {
        #[derive(Deserialize)]
        struct Speak {
            message: String,
        }
        let d = data(r#"{"action":"speak","message":"hi"}"#);
        assert_eq!(d.decode::<Speak>().unwrap().message, "hi");
        assert!(d.decode::<Vec<u8>>().unwrap_err().is_invalid());

        #[derive(Deserialize)]
        struct Outer {
            #[serde(flatten)]
            rest: Data,
        }
        let o: Outer = serde_json::from_str(r#"{"z":1,"a":2}"#).unwrap();
        assert_eq!(o.rest.as_json(), r#"{"z":1,"a":2}"#);
    }

    #[test]
    fn from_a_map_and_into_a_value() {
        let d = Data::from(json!({"k": [1, 2]}).as_object().unwrap().clone());
        assert_eq!(serde_json::to_value(&d).unwrap(), json!({"k": [1, 2]}));
        assert_eq!(d.into_map().len(), 1);
    }
}
