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
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use jsonwebtoken::errors::ErrorKind;
use serde::Deserialize;
use weir_sdk::metrics::Counter;
use weir_sdk::{ConfigError, Filter, Flow, Http, Outcome, Plugin};

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
    cache_hits: Option<Counter>,
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
            let _ = counter.increment(1);
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

impl Plugin for Verifier {
    const NAME: &'static str = "jwt-auth";
    type Config = Config;
    type Filter = Check;

    fn configure(config: Config) -> Result<Self, ConfigError> {
        if config.secret.is_empty() {
            return Err(ConfigError::at("/secret", "must not be empty"));
        }
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
        Ok(Self {
            config,
            key,
            validation,
            verified: RefCell::new(HashMap::new()),
            cache_hits: Counter::define("jwt_auth_cache_hits").ok(),
        })
    }

    fn filter(self: &Rc<Self>) -> Check {
        Check(self.clone())
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

struct Check(Rc<Verifier>);

/// Why a token was refused, in words a client can act on (never the
/// library's enum names).
fn refusal(error: &jsonwebtoken::errors::Error) -> &'static str {
    match error.kind() {
        ErrorKind::InvalidSignature => "the token's signature is invalid",
        ErrorKind::ExpiredSignature => "the token has expired",
        ErrorKind::ImmatureSignature => "the token is not valid yet",
        ErrorKind::InvalidIssuer => "the token's issuer is not accepted",
        ErrorKind::InvalidAudience => "the token's audience is not accepted",
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            "the token's algorithm is not accepted"
        }
        ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim",
        _ => "the token is malformed",
    }
}

/// Answers 401 with `reason`, and the `WWW-Authenticate` challenge of RFC 6750.
fn reject(http: &mut Http<'_, Check>, reason: &str, challenge: &str) -> Outcome {
    http.deny_with(
        401,
        "unauthorized",
        reason,
        &[("www-authenticate", challenge)],
    )
}

impl Filter for Check {
    fn on_request_headers(&mut self, http: &mut Http<'_, Self>) -> Outcome {
        let v = self.0.clone();
        let Some(value) = http.request_header(&v.config.header)? else {
            return reject(http, "missing token", "Bearer");
        };
        let token = value.strip_prefix("Bearer ").unwrap_or(&value).trim();
        let now = http
            .now()?
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = match v.remembered(token, now) {
            Some(claims) => claims,
            None => match jsonwebtoken::decode::<Claims>(token, &v.key, &v.validation) {
                Ok(data) => {
                    v.remember(token, &data.claims);
                    data.claims
                }
                Err(error) => {
                    return reject(http, refusal(&error), "Bearer error=\"invalid_token\"");
                }
            },
        };
        if let (Some(sub), false) = (claims.sub, v.config.subject_header.is_empty()) {
            http.set_request_header(&v.config.subject_header, &sub)?;
        }
        Ok(Flow::Continue)
    }
}

weir_sdk::export!(Verifier);
