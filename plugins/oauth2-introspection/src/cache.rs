//! Introspection answers kept in shared data, so every VM of the plugin on
//! this node reuses them. An entry is keyed by a SHA-256 of the token (the
//! token itself is never stored), carries its own deadline (checked on
//! every read, so hosts without TTLs never serve a stale answer) and is
//! given that TTL in Weir, which then evicts it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use weir_sdk::{HostError, HostResult, shared};

use crate::config::Policy;
use crate::introspection::Answer;

/// One cached answer and until when it holds (Unix milliseconds).
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    until_ms: u64,
    answer: Answer,
}

/// The key of `token`'s answer: a digest of the token and of the server
/// and client that answered, so routes that ask other servers (or as
/// other clients) never share answers.
pub fn key(policy: &Policy, token: &str) -> String {
    let mut digest = Sha256::new();
    for part in [&policy.upstream, &policy.path, &policy.client_id] {
        digest.update(part.as_bytes());
        digest.update([0]);
    }
    digest.update(token.as_bytes());
    format!("introspection:{:x}", digest.finalize())
}

/// The answer under `key` if it still holds at `now_ms`.
pub fn get(key: &str, now_ms: u64) -> HostResult<Option<Answer>> {
    let Some(entry) = shared::get(key)? else {
        return Ok(None);
    };
    // An empty or foreign value reads as absent (see `shared::delete`).
    Ok(serde_json::from_slice::<Entry>(&entry.value)
        .ok()
        .filter(|e| now_ms < e.until_ms)
        .map(|e| e.answer))
}

/// How long `answer`, got at `now_ms`, may be kept: an active one up to its
/// `exp` and at most `max_ttl`, an inactive one (or one past its `exp`)
/// for `inactive_ttl`.
pub fn lifetime(policy: &Policy, answer: &Answer, now_ms: u64) -> Duration {
    if !answer.active_at(now_ms / 1000) {
        return policy.inactive_ttl;
    }
    match answer.exp {
        Some(exp) => {
            let left = Duration::from_millis(exp.saturating_mul(1000).saturating_sub(now_ms));
            left.min(policy.max_ttl)
        }
        None => policy.max_ttl,
    }
}

/// Keeps `answer` under `key` for `ttl` from `now_ms` (nothing for zero).
pub fn put(key: &str, answer: &Answer, ttl: Duration, now_ms: u64) -> HostResult<()> {
    if ttl.is_zero() {
        return Ok(());
    }
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let entry = Entry {
        until_ms: now_ms.saturating_add(ttl_ms),
        answer: answer.clone(),
    };
    let value = serde_json::to_vec(&entry).map_err(|_| HostError::SerializationFailure)?;
    shared::set(key, &value, None)?;
    match shared::set_ttl(key, ttl) {
        // A host without TTLs: the entry's own deadline still holds.
        Ok(()) | Err(HostError::NotFound) => Ok(()),
        Err(error) => Err(error),
    }
}
