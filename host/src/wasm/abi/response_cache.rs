//! The `weir.cache_*` foreign functions: a filter's view of the host's
//! response cache ([`crate::services::response_cache`]). Arguments are JSON
//! (`cache_store` adds the body after it); keys are the plugin's own.
//!
//! | function | arguments | answer |
//! |---|---|---|
//! | `weir.cache_lookup` | `{"key", "redis"?, "serve_fresh"?: [[name, value]]}` | the entry's [`Found`] (no body); with `serve_fresh`, an entry still within its `fresh_ms` is sent at once instead (with its `age` and those headers) and the answer is `{"served": true}`; with `redis`, a local miss answers `{"pending": token}` and the entry (or nil) arrives as that token's Redis-call answer; `NOT_FOUND` otherwise |
//! | `weir.cache_respond` | `{"key", "headers"?: [[name, value]], "status"?}` | answers the request with the entry, its body never entering the guest; `headers` replace the stored ones of the same name; `NOT_FOUND` when it is gone |
//! | `weir.cache_store` | length of the JSON (u32 LE), `{"key", "ttl_ms", "status", "headers", "meta", "fresh_ms"?, "age_offset_ms"?, "redis"?, "keep_body"?}`, then the body | stores the response (`keep_body`: with the body stored now, for a revalidated entry); `BAD_ARGUMENT` when too large |
//! | `weir.cache_claim_refresh` | `{"key", "ms"}` | `OK` for the one caller that refreshes the entry in the next `ms`, `CAS_MISMATCH` for the others, `NOT_FOUND` without entry |

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::services::{CalloutKind, has_callout_room, launch, reserve_token};
use super::{Status, stream_in};
use crate::exchange::{LocalReply, StreamData};
use crate::services::response_cache::{Entry, Head, now_ms, tier};
use crate::wasm::vm::VmState;

/// The longest key a plugin may use.
const MAX_KEY_BYTES: usize = 4096;

/// What a lookup answers: the entry without its body.
#[derive(Serialize)]
struct Found<'a> {
    status: u16,
    headers: &'a [(String, String)],
    meta: &'a serde_json::Value,
    /// Milliseconds since it was stored.
    age_ms: u64,
    /// Body bytes.
    size: usize,
}

fn found(entry: &Entry) -> Vec<u8> {
    serde_json::to_vec(&Found {
        status: entry.head.status,
        headers: &entry.head.headers,
        meta: &entry.head.meta,
        age_ms: entry.head.stored_for(now_ms()),
        size: entry.body.len(),
    })
    .unwrap_or_default()
}

fn key_of(key: String) -> Result<String, Status> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(Status::BadArgument);
    }
    Ok(key)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Lookup {
    key: String,
    #[serde(default)]
    redis: Option<String>,
    #[serde(default)]
    serve_fresh: Option<Vec<(String, String)>>,
}

