//! The configuration as written (serde), and its validation into the plugin's
//! types: templates parsed, regexes compiled, pointers split, every error at
//! its JSON pointer.

use serde::Deserialize;
use serde_json::Value;
use weir_sdk::ConfigError;
use weir_sdk::headers::HeaderEdit;

use crate::format::Format;
use crate::json::{Edit, NewValue, Pointer};
use crate::template::Template;
use crate::url::{PathRewrite, QueryEdit, TargetEdits};

/// The plugin configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// What happens to the request.
    #[serde(default)]
    pub request: RequestConfig,
    /// What happens to the response.
    #[serde(default)]
    pub response: ResponseConfig,
    /// The largest body rewritten, in bytes.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
}

fn default_max_body_bytes() -> usize {
    1024 * 1024
}

/// The request's edits.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestConfig {
    #[serde(default)]
    headers: HeadersConfig,
    path: Option<PathConfig>,
    #[serde(default)]
    query: QueryConfig,
    #[serde(default)]
    json: Vec<JsonEditConfig>,
    convert: Option<Convert>,
    too_large: Option<AnswerConfig>,
}

/// The response's edits.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseConfig {
    #[serde(default)]
    headers: HeadersConfig,
    #[serde(default)]
    json: Vec<JsonEditConfig>,
    convert: Option<Convert>,
    too_large: Option<AnswerConfig>,
}

/// Header edits, applied in this order: remove, rename, set, add, append.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeadersConfig {
    #[serde(default)]
    remove: Vec<String>,
    #[serde(default)]
    rename: Vec<(String, String)>,
    #[serde(default)]
    set: Vec<(String, String)>,
    #[serde(default)]
    add: Vec<(String, String)>,
    #[serde(default)]
    append: Vec<(String, String)>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PathConfig {
    regex: String,
    replace: String,
}

/// Query edits, applied in this order: remove, set, add, append.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryConfig {
    #[serde(default)]
    remove: Vec<String>,
    #[serde(default)]
    set: Vec<(String, String)>,
    #[serde(default)]
    add: Vec<(String, String)>,
    #[serde(default)]
    append: Vec<(String, String)>,
}

/// One JSON edit: exactly one of the operation keys, with its companions.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonEditConfig {
    set: Option<String>,
    /// `Some(Null)` for `value: null`, `None` when there is no `value`.
    #[serde(default, deserialize_with = "present")]
    value: Option<Value>,
    remove: Option<String>,
    rename: Option<String>,
    #[serde(rename = "move")]
    move_from: Option<String>,
    to: Option<String>,
    wrap: Option<String>,
    unwrap: Option<String>,
    keep: Option<Vec<String>>,
}

/// A value that is there, even `null`.
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// A body format conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Convert {
    FormToJson,
    JsonToForm,
    XmlToJson,
    JsonToXml,
}

/// The answer to a body over `max_body_bytes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerConfig {
    status: u16,
    code: String,
}

/// A local answer: status and error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub code: String,
}

/// What happens to a body: read in one format, edited as JSON, written in
/// another (or the same).
#[derive(Debug, Clone)]
pub struct BodyPlan {
    pub from: Format,
    pub to: Format,
    pub edits: Vec<Edit>,
}

/// The validated edits of one direction.
#[derive(Debug, Clone)]
pub struct Direction {
    /// Header edits; values are template indexes.
    pub headers: Vec<HeaderEdit<usize>>,
    /// Path and query edits (requests only).
    pub target: TargetEdits,
    /// The body's, if it is rewritten.
    pub body: Option<BodyPlan>,
    /// The answer to a body over the limit.
    pub too_large: Answer,
}

/// The validated configuration.
#[derive(Debug)]
pub struct Validated {
    pub request: Direction,
    pub response: Direction,
    /// Every template of both directions, by index.
    pub templates: Vec<Template>,
    pub max_body_bytes: usize,
}

