//! `cache`: answers GET and HEAD requests from stored responses.
//!
//! Responses are kept in Weir's response cache (host memory, bounded, and
//! optionally a Redis service shared by every node; see `weir_sdk::cache`),
//! under a key of route, host, path and query (optionally the consumer), and
//! the request headers the response `Vary`s on. `Cache-Control` (`max-age`,
//! `s-maxage`, `no-store`, `no-cache`, `private`, `must-revalidate`,
//! `stale-while-revalidate`), `Expires` and `Age` decide for how long
//! (RFC 9111, RFC 5861). A hit is sent by the host, its body never entering
//! the filter; `If-None-Match` / `If-Modified-Since` get a 304 from the
//! cache. A stale entry within its `stale-while-revalidate` window is served
//! while one background call per key refreshes it; past that, an entry with
//! a validator is revalidated with a conditional request, and a 304 from
//! upstream serves the stored body. `x-cache` says which:
//! `HIT`, `MISS`, `STALE`, `REVALIDATED` or `BYPASS`.

mod policy;

use std::rc::Rc;
use std::time::Duration;

use serde::Deserialize;
use weir_sdk::background;
use weir_sdk::cache::{self, Cached, Entry, Lookup};
use weir_sdk::{
    Body, CallRequest, CallResponse, ConfigError, Error, Filter, Flow, HostError, Http, Outcome,
    Plugin,
};

use self::policy::{Defaults, Keep};

/// Header pairs, names in lower case.
type Headers = Vec<(String, String)>;

/// The plugin configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Freshness of a response that gives none, for the `statuses` listed.
    #[serde(default = "default_ttl")]
    ttl: String,
    /// Statuses kept on `ttl` when the response gives no freshness.
    #[serde(default = "default_statuses")]
    statuses: Vec<u16>,
    /// How long a stale entry is served while it is refreshed, unless the
    /// response's own `stale-while-revalidate` says.
    #[serde(default = "default_zero")]
    stale_while_revalidate: String,
    /// How long an entry with an `ETag` or `Last-Modified` is kept past its
    /// staleness, to be revalidated instead of fetched whole.
    #[serde(default = "default_revalidate_for")]
    revalidate_for: String,
    /// The largest body kept; larger responses pass through unstored.
    #[serde(default = "default_max_entry_bytes")]
    max_entry_bytes: usize,
    /// What the key holds besides route, host and path.
    #[serde(default)]
    key: KeyConfig,
    /// A Redis service of the manifest that every node shares entries through.
    #[serde(default)]
    redis: Option<RedisConfig>,
    /// How long one background refresh of a stale entry may take before
    /// another request may start one.
    #[serde(default = "default_refresh_timeout")]
    refresh_timeout: String,
    /// The response header that says how the request was served.
    #[serde(default = "default_status_header")]
    status_header: String,
}

/// What the key holds besides route, host and path.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyConfig {
    /// The query string.
    #[serde(default = "yes")]
    query: bool,
    /// The consumer's name (entries per consumer).
    #[serde(default)]
    consumer: bool,
    /// Request headers, besides those the response varies on.
    #[serde(default)]
    headers: Vec<String>,
}

impl Default for KeyConfig {
    fn default() -> Self {
        Self {
            query: true,
            consumer: false,
            headers: Vec::new(),
        }
    }
}

/// Entries shared through Redis.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedisConfig {
    /// The manifest's Redis service.
    service: String,
}

fn default_ttl() -> String {
    "60s".into()
}

fn default_statuses() -> Vec<u16> {
    vec![200, 203, 204, 300, 301, 308, 404, 410]
}

fn default_zero() -> String {
    "0s".into()
}

fn default_revalidate_for() -> String {
    "10m".into()
}

fn default_max_entry_bytes() -> usize {
    1 << 20
}

fn default_refresh_timeout() -> String {
    "10s".into()
}

fn default_status_header() -> String {
    "x-cache".into()
}

