//! `header-rewrite`: sets, appends and removes request and response headers.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// Edits of one direction.
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

#[derive(Default)]
struct Root {
    config: Rc<Config>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        if bytes.is_empty() {
            return true;
        }
        match serde_json::from_slice(&bytes) {
            Ok(config) => {
                self.config = Rc::new(config);
                true
            }
            Err(e) => {
                let _ = proxy_wasm::hostcalls::log(
                    LogLevel::Error,
                    &format!("header-rewrite: bad config: {e}"),
                );
                false
            }
        }
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Rewrite {
            config: self.config.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Rewrite {
    config: Rc<Config>,
}

impl Context for Rewrite {}

impl HttpContext for Rewrite {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let edits = &self.config.request;
        for name in &edits.remove {
            self.set_http_request_header(name, None);
        }
        for (name, value) in &edits.set {
            self.set_http_request_header(name, Some(value));
        }
        for (name, value) in &edits.add {
            self.add_http_request_header(name, value);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        let edits = &self.config.response;
        for name in &edits.remove {
            self.set_http_response_header(name, None);
        }
        for (name, value) in &edits.set {
            self.set_http_response_header(name, Some(value));
        }
        for (name, value) in &edits.add {
            self.add_http_response_header(name, value);
        }
        Action::Continue
    }
}
