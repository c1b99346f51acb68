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

mod config;
mod policy;
mod store;

use std::rc::Rc;
use std::time::Duration;

use weir_sdk::background;
use weir_sdk::cache::{self, Cached, Entry, Lookup};
use weir_sdk::metrics::Counter;
use weir_sdk::{
    Body, CallRequest, ConfigError, Error, Filter, Flow, HostError, Http, Outcome, Plugin,
};

use self::config::{Config, KeyConfig};
use self::policy::Defaults;
use self::store::{Meta, NOT_FORWARDED, Pending, Refresh, header, variant_key, variants};

/// Header pairs, names in lower case.
type Headers = Vec<(String, String)>;

struct Cache {
    defaults: Defaults,
    max_entry_bytes: usize,
    key: KeyConfig,
    redis: Option<String>,
    refresh_timeout: Duration,
    status_header: String,
    outcomes: Outcomes,
}

/// Answers counted by outcome, as plugin metrics: `cache_hits`,
/// `cache_misses`, `cache_stale`, `cache_revalidated`, `cache_bypassed`.
struct Outcomes {
    hits: Option<Counter>,
    misses: Option<Counter>,
    stale: Option<Counter>,
    revalidated: Option<Counter>,
    bypassed: Option<Counter>,
}

impl Outcomes {
    fn define() -> Self {
        Self {
            hits: Counter::define("cache_hits").ok(),
            misses: Counter::define("cache_misses").ok(),
            stale: Counter::define("cache_stale").ok(),
            revalidated: Counter::define("cache_revalidated").ok(),
            bypassed: Counter::define("cache_bypassed").ok(),
        }
    }

    /// Counts one answer with the status header's `outcome`.
    fn count(&self, outcome: &str) {
        let counter = match outcome {
            HIT => self.hits,
            MISS => self.misses,
            STALE => self.stale,
            REVALIDATED => self.revalidated,
            _ => self.bypassed,
        };
        if let Some(counter) = counter {
            // A metric the host refused only goes uncounted.
            let _ = counter.increment(1);
        }
    }
}

impl Plugin for Cache {
    const NAME: &'static str = "cache";
    type Config = Config;
    type Filter = Exchange;

    fn configure(config: Config) -> Result<Self, ConfigError> {
        config::settle(config)
    }

    fn filter(self: &Rc<Self>) -> Exchange {
        Exchange {
            plugin: self.clone(),
            state: State::Pass,
            outcome: None,
            primary: String::new(),
            head_request: false,
            authorized: false,
            serve_fresh: false,
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

struct Exchange {
    plugin: Rc<Cache>,
    state: State,
    /// The `x-cache` value the response gets.
    outcome: Option<&'static str>,
    /// The key before request headers the response varies on.
    primary: String,
    head_request: bool,
    authorized: bool,
    /// Whether a fresh entry may be sent by the host at once (the request
    /// carries no validators of its own to compare).
    serve_fresh: bool,
}

/// Answers an entry's status header names.
const HIT: &str = "HIT";
const MISS: &str = "MISS";
const STALE: &str = "STALE";
const REVALIDATED: &str = "REVALIDATED";
const BYPASS: &str = "BYPASS";

impl Exchange {
    /// The key before variants: route, method, host, path (and query, consumer, headers).
    fn primary_key(
        &self,
        http: &Http<'_, Self>,
        headers: &[(String, String)],
    ) -> Result<String, Error> {
        let config = &self.plugin.key;
        let route = http.property(&["route_name"])?.unwrap_or_default();
        let host = header(headers, ":authority")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let path = header(headers, ":path").unwrap_or_default();
        let path = match path.split_once('?') {
            Some((bare, _)) if !config.query => bare,
            _ => path,
        };
        let mut key = format!("{} GET {host}{path}", String::from_utf8_lossy(&route));
        if config.consumer {
            let consumer = http.consumer()?.map(|c| c.name).unwrap_or_default();
            key.push_str(&format!("\nconsumer={consumer}"));
        }
        for name in &config.headers {
            let value = header(headers, name).unwrap_or_default();
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
        let status_header = self.plugin.status_header.clone();
        let hit = [(status_header.as_str(), HIT)];
        let serve_fresh = self.serve_fresh.then_some(&hit[..]);
        // A request paused for Redis resumes when `found` goes on upstream.
        let lookup = http.cache_lookup(
            &key,
            redis.as_deref(),
            serve_fresh,
            move |exchange, http, entry| exchange.found(http, answer_key, entry),
        );
        match lookup {
            Ok(Lookup::Found(entry)) => self.found(http, key, Some(entry)),
            Ok(Lookup::Missing) => self.miss(),
            Ok(Lookup::Served) => {
                // The host answered a fresh entry itself.
                self.plugin.outcomes.count(HIT);
                Ok(Flow::Pause)
            }
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
        // Freshness counts from when it was stored (the age it arrived with
        // is taken off when it is stored); `age` says both.
        let in_cache = entry.age_ms;
        let age = in_cache.saturating_add(meta.initial_age_ms);
        if in_cache < meta.fresh_ms {
            return self.hit(http, &key, entry, age, HIT);
        }
        if in_cache < meta.fresh_ms.saturating_add(meta.stale_ms) {
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
        self.plugin.outcomes.count(outcome);
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
        let Lookup::Found(entry) =
            http.cache_lookup(key, None, None, |_, _, _| Ok(Flow::Continue))?
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
                    fresh_for: Some(keep.fresh),
                    age_offset: keep.initial_age,
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

impl Filter for Exchange {
    fn on_request_headers(&mut self, http: &mut Http<'_, Self>) -> Outcome {
        // One host call for every header this needs (a hit is a handful of calls in all).
        let headers = http.request_headers()?;
        let method = header(&headers, ":method").unwrap_or_default();
        if method != "GET" && method != "HEAD" {
            self.outcome = Some(BYPASS);
            return Ok(Flow::Continue);
        }
        self.head_request = method == "HEAD";
        self.authorized = header(&headers, "authorization").is_some();
        self.primary = self.primary_key(http, &headers)?;
        let cc = header(&headers, "cache-control")
            .map(policy::CacheControl::parse)
            .unwrap_or_default();
        let pragma_no_cache =
            header(&headers, "pragma").is_some_and(|p| p.to_ascii_lowercase().contains("no-cache"));
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
        self.serve_fresh = header(&headers, "if-none-match").is_none()
            && header(&headers, "if-modified-since").is_none();
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
            self.plugin.outcomes.count(outcome);
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
mod tests;
