//! `validation`: requests checked against JSON Schemas (draft 2020-12 or 7)
//! or an OpenAPI 3.0/3.1 description before they reach the upstream. A
//! request that breaks its schema is refused with a JSON 400
//! (`validation_failed`) listing every violation (where, a JSON pointer, a
//! message), up to `max_violations`. With an OpenAPI description, the
//! request's operation is found from its path and method (404/405 for one
//! not described, or let through), and its path, query, header and cookie
//! parameters and body are checked; responses can be checked too, and a
//! backend that breaks its contract is logged or replaced by a 502. Schemas
//! compile once, at configure; a request pays for reading what is checked
//! and for the check.

mod coerce;
mod media;
mod openapi;
mod schema;
mod violation;

use std::rc::Rc;

use serde::Deserialize;
use serde_json::Value;
use weir_sdk::metrics::Counter;
use weir_sdk::{Body, ConfigError, Filter, Flow, Http, Outcome, Plugin};

use crate::coerce::Shapes;
use crate::media::Format;
use crate::openapi::{Api, BodySchema, Location, Lookup, Operation};
use crate::schema::{CompileError, Dialect, Schema};
use crate::violation::{Details, Place, Report};

/// What happens to a request whose operation the description lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
enum UnknownOperation {
    /// 404 for an unknown path, 405 for an unknown method.
    #[default]
    Reject,
    /// Let it through unchecked.
    Allow,
}

/// What is done with responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
enum ResponseMode {
    /// Not checked.
    #[default]
    Off,
    /// Checked; a violation is logged (WARN) and the response goes on.
    Log,
    /// Checked; a violating response is replaced by a 502.
    Enforce,
}

/// The plugin configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// JSON Schema of the request body (JSON, or a form as an object).
    body: Option<Value>,
    /// JSON Schema of the query, as an object of its parameters.
    query: Option<Value>,
    /// JSON Schema of the headers, as an object of lower-case names.
    headers: Option<Value>,
    /// Whether a request must have a body (with `body`).
    #[serde(default)]
    require_body: bool,
    /// An OpenAPI 3.0 or 3.1 description (instead of the schemas above).
    openapi: Option<Value>,
    /// The prefix of the request paths the description's paths are below.
    base_path: Option<String>,
    /// `reject` or `allow` requests the description lacks.
    unknown_operation: Option<UnknownOperation>,
    /// `off`, `log` or `enforce`.
    responses: Option<ResponseMode>,
    /// The largest request body checked; a larger one is refused (413).
    #[serde(default = "default_max_body_bytes")]
    max_body_bytes: usize,
    /// The largest response body checked; a larger one goes on unchecked.
    #[serde(default = "default_max_body_bytes")]
    max_response_body_bytes: usize,
    /// The most violations listed in an answer.
    #[serde(default = "default_max_violations")]
    max_violations: usize,
    /// Whether `format` (`email`, `date-time`, `uuid`, …) is checked.
    #[serde(default = "default_formats")]
    formats: bool,
}

fn default_max_body_bytes() -> usize {
    1024 * 1024
}

fn default_max_violations() -> usize {
    20
}

fn default_formats() -> bool {
    true
}

/// JSON Schemas for the parts of a request.
struct Schemas {
    body: Option<Rc<BodySchema>>,
    require_body: bool,
    query: Option<(Schema, Shapes)>,
    headers: Option<(Schema, Shapes)>,
}

/// What requests are checked against.
enum Contract {
    Schemas(Schemas),
    OpenApi {
        api: Api,
        unknown: UnknownOperation,
        responses: ResponseMode,
    },
}

/// The configured plugin.
struct Validation {
    contract: Contract,
    max_body_bytes: usize,
    max_response_body_bytes: usize,
    max_violations: usize,
    rejected: Option<Counter>,
    broken_responses: Option<Counter>,
}

/// A config error for a schema compiled from the config member at `at`.
fn at(at: &str, error: CompileError) -> ConfigError {
    ConfigError::at(format!("{at}{}", error.pointer), error.message)
}

/// `schema` with its top-level `properties` and `required` names in lower
/// case, as header names are compared.
fn lower_case_names(mut schema: Value) -> Value {
    if let Some(Value::Object(properties)) = schema.get_mut("properties") {
        let lowered = std::mem::take(properties)
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        *properties = lowered;
    }
    if let Some(Value::Array(required)) = schema.get_mut("required") {
        for name in required.iter_mut() {
            if let Value::String(text) = name {
                *text = text.to_ascii_lowercase();
            }
        }
    }
    schema
}