/// Validates `config`.
pub fn validate(config: Config) -> Result<Validated, ConfigError> {
    if config.max_body_bytes == 0 {
        return Err(ConfigError::at("/max_body_bytes", "must be at least 1"));
    }
    let mut templates = Templates::default();
    let request = config.request;
    let mut target = TargetEdits::default();
    if let Some(path) = request.path {
        target.path = Some(
            PathRewrite::new(&path.regex, &path.replace)
                .map_err(|(field, why)| ConfigError::at(format!("/request/path/{field}"), why))?,
        );
    }
    target.query = query_edits(request.query, &mut templates)?;
    let request = Direction {
        headers: header_edits("/request/headers", request.headers, &mut templates)?,
        target,
        body: body_plan("/request", request.json, request.convert, &mut templates)?,
        too_large: answer(
            "/request/too_large",
            request.too_large,
            Answer {
                status: 413,
                code: "transform_body_too_large".to_owned(),
            },
        )?,
    };
    let response = config.response;
    let response = Direction {
        headers: header_edits("/response/headers", response.headers, &mut templates)?,
        target: TargetEdits::default(),
        body: body_plan("/response", response.json, response.convert, &mut templates)?,
        too_large: answer(
            "/response/too_large",
            response.too_large,
            Answer {
                status: 502,
                code: "transform_body_too_large".to_owned(),
            },
        )?,
    };
    Ok(Validated {
        request,
        response,
        templates: templates.0,
        max_body_bytes: config.max_body_bytes,
    })
}

/// The templates parsed so far.
#[derive(Default)]
struct Templates(Vec<Template>);

impl Templates {
    /// Parses `text` (at `pointer`) and returns its index.
    fn add(&mut self, pointer: &str, text: &str) -> Result<usize, ConfigError> {
        let template = Template::parse(text).map_err(|why| ConfigError::at(pointer, why))?;
        self.0.push(template);
        Ok(self.0.len() - 1)
    }
}

/// Refuses what is not a header name (RFC 9110 token characters).
fn check_header_name(pointer: &str, name: &str) -> Result<String, ConfigError> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(ConfigError::at(
            pointer,
            format!("`{name}` is not a header name"),
        ));
    }
    Ok(name.to_ascii_lowercase())
}

fn header_edits(
    at: &str,
    config: HeadersConfig,
    templates: &mut Templates,
) -> Result<Vec<HeaderEdit<usize>>, ConfigError> {
    let mut edits = Vec::new();
    for (i, name) in config.remove.iter().enumerate() {
        let name = check_header_name(&format!("{at}/remove/{i}"), name)?;
        edits.push(HeaderEdit::Remove { name });
    }
    for (i, (from, to)) in config.rename.iter().enumerate() {
        let from = check_header_name(&format!("{at}/rename/{i}/0"), from)?;
        let to = check_header_name(&format!("{at}/rename/{i}/1"), to)?;
        edits.push(HeaderEdit::Rename { from, to });
    }
    let valued = [
        ("set", config.set),
        ("add", config.add),
        ("append", config.append),
    ];
    for (kind, pairs) in valued {
        for (i, (name, value)) in pairs.iter().enumerate() {
            let name = check_header_name(&format!("{at}/{kind}/{i}/0"), name)?;
            let value = templates.add(&format!("{at}/{kind}/{i}/1"), value)?;
            edits.push(match kind {
                "set" => HeaderEdit::Set { name, value },
                "add" => HeaderEdit::Add { name, value },
                _ => HeaderEdit::Append { name, value },
            });
        }
    }
    Ok(edits)
}

fn query_edits(
    config: QueryConfig,
    templates: &mut Templates,
) -> Result<Vec<QueryEdit>, ConfigError> {
    let at = "/request/query";
    let mut edits: Vec<QueryEdit> = config.remove.into_iter().map(QueryEdit::Remove).collect();
    let valued = [
        ("set", config.set),
        ("add", config.add),
        ("append", config.append),
    ];
    for (kind, pairs) in valued {
        for (i, (name, value)) in pairs.into_iter().enumerate() {
            if name.is_empty() {
                return Err(ConfigError::at(
                    format!("{at}/{kind}/{i}/0"),
                    "a query parameter needs a name",
                ));
            }
            let value = templates.add(&format!("{at}/{kind}/{i}/1"), &value)?;
            edits.push(match kind {
                "set" => QueryEdit::Set(name, value),
                "add" => QueryEdit::Add(name, value),
                _ => QueryEdit::Append(name, value),
            });
        }
    }
    Ok(edits)
}

