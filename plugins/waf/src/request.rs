//! A request as the rules see it: its [`Variable`]s (ModSecurity's ARGS,
//! REQUEST_COOKIES, REQUEST_HEADERS, …) read from the request line, the
//! headers and a form or JSON body. Values are bytes: a percent-decoded
//! argument need not be UTF-8. Depends on nothing else in the crate.

use percent_encoding::percent_decode;
use quick_xml::XmlVersion;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::Event;
use serde_json::Value;
use weir_sdk::media;

/// Which collection a variable belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An argument's value; `query` when it came from the query string.
    Arg {
        /// From the query string (else from the body).
        query: bool,
    },
    /// An argument's name.
    ArgName {
        /// From the query string (else from the body).
        query: bool,
    },
    /// A cookie's value.
    Cookie,
    /// A cookie's name.
    CookieName,
    /// A header's value (its name in `name`, lower case).
    Header,
    /// A header's name.
    HeaderName,
    /// The path without the query.
    Filename,
    /// The path's last segment.
    Basename,
    /// The path with the query, as sent.
    Uri,
    /// `METHOD /path?query HTTP/1.1`.
    RequestLine,
    /// A body, raw.
    Body,
    /// The query string.
    QueryString,
    /// An XML body's text or attribute value.
    Xml,
}

/// One value a rule can test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Variable {
    /// Its collection.
    pub(crate) kind: Kind,
    /// Its name in the collection (an argument's, a header's), for
    /// exclusions; empty for single values.
    pub(crate) name: Vec<u8>,
    /// Its value.
    pub(crate) value: Vec<u8>,
}

/// How a body is read, from its `content-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFormat {
    /// `application/x-www-form-urlencoded`, or no content type (as CRS's
    /// `enforce_bodyproc_urlencoded`): arguments, and the raw body.
    Form,
    /// `application/json` or `…+json`: every scalar is an argument named by
    /// its path (`json.user.name`, `json.items.0`), and the raw body.
    Json,
    /// `application/xml`, `text/xml` or `…+xml`: every element's text and
    /// attribute value, and the raw body.
    Xml,
    /// Any other `text/…`: the raw body.
    Text,
}

impl BodyFormat {
    /// The format of a body of `content_type`; `None` for a body the rules
    /// do not read (multipart, binary).
    pub(crate) fn of(content_type: Option<&str>) -> Option<Self> {
        let Some(content_type) = content_type else {
            return Some(Self::Form);
        };
        match media::kind(content_type) {
            media::Kind::Form => Some(Self::Form),
            media::Kind::Json => Some(Self::Json),
            media::Kind::Xml => Some(Self::Xml),
            media::Kind::Text => Some(Self::Text),
            media::Kind::Other => None,
        }
    }
}

/// A body that is not the JSON or XML its content type claims.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InvalidBody {
    /// Not JSON.
    #[error("the body is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Not XML.
    #[error("the body is not valid XML: {0}")]
    Xml(#[from] quick_xml::Error),
}

/// The variables of one request.
#[derive(Debug, Default)]
pub(crate) struct Variables {
    list: Vec<Variable>,
}

impl Variables {
    /// The variables of a request's head: `method`, `path` (`:path`, with
    /// the query) and its headers (pseudo-headers are skipped).
    pub(crate) fn from_head(method: &str, path: &str, headers: &[(String, String)]) -> Self {
        let mut vars = Self::default();
        let (filename, query) = match path.split_once('?') {
            Some((filename, query)) => (filename, Some(query)),
            None => (path, None),
        };
        vars.single(Kind::Uri, path.as_bytes());
        vars.single(
            Kind::RequestLine,
            format!("{method} {path} HTTP/1.1").as_bytes(),
        );
        // Decoded, as ModSecurity's REQUEST_FILENAME and REQUEST_BASENAME.
        let filename: Vec<u8> = percent_decode(filename.as_bytes()).collect();
        let basename = filename.rsplit(|b| *b == b'/').next().unwrap_or_default();
        vars.single(Kind::Basename, basename);
        vars.single(Kind::Filename, &filename);
        if let Some(query) = query {
            vars.single(Kind::QueryString, query.as_bytes());
            vars.form(query.as_bytes(), true);
        }
        for (name, value) in headers {
            if name.starts_with(':') {
                continue;
            }
            let name = name.to_ascii_lowercase();
            if name == "cookie" {
                vars.cookies(value);
            }
            vars.named(Kind::HeaderName, name.as_bytes(), name.as_bytes());
            vars.named(Kind::Header, name.as_bytes(), value.as_bytes());
        }
        vars
    }

