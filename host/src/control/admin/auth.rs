//! Bearer tokens of the admin API: compared by their SHA-256 digests, in
//! constant time, and checked against the role the endpoint needs.

use aws_lc_rs::constant_time::verify_slices_are_equal;
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
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| Problem::unauthorized("send `Authorization: Bearer <token>`"))?;
    let digest = token_digest(presented.as_bytes());
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
