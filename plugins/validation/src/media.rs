//! Media types: which bodies are checked, and how they are read into JSON.

use serde_json::Value;

use crate::coerce::Shapes;

/// A body format the schemas check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/json` and `*/*+json`.
    Json,
    /// `application/x-www-form-urlencoded`, read as an object of its fields.
    Form,
}

pub use weir_sdk::media::essence;

/// The format of media type `media` (an [`essence`]), if the schemas check it.
pub fn format_of(media: &str) -> Option<Format> {
    match weir_sdk::media::kind(media) {
        weir_sdk::media::Kind::Json => Some(Format::Json),
        weir_sdk::media::Kind::Form => Some(Format::Form),
        _ => None,
    }
}

/// `bytes` read as `format`; form fields are typed by `shapes`.
pub fn read(format: Format, bytes: &[u8], shapes: &Shapes) -> Result<Value, String> {
    match format {
        Format::Json => {
            serde_json::from_slice(bytes).map_err(|e| format!("the body is not valid JSON: {e}"))
        }
        Format::Form => {
            let pairs: Vec<_> = form_urlencoded::parse(bytes).collect();
            Ok(shapes.object(pairs.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_and_forms_are_recognized_by_their_essence() {
        assert_eq!(
            essence("Application/JSON; charset=utf-8"),
            "application/json"
        );
        assert_eq!(format_of("application/json"), Some(Format::Json));
        assert_eq!(format_of("application/problem+json"), Some(Format::Json));
        assert_eq!(
            format_of("application/x-www-form-urlencoded"),
            Some(Format::Form)
        );
        assert_eq!(format_of("text/plain"), None);
    }

    #[test]
    fn bodies_are_read_or_refused_with_a_reason() {
        let shapes = Shapes::of_properties(
            &json!({"properties": {"n": {"type": "integer"}}}),
            &json!({}),
        );
        assert_eq!(
            read(Format::Form, b"n=2&s=a+b", &shapes),
            Ok(json!({"n": 2, "s": "a b"}))
        );
        assert_eq!(
            read(Format::Json, b"{\"a\": 1,}", &shapes),
            Err("the body is not valid JSON: trailing comma at line 1 column 9".into())
        );
    }
}
