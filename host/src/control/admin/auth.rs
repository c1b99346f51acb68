//! Bearer tokens of the admin API: compared by their SHA-256 digests, in
//! constant time, and checked against the role the endpoint needs. A token
//! may also come as the password of Basic credentials (any user name), which
//! is all a browser can send by itself.

use aws_lc_rs::constant_time::verify_slices_are_equal;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use http::header::AUTHORIZATION;

use super::problem::Problem;
use crate::config::model::{AdminRole, AdminToken};
use crate::config::token_digest;

/// What an endpoint needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Any valid token.
    Read,
    /// A token with the `admin` role.
    Admin,
}

/// Lets the request through when its token may have `needs`; with no tokens
/// configured (a loopback-only admin API) everyone may.
pub fn check(tokens: &[AdminToken], headers: &HeaderMap, needs: Access) -> Result<(), Problem> {
    if tokens.is_empty() {
        return Ok(());
    }
    let presented = presented(headers).ok_or_else(|| {
        Problem::unauthorized(
            "send `Authorization: Bearer <token>` (or Basic, with the token as the password)",
        )
    })?;
    let digest = token_digest(&presented);
    // Every token is compared, so the time taken does not say which matched.
    let matched = tokens.iter().fold(None, |found, token| {
        let equal = verify_slices_are_equal(&token.sha256, &digest).is_ok();
        found.or(equal.then_some(token))
    });
    let token = matched.ok_or_else(|| Problem::unauthorized("the token is not valid"))?;
    match (needs, token.role) {
        (Access::Admin, AdminRole::ReadOnly) => Err(Problem::forbidden(&format!(
            "token `{}` is read-only; changes need an `admin` token",
            token.name
        ))),
        _ => Ok(()),
    }
}

/// The token an `Authorization` header presents: a bearer token, or the
/// password of Basic credentials. Scheme names are case-insensitive.
fn presented(headers: &HeaderMap) -> Option<Vec<u8>> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, credentials) = value.split_once(' ')?;
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        Some(credentials.as_bytes().to_vec())
    } else if scheme.eq_ignore_ascii_case("basic") {
        let pair = STANDARD.decode(credentials).ok()?;
        let colon = pair.iter().position(|&b| b == b':')?;
        Some(pair[colon + 1..].to_vec())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, value.parse().expect("a header value"));
        headers
    }

    #[test]
    fn a_token_comes_as_a_bearer_or_as_a_basic_password() {
        assert_eq!(presented(&with("Bearer s3cret")), Some(b"s3cret".to_vec()));
        assert_eq!(
            presented(&with("bearer  s3cret ")),
            Some(b"s3cret".to_vec())
        );
        let basic = format!("Basic {}", STANDARD.encode("anyone:s3:cret"));
        assert_eq!(presented(&with(&basic)), Some(b"s3:cret".to_vec()));
        let no_colon = format!("Basic {}", STANDARD.encode("s3cret"));
        assert_eq!(presented(&with(&no_colon)), None);
        assert_eq!(presented(&with("Basic !!!")), None);
        assert_eq!(presented(&with("Digest s3cret")), None);
        assert_eq!(presented(&HeaderMap::new()), None);
    }
}