fn yes() -> bool {
    true
}

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
const NOT_FORWARDED: [&str; 6] = [
    "connection",
    "content-length",
    "if-none-match",
    "if-modified-since",
    "transfer-encoding",
    "upgrade",
];

struct Cache {
    defaults: Defaults<'static>,
    max_entry_bytes: usize,
    key: KeyConfig,
    redis: Option<String>,
    refresh_timeout: Duration,
    status_header: String,
}

fn duration(text: &str, pointer: &str) -> Result<Duration, ConfigError> {
    weir_sdk::duration::parse(text)
        .ok_or_else(|| ConfigError::at(pointer, "must be a duration such as 30s, 5m or 1h"))
}

impl Plugin for Cache {
    const NAME: &'static str = "cache";
    type Config = Config;
    type Filter = Exchange;

    fn configure(config: Config) -> Result<Self, ConfigError> {
        if let Some((i, _)) = config
            .statuses
            .iter()
            .enumerate()
            .find(|(_, s)| !(200..=599).contains(*s))
        {
            return Err(ConfigError::at(
                format!("/statuses/{i}"),
                "must be a status from 200 to 599",
            ));
        }
        if config.max_entry_bytes == 0 {
            return Err(ConfigError::at("/max_entry_bytes", "must be above 0"));
        }
        if let Some((i, _)) = config
            .key
            .headers
            .iter()
            .enumerate()
            .find(|(_, h)| h.is_empty())
        {
            return Err(ConfigError::at(
                format!("/key/headers/{i}"),
                "must not be empty",
            ));
        }
        if let Some(redis) = &config.redis
            && redis.service.is_empty()
        {
            return Err(ConfigError::at("/redis/service", "must not be empty"));
        }
        if config.status_header.is_empty() {
            return Err(ConfigError::at("/status_header", "must not be empty"));
        }
        let refresh_timeout = duration(&config.refresh_timeout, "/refresh_timeout")?;
        if refresh_timeout.is_zero() {
            return Err(ConfigError::at("/refresh_timeout", "must be above 0"));
        }
        let statuses: &'static [u16] = Vec::leak(config.statuses);
        Ok(Self {
            defaults: Defaults {
                ttl: duration(&config.ttl, "/ttl")?,
                statuses,
                stale_while_revalidate: duration(
                    &config.stale_while_revalidate,
                    "/stale_while_revalidate",
                )?,
                revalidate_for: duration(&config.revalidate_for, "/revalidate_for")?,
            },
            max_entry_bytes: config.max_entry_bytes,
            key: KeyConfig {
                headers: config
                    .key
                    .headers
                    .iter()
                    .map(|h| h.to_ascii_lowercase())
                    .collect(),
                ..config.key
            },
            redis: config.redis.map(|r| r.service),
            refresh_timeout,
            status_header: config.status_header.to_ascii_lowercase(),
        })
    }

    fn filter(self: &Rc<Self>) -> Exchange {
        Exchange {
            plugin: self.clone(),
            state: State::Pass,
            outcome: None,
            primary: String::new(),
            head_request: false,
            authorized: false,
        }
    }
}

