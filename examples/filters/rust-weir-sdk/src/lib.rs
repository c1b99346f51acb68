//! The hello filter, written with Weir's own SDK (`weir-sdk`, in
//! `plugin-sdk/`): the behaviour of `examples/filters/README.md` in a plugin
//! type, a filter type and `export!`. The SDK reads the configuration with
//! serde and reports a bad one with the offending field, and `deny` answers
//! in Weir's JSON error shape with the request id.
//!
//! It uses no Weir-only service, so the same `.wasm` runs in Envoy.

use std::rc::Rc;

use serde::Deserialize;
use weir_sdk::{ConfigError, Filter, Flow, Http, Outcome, Plugin};

/// The plugin configuration: `{"greeting": "..."}`, other members ignored.
#[derive(Deserialize)]
struct Config {
    #[serde(default = "default_greeting")]
    greeting: String,
}

fn default_greeting() -> String {
    "hello".to_owned()
}

/// The plugin: the greeting every response carries.
struct Hello {
    greeting: String,
}

impl Plugin for Hello {
    const NAME: &'static str = "hello";
    type Config = Config;
    type Filter = HelloFilter;

    fn configure(config: Config) -> Result<Self, ConfigError> {
        // A header value cannot hold control characters: refuse them here
        // rather than fail on every response.
        if config.greeting.chars().any(|c| c.is_ascii_control()) {
            return Err(ConfigError::at("/greeting", "holds a control character"));
        }
        weir_sdk::log::info(&format!("configured greeting: {}", config.greeting));
        Ok(Self {
            greeting: config.greeting,
        })
    }

    fn filter(self: &Rc<Self>) -> HelloFilter {
        HelloFilter(Rc::clone(self))
    }
}

/// One request's filter.
struct HelloFilter(Rc<Hello>);

impl Filter for HelloFilter {
    fn on_request_headers(&mut self, http: &mut Http<'_, Self>) -> Outcome {
        if http.path_only()?.as_deref() == Some("/forbidden") {
            return http.deny(403, "forbidden", "this path is forbidden");
        }
        Ok(Flow::Continue)
    }

    fn on_response_headers(&mut self, http: &mut Http<'_, Self>) -> Outcome {
        http.set_response_header("x-hello", &self.0.greeting)?;
        Ok(Flow::Continue)
    }
}

weir_sdk::export!(Hello);

#[cfg(test)]
mod tests {
    //! The same behaviour under `cargo test`, on weir-sdk's test kit.
    use weir_sdk::testing::{Request, Response, TestKit};

    use super::*;

    #[test]
    fn greets_every_response_and_forbids_one_path() {
        let kit = TestKit::<Hello>::configure(r#"{"greeting": "hi"}"#).expect("configured");
        let mut ok = kit.request(Request::get("/"));
        assert_eq!(ok.send_headers(), Flow::Continue);
        ok.respond(Response::new(200));
        assert_eq!(ok.response_header("x-hello").as_deref(), Some("hi"));

        let mut denied = kit.request(Request::get("/forbidden?x=1").header("x-request-id", "r1"));
        assert_eq!(denied.send_headers(), Flow::Pause);
        let reply = denied.local_reply().expect("a 403");
        assert_eq!(reply.status, 403);
        assert_eq!(reply.json()["error"]["request_id"], "r1");
    }

    #[test]
    fn a_greeting_that_is_not_a_string_is_refused_at_its_field() {
        let error = TestKit::<Hello>::configure(r#"{"greeting": null}"#)
            .err()
            .expect("refused");
        assert_eq!(error.pointer, "/greeting");
    }
}
