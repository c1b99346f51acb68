//! `cors`: Cross-Origin Resource Sharing at the gateway. A preflight
//! (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from an
//! allowed origin is answered here with 204 and the `Access-Control-Allow-*`
//! headers; one from anywhere else gets a JSON 403. An actual request from an
//! allowed origin goes upstream and its response gets
//! `Access-Control-Allow-Origin` (and `-Credentials`, `-Expose-Headers`); a
//! request from another origin passes without them, and the browser keeps
//! the response from the page. Responses get `Vary: Origin` unless every
//! origin is allowed alike.

use std::rc::Rc;

use serde::Deserialize;
use weir_sdk::{ConfigError, Filter, Flow, Http, Outcome, Plugin};

/// The plugin configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Origins allowed: `https://app.example.com`, `https://*.example.com`
    /// (any subdomain), or `*` (any origin).
    allow_origins: Vec<String>,
    /// Methods a preflight may ask for.
    #[serde(default = "default_methods")]
    allow_methods: Vec<String>,
    /// Request headers a preflight may ask for (`*`: any).
    #[serde(default)]
    allow_headers: Vec<String>,
    /// Response headers the page may read.
    #[serde(default)]
    expose_headers: Vec<String>,
    /// Whether the page may send cookies and read the answer.
    #[serde(default)]
    allow_credentials: bool,
    /// How long a browser may keep a preflight's answer, in seconds.
    #[serde(default = "default_max_age")]
    max_age: u32,
}

fn default_methods() -> Vec<String> {
    ["GET", "HEAD", "POST"].map(String::from).to_vec()
}

fn default_max_age() -> u32 {
    600
}

/// One entry of `allow_origins`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    /// `*`.
    Any,
    /// An exact origin, lower-cased.
    Exact(String),
    /// `scheme://*.domain[:port]`: any subdomain of `domain`.
    Subdomains {
        /// `scheme://`.
        scheme: String,
        /// `.domain[:port]`.
        suffix: String,
    },
}

impl Origin {
    fn parse(text: &str) -> Result<Self, String> {
        if text == "*" {
            return Ok(Self::Any);
        }
        let lower = text.to_ascii_lowercase();
        let (scheme, rest) = lower
            .split_once("://")
            .ok_or_else(|| format!("`{text}` is not an origin like https://app.example.com"))?;
        if scheme.is_empty() || rest.is_empty() || rest.contains('/') {
            return Err(format!(
                "`{text}` is not an origin like https://app.example.com (no path)"
            ));
        }
        match rest.strip_prefix("*.") {
            Some(domain) if !domain.is_empty() && !domain.contains('*') => Ok(Self::Subdomains {
                scheme: format!("{scheme}://"),
                suffix: format!(".{domain}"),
            }),
            Some(_) => Err(format!("`{text}`: a wildcard needs a domain after `*.`")),
            None if rest.contains('*') => Err(format!(
                "`{text}`: `*` may only start the host (`https://*.example.com`)"
            )),
            None => Ok(Self::Exact(lower)),
        }
    }

    fn allows(&self, origin: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(exact) => origin.eq_ignore_ascii_case(exact),
            Self::Subdomains { scheme, suffix } => {
                let origin = origin.to_ascii_lowercase();
                origin
                    .strip_prefix(scheme.as_str())
                    .and_then(|host| host.strip_suffix(suffix.as_str()))
                    .is_some_and(|label| !label.is_empty() && !label.contains('/'))
            }
        }
    }
}

/// The configured policy.
struct Cors {
    origins: Vec<Origin>,
    /// Whether `*` is allowed, so every origin is answered alike (no `Vary`).
    any_origin: bool,
    methods: Vec<String>,
    headers: Vec<String>,
    any_header: bool,
    expose: String,
    credentials: bool,
    max_age: String,
}

impl Plugin for Cors {
    const NAME: &'static str = "cors";
    type Config = Config;
    type Filter = CorsFilter;