    /// Adds the variables of a body in `format`.
    pub(crate) fn add_body(&mut self, format: BodyFormat, body: &[u8]) -> Result<(), InvalidBody> {
        self.single(Kind::Body, body);
        match format {
            BodyFormat::Form => self.form(body, false),
            BodyFormat::Json => {
                let value: Value = serde_json::from_slice(body)?;
                let mut path = String::from("json");
                self.json(&value, &mut path);
            }
            BodyFormat::Xml => self.xml(body)?,
            BodyFormat::Text => {}
        }
        Ok(())
    }

    /// Every variable.
    pub(crate) fn as_slice(&self) -> &[Variable] {
        &self.list
    }

    fn single(&mut self, kind: Kind, value: &[u8]) {
        self.named(kind, b"", value);
    }

    fn named(&mut self, kind: Kind, name: &[u8], value: &[u8]) {
        self.list.push(Variable {
            kind,
            name: name.to_vec(),
            value: value.to_vec(),
        });
    }

    fn arg(&mut self, query: bool, name: &[u8], value: &[u8]) {
        self.named(Kind::ArgName { query }, name, name);
        self.named(Kind::Arg { query }, name, value);
    }

    /// The arguments of `a=1&b=2`, percent-decoded to bytes (not to lossy
    /// UTF-8, as `form_urlencoded` would: an invalid sequence is evidence).
    fn form(&mut self, text: &[u8], query: bool) {
        for pair in text.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
            let (name, value) = match pair.iter().position(|b| *b == b'=') {
                Some(at) => (&pair[..at], &pair[at + 1..]),
                None => (pair, &b""[..]),
            };
            self.arg(query, &form_decode(name), &form_decode(value));
        }
    }

    /// The cookies of a `cookie` header, as sent (cookies are not decoded).
    fn cookies(&mut self, header: &str) {
        for pair in header.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            self.named(Kind::CookieName, name.as_bytes(), name.as_bytes());
            self.named(Kind::Cookie, name.as_bytes(), value.as_bytes());
        }
    }

    fn json(&mut self, value: &Value, path: &mut String) {
        let scalar = match value {
            Value::Null => return,
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.clone(),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.nested(item, path, &i.to_string());
                }
                return;
            }
            Value::Object(fields) => {
                for (key, item) in fields {
                    self.nested(item, path, key);
                }
                return;
            }
        };
        self.arg(false, path.as_bytes(), scalar.as_bytes());
    }

    /// Each element's text (references resolved, CDATA as is) and each
    /// attribute's value, as ModSecurity's `XML:/*` and `XML://@*`.
    fn xml(&mut self, body: &[u8]) -> Result<(), quick_xml::Error> {
        let mut reader = quick_xml::Reader::from_reader(body);
        let mut text = String::new();
        loop {
            match reader.read_event()? {
                Event::Eof => break,
                Event::Start(element) | Event::Empty(element) => {
                    self.xml_text(&mut text);
                    for attribute in element.attributes().flatten() {
                        let value = attribute
                            .normalized_value(XmlVersion::Implicit1_0)
                            .map(|v| v.into_owned().into_bytes())
                            .unwrap_or_else(|_| attribute.value.into_owned().into_bytes());
                        self.named(Kind::Xml, b"", &value);
                    }
                }
                Event::End(_) => self.xml_text(&mut text),
                Event::Text(chunk) => text.push_str(&chunk.xml10_content()),
                Event::CData(chunk) => text.push_str(&chunk.xml10_content()),
                Event::GeneralRef(reference) => match reference.resolve_char_ref() {
                    Ok(Some(c)) => text.push(c),
                    _ => {
                        let name = reference.xml10_content();
                        match resolve_predefined_entity(&name) {
                            Some(value) => text.push_str(value),
                            None => text.push_str(&format!("&{name};")),
                        }
                    }
                },
                _ => {}
            }
        }
        self.xml_text(&mut text);
        Ok(())
    }

    /// The text gathered since the last tag, unless blank.
    fn xml_text(&mut self, text: &mut String) {
        if !text.trim().is_empty() {
            self.named(Kind::Xml, b"", text.as_bytes());
        }
        text.clear();
    }

    fn nested(&mut self, value: &Value, path: &mut String, key: &str) {
        let len = path.len();
        path.push('.');
        path.push_str(key);
        self.json(value, path);
        path.truncate(len);
    }
}

