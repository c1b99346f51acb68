//! The configuration as written ([`Config`]) and validated once into the
//! [`Aggregation`] the filter reads; nothing else sees the raw form.

use std::time::Duration;

use regex_automata::meta::Regex;
use regex_automata::util::syntax;
use serde::Deserialize;
use weir_sdk::{ConfigError, duration};

use crate::document::Field;
use crate::template::{Source, Template};

/// The longest a call may be given.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// The most calls one aggregation may make.
const MAX_CALLS: usize = 32;

/// The plugin configuration, as the manifest writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The calls made for each request.
    calls: Vec<CallConfig>,
    /// A regex on the request path whose named groups templates read as
    /// `${path.NAME}`.
    #[serde(default)]
    path_pattern: Option<String>,
    /// What a failed call does to the answer.
    #[serde(default)]
    on_partial_failure: OnFailure,
    /// The answer's status.
    #[serde(default = "default_status")]
    status: u16,
    /// The answer's content type.
    #[serde(default = "default_content_type")]
    content_type: String,
    /// The member naming the failed calls in a partial answer.
    #[serde(default = "default_errors_key")]
    errors_key: String,
}

/// One call, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallConfig {
    /// Its name, in errors and as the default key.
    name: String,
    /// The manifest upstream group called.
    upstream: String,
    /// The path template, with its query.
    path: String,
    /// The method.
    #[serde(default = "default_method")]
    method: String,
    /// Request headers copied onto the call.
    #[serde(default)]
    headers: Vec<String>,
    /// How long the call may take.
    #[serde(default = "default_timeout")]
    timeout: String,
    /// Where its answer goes in the document.
    #[serde(default)]
    merge: Option<Merge>,
    /// The fields of its answer kept (all when empty).
    #[serde(default)]
    select: Vec<String>,
    /// Whether its failure fails the whole answer under `partial`.
    #[serde(default)]
    required: bool,
}

fn default_status() -> u16 {
    200
}

fn default_content_type() -> String {
    "application/json".into()
}

fn default_errors_key() -> String {
    "_errors".into()
}

fn default_method() -> String {
    "GET".into()
}

fn default_timeout() -> String {
    "5s".into()
}

/// What a failed call does to the answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// The answer is a 502 naming the call.
    #[default]
    Fail,
    /// The answer has what arrived, and the failures under `errors_key`.
    Partial,
}

/// Where a call's answer goes in the document.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Merge {
    /// Under this member (`merge: { under: user }`).
    Under(String),
    /// Its members merged into the document's (`merge: deep`).
    Deep,
}

/// One validated call.
#[derive(Debug, Clone)]
pub struct Call {
    /// Its name.
    pub name: String,
    /// The upstream group called.
    pub upstream: String,
    /// The method.
    pub method: String,
    /// The path template.
    pub path: Template,
    /// Request headers copied onto the call, lower case.
    pub headers: Vec<String>,
    /// Its timeout.
    pub timeout: Duration,
    /// Where its answer goes.
    pub merge: Merge,
    /// The fields kept (all when empty).
    pub select: Vec<Field>,
    /// Whether its failure fails the whole answer under `partial`.
    pub required: bool,
}

/// The validated configuration.
#[derive(Debug)]
pub struct Aggregation {
    /// The calls, in the order their answers merge.
    pub calls: Vec<Call>,
    /// `path_pattern`, compiled.
    pub path_pattern: Option<Regex>,
    /// The failure policy.
    pub on_failure: OnFailure,
    /// The answer's status.
    pub status: u16,
    /// The answer's content type.
    pub content_type: String,
    /// The member naming failed calls in a partial answer.
    pub errors_key: String,
    /// The request headers some call's template reads.
    pub template_headers: Vec<String>,
}

impl Aggregation {
    /// Checks `config`; the error points at the offending field.
    pub fn from_config(config: Config) -> Result<Self, ConfigError> {
        if config.calls.is_empty() {
            return Err(ConfigError::at("/calls", "must list at least one call"));
        }
        if config.calls.len() > MAX_CALLS {
            return Err(ConfigError::at(
                "/calls",
                format!("at most {MAX_CALLS} calls"),
            ));
        }
        let path_pattern = config
            .path_pattern
            .as_deref()
            .map(compile)
            .transpose()
            .map_err(|e| ConfigError::at("/path_pattern", e))?;
        let captures: Vec<&str> = path_pattern
            .as_ref()
            .map(|regex| {
                regex
                    .group_info()
                    .pattern_names(0.into())
                    .flatten()
                    .collect()
            })
            .unwrap_or_default();
        if !(200..=599).contains(&config.status) {
            return Err(ConfigError::at("/status", "must be from 200 to 599"));
        }
        if config.content_type.is_empty() || config.content_type.contains(['\r', '\n']) {
            return Err(ConfigError::at(
                "/content_type",
                "must be a media type like application/json",
            ));
        }
        if config.errors_key.is_empty() {
            return Err(ConfigError::at("/errors_key", "must not be empty"));
        }
        let mut calls: Vec<Call> = Vec::with_capacity(config.calls.len());
        for (i, raw) in config.calls.into_iter().enumerate() {
            let call = validate_call(i, raw, &captures)?;
            if calls.iter().any(|c| c.name == call.name) {
                return Err(ConfigError::at(
                    format!("/calls/{i}/name"),
                    format!("`{}` names another call already", call.name),
                ));
            }
            if call.merge == Merge::Under(config.errors_key.clone()) {
                return Err(ConfigError::at(
                    format!("/calls/{i}/merge/under"),
                    format!(
                        "`{}` is the errors_key, where partial answers name failed calls",
                        config.errors_key
                    ),
                ));
            }
            calls.push(call);
        }
        let mut template_headers: Vec<String> = Vec::new();
        for source in calls.iter().flat_map(|call| call.path.sources()) {
            if let Source::Header(name) = source
                && !template_headers.contains(name)
            {
                template_headers.push(name.clone());
            }
        }
        Ok(Self {
            calls,
            path_pattern,
            template_headers,
            on_failure: config.on_partial_failure,
            status: config.status,
            content_type: config.content_type,
            errors_key: config.errors_key,
        })
    }
}

