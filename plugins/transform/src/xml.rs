//! XML ↔ JSON, one mapping both ways:
//!
//! - the document is an object with one member, the root element:
//!   `<user/>` ↔ `{"user": null}`;
//! - an element with neither attributes nor child elements is its text
//!   (a string; `null` when empty): `<name>Ada</name>` ↔ `{"name": "Ada"}`;
//! - otherwise it is an object: attributes as `@name` members, child
//!   elements as members named after them, its text (trimmed, when not
//!   blank) as `#text`: `<a id="1">x</a>` ↔ `{"a": {"@id": "1", "#text": "x"}}`;
//! - repeated child elements are an array: `<l><i>1</i><i>2</i></l>` ↔
//!   `{"l": {"i": ["1", "2"]}}`;
//! - values read from XML are strings; numbers and booleans written to XML
//!   are their JSON text. Names keep their namespace prefix (`soap:Body`);
//!   comments, processing instructions and the declaration are dropped.
//!
//! A JSON document that is not an object of one non-array member is written
//! inside `<root>`: an object's members as its children, an array's items
//! as `<item>` elements, a scalar as its text.

use std::fmt::Write as _;

use quick_xml::escape::{escape, resolve_predefined_entity};
use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};
use serde_json::{Map, Value};

/// Why a body could not be read or written as XML.
#[derive(Debug, thiserror::Error)]
pub enum XmlError {
    /// The body is not well-formed XML.
    #[error("not well-formed XML: {0}")]
    Syntax(#[from] quick_xml::Error),
    /// An attribute could not be read.
    #[error("not well-formed XML: {0}")]
    Attribute(#[from] quick_xml::events::attributes::AttrError),
    /// An entity other than XML's five and character references.
    #[error("unknown entity `&{0};`")]
    Entity(String),
    /// Not exactly one root element, or text outside it.
    #[error("an XML document has exactly one root element and no text outside it")]
    Root,
    /// A JSON member whose name cannot be an XML name.
    #[error("`{0}` is not an XML name")]
    Name(String),
}

/// An element being read: its attributes and children so far, and its text.
#[derive(Default)]
struct Open {
    name: String,
    members: Map<String, Value>,
    text: String,
}

impl Open {
    fn new(start: &BytesStart<'_>) -> Result<Self, XmlError> {
        let mut members = Map::new();
        for attribute in start.attributes() {
            let attribute = attribute?;
            let name = attribute.key.into_inner();
            let value = attribute.normalized_value(XmlVersion::Implicit1_0)?;
            members.insert(format!("@{name}"), Value::String(value.into_owned()));
        }
        Ok(Self {
            name: start.name().into_inner().to_owned(),
            members,
            text: String::new(),
        })
    }

    /// The element's value (its name apart).
    fn close(self) -> (String, Value) {
        let value = if self.members.is_empty() {
            if self.text.is_empty() {
                Value::Null
            } else {
                Value::String(self.text)
            }
        } else {
            let mut members = self.members;
            let text = self.text.trim();
            if !text.is_empty() {
                members.insert("#text".to_owned(), Value::String(text.to_owned()));
            }
            Value::Object(members)
        };
        (self.name, value)
    }

    /// Adds child element `name`; a repeated one makes an array.
    fn add(&mut self, name: String, value: Value) {
        match self.members.get_mut(&name) {
            None => {
                self.members.insert(name, value);
            }
            Some(Value::Array(items)) => items.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, value]);
            }
        }
    }
}

/// Reads an XML document as JSON.
pub fn to_json(body: &[u8]) -> Result<Value, XmlError> {
    let mut reader = Reader::from_reader(body);
    let mut stack: Vec<Open> = Vec::new();
    let mut root: Option<(String, Value)> = None;
    loop {
        let text = match reader.read_event()? {
            Event::Eof => break,
            Event::Start(start) => {
                if root.is_some() {
                    return Err(XmlError::Root);
                }
                stack.push(Open::new(&start)?);
                continue;
            }
            Event::Empty(start) => {
                let (name, value) = Open::new(&start)?.close();
                close(&mut stack, &mut root, name, value)?;
                continue;
            }
            Event::End(_) => {
                let (name, value) = stack.pop().ok_or(XmlError::Root)?.close();
                close(&mut stack, &mut root, name, value)?;
                continue;
            }
            Event::Text(chunk) => chunk.xml10_content().into_owned(),
            Event::CData(chunk) => chunk.xml10_content().into_owned(),
            Event::GeneralRef(reference) => match reference.resolve_char_ref() {
                Ok(Some(c)) => c.to_string(),
                _ => {
                    let name = reference.xml10_content();
                    resolve_predefined_entity(&name)
                        .ok_or_else(|| XmlError::Entity(name.into_owned()))?
                        .to_owned()
                }
            },
            _ => continue,
        };
        match stack.last_mut() {
            Some(open) => open.text.push_str(&text),
            None if text.trim().is_empty() => {}
            None => return Err(XmlError::Root),
        }
    }
    if !stack.is_empty() {
        return Err(XmlError::Root);
    }
    let (name, value) = root.ok_or(XmlError::Root)?;
    let mut document = Map::new();
    document.insert(name, value);
    Ok(Value::Object(document))
}

