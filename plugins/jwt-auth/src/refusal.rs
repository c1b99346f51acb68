//! Why a request is refused, and the one place a refusal becomes a response:
//! 401 with an RFC 6750 `WWW-Authenticate: Bearer` challenge (or the
//! anonymous consumer, when the filter has one), 403 for a valid token that
//! lacks a scope or claim, or 503 when the keys to check it are missing.

use weir_sdk::consumers::Auth;
use weir_sdk::{Filter, Http, Outcome};

/// Why a request is refused, in words a client can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No token in the request.
    #[error("missing token")]
    Missing,
    /// Not a compact JWS with a JSON header and claims.
    #[error("the token is malformed")]
    Malformed,
    /// An algorithm (named, or unnamed when the library found it wrong)
    /// the filter does not accept, `none` included, or one the key cannot
    /// verify.
    #[error("{}", algorithm_message(.0))]
    Algorithm(String),
    /// The header names critical extensions.
    #[error("the token names critical header extensions (`crit`), which are not supported")]
    Critical,
    /// No key verifies the signature.
    #[error("the token's signature is invalid")]
    Signature,
    /// No key has the token's `kid`.
    #[error("the token's key `{}` is unknown", safe(.0))]
    UnknownKey(String),
    /// `exp` has passed.
    #[error("the token has expired")]
    Expired,
    /// `nbf` is still ahead.
    #[error("the token is not valid yet")]
    Early,
    /// `iss` is missing or not the configured one.
    #[error("the token's issuer is not accepted")]
    Issuer,
    /// `aud` is missing or names none of the configured audiences.
    #[error("the token's audience is not accepted")]
    Audience,
    /// A claim the filter requires to verify the token (`exp`).
    #[error("the token has no `{0}` claim")]
    MissingClaim(String),
    /// The JWKS could not be fetched and no keys are cached (503).
    #[error("the token cannot be checked now: the signing keys could not be fetched")]
    KeysUnavailable,
    /// The token is valid but no consumer holds its subject.
    #[error("no consumer holds this token's subject")]
    NoConsumer,
    /// The token lacks a required scope (403).
    #[error("the token lacks scope `{}`", safe(.0))]
    Scope(String),
    /// A required claim is missing or has a value not accepted (403).
    #[error("the token's `{}` claim is missing or not accepted", safe(.0))]
    Claim(String),
}

fn algorithm_message(alg: &str) -> String {
    if alg.is_empty() {
        "the token's algorithm is not accepted".to_owned()
    } else {
        format!("the token's algorithm `{}` is not accepted", safe(alg))
    }
}

/// `text` (from a token or the configuration) cut to 64 characters of the
/// set RFC 6750 allows in an `error_description`, minus `` ` `` and space
/// runs: a client cannot make the challenge header or message say much.
fn safe(text: &str) -> String {
    text.chars()
        .filter(|c| matches!(c, '\x21' | '\x23'..='\x5b' | '\x5d'..='\x7e') && *c != '`')
        .take(64)
        .collect()
}

impl Refusal {
    /// Whether this is a 403 (the caller is known but not allowed).
    fn forbids(&self) -> bool {
        matches!(self, Self::Scope(_) | Self::Claim(_))
    }
}

/// Answers the request for `refusal`: a 403 `insufficient_scope` (naming
/// `scopes` when there are any), or else through `auth` (the anonymous
/// consumer, or a 401 with a `Bearer` challenge).
pub fn respond<F: Filter>(
    http: &mut Http<'_, F>,
    auth: &Auth,
    refusal: &Refusal,
    scopes: &str,
) -> Outcome {
    let message = refusal.to_string();
    if *refusal == Refusal::KeysUnavailable {
        // Not the caller's fault, and no guess either way (as key-auth
        // answers when its Redis is down): neither 401 nor anonymous.
        return http.deny(503, "auth_unavailable", &message);
    }
    if refusal.forbids() {
        let mut challenge =
            format!(r#"Bearer error="insufficient_scope", error_description="{message}""#);
        if !scopes.is_empty() {
            challenge.push_str(&format!(r#", scope="{scopes}""#));
        }
        return http.deny_with(
            403,
            "forbidden",
            &message,
            &[("www-authenticate", &challenge)],
        );
    }
    let challenge = match refusal {
        Refusal::Missing => "Bearer".to_owned(),
        _ => format!(r#"Bearer error="invalid_token", error_description="{message}""#),
    };
    auth.refuse(http, &message, &[("www-authenticate", &challenge)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_a_token_cannot_break_the_challenge() {
        let refusal = Refusal::UnknownKey("k\"1\\, error=\"x` y".into());
        assert_eq!(
            refusal.to_string(),
            "the token's key `k1,error=xy` is unknown"
        );
        let long = Refusal::Algorithm("A".repeat(500));
        assert_eq!(
            long.to_string().len(),
            "the token's algorithm `` is not accepted".len() + 64
        );
    }
}