/// Checks call `i`; `captures` are the named groups of `path_pattern`.
fn validate_call(i: usize, raw: CallConfig, captures: &[&str]) -> Result<Call, ConfigError> {
    let at = |field: &str| format!("/calls/{i}/{field}");
    if raw.name.is_empty() {
        return Err(ConfigError::at(at("name"), "must not be empty"));
    }
    if raw.upstream.is_empty() {
        return Err(ConfigError::at(
            at("upstream"),
            "must name an upstream group of the manifest",
        ));
    }
    if !raw.path.starts_with('/') || raw.path.chars().any(|c| c.is_whitespace() || c == '#') {
        return Err(ConfigError::at(
            at("path"),
            format!(
                "`{}` is not a path like /users/${{path.id}} (no spaces or fragment)",
                raw.path
            ),
        ));
    }
    let path = Template::parse(&raw.path, captures).map_err(|e| ConfigError::at(at("path"), e))?;
    let method = raw.method.to_ascii_uppercase();
    if !is_token(&method) {
        return Err(ConfigError::at(
            at("method"),
            format!("`{}` is not a method", raw.method),
        ));
    }
    let mut headers = Vec::with_capacity(raw.headers.len());
    for (j, header) in raw.headers.iter().enumerate() {
        let header = header.to_ascii_lowercase();
        if !is_header_name(&header) {
            return Err(ConfigError::at(
                at(&format!("headers/{j}")),
                format!("`{header}` is not a header name"),
            ));
        }
        headers.push(header);
    }
    let timeout = duration::parse(&raw.timeout)
        .filter(|t| !t.is_zero() && *t <= MAX_TIMEOUT)
        .ok_or_else(|| {
            ConfigError::at(
                at("timeout"),
                format!(
                    "`{}` is not a duration from 1ms to 1m, like 500ms or 2s",
                    raw.timeout
                ),
            )
        })?;
    let merge = raw.merge.unwrap_or_else(|| Merge::Under(raw.name.clone()));
    if merge == Merge::Under(String::new()) {
        return Err(ConfigError::at(at("merge/under"), "must not be empty"));
    }
    let select = raw
        .select
        .iter()
        .enumerate()
        .map(|(j, field)| {
            Field::parse(field).map_err(|e| ConfigError::at(at(&format!("select/{j}")), e))
        })
        .collect::<Result<_, _>>()?;
    Ok(Call {
        name: raw.name,
        upstream: raw.upstream,
        method,
        path,
        headers,
        timeout,
        merge,
        select,
        required: raw.required,
    })
}

/// `pattern` compiled to match whole paths, with captures, on ASCII
/// classes (`\d` is `[0-9]`).
fn compile(pattern: &str) -> Result<Regex, String> {
    let build = |pattern: &str| {
        Regex::builder()
            .syntax(syntax::Config::new().unicode(false).utf8(false))
            .build(pattern)
            .map_err(|e| match e.syntax_error() {
                Some(syntax) => format!("not a regex: {}", one_line(&syntax.to_string())),
                None => format!("not a regex: {e}"),
            })
    };
    // Checked as written first, so an error's position is in the user's text.
    build(pattern)?;
    build(&format!("^(?:{pattern})$"))
}

/// A syntax error's text on one line: regex-syntax draws the pattern with a
/// caret under the fault and the reason below (`error: unclosed group`),
/// which reads as `unclosed group, at character 8`.
fn one_line(drawn: &str) -> String {
    let lines: Vec<&str> = drawn.lines().collect();
    let reason = lines
        .iter()
        .rev()
        .find_map(|line| line.strip_prefix("error: "))
        .unwrap_or(drawn);
    // The caret line is indented by four, as the pattern above it.
    match lines.get(2).and_then(|caret| caret.find('^')) {
        Some(at) if at >= 4 => format!("{reason}, at character {}", at - 3),
        _ => reason.to_owned(),
    }
}

/// Whether `name` is an HTTP field name (RFC 9110 `token`), lower case.
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
        })
}

/// Whether `text` is an RFC 9110 `token` (a method).
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
