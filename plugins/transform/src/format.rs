//! Body formats: which content types each one reads, and how a body of
//! each format becomes JSON and back (form-urlencoded here, XML in
//! `crate::xml`).

use serde_json::{Map, Value};
use weir_sdk::media;

use crate::xml::{self, XmlError};

/// A body format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/json`, `application/*+json`.
    Json,
    /// `application/x-www-form-urlencoded`.
    Form,
    /// `application/xml`, `text/xml`, `application/*+xml`.
    Xml,
}

/// Why a body could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is not JSON.
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The body is not UTF-8 (form bodies).
    #[error("not UTF-8 text")]
    Utf8,
    /// XML could not be read or written.
    #[error(transparent)]
    Xml(#[from] XmlError),
    /// A form is made from a JSON object only.
    #[error("only a JSON object becomes a form")]
    NotAnObject,
}

impl Format {
    /// Whether a body of content type `content_type` is in this format.
    pub fn matches(self, content_type: &str) -> bool {
        let kind = media::kind(content_type);
        match self {
            Self::Json => kind == media::Kind::Json,
            Self::Form => kind == media::Kind::Form,
            Self::Xml => kind == media::Kind::Xml,
        }
    }

    /// The content type a body written in this format gets.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Form => "application/x-www-form-urlencoded",
            Self::Xml => "application/xml",
        }
    }

    /// Reads `body` as JSON.
    pub fn read(self, body: &[u8]) -> Result<Value, BodyError> {
        Ok(match self {
            Self::Json => serde_json::from_slice(body)?,
            Self::Form => form_to_json(body)?,
            Self::Xml => xml::to_json(body)?,
        })
    }

    /// Writes `document` in this format.
    pub fn write(self, document: &Value) -> Result<Vec<u8>, BodyError> {
        Ok(match self {
            Self::Json => serde_json::to_vec(document)?,
            Self::Form => json_to_form(document)?.into_bytes(),
            Self::Xml => xml::from_json(document)?.into_bytes(),
        })
    }
}

/// A form as a JSON object: each field a string, a repeated field an array
/// of strings, in the order of their first appearance.
fn form_to_json(body: &[u8]) -> Result<Value, BodyError> {
    if std::str::from_utf8(body).is_err() {
        return Err(BodyError::Utf8);
    }
    let mut fields = Map::new();
    for (name, value) in form_urlencoded::parse(body) {
        let value = Value::String(value.into_owned());
        match fields.get_mut(name.as_ref()) {
            None => {
                fields.insert(name.into_owned(), value);
            }
            Some(Value::Array(values)) => values.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, value]);
            }
        }
    }
    Ok(Value::Object(fields))
}

/// A JSON object as a form: strings as they are, numbers and booleans as
/// their JSON text, null as an empty value, an array as the field repeated,
/// nested objects (and arrays in arrays) as their JSON text.
fn json_to_form(document: &Value) -> Result<String, BodyError> {
    let Value::Object(fields) = document else {
        return Err(BodyError::NotAnObject);
    };
    let mut form = form_urlencoded::Serializer::new(String::new());
    for (name, value) in fields {
        match value {
            Value::Array(items) => {
                for item in items {
                    form.append_pair(name, &field_text(item));
                }
            }
            other => {
                form.append_pair(name, &field_text(other));
            }
        }
    }
    Ok(form.finish())
}

fn field_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn content_types_match_by_their_essence() {
        assert!(Format::Json.matches("application/json; charset=utf-8"));
        assert!(Format::Json.matches("Application/Problem+JSON"));
        assert!(!Format::Json.matches("text/plain"));
        assert!(Format::Form.matches("application/x-www-form-urlencoded;charset=UTF-8"));
        assert!(Format::Xml.matches("text/xml"));
        assert!(Format::Xml.matches("application/soap+xml"));
        assert!(!Format::Xml.matches("application/json"));
    }

    #[test]
    fn forms_become_objects_and_back() {
        let form = b"name=Ada+Lovelace&tag=a&tag=b&note=%26%3D&empty=";
        let document = Format::Form.read(form).expect("a form");
        assert_eq!(
            document,
            json!({"name": "Ada Lovelace", "tag": ["a", "b"], "note": "&=", "empty": ""})
        );
        assert_eq!(
            String::from_utf8(Format::Form.write(&document).expect("written")).expect("UTF-8"),
            "name=Ada+Lovelace&tag=a&tag=b&note=%26%3D&empty="
        );
        let mixed = json!({"n": 1, "ok": true, "none": null, "obj": {"a": 1}});
        assert_eq!(
            String::from_utf8(Format::Form.write(&mixed).expect("written")).expect("UTF-8"),
            "n=1&ok=true&none=&obj=%7B%22a%22%3A1%7D"
        );
        assert!(matches!(
            Format::Form.write(&json!([1])),
            Err(BodyError::NotAnObject)
        ));
        assert!(matches!(Format::Form.read(b"a=\xff"), Err(BodyError::Utf8)));
    }
}
