//! `header-rewrite`: sets, appends and removes request and response headers.

use std::rc::Rc;

use serde::Deserialize;
use weir_sdk::{ConfigError, Filter, Flow, HostResult, Http, Outcome, Plugin};

/// Edits of one direction, applied in this order: remove, set, add.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Edits {
    /// Headers set (replacing any value).
    set: Vec<(String, String)>,
    /// Headers appended.
    add: Vec<(String, String)>,
    /// Headers removed.
    remove: Vec<String>,
}

/// The plugin configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    request: Edits,
    response: Edits,
}

struct HeaderRewrite {
    config: Config,
}

impl Plugin for HeaderRewrite {
    const NAME: &'static str = "header-rewrite";
    type Config = Config;
    type Filter = Rewrite;

    fn configure(config: Config) -> Result<Self, ConfigError> {
        Ok(Self { config })
    }

    fn filter(self: &Rc<Self>) -> Rewrite {
        Rewrite(self.clone())
    }
}

struct Rewrite(Rc<HeaderRewrite>);

/// Header operations of one direction of a request.
trait Headers {
    fn set(&mut self, name: &str, value: &str) -> HostResult<()>;
    fn add(&mut self, name: &str, value: &str) -> HostResult<()>;
    fn remove(&mut self, name: &str) -> HostResult<()>;
}

/// The request's headers.
struct Upstream<'h, 'a>(&'h mut Http<'a, Rewrite>);
/// The response's headers.
struct Downstream<'h, 'a>(&'h mut Http<'a, Rewrite>);

impl Headers for Upstream<'_, '_> {
    fn set(&mut self, name: &str, value: &str) -> HostResult<()> {
        self.0.set_request_header(name, value)
    }
    fn add(&mut self, name: &str, value: &str) -> HostResult<()> {
        self.0.add_request_header(name, value)
    }
    fn remove(&mut self, name: &str) -> HostResult<()> {
        self.0.remove_request_header(name)
    }
}

impl Headers for Downstream<'_, '_> {
    fn set(&mut self, name: &str, value: &str) -> HostResult<()> {
        self.0.set_response_header(name, value)
    }
    fn add(&mut self, name: &str, value: &str) -> HostResult<()> {
        self.0.add_response_header(name, value)
    }
    fn remove(&mut self, name: &str) -> HostResult<()> {
        self.0.remove_response_header(name)
    }
}

/// Applies `edits` to `headers`.
fn apply(edits: &Edits, headers: &mut impl Headers) -> Outcome {
    for name in &edits.remove {
        headers.remove(name)?;
    }
    for (name, value) in &edits.set {
        headers.set(name, value)?;
    }
    for (name, value) in &edits.add {
        headers.add(name, value)?;
    }
    Ok(Flow::Continue)
}

impl Filter for Rewrite {
    fn on_request_headers(&mut self, http: &mut Http<'_, Self>) -> Outcome {
        apply(&self.0.config.request, &mut Upstream(http))
    }

    fn on_response_headers(&mut self, http: &mut Http<'_, Self>) -> Outcome {
        apply(&self.0.config.response, &mut Downstream(http))
    }
}

weir_sdk::export!(HeaderRewrite);
