//! What is stored, under which key, and how: the HTTP caching rules applied
//! to a response, and the entries written to the host's response cache.

use std::rc::Rc;
use std::time::Duration;

use serde::Deserialize;
use weir_sdk::background;
use weir_sdk::cache::{self, Cached, Entry};
use weir_sdk::{CallResponse, Error, HostError};

use crate::policy::{self, Keep};
use crate::{Cache, Headers};

/// Headers never stored with an entry: hop-by-hop ones, and those the cache
/// writes itself on every answer.
const NOT_STORED: [&str; 11] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "age",
    "set-cookie",
];

/// Request headers a background refresh does not send.
pub(crate) const NOT_FORWARDED: [&str; 6] = [
    "connection",
    "content-length",
    "if-none-match",
    "if-modified-since",
    "transfer-encoding",
    "upgrade",
];

/// The filter's metadata on an entry.
#[derive(Debug, Default, Clone, Copy, serde::Serialize, Deserialize)]
pub(crate) struct Meta {
    pub(crate) fresh_ms: u64,
    pub(crate) stale_ms: u64,
    pub(crate) initial_age_ms: u64,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Meta {
    pub(crate) fn of(keep: &Keep) -> Self {
        Self {
            fresh_ms: millis(keep.fresh),
            stale_ms: millis(keep.stale),
            initial_age_ms: millis(keep.initial_age),
        }
    }
}

/// A response being stored once its body is complete.
pub(crate) struct Pending {
    pub(crate) key: String,
    pub(crate) keep: Keep,
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

/// The key of the variant of `primary` that a request with these
/// `header` values selects among `names`.
pub(crate) fn variant_key(
    primary: &str,
    names: &[String],
    header: impl Fn(&str) -> Result<Option<String>, Error>,
) -> Result<String, Error> {
    let mut key = format!("{primary}\nvary");
    for name in names {
        let value = header(name)?.unwrap_or_default();
        key.push_str(&format!("\n{name}={value}"));
    }
    Ok(key)
}

/// The header names of a variants entry (one whose responses vary).
pub(crate) fn variants(entry: &Cached) -> Option<Vec<String>> {
    serde_json::from_value(entry.meta.get("vary")?.clone()).ok()
}

pub(crate) fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

impl Cache {
    /// How `status` with `headers` is kept, with the headers to store;
    /// `None` when it is not.
    pub(crate) fn keep(
        &self,
        status: u16,
        headers: &[(String, String)],
        authorized: bool,
    ) -> Result<Option<(Keep, Headers)>, Error> {
        let response = policy::Response {
            status,
            cache_control: header(headers, "cache-control"),
            expires: header(headers, "expires"),
            date: header(headers, "date"),
            age: header(headers, "age"),
            etag: header(headers, "etag"),
            last_modified: header(headers, "last-modified"),
            vary: header(headers, "vary"),
            has_set_cookie: header(headers, "set-cookie").is_some(),
        };
        let now = background::now()?;
        let Ok(keep) = policy::decide(&response, authorized, &self.defaults, now) else {
            return Ok(None);
        };
        let stored = headers
            .iter()
            .filter(|(n, _)| {
                !n.starts_with(':') && !NOT_STORED.contains(&n.as_str()) && *n != self.status_header
            })
            .cloned()
            .collect();
        Ok(Some((keep, stored)))
    }

    /// The key a response kept as `keep` is stored under: `primary`, or,
    /// for a response that varies, its variant's key (the variants entry
    /// naming the headers is stored under `primary` first).
    pub(crate) fn entry_key(
        &self,
        primary: &str,
        keep: &Keep,
        header: impl Fn(&str) -> Result<Option<String>, Error>,
    ) -> Result<String, Error> {
        if keep.vary.is_empty() {
            return Ok(primary.to_owned());
        }
        self.store_variants(primary, keep)?;
        variant_key(primary, &keep.vary, header)
    }

    /// Stores the variants entry of `primary`: the header names its
    /// responses vary on.
    pub(crate) fn store_variants(&self, primary: &str, keep: &Keep) -> Result<(), Error> {
        let meta = serde_json::json!({ "vary": keep.vary });
        cache::store(
            &Entry {
                key: primary,
                keep_for: keep.keep,
                status: 200,
                headers: &[],
                meta: &meta,
                redis: self.redis.as_deref(),
                fresh_for: None,
                age_offset: Duration::ZERO,
                keep_body: false,
            },
            b"",
        )?;
        Ok(())
    }

    /// Stores a whole response under `key`.
    pub(crate) fn store(&self, pending: &Pending) -> Result<(), HostError> {
        let meta = serde_json::to_value(Meta::of(&pending.keep)).unwrap_or_default();
        cache::store(
            &Entry {
                key: &pending.key,
                keep_for: pending.keep.keep,
                status: pending.status,
                headers: &pending.headers,
                meta: &meta,
                redis: self.redis.as_deref(),
                fresh_for: Some(pending.keep.fresh),
                age_offset: pending.keep.initial_age,
                keep_body: false,
            },
            &pending.body,
        )
    }
}

/// A background refresh of a stale entry: what storing its answer needs.
pub(crate) struct Refresh {
    pub(crate) plugin: Rc<Cache>,
    pub(crate) primary: String,
    pub(crate) authorized: bool,
    pub(crate) request_headers: Vec<(String, String)>,
}

impl Refresh {
    pub(crate) fn store(&self, response: &CallResponse) {
        let Ok(Some((keep, headers))) =
            self.plugin
                .keep(response.status, &response.headers, self.authorized)
        else {
            return;
        };
        if response.body.len() > self.plugin.max_entry_bytes {
            return;
        }
        let value = |name: &str| Ok(header(&self.request_headers, name).map(str::to_owned));
        let Ok(key) = self.plugin.entry_key(&self.primary, &keep, value) else {
            return;
        };
        let _ = self.plugin.store(&Pending {
            key,
            keep,
            status: response.status,
            headers,
            body: response.body.clone(),
        });
    }
}
