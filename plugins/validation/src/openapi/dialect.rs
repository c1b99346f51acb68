//! The schema dialect of an OpenAPI version. 3.1 uses JSON Schema 2020-12
//! as it is. 3.0's Schema Object is checked as draft 4, whose `minimum`
//! with a boolean `exclusiveMinimum` (and `maximum` likewise) it shares,
//! once `nullable: true` has become a `null` in `type` (and in `enum`).

use jsonschema::Draft;
use serde_json::Value;

/// The OpenAPI versions read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// 3.0.x.
    V30,
    /// 3.1.x.
    V31,
}

impl Version {
    /// The version of the document's `openapi` member.
    pub fn of(document: &Value) -> Result<Self, String> {
        match document.get("openapi").and_then(Value::as_str) {
            Some(v) if v.starts_with("3.0.") || v == "3.0" => Ok(Self::V30),
            Some(v) if v.starts_with("3.1.") || v == "3.1" => Ok(Self::V31),
            Some(v) => Err(format!("OpenAPI {v} is not read (3.0.x and 3.1.x are)")),
            None => Err("must be the document's OpenAPI version (3.0.x or 3.1.x)".to_owned()),
        }
    }

    /// The JSON Schema draft its schemas are checked as.
    pub fn draft(self) -> Draft {
        match self {
            Self::V30 => Draft::Draft4,
            Self::V31 => Draft::Draft202012,
        }
    }

    /// `document` with its schemas in the draft's dialect.
    pub fn convert(self, mut document: Value) -> Value {
        if self == Self::V30 {
            nullable_to_null(&mut document);
        }
        document
    }
}

/// Turns every `nullable: true` of a 3.0 document into a `null` type (and
/// enum value). Examples are left as they are.
fn nullable_to_null(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.get("nullable") == Some(&Value::Bool(true)) {
                if let Some(Value::String(one)) = map.get("type") {
                    let both = Value::Array(vec![Value::String(one.clone()), Value::from("null")]);
                    map.insert("type".to_owned(), both);
                }
                if let Some(Value::Array(values)) = map.get_mut("enum")
                    && !values.contains(&Value::Null)
                {
                    values.push(Value::Null);
                }
            }
            for (key, child) in map.iter_mut() {
                if key != "example" && key != "examples" {
                    nullable_to_null(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(nullable_to_null),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn versions_are_read_from_the_openapi_member() {
        assert_eq!(Version::of(&json!({"openapi": "3.0.3"})), Ok(Version::V30));
        assert_eq!(Version::of(&json!({"openapi": "3.1.0"})), Ok(Version::V31));
        assert!(Version::of(&json!({"swagger": "2.0"})).is_err());
        assert!(Version::of(&json!({"openapi": "4.0.0"})).is_err());
    }

    #[test]
    fn nullable_becomes_a_null_type_but_examples_stay() {
        let converted = Version::V30.convert(json!({"components": {"schemas": {
            "Tag": {"type": "string", "nullable": true, "enum": ["a"],
                "example": {"nullable": true, "type": "x"}}}}}));
        assert_eq!(
            converted["components"]["schemas"]["Tag"],
            json!({"type": ["string", "null"], "nullable": true, "enum": ["a", null],
                "example": {"nullable": true, "type": "x"}})
        );
        let same = json!({"type": "string", "nullable": true});
        assert_eq!(Version::V31.convert(same.clone()), same);
    }
}
