//! Parameters (query, headers, path, cookies, form fields) arrive as
//! strings; their schema says what they are. A value is turned into the
//! integer, number or boolean its schema asks for when it reads as one
//! (otherwise it stays a string, and the schema reports it), and arrays are
//! made of repeated parameters or split on a delimiter, as OpenAPI's
//! parameter styles say.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};

/// How many `$ref`s are followed to find a parameter's type.
const MAX_REFS: usize = 16;

/// A single value's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalar {
    /// Kept as sent.
    String,
    /// An integer (`-12`).
    Integer,
    /// Any number (`1.5`, `3`).
    Number,
    /// `true` or `false`.
    Boolean,
}

/// What a parameter's schema asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One value.
    Scalar(Scalar),
    /// An array of values.
    Array(Scalar),
    /// An object: not read from parameters (left out of the checked object).
    Object,
}

/// The shape of the top-level `properties` of an object schema, by name.
#[derive(Debug, Clone, Default)]
pub struct Shapes {
    by_name: HashMap<String, Shape>,
}

impl Shapes {
    /// The shapes of `schema`'s `properties` (following `$ref`s into `root`).
    pub fn of_properties(schema: &Value, root: &Value) -> Self {
        let schema = resolve(schema, root);
        let by_name = schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|properties| {
                properties
                    .iter()
                    .map(|(name, schema)| (name.clone(), shape_of(schema, root)))
                    .collect()
            })
            .unwrap_or_default();
        Self { by_name }
    }

    /// The shape of property `name` (a string when the schema does not say).
    pub fn get(&self, name: &str) -> Shape {
        self.by_name
            .get(name)
            .copied()
            .unwrap_or(Shape::Scalar(Scalar::String))
    }

    /// An object of `pairs` (repeated names make arrays where the schema
    /// asks for one; otherwise the first value counts), each value coerced.
    pub fn object<'a>(&self, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Value {
        let mut grouped: Vec<(&str, Vec<&str>)> = Vec::new();
        for (name, value) in pairs {
            match grouped.iter_mut().find(|(n, _)| *n == name) {
                Some((_, values)) => values.push(value),
                None => grouped.push((name, vec![value])),
            }
        }
        let mut object = Map::new();
        for (name, values) in grouped {
            if let Some(value) = build(&values, self.get(name), None) {
                object.insert(name.to_owned(), value);
            }
        }
        Value::Object(object)
    }
}

/// The shape `schema` asks for (following `$ref`s that start with `#` into `root`).
pub fn shape_of(schema: &Value, root: &Value) -> Shape {
    let schema = resolve(schema, root);
    match types(schema).as_slice() {
        list if list.contains(&"array") => {
            let items =
                schema
                    .get("items")
                    .map_or(Scalar::String, |items| match shape_of(items, root) {
                        Shape::Scalar(scalar) => scalar,
                        _ => Scalar::String,
                    });
            Shape::Array(items)
        }
        list if list.contains(&"object") && !list.contains(&"string") => Shape::Object,
        list => Shape::Scalar(scalar_of(list)),
    }
}

