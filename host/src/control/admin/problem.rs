//! RFC 9457 problem details (`application/problem+json`): every admin API
//! error, with each violation of a rejected manifest listed with its place
//! (JSON pointer, line and column).

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::config::Diagnostic;

/// One admin API error.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    /// A short name of the kind of problem (`invalid-config`); the `type` URI ends with it.
    kind: &'static str,
    title: &'static str,
    detail: String,
    errors: Vec<serde_json::Value>,
    extra_headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl Problem {
    fn new(status: StatusCode, kind: &'static str, title: &'static str, detail: &str) -> Self {
        Self {
            status,
            kind,
            title,
            detail: detail.to_owned(),
            errors: Vec::new(),
            extra_headers: Vec::new(),
        }
    }

    /// No or an unknown token.
    pub fn unauthorized(detail: &str) -> Self {
        let mut problem = Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Authentication required",
            detail,
        );
        problem.extra_headers.push((
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"weir-admin\""),
        ));
        problem
    }

    /// This problem, challenging for Basic credentials too (a browser then
    /// asks its user for them) when it is a 401.
    pub fn challenge_basic(mut self) -> Self {
        if self.status == StatusCode::UNAUTHORIZED {
            self.extra_headers.push((
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"weir admin\", charset=\"UTF-8\""),
            ));
        }
        self
    }

    /// A token whose role may not do this.
    pub fn forbidden(detail: &str) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Not allowed", detail)
    }

    /// No such endpoint.
    pub fn not_found(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "No such endpoint",
            &format!("the admin API has no `{path}`; GET /openapi.json lists its endpoints"),
        )
    }

    /// The endpoint exists; the entity it names does not.
    pub fn missing(detail: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "No such entity", detail)
    }

    /// The request body is over its size limit.
    pub fn too_large(detail: &str) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            "Request body too large",
            detail,
        )
    }

    /// The endpoint exists, not with this method.
    pub fn method_not_allowed(path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            &format!("`{path}` does not take this method; GET /openapi.json lists its methods"),
        )
    }

    /// The request's query asks for something that cannot be done.
    pub fn bad_request(detail: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            detail,
        )
    }

    /// The request body cannot be read.
    pub fn bad_body(detail: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad-body",
            "Unreadable request body",
            detail,
        )
    }

    /// `If-Match` names another version.
    pub fn precondition_failed(detail: &str) -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "version-mismatch",
            "The config changed since it was read",
            detail,
        )
    }

    /// The change collides with another one.
    pub fn conflict(detail: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "conflict",
            "Conflicting change",
            detail,
        )
    }

    /// A manifest that parses but cannot run.
    pub fn unprocessable(kind: &'static str, detail: &str) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            kind,
            "The config cannot run",
            detail,
        )
    }

    /// A manifest with problems: each listed with its place in `text`.
    pub fn invalid_config(diagnostics: &[Diagnostic], text: &str) -> Self {
        Self::located(
            diagnostics,
            text,
            "invalid-config",
            "The manifest is invalid",
        )
    }

    /// A manifest whose plugins or filters could not be started (a module
    /// that does not load, a plugin that refuses its configuration): every
    /// reason with its place in `text`.
    pub fn plugins_failed(diagnostics: &[Diagnostic], text: &str) -> Self {
        Self::located(
            diagnostics,
            text,
            "build-failed",
            "The manifest's plugins could not be started",
        )
    }

    /// A 422 of `kind` listing `diagnostics`, each with its JSON pointer,
    /// line and column in `text`.
    fn located(
        diagnostics: &[Diagnostic],
        text: &str,
        kind: &'static str,
        title: &'static str,
    ) -> Self {
        let pointers = crate::config::pointers(text, diagnostics);
        let mut problem = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            kind,
            title,
            &format!(
                "{} problem{}; the running config stays",
                diagnostics.len(),
                if diagnostics.len() == 1 { "" } else { "s" }
            ),
        );
        problem.errors = diagnostics
            .iter()
            .zip(pointers)
            .map(|(d, pointer)| {
                serde_json::json!({
                    "pointer": pointer,
                    "line": d.location.line,
                    "column": d.location.column,
                    "detail": d.message,
                })
            })
            .collect();
        problem
    }

    /// Something failed on Weir's side.
    pub fn internal(detail: &str) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            detail,
        )
    }

    /// The problem as a response.
    pub fn response(self) -> Response<Full<Bytes>> {
        let mut body = serde_json::json!({
            "type": format!("urn:weir:problem:{}", self.kind),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if !self.errors.is_empty() {
            body["errors"] = serde_json::Value::Array(self.errors);
        }
        let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        for (name, value) in self.extra_headers {
            headers.append(name, value);
        }
        response
    }
}
