//! `oauth2-introspection`: lets a request through only with an OAuth 2.0
//! bearer token the authorization server says is active (RFC 7662 token
//! introspection), and resolves the caller to a consumer.
//!
//! The token comes from `authorization: Bearer <token>`. The filter POSTs it
//! to the introspection endpoint of a manifest upstream group, with the
//! gateway's client credentials in HTTP Basic, pauses the request, and
//! resumes it with the answer:
//!
//! - no token: 401 `www-authenticate: Bearer` (or the `anonymous` consumer);
//! - an inactive token, or one past its `exp`: 401 `Bearer
//!   error="invalid_token"` (or the `anonymous` consumer);
//! - an active token without every `required_scopes`: 403 `Bearer
//!   error="insufficient_scope"`;
//! - an active token: its consumer (found by `sub` and `iss`, or by
//!   `client_id` as the consumer's name) is named upstream in
//!   `x-consumer-name`, and the configured members are forwarded as headers;
//! - the server unreachable, too slow, answering anything but a 200 with a
//!   JSON `active`: 503 `introspection_unavailable`. The filter fails closed:
//!   no request passes on a token nobody vouched for.
//!
//! Answers are cached in shared data for every VM of the plugin on the node,
//! keyed by a SHA-256 of the token: an active one until its `exp` (at most
//! `cache.max_ttl`), an inactive one for `cache.inactive_ttl`.

mod cache;
mod config;
mod introspection;

use std::rc::Rc;
use std::time::UNIX_EPOCH;

use weir_sdk::consumers::{self, Consumer, Credential};
use weir_sdk::metrics::Counter;
use weir_sdk::{CallResponse, ConfigError, Error, Filter, Flow, HostResult, Http, Outcome, Plugin};

use crate::config::{Config, ConsumerBy, Policy};
use crate::introspection::Answer;

/// The challenge header of RFC 6750 §3.
const WWW_AUTHENTICATE: &str = "www-authenticate";
/// The challenge for a request without a token.
const BEARER: &str = "Bearer";
/// The challenge for a token that is malformed, unknown, inactive or expired.
const INVALID_TOKEN: &str = r#"Bearer error="invalid_token""#;

/// The plugin's counters, when the host could define them.
struct Metrics {
    /// Introspection calls sent.
    calls: Option<Counter>,
    /// Requests decided from a cached answer.
    cache_hits: Option<Counter>,
    /// Requests answered 503 because the server could not be asked.
    failures: Option<Counter>,
}

impl Metrics {
    fn define() -> Self {
        Self {
            calls: Counter::define("oauth2_introspection_calls").ok(),
            cache_hits: Counter::define("oauth2_introspection_cache_hits").ok(),
            failures: Counter::define("oauth2_introspection_failures").ok(),
        }
    }

    fn count(counter: Option<Counter>) {
        if let Some(counter) = counter {
            let _ = counter.increment(1);
        }
    }
}

/// A configured policy and its counters.
struct Introspector {
    policy: Policy,
    metrics: Metrics,
}

impl Plugin for Introspector {
    const NAME: &'static str = "oauth2-introspection";
    type Config = Config;
    type Filter = Check;

    fn configure(config: Config) -> Result<Self, ConfigError> {
        Ok(Self {
            policy: Policy::from_config(config)?,
            metrics: Metrics::define(),
        })
    }

    fn filter(self: &Rc<Self>) -> Check {
        Check(self.clone())
    }
}

/// What a request's `authorization` header presents.
#[derive(Debug, PartialEq, Eq)]
enum Presented<'a> {
    /// No bearer token (no header, or another scheme).
    Nothing,
    /// `Bearer` followed by something that is no token.
    Malformed,
    /// A token (RFC 6750 `b64token`).
    Token(&'a str),
}

impl<'a> Presented<'a> {
    fn of(authorization: Option<&'a str>) -> Self {
        let Some(value) = authorization else {
            return Self::Nothing;
        };
        let value = value.trim();
        let Some((scheme, token)) = value.split_once(' ') else {
            return if value.eq_ignore_ascii_case("bearer") {
                Self::Malformed
            } else {
                Self::Nothing
            };
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Self::Nothing;
        }
        let token = token.trim_start();
        let body = token.trim_end_matches('=');
        let b64token = !body.is_empty()
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
        if b64token {
            Self::Token(token)
        } else {
            Self::Malformed
        }
    }
}