/// The values of `type` (one or a list).
fn types(schema: &Value) -> Vec<&str> {
    match schema.get("type") {
        Some(Value::String(one)) => vec![one.as_str()],
        Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// The scalar a list of types reads as: a string when strings are allowed.
fn scalar_of(types: &[&str]) -> Scalar {
    if types.is_empty() || types.contains(&"string") {
        Scalar::String
    } else if types.contains(&"integer") {
        Scalar::Integer
    } else if types.contains(&"number") {
        Scalar::Number
    } else if types.contains(&"boolean") {
        Scalar::Boolean
    } else {
        Scalar::String
    }
}

/// `schema`, or what its local `$ref` (`#/…`) points at in `root`.
pub fn resolve<'a>(mut schema: &'a Value, root: &'a Value) -> &'a Value {
    for _ in 0..MAX_REFS {
        let Some(target) = schema
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
            .and_then(|fragment| {
                let pointer = percent_encoding::percent_decode_str(fragment).decode_utf8_lossy();
                root.pointer(&pointer)
            })
        else {
            break;
        };
        schema = target;
    }
    schema
}

/// The value of a parameter sent as `values` (its occurrences), shaped as
/// `shape`; `split` cuts each occurrence of an array into items. `None`
/// for an object.
pub fn build(values: &[&str], shape: Shape, split: Option<char>) -> Option<Value> {
    match shape {
        Shape::Object => None,
        Shape::Scalar(scalar) => values.first().map(|v| coerce(v, scalar)),
        Shape::Array(scalar) => {
            let items = match split {
                Some(delimiter) => values
                    .iter()
                    .filter(|v| !v.is_empty())
                    .flat_map(|v| v.split(delimiter))
                    .map(|item| coerce(item.trim(), scalar))
                    .collect(),
                None => values.iter().map(|v| coerce(v, scalar)).collect(),
            };
            Some(Value::Array(items))
        }
    }
}

/// `text` as `scalar` when it reads as one, else as a string.
pub fn coerce(text: &str, scalar: Scalar) -> Value {
    let number = || {
        text.parse::<i64>()
            .map(Value::from)
            .ok()
            .or_else(|| text.parse::<u64>().map(Value::from).ok())
    };
    let coerced = match scalar {
        Scalar::String => None,
        Scalar::Integer => number(),
        Scalar::Number => number().or_else(|| {
            text.parse::<f64>()
                .ok()
                .and_then(Number::from_f64)
                .map(Value::Number)
        }),
        Scalar::Boolean => match text {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
    };
    coerced.unwrap_or_else(|| Value::String(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn shapes_follow_types_refs_and_items() {
        let root = json!({"$defs": {"Id": {"type": "integer"}}});
        assert_eq!(
            shape_of(&json!({"$ref": "#/$defs/Id"}), &root),
            Shape::Scalar(Scalar::Integer)
        );
        assert_eq!(
            shape_of(&json!({"type": ["number", "null"]}), &root),
            Shape::Scalar(Scalar::Number)
        );
        assert_eq!(
            shape_of(&json!({"type": ["integer", "string"]}), &root),
            Shape::Scalar(Scalar::String)
        );
        assert_eq!(
            shape_of(
                &json!({"type": "array", "items": {"type": "boolean"}}),
                &root
            ),
            Shape::Array(Scalar::Boolean)
        );
        assert_eq!(shape_of(&json!({"type": "object"}), &root), Shape::Object);
        assert_eq!(shape_of(&json!({}), &root), Shape::Scalar(Scalar::String));
    }

    #[test]
    fn values_are_coerced_only_when_they_read_as_the_type() {
        assert_eq!(coerce("42", Scalar::Integer), json!(42));
        assert_eq!(coerce("4.5", Scalar::Integer), json!("4.5"));
        assert_eq!(coerce("4.5", Scalar::Number), json!(4.5));
        assert_eq!(coerce("true", Scalar::Boolean), json!(true));
        assert_eq!(coerce("yes", Scalar::Boolean), json!("yes"));
        assert_eq!(coerce("42", Scalar::String), json!("42"));
    }

    #[test]
    fn arrays_come_from_repeats_or_a_delimiter() {
        let shape = Shape::Array(Scalar::Integer);
        assert_eq!(build(&["1", "x"], shape, None), Some(json!([1, "x"])));
        assert_eq!(build(&["1, 2,3"], shape, Some(',')), Some(json!([1, 2, 3])));
        assert_eq!(build(&[""], shape, Some(',')), Some(json!([])));
        assert_eq!(
            build(&["1", "2"], Shape::Scalar(Scalar::Integer), None),
            Some(json!(1))
        );
        assert_eq!(build(&["{}"], Shape::Object, None), None);
    }

    #[test]
    fn objects_group_repeated_names() {
        let shapes = Shapes::of_properties(
            &json!({"properties": {"tag": {"type": "array"}, "n": {"type": "integer"}}}),
            &json!({}),
        );
        let object = shapes.object([
            ("tag", "a"),
            ("n", "1"),
            ("tag", "b"),
            ("q", "x"),
            ("n", "2"),
        ]);
        assert_eq!(object, json!({"tag": ["a", "b"], "n": 1, "q": "x"}));
    }
}
