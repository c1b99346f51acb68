//! `transform`: rewrites requests and responses on their way through.
//! Headers are removed, renamed, set, added and appended; the request's
//! path is rewritten by a regex and its query parameters edited; JSON
//! bodies are edited by JSON pointer; form and XML bodies are converted to
//! JSON and back. Values are templates (`${consumer}`, `${header.x}`,
//! `${query.x}`, `${jwt.sub}`, `${route}`, `${request_id}`), rendered once
//! per request from the request as it reached the filter.
//!
//! A body is rewritten whole or not at all: it is buffered to its end (up to
//! `max_body_bytes`; a larger one gets the configured answer), read in its
//! format, edited and written back, with its content type and length fixed.
//! Bodies of other content types pass untouched, and unbuffered.

mod config;
mod format;
mod json;
mod template;
mod url;
mod xml;

use std::rc::Rc;

use weir_sdk::headers::Side;
use weir_sdk::{Body, ConfigError, Filter, Flow, Http, Outcome, Plugin};

use crate::config::{Config, Direction, Validated};
use crate::template::{Template, Vars};

/// The property that says where a response comes from (`via_upstream`).
const CODE_DETAILS: [&str; 2] = ["response", "code_details"];

/// The configured plugin.
struct Transform {
    request: Direction,
    response: Direction,
    templates: Vec<Template>,
    max_body_bytes: usize,
}

impl Plugin for Transform {
    const NAME: &'static str = "transform";
    type Config = Config;
    type Filter = TransformFilter;

    fn configure(config: Config) -> Result<Self, ConfigError> {
        let Validated {
            request,
            response,
            templates,
            max_body_bytes,
        } = config::validate(config)?;
        Ok(Self {
            request,
            response,
            templates,
            max_body_bytes,
        })
    }

    fn filter(self: &Rc<Self>) -> TransformFilter {
        TransformFilter {
            plugin: self.clone(),
            values: None,
            request_body: false,
            response_body: false,
            replied: false,
        }
    }
}

/// One request's transform.
struct TransformFilter {
    plugin: Rc<Transform>,
    /// Every template's text for this request (`None` inside: it names
    /// something the request does not have), rendered on first use.
    values: Option<Vec<Option<String>>>,
    /// Whether the request body is being buffered to be rewritten.
    request_body: bool,
    /// Whether the response body is.
    response_body: bool,
    /// Whether this filter answered the request itself.
    replied: bool,
}

impl TransformFilter {
    /// Renders every template, once per request.
    fn render(&mut self, http: &mut Http<'_, Self>) {
        if self.values.is_some() {
            return;
        }
        let mut vars = Vars::default();
        let values = self
            .plugin
            .templates
            .iter()
            .map(|template| template.render(&mut vars, http))
            .collect();
        self.values = Some(values);
    }

    /// Template `i`'s text for this request.
    fn value(&self, i: usize) -> Option<String> {
        self.values.as_ref()?.get(i)?.clone()
    }

    /// Edits the headers of `side`; when `body` allows and the body is
    /// one to rewrite (of a matching content type), prepares its rewrite
    /// (content type and length) and says so.
    fn head(
        &mut self,
        http: &mut Http<'_, Self>,
        side: Side,
        body: bool,
    ) -> Result<bool, weir_sdk::Error> {
        self.render(http);
        let plugin = self.plugin.clone();
        let direction = match side {
            Side::Request => &plugin.request,
            Side::Response => &plugin.response,
        };
        let values = self.values.as_deref().unwrap_or_default();
        http.edit_headers(side, &direction.headers, |template| {
            values.get(*template).cloned().flatten()
        })?;
        let Some(plan) = &direction.body else {
            return Ok(false);
        };
        if !body || http.end_of_stream() {
            return Ok(false);
        }
        let content_type = http.header(side, "content-type")?.unwrap_or_default();
        if !plan.from.matches(&content_type) {
            return Ok(false);
        }
        http.remove_header(side, "content-length")?;
        if plan.to != plan.from {
            http.set_header(side, "content-type", plan.to.content_type())?;
        }
        Ok(true)
    }

    /// Rewrites the body of `side` once it is whole.
    fn body(&mut self, http: &mut Http<'_, Self>, side: Side, body: Body) -> Outcome {
        let plugin = self.plugin.clone();
        let (direction, what, invalid_status) = match side {
            Side::Request => (&plugin.request, "request", 400),
            Side::Response => (&plugin.response, "response", 502),
        };
        if body.size > plugin.max_body_bytes {
            self.replied = true;
            let message = format!(
                "the {what} body is larger than the {} bytes the transform rewrites",
                plugin.max_body_bytes
            );
            let answer = &direction.too_large;
            return http.deny(answer.status, &answer.code, &message);
        }
        if !body.end_of_stream {
            return Ok(Flow::Pause);
        }
        let Some(plan) = direction.body.as_ref().filter(|_| body.size > 0) else {
            return Ok(Flow::Continue);
        };
        let bytes = match side {
            Side::Request => http.request_body(0, body.size)?,
            Side::Response => http.response_body(0, body.size)?,
        };
        let rewritten = plan.from.read(&bytes).and_then(|mut document| {
            for edit in &plan.edits {
                edit.apply(&mut document, &|i| self.value(i));
            }
            plan.to.write(&document)
        });
        let rewritten = match rewritten {
            Ok(rewritten) => rewritten,
            Err(error) => {
                self.replied = true;
                let message = format!("the {what} body cannot be rewritten: {error}");
                return http.deny(invalid_status, "transform_invalid_body", &message);
            }
        };
        match side {
            Side::Request => http.set_request_body(&rewritten)?,
            Side::Response => http.set_response_body(&rewritten)?,
        }
        Ok(Flow::Continue)
    }
}

impl Filter for TransformFilter {
    fn on_request_headers(&mut self, http: &mut Http<'_, Self>) -> Outcome {
        self.request_body = self.head(http, Side::Request, true)?;
        let target = &self.plugin.request.target;
        if !target.is_empty() {
            let path = http.path()?.unwrap_or_default();
            if let Some(new) = target.apply(&path, |i| self.value(i)) {
                http.set_request_header(":path", &new)?;
            }
        }
        Ok(Flow::Continue)
    }

    fn on_request_body(&mut self, http: &mut Http<'_, Self>, body: Body) -> Outcome {
        if !self.request_body {
            return Ok(Flow::Continue);
        }
        self.body(http, Side::Request, body)
    }

    fn on_response_headers(&mut self, http: &mut Http<'_, Self>) -> Outcome {
        // Bodies are rewritten on the upstream's answers only (not on this
        // filter's or another's local reply, nor on Weir's own errors), and
        // not on those that have none whatever their headers say.
        let upstream = !self.replied
            && http
                .property(&CODE_DETAILS)?
                .is_none_or(|details| details == b"via_upstream");
        let bodiless =
            http.method()?.as_deref() == Some("HEAD") || matches!(http.status()?, Some(204 | 304));
        self.response_body = self.head(http, Side::Response, upstream && !bodiless)?;
        Ok(Flow::Continue)
    }

    fn on_response_body(&mut self, http: &mut Http<'_, Self>, body: Body) -> Outcome {
        if !self.response_body {
            return Ok(Flow::Continue);
        }
        self.body(http, Side::Response, body)
    }
}

weir_sdk::export!(Transform);

#[cfg(test)]
mod tests;