/// `+` as space, then percent-decoding.
fn form_decode(text: &[u8]) -> Vec<u8> {
    let spaced: Vec<u8> = text
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    percent_decode(&spaced).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(vars: &Variables, kind: Kind) -> Vec<(String, String)> {
        vars.as_slice()
            .iter()
            .filter(|v| v.kind == kind)
            .map(|v| {
                (
                    String::from_utf8_lossy(&v.name).into_owned(),
                    String::from_utf8_lossy(&v.value).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn reads_the_path_query_headers_and_cookies() {
        let headers = [
            (":path".to_owned(), "/x".to_owned()),
            ("User-Agent".to_owned(), "curl".to_owned()),
            ("cookie".to_owned(), "a=1; b=x%27".to_owned()),
        ];
        let vars = Variables::from_head("GET", "/shop/it%65m.php?id=1%27+or&flag", &headers);
        assert_eq!(
            values(&vars, Kind::Arg { query: true }),
            [
                ("id".into(), "1' or".into()),
                ("flag".into(), String::new())
            ]
        );
        assert_eq!(
            values(&vars, Kind::Filename),
            [(String::new(), "/shop/item.php".into())]
        );
        assert_eq!(
            values(&vars, Kind::Basename),
            [(String::new(), "item.php".into())]
        );
        assert_eq!(values(&vars, Kind::QueryString)[0].1, "id=1%27+or&flag");
        assert_eq!(
            values(&vars, Kind::Cookie),
            [("a".into(), "1".into()), ("b".into(), "x%27".into())]
        );
        let headers = values(&vars, Kind::Header);
        assert_eq!(headers[0], ("user-agent".into(), "curl".into()));
        assert_eq!(headers.len(), 2, "pseudo-headers are not read");
    }

    #[test]
    fn reads_form_and_json_bodies() {
        let mut vars = Variables::default();
        vars.add_body(BodyFormat::Form, b"q=a+b&x=%3Cb%3E")
            .expect("a form");
        assert_eq!(
            values(&vars, Kind::Arg { query: false }),
            [("q".into(), "a b".into()), ("x".into(), "<b>".into())]
        );
        let mut vars = Variables::default();
        vars.add_body(
            BodyFormat::Json,
            br#"{"user": {"name": "x' or 1=1"}, "tags": ["a", 2, null]}"#,
        )
        .expect("JSON");
        assert_eq!(
            values(&vars, Kind::Arg { query: false }),
            [
                ("json.user.name".into(), "x' or 1=1".into()),
                ("json.tags.0".into(), "a".into()),
                ("json.tags.1".into(), "2".into())
            ]
        );
        assert!(vars.add_body(BodyFormat::Json, b"{not json").is_err());
        let mut vars = Variables::default();
        vars.add_body(
            BodyFormat::Xml,
            br#"<?xml version="1.0"?><a x="1 &lt; 2"><b>it&apos;s <![CDATA[<i>]]></b><c/></a>"#,
        )
        .expect("XML");
        assert_eq!(
            values(&vars, Kind::Xml),
            [
                (String::new(), "1 < 2".into()),
                (String::new(), "it's <i>".into())
            ]
        );
        assert_eq!(values(&vars, Kind::Body).len(), 1, "and the raw body");
        assert!(vars.add_body(BodyFormat::Xml, b"<a><b></a>").is_err());
    }

    #[test]
    fn body_formats_follow_the_content_type() {
        assert_eq!(BodyFormat::of(None), Some(BodyFormat::Form));
        assert_eq!(
            BodyFormat::of(Some("application/x-www-form-urlencoded; charset=utf-8")),
            Some(BodyFormat::Form)
        );
        assert_eq!(
            BodyFormat::of(Some("Application/JSON")),
            Some(BodyFormat::Json)
        );
        assert_eq!(
            BodyFormat::of(Some("application/vnd.api+json")),
            Some(BodyFormat::Json)
        );
        assert_eq!(
            BodyFormat::of(Some("multipart/form-data; boundary=x")),
            None
        );
    }
}
