//! `rate-limit` (local): a token bucket per key in each VM. A request that
//! finds the bucket empty gets a JSON 429 with `retry-after`. The key is a
//! request header's value (or one bucket for everything when no header is
//! configured).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use serde::Deserialize;
use weir_sdk::{ConfigError, Filter, Flow, Http, Outcome, Plugin};

/// The plugin configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Tokens added per second.
    rate: f64,
    /// Bucket size (requests allowed in a burst).
    burst: f64,
    /// Request header whose value keys the bucket (none: one bucket).
    #[serde(default)]
    key_header: Option<String>,
}

/// Most keys remembered per VM (all are dropped when a new key would pass it).
const MAX_KEYS: usize = 100_000;

struct Bucket {
    tokens: f64,
    updated_ns: u64,
}

struct Limiter {
    config: Config,
    buckets: RefCell<HashMap<String, Bucket>>,
}

impl Limiter {
    /// Takes one token for `key` at `now_ns`; the seconds to wait when there is none.
    fn take(&self, key: &str, now_ns: u64) -> Result<(), f64> {
        let mut buckets = self.buckets.borrow_mut();
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(key) {
            buckets.clear();
        }
        let c = &self.config;
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: c.burst,
            updated_ns: now_ns,
        });
        let elapsed = now_ns.saturating_sub(bucket.updated_ns) as f64 / 1e9;
        bucket.tokens = (bucket.tokens + elapsed * c.rate).min(c.burst);
        bucket.updated_ns = now_ns;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err((1.0 - bucket.tokens) / c.rate)
        }
    }
}

impl Plugin for Limiter {
    const NAME: &'static str = "rate-limit";
    type Config = Config;
    type Filter = Limit;

    fn configure(config: Config) -> Result<Self, ConfigError> {
        if !(config.rate > 0.0 && config.rate.is_finite()) {
            return Err(ConfigError::at("/rate", "must be a number above 0"));
        }
        if !(config.burst >= 1.0 && config.burst.is_finite()) {
            return Err(ConfigError::at("/burst", "must be at least 1"));
        }
        Ok(Self {
            config,
            buckets: RefCell::new(HashMap::new()),
        })
    }

    fn filter(self: &Rc<Self>) -> Limit {
        Limit(self.clone())
    }
}

struct Limit(Rc<Limiter>);

impl Filter for Limit {
    fn on_request_headers(&mut self, http: &mut Http<'_, Self>) -> Outcome {
        let key = match &self.0.config.key_header {
            Some(header) => http.request_header(header)?.unwrap_or_default(),
            None => String::new(),
        };
        let now = http
            .now()?
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        match self.0.take(&key, now) {
            Ok(()) => Ok(Flow::Continue),
            Err(wait) => {
                let retry_after = (wait.ceil() as u64).max(1).to_string();
                http.deny_with(
                    429,
                    "rate_limited",
                    "too many requests",
                    &[("retry-after", &retry_after)],
                )
            }
        }
    }
}

weir_sdk::export!(Limiter);
