//! One operation of an OpenAPI description, compiled: its parameters by
//! location, its request body by media type, its responses by status.

use std::rc::Rc;

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde_json::{Map, Value, json};

use crate::coerce::{self, Shape, Shapes};
use crate::media;
use crate::schema::{CompileError, Dialect, Schema};
use crate::violation::{Place, Report};

/// The URI the description is registered under; its schemas' `$ref`s
/// (`#/components/schemas/Pet`) resolve inside it.
pub const DOCUMENT_URI: &str = "urn:weir:openapi";

/// What a JSON pointer in a URI fragment must have escaped.
const FRAGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// How many `$ref`s are followed to reach a parameter, body or response.
const MAX_REFS: usize = 16;

/// The context operations are compiled in.
pub struct Compiler<'a> {
    /// The description, in its schemas' dialect.
    pub document: &'a Value,
    /// How schemas compile (with the description registered).
    pub dialect: Dialect<'a>,
}

/// `(pointer, value)`: where something is in the description.
type Located<'a> = (String, &'a Value);

impl Compiler<'_> {
    /// `value` at `pointer`, or what its `$ref` (`#/components/…`) points
    /// at, followed to the end.
    fn resolve<'v>(
        &'v self,
        pointer: String,
        value: &'v Value,
    ) -> Result<Located<'v>, CompileError> {
        let (mut pointer, mut value) = (pointer, value);
        for _ in 0..MAX_REFS {
            let Some(reference) = value.get("$ref").and_then(Value::as_str) else {
                return Ok((pointer, value));
            };
            let target = reference
                .strip_prefix('#')
                .map(|f| {
                    percent_encoding::percent_decode_str(f)
                        .decode_utf8_lossy()
                        .into_owned()
                })
                .and_then(|p| self.document.pointer(&p).map(|v| (p, v)));
            let Some((target_pointer, target)) = target else {
                return Err(CompileError {
                    pointer: format!("{pointer}/$ref"),
                    message: format!(
                        "`{reference}` is not a reference inside the document (`#/components/…`)"
                    ),
                });
            };
            pointer = target_pointer;
            value = target;
        }
        Err(CompileError {
            pointer,
            message: "too many nested $refs".to_owned(),
        })
    }

    /// A schema made of `wrapper`, whose `$ref`s point into the description.
    fn compile(&self, wrapper: &Value, at: &str) -> Result<Schema, CompileError> {
        Schema::compile(wrapper, self.dialect).map_err(|e| CompileError {
            pointer: at.to_owned(),
            message: e.message,
        })
    }

    /// A `$ref` to the schema at `pointer` in the description.
    fn reference(pointer: &str) -> Value {
        json!({ "$ref": format!("{DOCUMENT_URI}#{}", utf8_percent_encode(pointer, FRAGMENT)) })
    }
}

/// A JSON pointer segment for `key`.
pub fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// A parameter's location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// `in: path`.
    Path,
    /// `in: query`.
    Query,
    /// `in: header`.
    Header,
    /// `in: cookie`.
    Cookie,
}

impl Location {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "path" => Some(Self::Path),
            "query" => Some(Self::Query),
            "header" => Some(Self::Header),
            "cookie" => Some(Self::Cookie),
            _ => None,
        }
    }

    /// Where its violations are.
    pub fn place(self) -> Place {
        match self {
            Self::Path => Place::Path,
            Self::Query => Place::Query,
            Self::Header => Place::Header,
            Self::Cookie => Place::Cookie,
        }
    }
}

/// One parameter as it is read from the request.
#[derive(Debug, Clone)]
struct Param {
    /// Its name (lower case for a header).
    name: String,
    shape: Shape,
    /// The delimiter of a non-exploded array.
    split: Option<char>,
    /// Whether its value is JSON (`content: {application/json: …}`).
    json: bool,
}

/// The parameters of one location, checked together as an object.
pub struct Params {
    list: Vec<Param>,
    schema: Schema,
    place: Place,
}