    fn configure(config: Config) -> Result<Self, ConfigError> {
        if config.allow_origins.is_empty() {
            return Err(ConfigError::at(
                "/allow_origins",
                "must name at least one origin",
            ));
        }
        let origins = config
            .allow_origins
            .iter()
            .enumerate()
            .map(|(i, o)| {
                Origin::parse(o).map_err(|e| ConfigError::at(format!("/allow_origins/{i}"), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let any_origin = origins.contains(&Origin::Any);
        if any_origin && config.allow_credentials {
            return Err(ConfigError::at(
                "/allow_credentials",
                "browsers refuse credentials with any origin (`*`): list the origins instead",
            ));
        }
        Ok(Self {
            origins,
            any_origin,
            methods: config
                .allow_methods
                .iter()
                .map(|m| m.to_ascii_uppercase())
                .collect(),
            any_header: config.allow_headers.iter().any(|h| h == "*"),
            headers: config
                .allow_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            expose: config.expose_headers.join(", "),
            credentials: config.allow_credentials,
            max_age: config.max_age.to_string(),
        })
    }

    fn filter(self: &Rc<Self>) -> CorsFilter {
        CorsFilter {
            policy: self.clone(),
            allowed_origin: None,
        }
    }
}

impl Cors {
    /// Whether `origin` may read answers.
    fn allows_origin(&self, origin: &str) -> bool {
        self.origins.iter().any(|o| o.allows(origin))
    }

    /// The `Access-Control-Allow-Origin` value for allowed `origin`.
    fn allow_origin_value<'a>(&self, origin: &'a str) -> &'a str {
        if self.any_origin { "*" } else { origin }
    }

    /// Whether every header of a preflight's `Access-Control-Request-Headers`
    /// is allowed.
    fn allows_headers(&self, requested: &str) -> bool {
        self.any_header
            || requested
                .split(',')
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .all(|h| self.headers.contains(&h))
    }
}

/// One request's CORS handling.
struct CorsFilter {
    policy: Rc<Cors>,
    /// The request's `Origin`, when allowed, for its response.
    allowed_origin: Option<String>,
}

impl CorsFilter {
    fn preflight(&mut self, http: &mut Http<'_, Self>, origin: &str, method: &str) -> Outcome {
        let policy = self.policy.clone();
        let requested_headers = http
            .request_header("access-control-request-headers")?
            .unwrap_or_default();
        let method_allowed = policy
            .methods
            .iter()
            .any(|m| m.eq_ignore_ascii_case(method));
        if !policy.allows_origin(origin) {
            return http.deny(
                403,
                "cors_forbidden",
                &format!("origin `{origin}` is not allowed"),
            );
        }
        if !method_allowed {
            return http.deny(
                403,
                "cors_forbidden",
                &format!("method `{method}` is not allowed"),
            );
        }
        if !policy.allows_headers(&requested_headers) {
            return http.deny(403, "cors_forbidden", "a requested header is not allowed");
        }
        let methods = policy.methods.join(", ");
        let allowed_headers = if policy.any_header {
            requested_headers
        } else {
            policy.headers.join(", ")
        };
        let mut headers = vec![
            (
                "access-control-allow-origin",
                policy.allow_origin_value(origin),
            ),
            ("access-control-allow-methods", methods.as_str()),
            ("access-control-max-age", policy.max_age.as_str()),
        ];
        if !allowed_headers.is_empty() {
            headers.push(("access-control-allow-headers", allowed_headers.as_str()));
        }
        if policy.credentials {
            headers.push(("access-control-allow-credentials", "true"));
        }
        if !policy.any_origin {
            headers.push(("vary", "Origin"));
        }
        http.respond(204, &headers, b"")
    }
}

impl Filter for CorsFilter {
    fn on_request_headers(&mut self, http: &mut Http<'_, Self>) -> Outcome {
        let Some(origin) = http.request_header("origin")? else {
            return Ok(Flow::Continue);
        };
        if http.method()?.as_deref() == Some("OPTIONS")
            && let Some(method) = http.request_header("access-control-request-method")?
        {
            return self.preflight(http, &origin, &method);
        }
        if self.policy.allows_origin(&origin) {
            self.allowed_origin = Some(origin);
        }
        Ok(Flow::Continue)
    }

    fn on_response_headers(&mut self, http: &mut Http<'_, Self>) -> Outcome {
        let policy = self.policy.clone();
        if !policy.any_origin {
            http.add_response_header("vary", "Origin")?;
        }
        let Some(origin) = self.allowed_origin.take() else {
            return Ok(Flow::Continue);
        };
        http.set_response_header(
            "access-control-allow-origin",
            policy.allow_origin_value(&origin),
        )?;
        if policy.credentials {
            http.set_response_header("access-control-allow-credentials", "true")?;
        }
        if !policy.expose.is_empty() {
            http.set_response_header("access-control-expose-headers", &policy.expose)?;
        }
        Ok(Flow::Continue)
    }
}

weir_sdk::export!(Cors);

#[cfg(test)]
mod tests {
    use weir_sdk::testing::{Request, Response, TestKit};

    use super::*;

    const CONFIG: &str = r#"{"allow_origins": ["https://app.example.com", "https://*.example.org"],
        "allow_methods": ["GET", "PUT"], "allow_headers": ["content-type", "x-token"],
        "expose_headers": ["x-total"], "allow_credentials": true, "max_age": 60}"#;

    #[test]
    fn origins_match_exactly_or_by_subdomain() {
        let kit = TestKit::<Cors>::configure(CONFIG).expect("configured");
        let allowed = |origin: &str| {
            let mut exchange = kit.request(
                Request::new("OPTIONS", "/")
                    .header("origin", origin)
                    .header("access-control-request-method", "GET"),
            );
            exchange.send_headers();
            exchange.local_reply().map(|r| r.status) == Some(204)
        };
        assert!(allowed("https://app.example.com"));
        assert!(allowed("HTTPS://APP.EXAMPLE.COM"));
        assert!(allowed("https://a.example.org"));
        assert!(allowed("https://a.b.example.org"));
        assert!(
            !allowed("https://example.org"),
            "the bare domain is no subdomain"
        );
        assert!(!allowed("http://a.example.org"), "the scheme must match");
        assert!(!allowed("https://evil-example.org"));
        assert!(!allowed("https://app.example.com.evil.test"));
        assert!(
            !allowed("https://a.example.org:8443"),
            "the port must match"
        );
    }

    #[test]
    fn a_preflight_is_answered_with_the_policy_and_a_refused_one_with_json() {
        let kit = TestKit::<Cors>::configure(CONFIG).expect("configured");
        let mut ok = kit.request(
            Request::new("OPTIONS", "/items")
                .header("origin", "https://app.example.com")
                .header("access-control-request-method", "PUT")
                .header("access-control-request-headers", "Content-Type, X-Token"),
        );
        assert_eq!(ok.send_headers(), Flow::Pause);
        let reply = ok.local_reply().expect("answered here");
        assert_eq!(reply.status, 204);
        assert_eq!(
            reply.header("access-control-allow-origin"),
            Some("https://app.example.com")
        );
        assert_eq!(
            reply.header("access-control-allow-methods"),
            Some("GET, PUT")
        );
        assert_eq!(
            reply.header("access-control-allow-headers"),
            Some("content-type, x-token")
        );
        assert_eq!(
            reply.header("access-control-allow-credentials"),
            Some("true")
        );
        assert_eq!(reply.header("access-control-max-age"), Some("60"));
        assert_eq!(reply.header("vary"), Some("Origin"));

        for (method, headers) in [("DELETE", "x-token"), ("PUT", "x-other")] {
            let mut refused = kit.request(
                Request::new("OPTIONS", "/items")
                    .header("origin", "https://app.example.com")
                    .header("access-control-request-method", method)
                    .header("access-control-request-headers", headers),
            );
            refused.send_headers();
            let reply = refused.local_reply().expect("refused here");
            assert_eq!(reply.status, 403);
            assert_eq!(reply.json()["error"]["code"], "cors_forbidden");
        }
    }

    #[test]
    fn actual_requests_get_the_headers_only_from_allowed_origins() {
        let kit = TestKit::<Cors>::configure(CONFIG).expect("configured");
        for (origin, allowed) in [
            ("https://app.example.com", true),
            ("https://evil.test", false),
        ] {
            let mut exchange = kit.request(Request::get("/items").header("origin", origin));
            assert_eq!(exchange.send_headers(), Flow::Continue);
            exchange.respond(Response::new(200));
            let header = exchange.response_header("access-control-allow-origin");
            assert_eq!(header.as_deref(), allowed.then_some(origin));
            assert_eq!(exchange.response_header("vary").as_deref(), Some("Origin"));
            let exposed = exchange.response_header("access-control-expose-headers");
            assert_eq!(exposed.as_deref(), allowed.then_some("x-total"));
        }
    }

    #[test]
    fn bad_policies_are_refused_at_their_field() {
        let refused = |config: &str| TestKit::<Cors>::configure(config).err().expect("refused");
        assert_eq!(
            refused(r#"{"allow_origins": []}"#).pointer,
            "/allow_origins"
        );
        assert_eq!(
            refused(r#"{"allow_origins": ["https://a.test", "https://a.test/path"]}"#).pointer,
            "/allow_origins/1"
        );
        assert_eq!(
            refused(r#"{"allow_origins": ["https://x.*.test"]}"#).pointer,
            "/allow_origins/0"
        );
        assert_eq!(
            refused(r#"{"allow_origins": ["*"], "allow_credentials": true}"#).pointer,
            "/allow_credentials"
        );
    }
}