impl Plugin for Validation {
    const NAME: &'static str = "validation";
    type Config = Config;
    type Filter = ValidationFilter;

    fn configure(config: Config) -> Result<Self, ConfigError> {
        if config.max_body_bytes == 0 {
            return Err(ConfigError::at("/max_body_bytes", "must be at least 1"));
        }
        if config.max_response_body_bytes == 0 {
            return Err(ConfigError::at(
                "/max_response_body_bytes",
                "must be at least 1",
            ));
        }
        if !(1..=1000).contains(&config.max_violations) {
            return Err(ConfigError::at("/max_violations", "must be 1 to 1000"));
        }
        let dialect = Dialect {
            draft: None,
            formats: config.formats,
            registry: None,
        };
        let contract = match config.openapi {
            Some(document) => {
                for (member, set) in [
                    ("/body", config.body.is_some()),
                    ("/query", config.query.is_some()),
                    ("/headers", config.headers.is_some()),
                    ("/require_body", config.require_body),
                ] {
                    if set {
                        return Err(ConfigError::at(
                            member,
                            "the OpenAPI description says what requests must be: drop this or `openapi`",
                        ));
                    }
                }
                let base_path = config.base_path.unwrap_or_default();
                if !base_path.is_empty() && !base_path.starts_with('/') {
                    return Err(ConfigError::at("/base_path", "must start with /"));
                }
                let api = Api::compile(&document, &base_path, config.formats)
                    .map_err(|e| at("/openapi", e))?;
                weir_sdk::log::info(&format!(
                    "validation: {} operations of the OpenAPI description",
                    api.operations()
                ));
                Contract::OpenApi {
                    api,
                    unknown: config.unknown_operation.unwrap_or_default(),
                    responses: config.responses.unwrap_or_default(),
                }
            }
            None => {
                for (member, set) in [
                    ("/base_path", config.base_path.is_some()),
                    ("/unknown_operation", config.unknown_operation.is_some()),
                    ("/responses", config.responses.is_some()),
                ] {
                    if set {
                        return Err(ConfigError::at(member, "only applies with `openapi`"));
                    }
                }
                if config.body.is_none() && config.query.is_none() && config.headers.is_none() {
                    return Err(ConfigError::new(
                        "nothing to check: give `body`, `query` or `headers` schemas, or `openapi`",
                    ));
                }
                if config.require_body && config.body.is_none() {
                    return Err(ConfigError::at("/require_body", "needs a `body` schema"));
                }
                let body = match config.body {
                    Some(body) => Some(Rc::new(BodySchema {
                        schema: Schema::compile(&body, dialect).map_err(|e| at("/body", e))?,
                        shapes: Shapes::of_properties(&body, &body),
                    })),
                    None => None,
                };
                let params = |schema: Option<Value>, member: &str| match schema {
                    Some(schema) => Schema::compile(&schema, dialect)
                        .map(|compiled| Some((compiled, Shapes::of_properties(&schema, &schema))))
                        .map_err(|e| at(member, e)),
                    None => Ok(None),
                };
                Contract::Schemas(Schemas {
                    body,
                    require_body: config.require_body,
                    query: params(config.query, "/query")?,
                    headers: params(config.headers.map(lower_case_names), "/headers")?,
                })
            }
        };
        Ok(Self {
            contract,
            max_body_bytes: config.max_body_bytes,
            max_response_body_bytes: config.max_response_body_bytes,
            max_violations: config.max_violations,
            rejected: Counter::define("validation_rejected").ok(),
            broken_responses: Counter::define("validation_response_violations").ok(),
        })
    }

    fn filter(self: &Rc<Self>) -> ValidationFilter {
        ValidationFilter {
            plugin: self.clone(),
            pending: None,
            operation: None,
            response: None,
        }
    }
}

/// A body to check once it is whole, and what its head already broke.
struct PendingBody {
    schema: Rc<BodySchema>,
    format: Format,
    report: Report,
    /// Whether an empty body counts as none that was required.
    required: bool,
}

/// One request's checks.
struct ValidationFilter {
    plugin: Rc<Validation>,
    /// The request body to check, while it buffers.
    pending: Option<PendingBody>,
    /// The request's operation, for its response.
    operation: Option<Rc<Operation>>,
    /// The response body to check, while it buffers.
    response: Option<PendingBody>,
}

/// What a body check needs to know about the body.
enum BodyPlan {
    /// Nothing to check.
    Skip,
    /// Check it once whole.
    Check(Rc<BodySchema>, Format),
    /// Its media type is not accepted: the ones that are.
    Unsupported(String),
}