/// The filter's metadata on an entry.
#[derive(Debug, Default, Clone, Copy, serde::Serialize, Deserialize)]
struct Meta {
    fresh_ms: u64,
    stale_ms: u64,
    initial_age_ms: u64,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Meta {
    fn of(keep: &Keep) -> Self {
        Self {
            fresh_ms: millis(keep.fresh),
            stale_ms: millis(keep.stale),
            initial_age_ms: millis(keep.initial_age),
        }
    }
}

/// What one request's filter is doing.
enum State {
    /// Nothing to do for the response.
    Pass,
    /// Not served from the cache: the response may be stored under the key.
    Miss,
    /// The stored entry under this key was sent upstream for revalidation.
    Revalidating(String),
    /// Collecting the response body to store it.
    Storing(Pending),
}

/// A response being stored once its body is complete.
struct Pending {
    key: String,
    keep: Keep,
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

struct Exchange {
    plugin: Rc<Cache>,
    state: State,
    /// The `x-cache` value the response gets.
    outcome: Option<&'static str>,
    /// The key before request headers the response varies on.
    primary: String,
    head_request: bool,
    authorized: bool,
}

/// Answers an entry's status header names.
const HIT: &str = "HIT";
const MISS: &str = "MISS";
const STALE: &str = "STALE";
const REVALIDATED: &str = "REVALIDATED";
const BYPASS: &str = "BYPASS";

impl Exchange {
    /// The key before variants: route, method, host, path (and query, consumer, headers).
    fn primary_key(&self, http: &Http<'_, Self>) -> Result<String, Error> {
        let config = &self.plugin.key;
        let route = http.property(&["route_name"])?.unwrap_or_default();
        let host = http.authority()?.unwrap_or_default().to_ascii_lowercase();
        let path = if config.query {
            http.path()?
        } else {
            http.path_only()?
        };
        let mut key = format!(
            "{} GET {host}{}",
            String::from_utf8_lossy(&route),
            path.unwrap_or_default()
        );
        if config.consumer {
            let consumer = http.consumer()?.map(|c| c.name).unwrap_or_default();
            key.push_str(&format!("\nconsumer={consumer}"));
        }
        for name in &config.headers {
            let value = http.request_header(name)?.unwrap_or_default();
            key.push_str(&format!("\n{name}={value}"));
        }
        Ok(key)
    }

    /// Goes on with what a lookup of `key` found.
    fn found(&mut self, http: &mut Http<'_, Self>, key: String, entry: Option<Cached>) -> Outcome {
        let Some(entry) = entry else {
            return self.miss();
        };
        if let Some(names) = variants(&entry) {
            if key != self.primary {
                return self.miss();
            }
            let variant = variant_key(&self.primary, &names, |n| Ok(http.request_header(n)?))?;
            return self.look_up(http, variant);
        }
        self.serve(http, key, &entry)
    }

    fn look_up(&mut self, http: &mut Http<'_, Self>, key: String) -> Outcome {
        let redis = self.plugin.redis.clone();
        let answer_key = key.clone();
        // A request paused for Redis resumes when `found` goes on upstream.
        match http.cache_lookup(&key, redis.as_deref(), move |exchange, http, entry| {
            exchange.found(http, answer_key, entry)
        }) {
            Ok(Lookup::Found(entry)) => self.found(http, key, Some(entry)),
            Ok(Lookup::Missing) => self.miss(),
            Ok(Lookup::Pending) => Ok(Flow::Pause),
            Err(error) => {
                // The cache is an optimisation: without it the upstream answers.
                http.warn(&format!("cannot look the response up: {error}"));
                self.miss()
            }
        }
    }

    fn miss(&mut self) -> Outcome {
        self.state = State::Miss;
        self.outcome = Some(MISS);
        Ok(Flow::Continue)
    }

    /// Serves `entry` (under `key`) fresh or stale, or sends it for
    /// revalidation, or fetches anew.
    fn serve(&mut self, http: &mut Http<'_, Self>, key: String, entry: &Cached) -> Outcome {
        let meta: Meta = serde_json::from_value(entry.meta.clone()).unwrap_or_default();
        let age = entry.age_ms.saturating_add(meta.initial_age_ms);
        if age < meta.fresh_ms {
            return self.hit(http, &key, entry, age, HIT);
        }
        if age < meta.fresh_ms.saturating_add(meta.stale_ms) {
            if cache::claim_refresh(&key, self.plugin.refresh_timeout).unwrap_or(false)
                && let Err(error) = self.refresh_in_background(http)
            {
                http.warn(&format!("cannot refresh a stale response: {error}"));
            }
            return self.hit(http, &key, entry, age, STALE);
        }
        let etag = entry.header("etag");
        let last_modified = entry.header("last-modified");
        let conditional = http.request_header("if-none-match")?.is_some()
            || http.request_header("if-modified-since")?.is_some();
        if conditional || (etag.is_none() && last_modified.is_none()) {
            return self.miss();
        }
        if let Some(etag) = etag {
            http.set_request_header("if-none-match", etag)?;
        }
        if let Some(last_modified) = last_modified {
            http.set_request_header("if-modified-since", last_modified)?;
        }
        self.state = State::Revalidating(key);
        self.outcome = Some(MISS);
        Ok(Flow::Continue)
    }

