//! The hello filter, written with the public `proxy-wasm` Rust SDK (0.2.5).
//!
//! - `on_configure` reads `{"greeting": "..."}` (default `hello`) and logs it.
//! - Every response gets `x-hello: <greeting>`.
//! - A request for `/forbidden` (with or without a query) is answered here
//!   with 403 and Weir's JSON error body, carrying the request's
//!   `x-request-id`; the upstream never sees it.
//!
//! The same filter exists in Go, AssemblyScript, C and Zig next to this
//! directory; `examples/filters/README.md` states the behaviour they share.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::{Deserialize, Serialize};

/// The greeting when the configuration names none.
const DEFAULT_GREETING: &str = "hello";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(HelloRoot { greeting: Rc::from(DEFAULT_GREETING) })
    });
}}

/// The plugin configuration. Members other than `greeting` are ignored;
/// anything that is not a JSON object, or a `greeting` that is not a string,
/// fails to parse and the filter refuses the configuration.
#[derive(Deserialize)]
struct Config {
    #[serde(default = "default_greeting")]
    greeting: String,
}

fn default_greeting() -> String {
    DEFAULT_GREETING.to_owned()
}

/// The root context: holds the configured greeting and hands it to each request.
struct HelloRoot {
    greeting: Rc<str>,
}

impl Context for HelloRoot {}

impl RootContext for HelloRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let greeting = match self.get_plugin_configuration() {
            // No configuration at all: keep the default.
            None => DEFAULT_GREETING.to_owned(),
            Some(bytes) => match serde_json::from_slice::<Config>(&bytes) {
                Ok(config) => config.greeting,
                Err(error) => {
                    proxy_wasm::hostcalls::log(
                        LogLevel::Error,
                        &format!("configuration refused: {error}"),
                    )
                    .ok();
                    return false;
                }
            },
        };
        // A header value cannot hold control characters: refuse them here
        // rather than fail on every response.
        if greeting.chars().any(|c| c.is_ascii_control()) {
            proxy_wasm::hostcalls::log(
                LogLevel::Error,
                "configuration refused: the greeting holds a control character",
            )
            .ok();
            return false;
        }
        proxy_wasm::hostcalls::log(LogLevel::Info, &format!("configured greeting: {greeting}"))
            .ok();
        self.greeting = Rc::from(greeting);
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Hello {
            greeting: Rc::clone(&self.greeting),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One request's context.
struct Hello {
    greeting: Rc<str>,
}

impl Context for Hello {}

impl HttpContext for Hello {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // Header values are bytes: the `String` getters of the SDK panic on
        // one that is not UTF-8, so read bytes.
        let path = self
            .get_http_request_header_bytes(":path")
            .unwrap_or_default();
        if !is_forbidden(&path) {
            return Action::Continue;
        }
        // Weir sets `x-request-id` before any filter runs.
        let request_id = self
            .get_http_request_header_bytes("x-request-id")
            .unwrap_or_default();
        let body = forbidden_body(&String::from_utf8_lossy(&request_id));
        self.send_http_response(
            403,
            vec![("content-type", "application/json")],
            Some(body.as_bytes()),
        );
        Action::Pause
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.set_http_response_header("x-hello", Some(&self.greeting));
        Action::Continue
    }
}

/// Whether `path` (with its query) is `/forbidden`.
fn is_forbidden(path: &[u8]) -> bool {
    let without_query = path.split(|&b| b == b'?').next().unwrap_or(path);
    without_query == b"/forbidden"
}

/// Weir's JSON error body, `{"error": {...}}`, in the order Weir writes it.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    status: u16,
    code: &'a str,
    message: &'a str,
    request_id: &'a str,
}

/// Weir's JSON error body for the 403, naming the request.
fn forbidden_body(request_id: &str) -> String {
    let body = ErrorBody {
        error: ErrorDetail {
            status: 403,
            code: "forbidden",
            message: "this path is forbidden",
            request_id,
        },
    };
    // Serializing strings and an integer cannot fail.
    serde_json::to_string(&body).unwrap_or_default()
}