/// The query of `path` as (name, value) pairs, decoded.
fn query_pairs(path: &str) -> Vec<(String, String)> {
    let query = path.split_once('?').map_or("", |(_, q)| q);
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The request headers as (lower-case name, value) pairs, without pseudo-headers.
fn header_pairs(headers: &[(String, String)]) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| !name.starts_with(':'))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
        .collect()
}

/// Borrowed views of owned pairs.
fn borrowed(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// The cookies of a `cookie` header as (name, value) pairs.
fn cookie_pairs(header: Option<&str>) -> Vec<(String, String)> {
    header
        .unwrap_or_default()
        .split(';')
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            Some((name.trim().to_owned(), value.trim().to_owned()))
        })
        .collect()
}

impl ValidationFilter {
    /// Counts a request this filter refuses; its answer is not checked as
    /// a response.
    fn refused(&mut self) {
        self.operation = None;
        if let Some(rejected) = self.plugin.rejected {
            let _ = rejected.increment(1);
        }
    }

    fn new_report(&self) -> Report {
        Report::new(self.plugin.max_violations)
    }

    /// Lets the request go on, or refuses it with its violations.
    fn decide(&mut self, http: &mut Http<'_, Self>, report: &Report) -> Outcome {
        if report.is_empty() {
            return Ok(Flow::Continue);
        }
        self.refused();
        let what = match self.plugin.contract {
            Contract::Schemas(_) => "its schema",
            Contract::OpenApi { .. } => "the API description",
        };
        http.deny_with_details(
            400,
            "validation_failed",
            &format!("the request does not match {what}: {}", report.summary()),
            &[],
            &Details {
                violations: report.violations(),
            },
        )
    }

    /// How the body with `content_type` of a request is checked.
    fn plan(
        content_type: Option<&str>,
        accepted: impl Fn(&str) -> Option<Option<Rc<BodySchema>>>,
        names: impl Fn() -> String,
    ) -> BodyPlan {
        let media = media::essence(content_type.unwrap_or_default());
        match accepted(&media) {
            None => BodyPlan::Unsupported(names()),
            Some(None) => BodyPlan::Skip,
            Some(Some(schema)) => match media::format_of(&media) {
                Some(format) => BodyPlan::Check(schema, format),
                None => BodyPlan::Skip,
            },
        }
    }