fn body_plan(
    at: &str,
    json: Vec<JsonEditConfig>,
    convert: Option<Convert>,
    templates: &mut Templates,
) -> Result<Option<BodyPlan>, ConfigError> {
    let (from, to) = match convert {
        None if json.is_empty() => return Ok(None),
        None => (Format::Json, Format::Json),
        Some(Convert::FormToJson) => (Format::Form, Format::Json),
        Some(Convert::JsonToForm) => (Format::Json, Format::Form),
        Some(Convert::XmlToJson) => (Format::Xml, Format::Json),
        Some(Convert::JsonToXml) => (Format::Json, Format::Xml),
    };
    let edits = json
        .into_iter()
        .enumerate()
        .map(|(i, edit)| json_edit(&format!("{at}/json/{i}"), edit, templates))
        .collect::<Result<_, _>>()?;
    Ok(Some(BodyPlan { from, to, edits }))
}

fn json_edit(
    at: &str,
    config: JsonEditConfig,
    templates: &mut Templates,
) -> Result<Edit, ConfigError> {
    let pointer = |field: &str, text: &str| {
        Pointer::parse(text).map_err(|why| ConfigError::at(format!("{at}/{field}"), why))
    };
    let key = |field: &str, text: String| {
        if text.is_empty() {
            Err(ConfigError::at(
                format!("{at}/{field}"),
                "must not be empty",
            ))
        } else {
            Ok(text)
        }
    };
    let operations = [
        config.set.is_some(),
        config.remove.is_some(),
        config.rename.is_some(),
        config.move_from.is_some(),
        config.wrap.is_some(),
        config.unwrap.is_some(),
        config.keep.is_some(),
    ];
    if operations.iter().filter(|o| **o).count() != 1 {
        return Err(ConfigError::at(
            at,
            "an edit has exactly one of set, remove, rename, move, wrap, unwrap, keep",
        ));
    }
    let needs_to = config.rename.is_some() || config.move_from.is_some();
    if needs_to != config.to.is_some() {
        let why = if needs_to {
            "rename and move need `to`"
        } else {
            "only rename and move take `to`"
        };
        return Err(ConfigError::at(format!("{at}/to"), why));
    }
    if config.set.is_some() != config.value.is_some() {
        let why = if config.set.is_some() {
            "set needs `value`"
        } else {
            "only set takes `value`"
        };
        return Err(ConfigError::at(format!("{at}/value"), why));
    }
    let to = config.to.unwrap_or_default();
    Ok(if let Some(at_text) = config.set {
        let value = match config.value {
            Some(Value::String(text)) => {
                NewValue::Template(templates.add(&format!("{at}/value"), &text)?)
            }
            other => NewValue::Json(other.unwrap_or_default()),
        };
        Edit::Set {
            at: pointer("set", &at_text)?,
            value,
        }
    } else if let Some(text) = config.remove {
        Edit::Remove(pointer("remove", &text)?)
    } else if let Some(text) = config.rename {
        if to.contains('/') {
            return Err(ConfigError::at(
                format!("{at}/to"),
                "rename takes the member's new name, not a pointer (use move)",
            ));
        }
        Edit::Rename {
            at: pointer("rename", &text)?,
            to: key("to", to)?,
        }
    } else if let Some(text) = config.move_from {
        Edit::Move {
            from: pointer("move", &text)?,
            to: pointer("to", &to)?,
        }
    } else if let Some(wrap) = config.wrap {
        Edit::Wrap(key("wrap", wrap)?)
    } else if let Some(unwrap) = config.unwrap {
        Edit::Unwrap(key("unwrap", unwrap)?)
    } else {
        let keep = config.keep.unwrap_or_default();
        if keep.is_empty() {
            return Err(ConfigError::at(
                format!("{at}/keep"),
                "names at least one pointer",
            ));
        }
        Edit::Keep(
            keep.iter()
                .enumerate()
                .map(|(i, text)| pointer(&format!("keep/{i}"), text))
                .collect::<Result<_, _>>()?,
        )
    })
}

fn answer(at: &str, config: Option<AnswerConfig>, default: Answer) -> Result<Answer, ConfigError> {
    let Some(config) = config else {
        return Ok(default);
    };
    if !(400..=599).contains(&config.status) {
        return Err(ConfigError::at(
            format!("{at}/status"),
            "must be an error status (400 to 599)",
        ));
    }
    if config.code.is_empty() {
        return Err(ConfigError::at(format!("{at}/code"), "must not be empty"));
    }
    Ok(Answer {
        status: config.status,
        code: config.code,
    })
}