    /// Answers from `entry`: a 304 when the request's validators match it,
    /// the stored response otherwise.
    fn hit(
        &mut self,
        http: &mut Http<'_, Self>,
        key: &str,
        entry: &Cached,
        age_ms: u64,
        outcome: &'static str,
    ) -> Outcome {
        let age = (age_ms / 1000).to_string();
        let status_header = self.plugin.status_header.as_str();
        if unchanged_for_client(http, entry)? {
            let mut headers: Vec<(&str, &str)> = [
                "etag",
                "cache-control",
                "expires",
                "last-modified",
                "vary",
                "date",
            ]
            .into_iter()
            .filter_map(|name| entry.header(name).map(|v| (name, v)))
            .collect();
            headers.extend([("age", age.as_str()), (status_header, outcome)]);
            return http.respond(304, &headers, b"");
        }
        let headers = [("age", age.as_str()), (status_header, outcome)];
        match http.cache_respond(key, None, &headers) {
            Ok(flow) => {
                self.state = State::Pass;
                Ok(flow)
            }
            Err(HostError::NotFound) => self.miss(),
            Err(error) => Err(error.into()),
        }
    }

    /// Fetches the request's response again for the cache, apart from the
    /// request (which is served stale meanwhile).
    fn refresh_in_background(&self, http: &Http<'_, Self>) -> Result<(), Error> {
        let Some(upstream) = http.property(&["cluster_name"])? else {
            return Ok(());
        };
        let upstream = String::from_utf8_lossy(&upstream).into_owned();
        let path = http.path()?.unwrap_or_default();
        let authority = http.authority()?.unwrap_or_default();
        let headers: Vec<(String, String)> = http
            .request_headers()?
            .into_iter()
            .filter(|(n, _)| !n.starts_with(':') && !NOT_FORWARDED.contains(&n.as_str()))
            .collect();
        let mut request = CallRequest::get(&path)
            .authority(&authority)
            .timeout(self.plugin.refresh_timeout);
        for (name, value) in &headers {
            request = request.header(name, value);
        }
        let refresher = Refresh {
            plugin: self.plugin.clone(),
            primary: self.primary.clone(),
            authorized: self.authorized,
            request_headers: headers,
        };
        background::call(&upstream, request, move |answer| {
            if let Ok(response) = answer {
                refresher.store(&response);
            }
        })?;
        Ok(())
    }

    /// Decides whether the response is stored, and prepares it.
    fn consider(&mut self, http: &mut Http<'_, Self>) -> Result<(), Error> {
        let status = http.status()?.unwrap_or_default();
        let headers = http.response_headers()?;
        let Some((keep, stored)) = self.plugin.keep(status, &headers, self.authorized)? else {
            return Ok(());
        };
        let too_large = header(&headers, "content-length")
            .and_then(|l| l.parse::<usize>().ok())
            .is_some_and(|l| l > self.plugin.max_entry_bytes);
        if too_large || self.head_request {
            return Ok(());
        }
        let key = self
            .plugin
            .entry_key(&self.primary, &keep, |n| Ok(http.request_header(n)?))?;
        self.state = State::Storing(Pending {
            key,
            keep,
            status,
            headers: stored,
            body: Vec::new(),
        });
        Ok(())
    }