impl Params {
    /// Adds the violations of the parameters among `pairs` (name, value;
    /// repeated names for repeated parameters) to `report`.
    pub fn check(&self, pairs: &[(&str, &str)], report: &mut Report) {
        let mut object = Map::new();
        for param in &self.list {
            let values: Vec<&str> = pairs
                .iter()
                .filter(|(name, _)| *name == param.name)
                .map(|(_, value)| *value)
                .collect();
            let Some(first) = values.first() else {
                continue;
            };
            let value = if param.json {
                serde_json::from_str(first).unwrap_or_else(|_| Value::String((*first).to_owned()))
            } else {
                match coerce::build(&values, param.shape, param.split) {
                    Some(value) => value,
                    None => continue,
                }
            };
            object.insert(param.name.clone(), value);
        }
        self.schema
            .check(&Value::Object(object), self.place, report);
    }
}

/// A body schema and the shapes of its top-level fields (for forms).
pub struct BodySchema {
    /// The schema.
    pub schema: Schema,
    /// Its fields' shapes.
    pub shapes: Shapes,
}

/// A `content` map: media types (lower case, ranges allowed) and schemas.
pub struct Content {
    entries: Vec<(String, Option<Rc<BodySchema>>)>,
}

impl Content {
    /// The entry for media type `media` (an essence): exact, then
    /// `type/*`, then `*/*`.
    pub fn find(&self, media: &str) -> Option<&Option<Rc<BodySchema>>> {
        let range = media
            .split_once('/')
            .map(|(kind, _)| format!("{kind}/*"))
            .unwrap_or_default();
        [media, range.as_str(), "*/*"]
            .into_iter()
            .find_map(|key| self.entries.iter().find(|(k, _)| k == key))
            .map(|(_, schema)| schema)
    }

    /// Whether it lists no media type.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Its media types, for a message.
    pub fn names(&self) -> String {
        self.entries
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A `requestBody`.
pub struct RequestBody {
    /// Whether a request must have one.
    pub required: bool,
    /// What it may be.
    pub content: Content,
}

/// A response's expected headers and content.
pub struct ResponseSpec {
    /// Its declared headers.
    pub headers: Option<Params>,
    /// Its content.
    pub content: Content,
}

/// A `responses` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatusKey {
    Exact(u16),
    /// `2XX`: the hundreds digit.
    Class(u16),
    Default,
}

/// A compiled operation.
pub struct Operation {
    /// `METHOD /template`, for logs.
    pub name: String,
    params: Vec<(Location, Params)>,
    /// Its `requestBody`.
    pub body: Option<RequestBody>,
    responses: Vec<(StatusKey, String, ResponseSpec)>,
}

/// The HTTP methods an OpenAPI path item has.
pub const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

impl Operation {
    /// Compiles the operation at `pointer` (`/paths/~1pets/get`) with the
    /// path item's `shared` parameters (at `shared_pointer`).
    pub fn compile(
        compiler: &Compiler<'_>,
        name: String,
        pointer: &str,
        operation: &Value,
        shared: Option<Located<'_>>,
        path_names: &[&str],
    ) -> Result<Self, CompileError> {
        let mut declared: Vec<(Location, String, String, &Value)> = Vec::new();
        let lists = [
            shared,
            operation
                .get("parameters")
                .map(|p| (format!("{pointer}/parameters"), p)),
        ];
        for (list_pointer, list) in lists.into_iter().flatten() {
            let Some(list) = list.as_array() else {
                return Err(CompileError {
                    pointer: list_pointer,
                    message: "must be a list of parameters".to_owned(),
                });
            };
            for (i, param) in list.iter().enumerate() {
                let (at, param) = compiler.resolve(format!("{list_pointer}/{i}"), param)?;
                let location = param
                    .get("in")
                    .and_then(Value::as_str)
                    .and_then(Location::parse)
                    .ok_or_else(|| CompileError {
                        pointer: format!("{at}/in"),
                        message: "must be path, query, header or cookie".to_owned(),
                    })?;
                let name =
                    param
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| CompileError {
                            pointer: format!("{at}/name"),
                            message: "a parameter needs a name".to_owned(),
                        })?;
                let name = if location == Location::Header {
                    name.to_ascii_lowercase()
                } else {
                    name.to_owned()
                };
                // An operation's parameter replaces the path item's of the same name and place.
                declared.retain(|(l, n, _, _)| !(*l == location && *n == name));
                declared.push((location, name, at, param));
            }
        }
        for name in path_names {
            if !declared
                .iter()
                .any(|(l, n, _, _)| *l == Location::Path && n == name)
            {
                return Err(CompileError {
                    pointer: pointer.to_owned(),
                    message: format!("path parameter `{name}` is not declared"),
                });
            }
        }
        let mut params = Vec::new();
        for location in [
            Location::Path,
            Location::Query,
            Location::Header,
            Location::Cookie,
        ] {
            let of_location: Vec<_> = declared
                .iter()
                .filter(|(l, n, _, _)| {
                    *l == location
                        && !(location == Location::Header
                            && matches!(n.as_str(), "accept" | "content-type" | "authorization"))
                })
                .map(|(_, n, at, p)| (n.as_str(), at.as_str(), *p))
                .collect();
            if !of_location.is_empty() {
                let set = compile_params(compiler, location, &of_location, pointer)?;
                params.push((location, set));
            }
        }
        let body = match operation.get("requestBody") {
            None => None,
            Some(body) => {
                let (at, body) = compiler.resolve(format!("{pointer}/requestBody"), body)?;
                Some(RequestBody {
                    required: body.get("required").and_then(Value::as_bool) == Some(true),
                    content: compile_content(compiler, &at, body)?,
                })
            }
        };
        let mut responses = Vec::new();
        if let Some(map) = operation.get("responses").and_then(Value::as_object) {
            for (key, response) in map {
                let at = format!("{pointer}/responses/{}", escape(key));
                let status = parse_status(key).ok_or_else(|| CompileError {
                    pointer: at.clone(),
                    message: format!("`{key}` is not a status, a range like 2XX, or default"),
                })?;
                let (at, response) = compiler.resolve(at, response)?;
                responses.push((
                    status,
                    key.clone(),
                    compile_response(compiler, &at, response)?,
                ));
            }
        }
        Ok(Self {
            name,
            params,
            body,
            responses,
        })
    }

