//! Weir's response cache (`weir.cache_*`): whole responses kept by the host,
//! in memory and, when a Redis service is named, in Redis for every node.
//!
//! A filter decides what to keep and for how long; the host keeps it. A hit
//! is answered with [`Http::cache_respond`]: the host sends the stored
//! response itself, so its body never enters the filter. Each entry carries
//! the filter's own metadata (validators, freshness, variants), handed back
//! by [`Http::cache_lookup`] untouched.
//!
//! Keys are the filter's; entries are kept apart per plugin. Weir's admin
//! API purges by key, key prefix, or route: begin keys with the route name
//! and a space (`"shop GET example.com/items?page=2"`) for route purges to
//! find them.
//!
//! Weir only; other hosts answer these functions `NOT_FOUND`, which
//! [`Http::cache_lookup`] reports as a miss and [`store`] as
//! [`HostError::NotFound`](crate::HostError::NotFound).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::host;
use crate::http::{Answer, Ticket};
use crate::redis::RedisValue;
use crate::status::{HostError, HostResult};
use crate::{Filter, Flow, Http, Outcome};

/// A stored response, as a lookup finds it (its body stays in the host).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Cached {
    /// Status code.
    pub status: u16,
    /// Headers, as stored.
    pub headers: Vec<(String, String)>,
    /// The metadata it was stored with.
    #[serde(default)]
    pub meta: serde_json::Value,
    /// Milliseconds since it was stored.
    pub age_ms: u64,
    /// Body bytes.
    pub size: usize,
}

impl Cached {
    /// The first stored value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What [`Http::cache_lookup`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// The entry, from this node's memory.
    Found(Cached),
    /// No entry.
    Missing,
    /// Not in memory; Redis is being asked and the continuation runs with
    /// its answer. Return [`Flow::Pause`].
    Pending,
    /// Fresh, and already sent by the host (asked with `serve_fresh`).
    /// Return [`Flow::Pause`].
    Served,
}

/// A response to store with [`store`].
#[derive(Debug, Clone, Serialize)]
pub struct Entry<'a> {
    /// The key (see the module's notes on route purges).
    pub key: &'a str,
    /// How long the host keeps it (fresh, stale and revalidation time together).
    #[serde(rename = "ttl_ms", serialize_with = "as_millis")]
    pub keep_for: Duration,
    /// Status code.
    pub status: u16,
    /// Headers to serve it with.
    pub headers: &'a [(String, String)],
    /// The filter's own metadata, handed back by lookups.
    pub meta: &'a serde_json::Value,
    /// How long a lookup with `serve_fresh` may send it at once.
    #[serde(rename = "fresh_ms", serialize_with = "as_optional_millis")]
    pub fresh_for: Option<Duration>,
    /// Its age when stored, added to its time in the cache for `age`.
    #[serde(rename = "age_offset_ms", serialize_with = "as_millis")]
    pub age_offset: Duration,
    /// A Redis service of the manifest to share it through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<&'a str>,
    /// Keep the body already stored under `key` (a revalidated entry); the
    /// `body` given to [`store`] is then ignored.
    pub keep_body: bool,
}

fn millis(d: &Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(millis(d))
}

fn as_optional_millis<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&millis(d)),
        None => s.serialize_none(),
    }
}

/// Stores `entry` with `body`. [`HostError::BadArgument`] when the host will
/// not keep it (too large, or a Redis service it does not know);
/// [`HostError::NotFound`] for `keep_body` without a stored entry, or on a
/// host without the response cache.
pub fn store(entry: &Entry<'_>, body: &[u8]) -> HostResult<()> {
    let head = serde_json::to_vec(entry).map_err(|_| HostError::SerializationFailure)?;
    let len = u32::try_from(head.len()).map_err(|_| HostError::BadArgument)?;
    let args = [&len.to_le_bytes()[..], &head, body].concat();
    host::call_foreign_function("weir.cache_store", &args).map(drop)
}

/// Whether this caller is the one to refresh entry `key` for the next
/// `period` (one caller per period, on this node); `false` for everyone
/// else and when there is no such entry.
pub fn claim_refresh(key: &str, period: Duration) -> HostResult<bool> {
    let args = serde_json::json!({
        "key": key,
        "ms": millis(&period),
    });
    match host::call_foreign_function("weir.cache_claim_refresh", args.to_string().as_bytes()) {
        Ok(_) => Ok(true),
        Err(HostError::CasMismatch | HostError::NotFound) => Ok(false),
        Err(error) => Err(error),
    }
}

/// Reads a lookup's answer.
fn cached(bytes: &[u8]) -> HostResult<Cached> {
    serde_json::from_slice(bytes).map_err(|_| HostError::SerializationFailure)
}

impl<F: Filter> Http<'_, F> {
    /// Looks `key` up in this node's memory, then (with `redis`) in that
    /// Redis service. An answer from memory comes back at once
    /// ([`Lookup::Found`] / [`Lookup::Missing`]) and `then` is dropped; when
    /// Redis is asked the answer is [`Lookup::Pending`] and `then` runs with
    /// the entry, or `None` for a miss or an unreachable Redis.
    ///
    /// With `serve_fresh`, an entry in memory still within its
    /// [`Entry::fresh_for`] is sent by the host at once, with its `age` and
    /// these headers ([`Lookup::Served`]): a fresh hit in one host call.
    pub fn cache_lookup(
        &mut self,
        key: &str,
        redis: Option<&str>,
        serve_fresh: Option<&[(&str, &str)]>,
        then: impl FnOnce(&mut F, &mut Http<'_, F>, Option<Cached>) -> Outcome + 'static,
    ) -> HostResult<Lookup> {
        let args = serde_json::json!({ "key": key, "redis": redis, "serve_fresh": serve_fresh });
        let answer =
            match host::call_foreign_function("weir.cache_lookup", args.to_string().as_bytes()) {
                Ok(answer) => answer,
                Err(HostError::NotFound) => return Ok(Lookup::Missing),
                Err(error) => return Err(error),
            };
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Reply {
            Pending { pending: u32 },
            Served { served: bool },
        }
        let token = match serde_json::from_slice(&answer) {
            Ok(Reply::Pending { pending }) => pending,
            Ok(Reply::Served { served: true }) => {
                *self.replied = true;
                return Ok(Lookup::Served);
            }
            _ => return cached(&answer).map(Lookup::Found),
        };
        self.continuations.push((
            Ticket::Callout(token),
            Box::new(move |filter, http, answer| {
                let found = match answer {
                    Answer::Redis(Ok(RedisValue::Bulk(bytes))) => cached(&bytes).ok(),
                    Answer::Redis(_) => None,
                    _ => return Err(crate::Error::msg("another answer to a cache lookup")),
                };
                then(filter, http, found)
            }),
        ));
        Ok(Lookup::Pending)
    }

    /// Answers the request with the entry under `key`, sent by the host
    /// (`status` and `headers` replace the stored ones of the same name).
    /// [`HostError::NotFound`] when the entry has gone since the lookup:
    /// carry on as for a miss.
    pub fn cache_respond(
        &mut self,
        key: &str,
        status: Option<u16>,
        headers: &[(&str, &str)],
    ) -> HostResult<Flow> {
        let args = serde_json::json!({ "key": key, "status": status, "headers": headers });
        host::call_foreign_function("weir.cache_respond", args.to_string().as_bytes())?;
        *self.replied = true;
        Ok(Flow::Pause)
    }
}