    /// Checks the head against the JSON Schemas.
    fn schemas_head(&mut self, http: &mut Http<'_, Self>) -> Outcome {
        let plugin = self.plugin.clone();
        let Contract::Schemas(schemas) = &plugin.contract else {
            return Ok(Flow::Continue);
        };
        let mut report = self.new_report();
        if let Some((schema, shapes)) = &schemas.query {
            let path = http.path()?.unwrap_or_default();
            let pairs = query_pairs(&path);
            schema.check(&shapes.object(borrowed(&pairs)), Place::Query, &mut report);
        }
        if let Some((schema, shapes)) = &schemas.headers {
            let pairs = header_pairs(&http.request_headers()?);
            let mut joined: Vec<(String, String)> = Vec::new();
            for (name, value) in pairs {
                match joined.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, all)) => {
                        all.push_str(", ");
                        all.push_str(&value);
                    }
                    None => joined.push((name, value)),
                }
            }
            schema.check(
                &shapes.object(borrowed(&joined)),
                Place::Header,
                &mut report,
            );
        }
        let Some(body) = &schemas.body else {
            return self.decide(http, &report);
        };
        if http.end_of_stream() {
            if schemas.require_body {
                report.add(Place::Body, String::new(), "a request body is required");
            }
            return self.decide(http, &report);
        }
        let content_type = http.request_header("content-type")?;
        let plan = Self::plan(
            content_type.as_deref(),
            |media| media::format_of(media).map(|_| Some(body.clone())),
            || "application/json, application/x-www-form-urlencoded".to_owned(),
        );
        self.after_head(http, plan, report, schemas.require_body)
    }

    /// Checks the head against the OpenAPI operation it finds.
    fn openapi_head(&mut self, http: &mut Http<'_, Self>) -> Outcome {
        let plugin = self.plugin.clone();
        let Contract::OpenApi { api, unknown, .. } = &plugin.contract else {
            return Ok(Flow::Continue);
        };
        let method = http.method()?.unwrap_or_default();
        let path = http.path()?.unwrap_or_default();
        let path_only = path.split_once('?').map_or(path.as_str(), |(p, _)| p);
        let (operation, captures) = match api.lookup(&method, path_only) {
            Lookup::Found(operation, captures) => (operation, captures),
            _ if *unknown == UnknownOperation::Allow => return Ok(Flow::Continue),
            Lookup::NoPath => {
                return http.deny(
                    404,
                    "unknown_operation",
                    &format!("the API description has no path {path_only}"),
                );
            }
            Lookup::NoMethod(allowed) => {
                return http.deny_with(
                    405,
                    "method_not_allowed",
                    &format!("the API description has no {method} operation on {path_only}"),
                    &[("allow", &allowed)],
                );
            }
        };
        let mut report = self.new_report();
        if let Some(params) = operation.params(Location::Path) {
            params.check(&borrowed(&captures), &mut report);
        }
        if let Some(params) = operation.params(Location::Query) {
            params.check(&borrowed(&query_pairs(&path)), &mut report);
        }
        if let Some(params) = operation.params(Location::Header) {
            params.check(
                &borrowed(&header_pairs(&http.request_headers()?)),
                &mut report,
            );
        }
        if let Some(params) = operation.params(Location::Cookie) {
            let cookies = cookie_pairs(http.request_header("cookie")?.as_deref());
            params.check(&borrowed(&cookies), &mut report);
        }
        self.operation = Some(operation.clone());
        let Some(body) = &operation.body else {
            return self.decide(http, &report);
        };
        if http.end_of_stream() {
            if body.required {
                report.add(Place::Body, String::new(), "a request body is required");
            }
            return self.decide(http, &report);
        }
        let content_type = http.request_header("content-type")?;
        let plan = Self::plan(
            content_type.as_deref(),
            |media| body.content.find(media).cloned(),
            || body.content.names(),
        );
        self.after_head(http, plan, report, body.required)
    }

    /// Goes on from a checked head to its body.
    fn after_head(
        &mut self,
        http: &mut Http<'_, Self>,
        plan: BodyPlan,
        report: Report,
        required: bool,
    ) -> Outcome {
        match plan {
            BodyPlan::Skip => self.decide(http, &report),
            BodyPlan::Unsupported(accepted) => {
                self.refused();
                let content_type = http.request_header("content-type")?;
                http.deny(
                    415,
                    "unsupported_media_type",
                    &format!(
                        "the body's content type {} is not one of {accepted}",
                        content_type.as_deref().unwrap_or("(none)")
                    ),
                )
            }
            BodyPlan::Check(schema, format) => {
                self.pending = Some(PendingBody {
                    schema,
                    format,
                    report,
                    required,
                });
                Ok(Flow::Continue)
            }
        }
    }

    /// Checks a whole body of `size` bytes against `pending`.
    fn check_body(pending: &mut PendingBody, bytes: &[u8]) {
        if bytes.is_empty() {
            if pending.required {
                pending
                    .report
                    .add(Place::Body, String::new(), "a request body is required");
            }
            return;
        }
        match media::read(pending.format, bytes, &pending.schema.shapes) {
            Ok(value) => pending
                .schema
                .schema
                .check(&value, Place::Body, &mut pending.report),
            Err(message) => {
                pending.report.add(Place::Body, String::new(), &message);
            }
        }
    }

    /// Checks the response head; a body to check is kept for later. Only
    /// the upstream's responses are checked, not the gateway's own answers
    /// (this filter's, another filter's, a route's fixed response).
    fn response_head(&mut self, http: &mut Http<'_, Self>, mode: ResponseMode) -> Outcome {
        let Some(operation) = self.operation.clone() else {
            return Ok(Flow::Continue);
        };
        if !operation.has_responses() {
            return Ok(Flow::Continue);
        }
        if let Some(details) = http.property(&["response", "code_details"])?
            && details != b"via_upstream"
        {
            return Ok(Flow::Continue);
        }
        let status = http.status()?.unwrap_or_default();
        let mut report = self.new_report();
        let Some(spec) = operation.response(status) else {
            report.add(
                Place::Status,
                String::new(),
                &format!(
                    "status {status} is not among the operation's responses ({})",
                    operation.statuses()
                ),
            );
            return self.response_verdict(http, mode, &operation, &report);
        };
        if let Some(headers) = &spec.headers {
            headers.check(
                &borrowed(&header_pairs(&http.response_headers()?)),
                &mut report,
            );
        }
        if http.end_of_stream() || spec.content.is_empty() {
            return self.response_verdict(http, mode, &operation, &report);
        }
        let content_type = http.response_header("content-type")?;
        let media = media::essence(content_type.as_deref().unwrap_or_default());
        match spec.content.find(&media) {
            None => {
                report.add(
                    Place::Header,
                    "/content-type".to_owned(),
                    &format!(
                        "content type {} is not one of {}",
                        content_type.as_deref().unwrap_or("(none)"),
                        spec.content.names()
                    ),
                );
                self.response_verdict(http, mode, &operation, &report)
            }
            Some(Some(schema)) if media::format_of(&media) == Some(Format::Json) => {
                if mode == ResponseMode::Enforce && !report.is_empty() {
                    return self.response_verdict(http, mode, &operation, &report);
                }
                self.response = Some(PendingBody {
                    schema: schema.clone(),
                    format: Format::Json,
                    report,
                    required: false,
                });
                Ok(Flow::Continue)
            }
            Some(_) => self.response_verdict(http, mode, &operation, &report),
        }
    }

    /// Logs a response's violations, or replaces it with a 502.
    fn response_verdict(
        &mut self,
        http: &mut Http<'_, Self>,
        mode: ResponseMode,
        operation: &Operation,
        report: &Report,
    ) -> Outcome {
        if report.is_empty() {
            return Ok(Flow::Continue);
        }
        if let Some(broken) = self.plugin.broken_responses {
            let _ = broken.increment(1);
        }
        let status = http.status()?.unwrap_or_default();
        http.warn(&format!(
            "the response of {} (status {status}) breaks the API description: {}",
            operation.name,
            report.one_line()
        ));
        if mode != ResponseMode::Enforce {
            return Ok(Flow::Continue);
        }
        http.deny_with_details(
            502,
            "upstream_contract_violation",
            &format!(
                "the upstream's response does not match the API description: {}",
                report.summary()
            ),
            &[],
            &Details {
                violations: report.violations(),
            },
        )
    }

    fn response_mode(&self) -> ResponseMode {
        match self.plugin.contract {
            Contract::OpenApi { responses, .. } => responses,
            Contract::Schemas(_) => ResponseMode::Off,
        }
    }
}

