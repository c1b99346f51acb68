//! `header-rewrite`: sets, appends and removes request and response headers.

use std::rc::Rc;

use serde::Deserialize;
use weir_sdk::headers::{HeaderEdit, Side};
use weir_sdk::{ConfigError, Filter, Flow, Http, Outcome, Plugin};

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

impl Edits {
    /// The edits in the order they apply.
    fn in_order(self) -> Vec<HeaderEdit<String>> {
        let removed = self
            .remove
            .into_iter()
            .map(|name| HeaderEdit::Remove { name });
        let set = (self.set.into_iter()).map(|(name, value)| HeaderEdit::Set { name, value });
        let added = (self.add.into_iter()).map(|(name, value)| HeaderEdit::Append { name, value });
        removed.chain(set).chain(added).collect()
    }
}

/// The plugin configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    request: Edits,
    response: Edits,
}

struct HeaderRewrite {
    request: Vec<HeaderEdit<String>>,
    response: Vec<HeaderEdit<String>>,
}

impl Plugin for HeaderRewrite {
    const NAME: &'static str = "header-rewrite";
    type Config = Config;
    type Filter = Rewrite;

    fn configure(config: Config) -> Result<Self, ConfigError> {
        Ok(Self {
            request: config.request.in_order(),
            response: config.response.in_order(),
        })
    }

    fn filter(self: &Rc<Self>) -> Rewrite {
        Rewrite(self.clone())
    }
}

struct Rewrite(Rc<HeaderRewrite>);

impl Filter for Rewrite {
    fn on_request_headers(&mut self, http: &mut Http<'_, Self>) -> Outcome {
        http.edit_headers(Side::Request, &self.0.request, |v| Some(v.clone()))?;
        Ok(Flow::Continue)
    }

    fn on_response_headers(&mut self, http: &mut Http<'_, Self>) -> Outcome {
        http.edit_headers(Side::Response, &self.0.response, |v| Some(v.clone()))?;
        Ok(Flow::Continue)
    }
}

weir_sdk::export!(HeaderRewrite);

#[cfg(test)]
mod tests {
    use weir_sdk::testing::{Request, Response, TestKit};

    use super::*;

    #[test]
    fn removes_then_sets_then_adds_on_both_sides() {
        let kit = TestKit::<HeaderRewrite>::configure(
            r#"{"request": {"remove": ["cookie", "x-env"], "set": [["x-env", "prod"]], "add": [["x-tag", "a"]]},
                "response": {"set": [["x-served-by", "weir"]], "remove": ["server"]}}"#,
        )
        .expect("configured");
        let mut exchange = kit.request(
            Request::get("/")
                .header("cookie", "s=1")
                .header("x-env", "dev"),
        );
        assert_eq!(exchange.send_headers(), Flow::Continue);
        assert_eq!(exchange.request_header("cookie"), None);
        assert_eq!(exchange.request_header("x-env").as_deref(), Some("prod"));
        assert_eq!(exchange.request_header("x-tag").as_deref(), Some("a"));
        exchange.respond(Response::new(200).header("server", "app"));
        assert_eq!(exchange.response_header("server"), None);
        assert_eq!(
            exchange.response_header("x-served-by").as_deref(),
            Some("weir")
        );
    }

    #[test]
    fn refuses_unknown_edits_at_their_place() {
        let Err(error) = TestKit::<HeaderRewrite>::configure(r#"{"request": {"rename": []}}"#)
        else {
            panic!("accepted an unknown field");
        };
        assert_eq!(error.pointer, "/request/rename");
    }
}
