//! `jwt-auth`: lets a request through only with a valid JSON Web Token, and
//! identifies its caller.
//!
//! The token comes from `authorization: Bearer <token>` (or a configured
//! header). Its signature is checked with inline keys (an HMAC `secret`,
//! JWKs, PEM public keys) or a JWKS fetched through an upstream group
//! ([`jwks`]), in HS256/384/512, RS256/384/512, PS256/384/512, ES256/384 or
//! EdDSA; then `exp` and `nbf` (with leeway), `iss` and `aud` when
//! configured, and the route's required scopes and claims. A bad or missing
//! token gets a JSON 401 with a `WWW-Authenticate: Bearer` challenge (or the
//! anonymous consumer); a valid one without a required scope or claim a 403.
//!
//! A valid token's subject (`sub`, with its `iss`) names a consumer of the
//! manifest, forwarded upstream in `x-consumer-name`; chosen claims go
//! upstream as headers, and all of them are left in request property
//! `weir.jwt_claims` (a JSON object) for later filters.
//!
//! Verified tokens are remembered per VM (up to `cache_size`), as Envoy's
//! `jwt_authn` does: a client that sends the same token again skips the
//! signature check, while `exp` and `nbf` are still checked on every request.
//! The counter `jwt_auth_cache_hits` counts the requests answered that way.

mod cache;
mod config;
mod jwks;
mod keys;
mod policy;
mod refusal;
mod token;

use std::rc::Rc;
use std::time::UNIX_EPOCH;

use jsonwebtoken::{Algorithm, Validation};
use weir_sdk::consumers::{self, Auth, Credential};
use weir_sdk::metrics::Counter;
use weir_sdk::{ConfigError, Filter, Flow, Http, Outcome, Plugin};

use crate::cache::{Cache, Verified};
use crate::config::Config;
use crate::jwks::{Jwks, Keys};
use crate::keys::{KeySet, Pick};
use crate::policy::{ClaimPath, Requirements};
use crate::refusal::{Refusal, respond};
use crate::token::Window;

/// The request property the verified claims are left in.
const CLAIMS: [&str; 2] = ["weir", "jwt_claims"];

/// How many times one request waits for a JWKS fetch.
const MAX_WAITS: u8 = 2;

/// A configured verifier.
struct JwtAuth {
    header: String,
    inline: KeySet,
    jwks: Option<Rc<Jwks>>,
    /// The `iss`/`aud` checks, one per accepted algorithm.
    validations: Vec<(Algorithm, Validation)>,
    leeway: u64,
    require_exp: bool,
    requirements: Requirements,
    /// The required scopes, space-separated (for a 403's challenge).
    scopes: String,
    forward: Vec<(ClaimPath, String)>,
    cache: Cache,
    /// The `jwt_auth_cache_hits` counter, when the host could define it.
    cache_hits: Option<Counter>,
    auth: Auth,
    consumer_required: bool,
}

impl Plugin for JwtAuth {
    const NAME: &'static str = "jwt-auth";
    type Config = Config;
    type Filter = Check;

    fn configure(config: Config) -> Result<Self, ConfigError> {
        let settings = config.check()?;
        let jwks = settings
            .jwks
            .map(|source| {
                Jwks::new(source)
                    .map(Rc::new)
                    .map_err(|e| ConfigError::at("/jwks", format!("cannot ask for ticks: {e}")))
            })
            .transpose()?;
        let validations = settings
            .algorithms
            .iter()
            .map(|alg| {
                let validation =
                    token::validation(*alg, settings.issuer.as_deref(), &settings.audiences);
                (*alg, validation)
            })
            .collect();
        Ok(Self {
            header: settings.header,
            inline: settings.inline,
            jwks,
            validations,
            leeway: settings.leeway,
            require_exp: settings.require_exp,
            scopes: settings.requirements.scopes.join(" "),
            requirements: settings.requirements,
            forward: settings.forward,
            cache: Cache::new(settings.cache_size),
            cache_hits: Counter::define("jwt_auth_cache_hits").ok(),
            auth: settings.auth,
            consumer_required: settings.consumer_required,
        })
    }

    fn filter(self: &Rc<Self>) -> Check {
        Check {
            plugin: self.clone(),
            token: String::new(),
            waits: 0,
        }
    }

    fn on_tick(self: &Rc<Self>) {
        if let Some(jwks) = &self.jwks {
            jwks.tick();
        }
    }
}

/// Why verification stopped short of claims.
enum Stop {
    /// Refuse the request.
    Refuse(Refusal),
    /// Wait for a JWKS fetch, then verify again.
    Wait,
}

impl From<Refusal> for Stop {
    fn from(refusal: Refusal) -> Self {
        Self::Refuse(refusal)
    }
}