/// The host clock in Unix milliseconds.
fn now_ms(http: &Http<'_, Check>) -> HostResult<u64> {
    Ok(http
        .now()?
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
}

impl Introspector {
    /// Asks the authorization server about `token`; the request waits for
    /// the answer.
    fn introspect(
        self: &Rc<Self>,
        http: &mut Http<'_, Check>,
        token: &str,
        key: String,
    ) -> Outcome {
        let request = introspection::request(&self.policy, token);
        let this = self.clone();
        let started = http.call(&self.policy.upstream, request, move |_, http, result| {
            this.on_answer(http, &key, result)
        });
        match started {
            Ok(()) => {
                Metrics::count(self.metrics.calls);
                Ok(Flow::Pause)
            }
            Err(error) => self.unavailable(
                http,
                &format!(
                    "cannot call upstream `{}` ({error}): is it a group of the manifest?",
                    self.policy.upstream
                ),
            ),
        }
    }

    /// The server's answer to the call for the token under `key`.
    fn on_answer(
        &self,
        http: &mut Http<'_, Check>,
        key: &str,
        result: Result<CallResponse, Error>,
    ) -> Outcome {
        let response = match result {
            Ok(response) => response,
            Err(error) => return self.unavailable(http, &error.to_string()),
        };
        if response.status != 200 {
            return self.unavailable(
                http,
                &format!("the authorization server answered {}", response.status),
            );
        }
        let answer = match Answer::parse(&response.body, self.policy.members()) {
            Ok(answer) => answer,
            Err(error) => return self.unavailable(http, &error.to_string()),
        };
        let now = now_ms(http)?;
        let ttl = cache::lifetime(&self.policy, &answer, now);
        if let Err(error) = cache::put(key, &answer, ttl, now) {
            http.warn(&format!("cannot cache the introspection answer: {error}"));
        }
        self.decide(http, &answer, now)
    }

    /// Lets the request through, or not, on `answer` at `now` (ms).
    fn decide(&self, http: &mut Http<'_, Check>, answer: &Answer, now: u64) -> Outcome {
        let policy = &self.policy;
        if !answer.active_at(now / 1000) {
            return policy.auth.refuse(
                http,
                "the token is not active",
                &[(WWW_AUTHENTICATE, INVALID_TOKEN)],
            );
        }
        let scopes = answer.scopes();
        if let Some(missing) = policy
            .required_scopes
            .iter()
            .find(|s| !scopes.contains(&s.as_str()))
        {
            let challenge = format!(
                r#"Bearer error="insufficient_scope", scope="{}""#,
                policy.required_scopes.join(" ")
            );
            return http.deny_with(
                403,
                "insufficient_scope",
                &format!("the token lacks scope `{missing}`"),
                &[(WWW_AUTHENTICATE, &challenge)],
            );
        }
        let consumer = self.consumer_of(answer)?;
        if consumer.is_none() && policy.consumer_required {
            return policy.auth.refuse(
                http,
                "the token belongs to no consumer",
                &[(WWW_AUTHENTICATE, INVALID_TOKEN)],
            );
        }
        for (member, header) in &policy.forward {
            if let Some(value) = answer.header_value(member) {
                http.set_request_header(header, &value)?;
            }
        }
        match consumer {
            Some(consumer) => policy.auth.admit(http, &consumer),
            None => {
                policy.auth.admit_without_consumer(http)?;
                Ok(Flow::Continue)
            }
        }
    }

    /// The consumer an active answer names, if any.
    fn consumer_of(&self, answer: &Answer) -> HostResult<Option<Consumer>> {
        match self.policy.consumer_by {
            ConsumerBy::Sub => match answer.text("sub") {
                Some(subject) => consumers::find(Credential::Subject {
                    issuer: answer.text("iss"),
                    subject,
                }),
                None => Ok(None),
            },
            ConsumerBy::ClientId => match answer.text("client_id") {
                Some(client_id) => consumers::find(Credential::Name(client_id)),
                None => Ok(None),
            },
        }
    }

    /// The token could not be checked (`why`, logged): 503, never a pass.
    fn unavailable(&self, http: &mut Http<'_, Check>, why: &str) -> Outcome {
        Metrics::count(self.metrics.failures);
        http.warn(&format!("token introspection failed: {why}"));
        http.deny(
            503,
            "introspection_unavailable",
            "the token could not be checked; try again later",
        )
    }
}

/// One request's check.
struct Check(Rc<Introspector>);

impl Filter for Check {
    fn on_request_headers(&mut self, http: &mut Http<'_, Self>) -> Outcome {
        let plugin = self.0.clone();
        let policy = &plugin.policy;
        // Only this filter sets them: a client's own copies never pass.
        for (_, header) in &policy.forward {
            http.remove_request_header(header)?;
        }
        if policy.auth.already_identified(http)? {
            return Ok(Flow::Continue);
        }
        let authorization = http.request_header("authorization")?;
        let token = match Presented::of(authorization.as_deref()) {
            Presented::Token(token) => token,
            Presented::Nothing => {
                return policy
                    .auth
                    .refuse(http, "missing token", &[(WWW_AUTHENTICATE, BEARER)]);
            }
            Presented::Malformed => {
                return policy.auth.refuse(
                    http,
                    "the token is malformed",
                    &[(WWW_AUTHENTICATE, INVALID_TOKEN)],
                );
            }
        };
        let now = now_ms(http)?;
        let key = cache::key(policy, token);
        match cache::get(&key, now) {
            Ok(Some(answer)) => {
                Metrics::count(plugin.metrics.cache_hits);
                return plugin.decide(http, &answer, now);
            }
            Ok(None) => {}
            Err(error) => http.warn(&format!("cannot read the introspection cache: {error}")),
        }
        plugin.introspect(http, token, key)
    }
}

weir_sdk::export!(Introspector);

#[cfg(test)]
mod tests;
