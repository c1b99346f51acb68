//! `jwt-auth`: lets a request through only with a valid HS256 JSON Web Token.
//!
//! The token comes from `authorization: Bearer <token>` (or a configured
//! header). Signature, `exp` and `nbf` are checked (with `leeway_seconds`), and
//! `iss` / `aud` when configured. A bad or missing token gets a JSON 401. The
//! verified `sub` claim is forwarded in a header.
//!
//! Verified tokens are remembered per VM (up to `cache_size`), as Envoy's
//! `jwt_authn` does: a client that sends the same token again skips the
//! signature check, while `exp` and `nbf` are still checked on every request.
//! The counter `jwt_auth_cache_hits` counts the requests answered that way.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::UNIX_EPOCH;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};
use serde::Deserialize;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// The plugin configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The HMAC secret (HS256).
    secret: String,
    /// Header carrying the token.
    #[serde(default = "default_header")]
    header: String,
    /// Required `iss`.
    #[serde(default)]
    issuer: Option<String>,
    /// Accepted `aud` values (any one).
    #[serde(default)]
    audiences: Vec<String>,
    /// Clock skew allowed for `exp` / `nbf`.
    #[serde(default = "default_leeway")]
    leeway_seconds: u64,
    /// Header the verified `sub` is forwarded in (empty: not forwarded).
    #[serde(default = "default_subject_header")]
    subject_header: String,
    /// Verified tokens remembered per VM (0: verify every request in full).
    #[serde(default = "default_cache_size")]
    cache_size: usize,
}

fn default_cache_size() -> usize {
    1024
}

fn default_header() -> String {
    "authorization".into()
}

fn default_leeway() -> u64 {
    30
}

fn default_subject_header() -> String {
    "x-jwt-sub".into()
}

/// A ready verifier.
struct Verifier {
    config: Config,
    key: jsonwebtoken::DecodingKey,
    validation: jsonwebtoken::Validation,
    /// Tokens whose signature and claims checked out, by their exact text.
    verified: RefCell<HashMap<String, Claims>>,
    /// The `jwt_auth_cache_hits` counter, when the host could define it.
    cache_hits: Option<u32>,
}

impl Verifier {
    /// The claims of `token` if it was verified before and its time window still holds.
    fn remembered(&self, token: &str, now: u64) -> Option<Claims> {
        let mut verified = self.verified.borrow_mut();
        let claims = verified.get(token)?;
        let leeway = self.config.leeway_seconds;
        let expired =
            seconds(claims.exp.as_ref()).is_some_and(|exp| now > exp.saturating_add(leeway));
        let early =
            seconds(claims.nbf.as_ref()).is_some_and(|nbf| now.saturating_add(leeway) < nbf);
        if expired || early {
            // The full check below reports why.
            verified.remove(token);
            return None;
        }
        if let Some(counter) = self.cache_hits {
            let _ = proxy_wasm::hostcalls::increment_metric(counter, 1);
        }
        Some(claims.clone())
    }

    fn remember(&self, token: &str, claims: &Claims) {
        let capacity = self.config.cache_size;
        if capacity == 0 {
            return;
        }
        let mut verified = self.verified.borrow_mut();
        if verified.len() >= capacity
            && let Some(evicted) = verified.keys().next().cloned()
        {
            verified.remove(&evicted);
        }
        verified.insert(token.to_owned(), claims.clone());
    }
}

#[derive(Default)]
struct Root {
    verifier: Option<std::rc::Rc<Verifier>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let config: Config = match serde_json::from_slice(&bytes) {
            Ok(c) => c,
            Err(e) => {
                let _ = proxy_wasm::hostcalls::log(
                    LogLevel::Error,
                    &format!("jwt-auth: bad config: {e}"),
                );
                return false;
            }
        };
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.leeway = config.leeway_seconds;
        validation.validate_nbf = true;
        validation.required_spec_claims.clear();
        if let Some(issuer) = &config.issuer {
            validation.set_issuer(&[issuer]);
        }
        if config.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&config.audiences);
        }
        let key = jsonwebtoken::DecodingKey::from_secret(config.secret.as_bytes());
        self.verifier = Some(std::rc::Rc::new(Verifier {
            config,
            key,
            validation,
            verified: RefCell::new(HashMap::new()),
            cache_hits: proxy_wasm::hostcalls::define_metric(
                MetricType::Counter,
                "jwt_auth_cache_hits",
            )
            .ok(),
        }));
        true
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Check {
            verifier: self.verifier.clone()?,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// The claims Weir reads; others are ignored.
#[derive(Debug, Clone, Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    /// Kept as JSON so any number the library accepts is accepted here too.
    #[serde(default)]
    exp: Option<serde_json::Value>,
    #[serde(default)]
    nbf: Option<serde_json::Value>,
}

/// A NumericDate claim in whole seconds.
fn seconds(claim: Option<&serde_json::Value>) -> Option<u64> {
    claim?.as_f64().map(|s| s as u64)
}

struct Check {
    verifier: std::rc::Rc<Verifier>,
}

impl Context for Check {}

impl Check {
    fn reject(&self, reason: &str) -> Action {
        let body = serde_json::json!({
            "error": { "status": 401, "code": "unauthorized", "message": reason }
        })
        .to_string();
        self.send_http_response(
            401,
            vec![
                ("content-type", "application/json"),
                ("www-authenticate", "Bearer"),
            ],
            Some(body.as_bytes()),
        );
        Action::Pause
    }
}

impl HttpContext for Check {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let v = &self.verifier;
        let Some(value) = self.get_http_request_header(&v.config.header) else {
            return self.reject("missing token");
        };
        let token = value.strip_prefix("Bearer ").unwrap_or(&value).trim();
        let now = self
            .get_current_time()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = match v.remembered(token, now) {
            Some(claims) => claims,
            None => match jsonwebtoken::decode::<Claims>(token, &v.key, &v.validation) {
                Ok(data) => {
                    v.remember(token, &data.claims);
                    data.claims
                }
                Err(e) => return self.reject(&format!("invalid token: {e}")),
            },
        };
        if let (Some(sub), false) = (claims.sub, v.config.subject_header.is_empty()) {
            self.set_http_request_header(&v.config.subject_header, Some(&sub));
        }
        Action::Continue
    }
}