/// `weir.cache_lookup`.
pub(super) fn lookup(state: &mut VmState, args: &[u8]) -> Result<Vec<u8>, Status> {
    let Lookup {
        key,
        redis,
        serve_fresh,
    } = serde_json::from_slice(args).map_err(|_| Status::BadArgument)?;
    let key = key_of(key)?;
    // The plugin's `Arc`, not a copy of its name: this is a hit's hot path.
    let owner = state.plugin.clone();
    let plugin = owner.name.as_str();
    if let Some(entry) = state.services.response_cache.get(plugin, &key) {
        let now = now_ms();
        if let Some(headers) = serve_fresh
            && entry.head.fresh(now)
            && let Some(stream) = stream_in(state).filter(|s| !s.response_sent)
        {
            let age = ("age".to_owned(), entry.head.age_seconds(now).to_string());
            reply_with(
                stream,
                &entry,
                entry.head.status,
                [age].into_iter().chain(headers),
            );
            return Ok(br#"{"served":true}"#.to_vec());
        }
        return Ok(found(&entry));
    }
    let Some(service) = redis else {
        return Err(Status::NotFound);
    };
    if !has_callout_room(state) {
        return Err(Status::BadArgument);
    }
    let fetch =
        tier::fetch(&state.services, &service, plugin, &key).map_err(|_| Status::BadArgument)?;
    let reserved = reserve_token(state, CalloutKind::Redis)?;
    let token = reserved.token;
    launch(reserved, async move {
        Ok::<_, String>(match fetch.await? {
            Some(entry) => {
                let answer = found(&entry);
                crate::services::redis::encode(&redis::Value::BulkString(answer))
            }
            None => crate::services::redis::encode(&redis::Value::Nil),
        })
    });
    Ok(serde_json::to_vec(&serde_json::json!({ "pending": token })).unwrap_or_default())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Respond {
    key: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    status: Option<u16>,
}

/// `weir.cache_respond`.
pub(super) fn respond(state: &mut VmState, args: &[u8]) -> Result<Vec<u8>, Status> {
    let Respond {
        key,
        headers,
        status,
    } = serde_json::from_slice(args).map_err(|_| Status::BadArgument)?;
    let owner = state.plugin.clone();
    let plugin = owner.name.as_str();
    let entry = state
        .services
        .response_cache
        .get(plugin, &key)
        .ok_or(Status::NotFound)?;
    let status = status.unwrap_or(entry.head.status);
    if !(200..=599).contains(&status) {
        return Err(Status::BadArgument);
    }
    let stream = stream_in(state)
        .filter(|s| !s.response_sent)
        .ok_or(Status::BadArgument)?;
    reply_with(stream, &entry, status, headers);
    Ok(Vec::new())
}

/// Answers `stream` with `entry` as `status`, `headers` replacing the
/// stored ones of the same name.
fn reply_with(
    stream: &mut StreamData,
    entry: &Entry,
    status: u16,
    headers: impl IntoIterator<Item = (String, String)>,
) {
    let headers: Vec<(String, String)> = headers.into_iter().collect();
    let replaced = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut reply_headers: Vec<(String, Vec<u8>)> = entry
        .head
        .headers
        .iter()
        .filter(|(name, _)| !replaced(name))
        .map(|(name, value)| (name.clone(), value.clone().into_bytes()))
        .collect();
    reply_headers.extend(headers.into_iter().map(|(n, v)| (n, v.into_bytes())));
    stream.local_reply = Some(LocalReply {
        status,
        headers: reply_headers,
        body: entry.body.clone(),
        details: "cache_hit".into(),
    });
    stream.resume.wake();
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Store {
    key: String,
    ttl_ms: u64,
    status: u16,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    meta: serde_json::Value,
    #[serde(default)]
    fresh_ms: Option<u64>,
    #[serde(default)]
    age_offset_ms: u64,
    #[serde(default)]
    redis: Option<String>,
    #[serde(default)]
    keep_body: bool,
}

/// `weir.cache_store`.
pub(super) fn store(state: &mut VmState, args: &[u8]) -> Result<Vec<u8>, Status> {
    let (len, rest) = args.split_first_chunk::<4>().ok_or(Status::BadArgument)?;
    let len = usize::try_from(u32::from_le_bytes(*len)).map_err(|_| Status::BadArgument)?;
    let (json, body) = (
        rest.get(..len).ok_or(Status::BadArgument)?,
        rest.get(len..).ok_or(Status::BadArgument)?,
    );
    let Store {
        key,
        ttl_ms,
        status,
        headers,
        meta,
        fresh_ms,
        age_offset_ms,
        redis,
        keep_body,
    } = serde_json::from_slice(json).map_err(|_| Status::BadArgument)?;
    let key = key_of(key)?;
    let owner = state.plugin.clone();
    let plugin = owner.name.as_str();
    let cache = &state.services.response_cache;
    let body = if keep_body {
        cache
            .get(plugin, &key)
            .ok_or(Status::NotFound)?
            .body
            .clone()
    } else {
        Bytes::copy_from_slice(body)
    };
    let head = Head {
        status,
        headers,
        meta,
        stored_ms: now_ms(),
        ttl_ms,
        fresh_ms,
        age_offset_ms,
    };
    let entry = Entry::new(head, body).ok_or(Status::BadArgument)?;
    if redis
        .as_ref()
        .is_some_and(|service| !state.services.redis.has(service))
    {
        return Err(Status::BadArgument);
    }
    let entry = cache
        .insert(plugin, &key, entry)
        .ok_or(Status::BadArgument)?;
    if let Some(service) = &redis {
        tier::store(&state.services, service, plugin, &key, &entry);
    }
    Ok(Vec::new())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Claim {
    key: String,
    ms: u64,
}

/// `weir.cache_claim_refresh`.
pub(super) fn claim_refresh(state: &mut VmState, args: &[u8]) -> Result<Vec<u8>, Status> {
    let Claim { key, ms } = serde_json::from_slice(args).map_err(|_| Status::BadArgument)?;
    let owner = state.plugin.clone();
    let plugin = owner.name.as_str();
    let cache = &state.services.response_cache;
    if cache.get(plugin, &key).is_none() {
        return Err(Status::NotFound);
    }
    if cache.claim_refresh(plugin, &key, Duration::from_millis(ms)) {
        Ok(Vec::new())
    } else {
        Err(Status::CasMismatch)
    }
}