/// A closed element goes into its parent, or is the root.
fn close(
    stack: &mut [Open],
    root: &mut Option<(String, Value)>,
    name: String,
    value: Value,
) -> Result<(), XmlError> {
    match stack.last_mut() {
        Some(parent) => parent.add(name, value),
        None if root.is_none() => *root = Some((name, value)),
        None => return Err(XmlError::Root),
    }
    Ok(())
}

/// Writes a JSON document as XML (with an XML declaration).
pub fn from_json(document: &Value) -> Result<String, XmlError> {
    let mut out = String::from(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    match document {
        Value::Object(members) if members.len() == 1 => {
            if let Some((name, value)) = members.iter().next()
                && !value.is_array()
            {
                element(&mut out, name, value)?;
                return Ok(out);
            }
            element(&mut out, "root", document)?;
        }
        Value::Array(items) => {
            out.push_str("<root>");
            for item in items {
                element(&mut out, "item", item)?;
            }
            out.push_str("</root>");
        }
        other => element(&mut out, "root", other)?,
    }
    Ok(out)
}

/// Writes element `name` with `value`; an array is the element repeated.
fn element(out: &mut String, name: &str, value: &Value) -> Result<(), XmlError> {
    if let Value::Array(items) = value {
        for item in items {
            element(out, name, item)?;
        }
        return Ok(());
    }
    check_name(name)?;
    let _ = write!(out, "<{name}");
    let Value::Object(members) = value else {
        match scalar(value) {
            Some(text) => {
                let _ = write!(out, ">{}</{name}>", escape(text.as_str()));
            }
            None => out.push_str("/>"),
        }
        return Ok(());
    };
    for (key, value) in members {
        if let Some(attribute) = key.strip_prefix('@') {
            check_name(attribute)?;
            let text = scalar(value).unwrap_or_default();
            let _ = write!(out, " {attribute}=\"{}\"", escape(text.as_str()));
        }
    }
    out.push('>');
    for (key, value) in members {
        if key == "#text" {
            out.push_str(&escape(scalar(value).unwrap_or_default().as_str()));
        } else if !key.starts_with('@') {
            element(out, key, value)?;
        }
    }
    let _ = write!(out, "</{name}>");
    Ok(())
}

/// The text of a value written as text or an attribute (`None` for null);
/// nested objects and arrays as their JSON.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

/// Refuses what cannot be an XML name (letters, digits, `_`, `-`, `.`, `:`;
/// not starting with a digit, `-` or `.`).
fn check_name(name: &str) -> Result<(), XmlError> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')) {
        Ok(())
    } else {
        Err(XmlError::Name(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_attributes_text_and_repeated_elements() {
        let xml = br#"<?xml version="1.0"?>
            <!-- an order -->
            <order id="7" status="new">
              <customer>Ada &amp; Co &#x263A;</customer>
              <item sku="a">2</item>
              <item sku="b"/>
              <note><![CDATA[<fragile>]]></note>
              <empty></empty>
            </order>"#;
        assert_eq!(
            to_json(xml).expect("XML"),
            json!({"order": {
                "@id": "7", "@status": "new",
                "customer": "Ada & Co \u{263A}",
                "item": [{"@sku": "a", "#text": "2"}, {"@sku": "b"}],
                "note": "<fragile>",
                "empty": null,
            }})
        );
    }

    #[test]
    fn refuses_what_is_not_one_well_formed_document() {
        for bad in [
            "<a><b></a>",
            "<a/><b/>",
            "text<a/>",
            "<a>",
            "",
            "<a>&nbsp;</a>",
        ] {
            assert!(to_json(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn writes_json_back_as_the_same_xml() {
        let document = json!({"order": {
            "@id": 7, "customer": "Ada & <Co>", "item": [{"@sku": "a", "#text": "2"}, "3"],
            "paid": true, "note": null
        }});
        let xml = from_json(&document).expect("written");
        assert_eq!(
            xml,
            r#"<?xml version="1.0" encoding="UTF-8"?><order id="7"><customer>Ada &amp; &lt;Co&gt;</customer><item sku="a">2</item><item>3</item><paid>true</paid><note/></order>"#
        );
        assert_eq!(
            to_json(xml.as_bytes()).expect("read back"),
            json!({"order": {"@id": "7", "customer": "Ada & <Co>",
                "item": [{"@sku": "a", "#text": "2"}, "3"], "paid": "true", "note": null}})
        );
    }

    #[test]
    fn wraps_other_documents_in_a_root_element() {
        assert_eq!(
            from_json(&json!({"a": 1, "b": [1, 2]})).expect("written"),
            r#"<?xml version="1.0" encoding="UTF-8"?><root><a>1</a><b>1</b><b>2</b></root>"#
        );
        assert_eq!(
            from_json(&json!([{"x": 1}, 2])).expect("written"),
            r#"<?xml version="1.0" encoding="UTF-8"?><root><item><x>1</x></item><item>2</item></root>"#
        );
        assert!(matches!(
            from_json(&json!({"bad name": 1})),
            Err(XmlError::Name(_))
        ));
    }
}
