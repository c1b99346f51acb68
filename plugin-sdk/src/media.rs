//! Media types: what kind of body a `content-type` announces, decided in one
//! place for every filter that reads bodies.

/// The kinds of body filters read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `application/json` and `…/…+json`.
    Json,
    /// `application/x-www-form-urlencoded`.
    Form,
    /// `application/xml`, `text/xml` and `…/…+xml`.
    Xml,
    /// Any other `text/…`.
    Text,
    /// Anything else (multipart, binary).
    Other,
}

/// The media type of a `content-type` value: lower case, without parameters
/// (`Application/JSON; charset=utf-8` → `application/json`).
pub fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The kind of body a `content-type` value announces.
pub fn kind(content_type: &str) -> Kind {
    let essence = essence(content_type);
    // RFC 6839's structured syntax suffixes, under any top-level type
    // (`image/svg+xml` is XML): a filter that reads less would be bypassed.
    let structured = |suffix: &str| essence.contains('/') && essence.ends_with(suffix);
    match essence.as_str() {
        "application/json" => Kind::Json,
        "application/x-www-form-urlencoded" => Kind::Form,
        "application/xml" | "text/xml" => Kind::Xml,
        _ if structured("+json") => Kind::Json,
        _ if structured("+xml") => Kind::Xml,
        _ if essence.starts_with("text/") => Kind::Text,
        _ => Kind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kind_from_the_essence() {
        assert_eq!(
            essence(" Application/JSON; charset=utf-8"),
            "application/json"
        );
        assert_eq!(kind("application/json"), Kind::Json);
        assert_eq!(kind("application/problem+json; charset=utf-8"), Kind::Json);
        assert_eq!(kind("application/x-www-form-urlencoded"), Kind::Form);
        assert_eq!(kind("text/xml"), Kind::Xml);
        assert_eq!(kind("application/atom+xml"), Kind::Xml);
        assert_eq!(kind("text/plain"), Kind::Text);
        assert_eq!(kind("multipart/form-data; boundary=x"), Kind::Other);
        assert_eq!(kind("image/svg+xml"), Kind::Xml);
    }
}