    /// A 304 to a revalidation: the stored entry, fresh again, is the answer.
    fn revalidated(&mut self, http: &mut Http<'_, Self>, key: &str) -> Outcome {
        let Lookup::Found(entry) = http.cache_lookup(key, None, |_, _, _| Ok(Flow::Continue))?
        else {
            return Ok(Flow::Continue);
        };
        let mut headers = entry.headers.clone();
        for (name, value) in http.response_headers()? {
            if ["cache-control", "expires", "date", "etag", "last-modified"]
                .contains(&name.as_str())
            {
                headers.retain(|(n, _)| *n != name);
                headers.push((name, value));
            }
        }
        if let Ok(Some((keep, headers))) = self.plugin.keep(entry.status, &headers, self.authorized)
        {
            let meta = serde_json::to_value(Meta::of(&keep)).unwrap_or_default();
            let stored = cache::store(
                &Entry {
                    key,
                    keep_for: keep.keep,
                    status: entry.status,
                    headers: &headers,
                    meta: &meta,
                    redis: self.plugin.redis.as_deref(),
                    keep_body: true,
                },
                b"",
            );
            if let Err(error) = stored {
                http.warn(&format!("cannot store the revalidated response: {error}"));
            }
        }
        let status_header = self.plugin.status_header.clone();
        match http.cache_respond(key, None, &[("age", "0"), (&status_header, REVALIDATED)]) {
            Ok(flow) => Ok(flow),
            Err(HostError::NotFound) => Ok(Flow::Continue),
            Err(error) => Err(error.into()),
        }
    }
}

/// The key of the variant of `primary` that a request with these
/// `header` values selects among `names`.
fn variant_key(
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
fn variants(entry: &Cached) -> Option<Vec<String>> {
    serde_json::from_value(entry.meta.get("vary")?.clone()).ok()
}

fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Whether the request's own validators match `entry` (a 304 answers it).
fn unchanged_for_client(http: &Http<'_, Exchange>, entry: &Cached) -> Result<bool, Error> {
    if let Some(if_none_match) = http.request_header("if-none-match")? {
        return Ok(entry
            .header("etag")
            .is_some_and(|etag| policy::none_match(&if_none_match, etag)));
    }
    if let Some(since) = http.request_header("if-modified-since")? {
        return Ok(entry
            .header("last-modified")
            .is_some_and(|modified| policy::not_modified_since(&since, modified)));
    }
    Ok(false)
}

impl Cache {
    /// How `status` with `headers` is kept, with the headers to store;
    /// `None` when it is not.
    fn keep(
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
    fn entry_key(
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
    fn store_variants(&self, primary: &str, keep: &Keep) -> Result<(), Error> {
        let meta = serde_json::json!({ "vary": keep.vary });
        cache::store(
            &Entry {
                key: primary,
                keep_for: keep.keep,
                status: 200,
                headers: &[],
                meta: &meta,
                redis: self.redis.as_deref(),
                keep_body: false,
            },
            b"",
        )?;
        Ok(())
    }

    /// Stores a whole response under `key`.
    fn store(&self, pending: &Pending) -> Result<(), HostError> {
        let meta = serde_json::to_value(Meta::of(&pending.keep)).unwrap_or_default();
        cache::store(
            &Entry {
                key: &pending.key,
                keep_for: pending.keep.keep,
                status: pending.status,
                headers: &pending.headers,
                meta: &meta,
                redis: self.redis.as_deref(),
                keep_body: false,
            },
            &pending.body,
        )
    }
}

/// A background refresh of a stale entry: what storing its answer needs.
struct Refresh {
    plugin: Rc<Cache>,
    primary: String,
    authorized: bool,
    request_headers: Vec<(String, String)>,
}

impl Refresh {
    fn store(&self, response: &CallResponse) {
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

impl Filter for Exchange {
    fn on_request_headers(&mut self, http: &mut Http<'_, Self>) -> Outcome {
        let method = http.method()?.unwrap_or_default();
        if method != "GET" && method != "HEAD" {
            self.outcome = Some(BYPASS);
            return Ok(Flow::Continue);
        }
        self.head_request = method == "HEAD";
        self.authorized = http.request_header("authorization")?.is_some();
        self.primary = self.primary_key(http)?;
        let cc = http
            .request_header("cache-control")?
            .map(|v| policy::CacheControl::parse(&v))
            .unwrap_or_default();
        let pragma_no_cache = http
            .request_header("pragma")?
            .is_some_and(|p| p.to_ascii_lowercase().contains("no-cache"));
        if cc.no_store {
            self.outcome = Some(BYPASS);
            return Ok(Flow::Continue);
        }
        if cc.no_cache || pragma_no_cache {
            // Fetched anew, and the answer refreshes the cache.
            self.state = State::Miss;
            self.outcome = Some(BYPASS);
            return Ok(Flow::Continue);
        }
        let primary = self.primary.clone();
        self.look_up(http, primary)
    }

    fn on_response_headers(&mut self, http: &mut Http<'_, Self>) -> Outcome {
        if let State::Revalidating(key) = &self.state {
            let key = key.clone();
            self.state = State::Miss;
            if http.status()? == Some(304) {
                return self.revalidated(http, &key);
            }
        }
        if matches!(self.state, State::Miss) {
            self.state = State::Pass;
            self.consider(http)?;
        }
        if let Some(outcome) = self.outcome {
            http.set_response_header(&self.plugin.status_header, outcome)?;
        }
        if http.end_of_stream()
            && let State::Storing(pending) = std::mem::replace(&mut self.state, State::Pass)
            && let Err(error) = self.plugin.store(&pending)
        {
            http.warn(&format!("cannot store the response: {error}"));
        }
        Ok(Flow::Continue)
    }

    fn on_response_body(&mut self, http: &mut Http<'_, Self>, body: Body) -> Outcome {
        let State::Storing(pending) = &mut self.state else {
            return Ok(Flow::Continue);
        };
        let chunk = http.response_body(0, body.size)?;
        if pending.body.len() + chunk.len() > self.plugin.max_entry_bytes {
            self.state = State::Pass;
            return Ok(Flow::Continue);
        }
        pending.body.extend_from_slice(&chunk);
        if body.end_of_stream
            && let State::Storing(pending) = std::mem::replace(&mut self.state, State::Pass)
            && let Err(error) = self.plugin.store(&pending)
        {
            http.warn(&format!("cannot store the response: {error}"));
        }
        Ok(Flow::Continue)
    }
}

weir_sdk::export!(Cache);

#[cfg(test)]
mod tests {
    use weir_sdk::testing::{Request, Response, TestKit};

    use super::*;

    fn kit(config: &str) -> TestKit<Cache> {
        let kit = TestKit::configure(config).expect("a valid config");
        kit.set_property(&["route_name"], b"shop");
        kit.set_property(&["cluster_name"], b"app");
        kit
    }

    fn get(path: &str) -> Request {
        Request::get(path).header(":authority", "example.com")
    }

    /// Runs a request that misses, answered upstream with `response`.
    fn miss(kit: &TestKit<Cache>, request: Request, response: Response) {
        let mut exchange = kit.request(request);
        assert_eq!(
            exchange.send_headers(),
            Flow::Continue,
            "a miss goes upstream"
        );
        exchange.respond(response);
        assert_eq!(exchange.response_header("x-cache").as_deref(), Some("MISS"));
    }

    fn ok(cache_control: &str, body: &str) -> Response {
        Response::new(200)
            .header("cache-control", cache_control)
            .header("content-type", "text/plain")
            .body(body)
    }

    #[test]
    fn a_stored_response_is_served_by_the_host_until_it_is_stale() {
        let kit = kit("{}");
        miss(&kit, get("/items?page=2"), ok("max-age=60", "page two"));
        kit.advance(Duration::from_secs(30));
        let mut hit = kit.request(get("/items?page=2"));
        assert_eq!(hit.send_headers(), Flow::Pause);
        let reply = hit.local_reply().expect("answered from the cache");
        assert_eq!((reply.status, &reply.body[..]), (200, &b"page two"[..]));
        assert_eq!(reply.header("x-cache"), Some("HIT"));
        assert_eq!(reply.header("age"), Some("30"));
        assert_eq!(reply.header("content-type"), Some("text/plain"));
        let mut other = kit.request(get("/items?page=3"));
        assert_eq!(
            other.send_headers(),
            Flow::Continue,
            "another query, another key"
        );
        kit.advance(Duration::from_secs(31));
        let mut stale = kit.request(get("/items?page=2"));
        assert_eq!(
            stale.send_headers(),
            Flow::Continue,
            "stale, no validator: fetched"
        );
    }

    #[test]
    fn no_store_private_and_cookies_are_never_stored() {
        let kit = kit("{}");
        for (path, response) in [
            ("/a", ok("no-store", "a")),
            ("/b", ok("private, max-age=60", "b")),
            ("/c", ok("max-age=60", "c").header("set-cookie", "s=1")),
        ] {
            miss(&kit, get(path), response);
            let mut again = kit.request(get(path));
            assert_eq!(again.send_headers(), Flow::Continue, "{path} was stored");
        }
    }

    #[test]
    fn the_client_validators_get_a_304_from_the_cache() {
        let kit = kit("{}");
        miss(
            &kit,
            get("/doc"),
            ok("max-age=60", "doc").header("etag", "\"v7\""),
        );
        let mut conditional = kit.request(get("/doc").header("if-none-match", "W/\"v7\""));
        assert_eq!(conditional.send_headers(), Flow::Pause);
        let reply = conditional.local_reply().expect("a 304");
        assert_eq!(reply.status, 304);
        assert!(reply.body.is_empty());
        assert_eq!(reply.header("etag"), Some("\"v7\""));
        let mut changed = kit.request(get("/doc").header("if-none-match", "\"v6\""));
        assert_eq!(changed.send_headers(), Flow::Pause);
        assert_eq!(changed.local_reply().map(|r| r.status), Some(200));
    }

    #[test]
    fn a_stale_entry_with_an_etag_is_revalidated_and_a_304_serves_it() {
        let kit = kit("{}");
        miss(
            &kit,
            get("/doc"),
            ok("max-age=1", "v1 body").header("etag", "\"v1\""),
        );
        kit.advance(Duration::from_secs(5));
        let mut revalidate = kit.request(get("/doc"));
        assert_eq!(revalidate.send_headers(), Flow::Continue);
        assert_eq!(
            revalidate.request_header("if-none-match").as_deref(),
            Some("\"v1\"")
        );
        revalidate.respond(Response::new(304).header("cache-control", "max-age=60"));
        let reply = revalidate.local_reply().expect("the stored body");
        assert_eq!((reply.status, &reply.body[..]), (200, &b"v1 body"[..]));
        assert_eq!(reply.header("x-cache"), Some("REVALIDATED"));
        assert_eq!(reply.header("cache-control"), Some("max-age=60"));
        let mut hit = kit.request(get("/doc"));
        assert_eq!(hit.send_headers(), Flow::Pause, "fresh again for 60 s");
        assert_eq!(
            hit.local_reply()
                .and_then(|r| r.header("x-cache").map(str::to_owned))
                .as_deref(),
            Some("HIT")
        );
    }

    #[test]
    fn stale_while_revalidate_serves_stale_and_refreshes_once() {
        let kit = kit(r#"{"stale_while_revalidate": "30s"}"#);
        miss(
            &kit,
            get("/feed").header("accept", "text/plain"),
            ok("max-age=10", "old"),
        );
        kit.advance(Duration::from_secs(15));
        for _ in 0..3 {
            let mut stale = kit.request(get("/feed"));
            assert_eq!(stale.send_headers(), Flow::Pause);
            let reply = stale.local_reply().expect("served stale");
            assert_eq!(
                (reply.header("x-cache"), &reply.body[..]),
                (Some("STALE"), &b"old"[..])
            );
        }
        let calls = kit.calls();
        assert_eq!(calls.len(), 1, "one refresh for three stale answers");
        assert_eq!(calls[0].upstream, "app");
        assert_eq!(calls[0].header(":path"), Some("/feed"));
        kit.answer_call(calls[0].token, ok("max-age=10", "new"));
        let mut fresh = kit.request(get("/feed"));
        assert_eq!(fresh.send_headers(), Flow::Pause);
        let reply = fresh.local_reply().expect("the refreshed entry");
        assert_eq!(
            (reply.header("x-cache"), &reply.body[..]),
            (Some("HIT"), &b"new"[..])
        );
    }

    #[test]
    fn responses_that_vary_are_kept_per_variant() {
        let kit = kit("{}");
        let french = || get("/hello").header("accept-language", "fr");
        let english = || get("/hello").header("accept-language", "en");
        miss(
            &kit,
            french(),
            ok("max-age=60", "bonjour").header("vary", "Accept-Language"),
        );
        miss(
            &kit,
            english(),
            ok("max-age=60", "hello").header("vary", "Accept-Language"),
        );
        for (request, body) in [(french(), "bonjour"), (english(), "hello")] {
            let mut hit = kit.request(request);
            assert_eq!(hit.send_headers(), Flow::Pause);
            assert_eq!(
                hit.local_reply().map(|r| r.body),
                Some(body.as_bytes().to_vec())
            );
        }
    }

    #[test]
    fn other_methods_and_no_cache_requests_bypass_the_cache() {
        let kit = kit("{}");
        miss(&kit, get("/x"), ok("max-age=60", "one"));
        let mut post = kit.request(Request::post("/x", "{}").header(":authority", "example.com"));
        assert_eq!(post.send_headers(), Flow::Continue);
        post.respond(ok("max-age=60", "posted"));
        assert_eq!(post.response_header("x-cache").as_deref(), Some("BYPASS"));
        let mut reload = kit.request(get("/x").header("cache-control", "no-cache"));
        assert_eq!(reload.send_headers(), Flow::Continue);
        reload.respond(ok("max-age=60", "two"));
        assert_eq!(reload.response_header("x-cache").as_deref(), Some("BYPASS"));
        let mut hit = kit.request(get("/x"));
        assert_eq!(hit.send_headers(), Flow::Pause);
        assert_eq!(
            hit.local_reply().map(|r| r.body),
            Some(b"two".to_vec()),
            "the reload refreshed it"
        );
    }

    #[test]
    fn a_body_over_the_limit_is_passed_on_unstored() {
        let kit = kit(r#"{"max_entry_bytes": 8}"#);
        miss(&kit, get("/big"), ok("max-age=60", "nine bytes"));
        let mut again = kit.request(get("/big"));
        assert_eq!(again.send_headers(), Flow::Continue);
    }

    #[test]
    fn bad_settings_are_refused_at_their_field() {
        for (config, pointer) in [
            (r#"{"ttl": "soon"}"#, "/ttl"),
            (r#"{"statuses": [200, 99]}"#, "/statuses/1"),
            (r#"{"max_entry_bytes": 0}"#, "/max_entry_bytes"),
            (r#"{"key": {"headers": [""]}}"#, "/key/headers/0"),
            (r#"{"redis": {"service": ""}}"#, "/redis/service"),
            (r#"{"refresh_timeout": "0s"}"#, "/refresh_timeout"),
        ] {
            let error = TestKit::<Cache>::configure(config).err().expect("refused");
            assert_eq!(error.pointer, pointer, "{config}");
        }
    }
}
