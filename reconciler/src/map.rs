//! [`Map`]: the small sorted map that resource properties are made of.

use std::borrow::Cow;

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::resource::Value;

/// A map key: property names are string literals and cost no allocation; keys from specs
/// (tags, labels) are owned.
pub type Key = Cow<'static, str>;

/// A map with sorted, unique keys, stored as a sorted vector. Property maps hold a handful
/// of entries; for those a vector is several times smaller and faster to build, compare and
/// drop than a `BTreeMap`, which allocates a node of eleven slots for even one entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Map(Vec<(Key, Value)>);

impl Map {
    /// An empty map.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Inserts or replaces the value of `key`; returns the previous value.
    pub fn insert(&mut self, key: impl Into<Key>, value: Value) -> Option<Value> {
        let key = key.into();
        match self.0.binary_search_by(|(k, _)| k.as_ref().cmp(key.as_ref())) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (key, value));
                None
            }
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.binary_search_by(|(k, _)| k.as_ref().cmp(key)).ok().map(|i| &self.0[i].1)
    }

    /// The value of `key`, mutably.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.0.binary_search_by(|(k, _)| k.as_ref().cmp(key)).ok().map(|i| &mut self.0[i].1)
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v))
    }

    /// Keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_ref())
    }

    /// Values in key order.
    pub fn values(&self) -> impl Iterator<Item = &Value> {
        self.0.iter().map(|(_, v)| v)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Into<Key>> FromIterator<(K, Value)> for Map {
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(iter: I) -> Self {
        let mut map = Map::new();
        for (k, v) in iter {
            map.insert(k, v);
        }
        map
    }
}

impl Serialize for Map {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut m = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k.as_ref(), v)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_sorted_and_unique() {
        let mut m: Map = [("b", Value::Int(1)), ("a", Value::Int(2)), ("b", Value::Int(3))].into_iter().collect();
        assert_eq!(m.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(m.get("b"), Some(&Value::Int(3)));
        assert_eq!(m.insert(String::from("c"), Value::Bool(true)), None);
        assert_eq!(m.insert("a", Value::Int(9)), Some(Value::Int(2)));
        assert_eq!(serde_json::to_string(&m).expect("json"), r#"{"a":9,"b":3,"c":true}"#);
    }
}