    /// Its parameters of `location`, if it has some.
    pub fn params(&self, location: Location) -> Option<&Params> {
        self.params
            .iter()
            .find(|(l, _)| *l == location)
            .map(|(_, p)| p)
    }

    /// Whether it describes any response.
    pub fn has_responses(&self) -> bool {
        !self.responses.is_empty()
    }

    /// The response described for `status`: exact, then its range (`2XX`),
    /// then `default`.
    pub fn response(&self, status: u16) -> Option<&ResponseSpec> {
        [
            StatusKey::Exact(status),
            StatusKey::Class(status / 100),
            StatusKey::Default,
        ]
        .into_iter()
        .find_map(|key| self.responses.iter().find(|(k, _, _)| *k == key))
        .map(|(_, _, spec)| spec)
    }

    /// The statuses it describes, for a message.
    pub fn statuses(&self) -> String {
        self.responses
            .iter()
            .map(|(_, key, _)| key.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `200`, `2XX` or `default`.
fn parse_status(key: &str) -> Option<StatusKey> {
    if key == "default" {
        return Some(StatusKey::Default);
    }
    if let Some(digit) = key
        .strip_suffix("XX")
        .or_else(|| key.strip_suffix("xx"))
        .filter(|d| d.len() == 1)
    {
        return digit.parse().ok().map(StatusKey::Class);
    }
    key.parse()
        .ok()
        .filter(|s| (100..=599).contains(s))
        .map(StatusKey::Exact)
}

/// The parameters of one location (name, pointer, parameter object).
fn compile_params(
    compiler: &Compiler<'_>,
    location: Location,
    declared: &[(&str, &str, &Value)],
    operation_pointer: &str,
) -> Result<Params, CompileError> {
    let mut properties = Map::new();
    let mut required = Vec::new();
    let mut list = Vec::new();
    for (name, at, param) in declared {
        let (schema_pointer, json) = if param.get("schema").is_some() {
            (format!("{at}/schema"), false)
        } else if let Some((media, entry)) = param
            .get("content")
            .and_then(Value::as_object)
            .and_then(|c| c.iter().next())
            && entry.get("schema").is_some()
        {
            let json = media::format_of(&media::essence(media)) == Some(media::Format::Json);
            (format!("{at}/content/{}/schema", escape(media)), json)
        } else {
            // No schema: only its presence can be checked.
            (String::new(), false)
        };
        let schema_value = compiler
            .document
            .pointer(&schema_pointer)
            .filter(|_| !schema_pointer.is_empty());
        let shape = schema_value.map_or(Shape::Scalar(coerce::Scalar::String), |s| {
            coerce::shape_of(s, compiler.document)
        });
        properties.insert(
            (*name).to_owned(),
            if schema_value.is_some() {
                Compiler::reference(&schema_pointer)
            } else {
                json!({})
            },
        );
        let is_required = location == Location::Path
            || param.get("required").and_then(Value::as_bool) == Some(true);
        if is_required {
            required.push(Value::String((*name).to_owned()));
        }
        let style = param.get("style").and_then(Value::as_str);
        let explode = param.get("explode").and_then(Value::as_bool).unwrap_or(
            matches!(location, Location::Query | Location::Cookie)
                && style.is_none_or(|s| s == "form"),
        );
        let split = match (location, style) {
            (_, Some("spaceDelimited")) => Some(' '),
            (_, Some("pipeDelimited")) => Some('|'),
            (Location::Query | Location::Cookie, _) if explode => None,
            _ => Some(','),
        };
        // deepObject and other object styles are not read from the request.
        let shape = if style == Some("deepObject") {
            Shape::Object
        } else {
            shape
        };
        list.push(Param {
            name: (*name).to_owned(),
            shape,
            split,
            json,
        });
    }
    let wrapper = json!({"type": "object", "properties": properties, "required": required});
    Ok(Params {
        list,
        schema: compiler.compile(&wrapper, operation_pointer)?,
        place: location.place(),
    })
}

/// A `content` map at `at`.
fn compile_content(
    compiler: &Compiler<'_>,
    at: &str,
    holder: &Value,
) -> Result<Content, CompileError> {
    let mut entries = Vec::new();
    if let Some(map) = holder.get("content").and_then(Value::as_object) {
        for (media_type, entry) in map {
            let entry_pointer = format!("{at}/content/{}", escape(media_type));
            let essence = media::essence(media_type);
            let schema = match entry.get("schema") {
                Some(schema) if media::format_of(&essence).is_some() || essence.contains('*') => {
                    let schema_pointer = format!("{entry_pointer}/schema");
                    let compiled =
                        compiler.compile(&Compiler::reference(&schema_pointer), &schema_pointer)?;
                    Some(Rc::new(BodySchema {
                        schema: compiled,
                        shapes: Shapes::of_properties(schema, compiler.document),
                    }))
                }
                _ => None,
            };
            entries.push((essence, schema));
        }
    }
    Ok(Content { entries })
}

/// A response object at `at`.
fn compile_response(
    compiler: &Compiler<'_>,
    at: &str,
    response: &Value,
) -> Result<ResponseSpec, CompileError> {
    let mut declared = Vec::new();
    if let Some(headers) = response.get("headers").and_then(Value::as_object) {
        for (name, header) in headers {
            let (header_at, header) =
                compiler.resolve(format!("{at}/headers/{}", escape(name)), header)?;
            let name = name.to_ascii_lowercase();
            if name != "content-type" {
                declared.push((name, header_at, header));
            }
        }
    }
    let headers = if declared.is_empty() {
        None
    } else {
        let view: Vec<_> = declared
            .iter()
            .map(|(n, a, h)| (n.as_str(), a.as_str(), *h))
            .collect();
        let mut params = compile_params(compiler, Location::Header, &view, at)?;
        params.place = Place::Header;
        Some(params)
    };
    Ok(ResponseSpec {
        headers,
        content: compile_content(compiler, at, response)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_exact_ranges_or_default() {
        assert_eq!(parse_status("200"), Some(StatusKey::Exact(200)));
        assert_eq!(parse_status("4XX"), Some(StatusKey::Class(4)));
        assert_eq!(parse_status("default"), Some(StatusKey::Default));
        assert_eq!(parse_status("20X"), None);
        assert_eq!(parse_status("999"), None);
    }

    #[test]
    fn references_escape_what_a_fragment_cannot_hold() {
        assert_eq!(
            Compiler::reference("/paths/~1pets~1{id}/get/parameters/0/schema"),
            json!({"$ref": "urn:weir:openapi#/paths/~1pets~1%7Bid%7D/get/parameters/0/schema"})
        );
    }
}
