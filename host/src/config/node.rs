//! A YAML document as a tree of values that remember where they stand in the file.
//!
//! serde-saphyr parses the text; this tree keeps each node's line and column so
//! that decoding can report every error with its location, not just the first.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// A position in the manifest (1-based; 0 when unknown, e.g. for JSON input).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Location {
    /// Line, from 1.
    pub line: u64,
    /// Column, from 1.
    pub column: u64,
}

/// One node of the document with its location.
#[derive(Debug, Clone)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where it starts.
    pub location: Location,
}

/// The value of a [`Node`].
#[derive(Debug, Clone)]
pub enum Value {
    /// `~`, `null` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, entries in file order.
    Map(Vec<(Node, Node)>),
}

impl Value {
    /// A short name of the value's kind, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

impl Node {
    /// Converts the node into JSON (mapping keys become strings).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.scalar_text(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// The node as the bytes a Proxy-Wasm filter receives as its
    /// configuration (`config`, `vm_config`): a string's own bytes, as Envoy
    /// hands over a `StringValue`; nothing for null; JSON text for anything
    /// else (a mapping, a list, a number, a boolean), which is what JSON-reading
    /// filters expect. Mapping keys are sorted, so the bytes do not depend on
    /// the order they were written in.
    pub fn to_configuration(&self) -> bytes::Bytes {
        match &self.value {
            Value::Null => bytes::Bytes::new(),
            Value::Str(s) => bytes::Bytes::from(s.clone().into_bytes()),
            _ => {
                let mut json = self.to_json();
                json.sort_all_objects();
                bytes::Bytes::from(json.to_string())
            }
        }
    }

    /// The JSON pointer (RFC 6901) of the node at `at` (a mapping key counts
    /// as its entry), the deepest when several start there; `None` when no
    /// node starts there.
    pub fn pointer_to(&self, at: Location) -> Option<String> {
        let mut path = Vec::new();
        self.find(at, &mut path)
            .then(|| path.iter().map(|s| format!("/{s}")).collect())
    }

    /// Pushes the escaped path segments down to the node at `at`.
    fn find(&self, at: Location, path: &mut Vec<String>) -> bool {
        let children: Vec<(String, &Node, Option<&Node>)> = match &self.value {
            Value::Map(entries) => entries
                .iter()
                .map(|(k, v)| (k.scalar_text(), v, Some(k)))
                .collect(),
            Value::Seq(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), v, None))
                .collect(),
            _ => Vec::new(),
        };
        for (segment, value, key) in children {
            path.push(segment.replace('~', "~0").replace('/', "~1"));
            if value.find(at, path) {
                return true;
            }
            if value.location == at || key.is_some_and(|k| k.location == at) {
                return true;
            }
            path.pop();
        }
        self.location == at
    }

    /// Where each node of this tree is written, by JSON pointer (RFC 6901)
    /// relative to this node (`""` is the node itself). A mapping entry's
    /// place is its key's, so a message about a field points at its name.
    pub fn places(&self) -> Vec<(String, Location)> {
        let mut places = vec![(String::new(), self.location)];
        self.collect_places("", &mut places);
        places
    }

    fn collect_places(&self, prefix: &str, places: &mut Vec<(String, Location)>) {
        let mut push = |segment: String, at: Location, value: &Node| {
            let pointer = format!("{prefix}/{}", segment.replace('~', "~0").replace('/', "~1"));
            places.push((pointer.clone(), at));
            value.collect_places(&pointer, places);
        };
        match &self.value {
            Value::Map(entries) => {
                for (key, value) in entries {
                    push(key.scalar_text(), key.location, value);
                }
            }
            Value::Seq(items) => {
                for (index, item) in items.iter().enumerate() {
                    push(index.to_string(), item.location, item);
                }
            }
            _ => {}
        }
    }

    /// The text of a scalar node (used for mapping keys).
    pub fn scalar_text(&self) -> String {
        match &self.value {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => "null".to_owned(),
            Value::Seq(_) | Value::Map(_) => String::new(),
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Value>::deserialize(deserializer)?;
        Ok(Node {
            value: spanned.value,
            location: Location {
                line: spanned.referenced.line(),
                column: spanned.referenced.column(),
            },
        })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        // Most lists in a manifest are short: give back what growing reserved.
        items.shrink_to_fit();
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<Node, Node>()? {
            entries.push(entry);
        }
        entries.shrink_to_fit();
        Ok(Value::Map(entries))
    }
}