impl Filter for ValidationFilter {
    fn on_request_headers(&mut self, http: &mut Http<'_, Self>) -> Outcome {
        match self.plugin.contract {
            Contract::Schemas(_) => self.schemas_head(http),
            Contract::OpenApi { .. } => self.openapi_head(http),
        }
    }

    fn on_request_body(&mut self, http: &mut Http<'_, Self>, body: Body) -> Outcome {
        if self.pending.is_none() {
            return Ok(Flow::Continue);
        }
        if body.size > self.plugin.max_body_bytes {
            self.pending = None;
            self.refused();
            return http.deny(
                413,
                "body_too_large",
                &format!(
                    "the request body is larger than the {} bytes that are checked",
                    self.plugin.max_body_bytes
                ),
            );
        }
        if !body.end_of_stream {
            return Ok(Flow::Pause);
        }
        let Some(mut pending) = self.pending.take() else {
            return Ok(Flow::Continue);
        };
        let bytes = http.request_body(0, body.size)?;
        Self::check_body(&mut pending, &bytes);
        self.decide(http, &pending.report)
    }

    fn on_response_headers(&mut self, http: &mut Http<'_, Self>) -> Outcome {
        match self.response_mode() {
            ResponseMode::Off => Ok(Flow::Continue),
            mode => self.response_head(http, mode),
        }
    }

    fn on_response_body(&mut self, http: &mut Http<'_, Self>, body: Body) -> Outcome {
        if self.response.is_none() {
            return Ok(Flow::Continue);
        }
        if body.size > self.plugin.max_response_body_bytes {
            self.response = None;
            let name = self.operation.as_ref().map_or("", |o| o.name.as_str());
            http.warn(&format!(
                "the response of {name} was not checked: its body is larger than {} bytes",
                self.plugin.max_response_body_bytes
            ));
            return Ok(Flow::Continue);
        }
        if !body.end_of_stream {
            return Ok(Flow::Pause);
        }
        let (Some(mut pending), Some(operation)) = (self.response.take(), self.operation.clone())
        else {
            return Ok(Flow::Continue);
        };
        let bytes = http.response_body(0, body.size)?;
        Self::check_body(&mut pending, &bytes);
        let mode = self.response_mode();
        self.response_verdict(http, mode, &operation, &pending.report)
    }
}

weir_sdk::export!(Validation);

#[cfg(test)]
mod tests;