impl JwtAuth {
    /// Verifies `token` at `now_ms`: from the cache, or in full.
    fn verify(&self, token: &str, now_ms: u64, may_wait: bool) -> Result<Rc<Verified>, Stop> {
        let now = now_ms / 1_000;
        if let Some(verified) = self.cache.get(token) {
            if verified
                .window
                .check(now, self.leeway, self.require_exp)
                .is_ok()
            {
                if let Some(counter) = self.cache_hits {
                    let _ = counter.increment(1);
                }
                return Ok(verified);
            }
            // The full check below says why.
            self.cache.forget(token);
        }
        let header = token::header(token)?;
        let alg_name = format!("{:?}", header.alg);
        let Some((_, validation)) = self.validations.iter().find(|(a, _)| *a == header.alg) else {
            return Err(Refusal::Algorithm(alg_name).into());
        };
        let kid = header.kid.as_deref();
        // Inline keys first; the JWKS for a `kid` they do not know.
        let remote;
        let keys = match (self.inline.pick(kid, header.alg), &self.jwks) {
            (Pick::Keys(keys), _) => keys,
            (Pick::Algorithm, _) => return Err(Refusal::Algorithm(alg_name).into()),
            (Pick::UnknownKid, None) => return Err(unknown(kid).into()),
            (Pick::UnknownKid, Some(jwks)) => {
                remote = match jwks.keys(kid, now_ms, may_wait) {
                    Keys::Ready(keys) => keys,
                    Keys::Wait => return Err(Stop::Wait),
                    Keys::Unavailable => return Err(Refusal::KeysUnavailable.into()),
                };
                match remote.pick(kid, header.alg) {
                    Pick::Keys(keys) => keys,
                    Pick::Algorithm => return Err(Refusal::Algorithm(alg_name).into()),
                    Pick::UnknownKid => return Err(unknown(kid).into()),
                }
            }
        };
        let claims = token::verify(token, &keys, validation)?;
        let window = Window::of(&claims)?;
        window.check(now, self.leeway, self.require_exp)?;
        let verified = Rc::new(Verified { claims, window });
        self.cache.remember(token, verified.clone());
        Ok(verified)
    }
}

/// No key answers to `kid` (a token without one: no key at all).
fn unknown(kid: Option<&str>) -> Refusal {
    kid.map_or(Refusal::Signature, |kid| {
        Refusal::UnknownKey(kid.to_owned())
    })
}

/// The bearer token in header value `value`: after `Bearer ` (any case), or
/// the whole value when it has no scheme; `None` for another scheme.
fn bearer(value: &str) -> Option<&str> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = match value.split_once(char::is_whitespace) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        Some(_) => return None,
        None => value,
    };
    (!token.is_empty()).then_some(token)
}

/// One request's check.
struct Check {
    plugin: Rc<JwtAuth>,
    /// The request's token, kept while it waits for keys.
    token: String,
    /// How many times it waited.
    waits: u8,
}

impl Check {
    /// Verifies the token and admits, refuses or parks the request.
    fn authenticate(&mut self, http: &mut Http<'_, Self>) -> Outcome {
        let plugin = self.plugin.clone();
        let now_ms = http
            .now()?
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        match plugin.verify(&self.token, now_ms, self.waits < MAX_WAITS) {
            Ok(verified) => self.admit(http, &verified),
            Err(Stop::Refuse(refusal)) => respond(http, &plugin.auth, &refusal, &plugin.scopes),
            Err(Stop::Wait) => {
                self.waits += 1;
                let event = plugin.jwks.as_ref().map_or("", |j| j.event());
                http.wait(event, |check, http| check.authenticate(http));
                Ok(Flow::Pause)
            }
        }
    }

    /// Lets a request with a verified token through: requirements, then
    /// the consumer, the forwarded claims and the claims property.
    fn admit(&mut self, http: &mut Http<'_, Self>, verified: &Verified) -> Outcome {
        let plugin = self.plugin.clone();
        let claims = &verified.claims;
        if let Err(refusal) = plugin.requirements.check(claims) {
            return respond(http, &plugin.auth, &refusal, &plugin.scopes);
        }
        let text = |name: &str| claims.get(name).and_then(|v| v.as_str());
        let consumer = match text("sub") {
            Some(subject) => consumers::find(Credential::Subject {
                issuer: text("iss"),
                subject,
            })?,
            None => None,
        };
        match consumer {
            Some(consumer) => {
                plugin.auth.admit(http, &consumer)?;
            }
            None if plugin.consumer_required => {
                return respond(http, &plugin.auth, &Refusal::NoConsumer, &plugin.scopes);
            }
            None => plugin.auth.admit_without_consumer(http)?,
        }
        for (path, header) in &plugin.forward {
            if let Some(value) = path.find(claims).and_then(policy::header_value) {
                http.set_request_header(header, &value)?;
            }
        }
        let property =
            serde_json::to_vec(claims).map_err(|e| weir_sdk::Error::msg(e.to_string()))?;
        http.set_property(&CLAIMS, &property)?;
        Ok(Flow::Continue)
    }
}

impl Filter for Check {
    fn on_request_headers(&mut self, http: &mut Http<'_, Self>) -> Outcome {
        let plugin = self.plugin.clone();
        if http.property(&CLAIMS)?.is_some() {
            // An earlier jwt-auth filter verified a token and set the headers.
            return Ok(Flow::Continue);
        }
        // Headers this filter sets are never the client's.
        for (_, header) in &plugin.forward {
            http.remove_request_header(header)?;
        }
        if plugin.auth.already_identified(http)? {
            return Ok(Flow::Continue);
        }
        let value = http.request_header(&plugin.header)?.unwrap_or_default();
        let Some(token) = bearer(&value) else {
            return respond(http, &plugin.auth, &Refusal::Missing, &plugin.scopes);
        };
        self.token = token.to_owned();
        self.authenticate(http)
    }
}

weir_sdk::export!(JwtAuth);

#[cfg(test)]
mod tests;
