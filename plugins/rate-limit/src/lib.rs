//! `rate-limit` (local): a token bucket per route and key, shared by every VM
//! of the plugin on this node (Weir's shared data, updated with
//! compare-and-swap), so the limit holds per node whatever the number of
//! workers and VMs. A request that finds its bucket empty gets a JSON 429
//! with `retry-after`. The key is a request header's value (or one bucket
//! for the whole route when no header is configured).

use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use serde::Deserialize;
use weir_sdk::{ConfigError, Filter, Flow, HostError, Http, Outcome, Plugin, shared};

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

/// A bucket as shared data keeps it: its tokens (f64) and when they were
/// counted (Unix nanoseconds, u64), little-endian.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bucket {
    tokens: f64,
    updated_ns: u64,
}

impl Bucket {
    fn encode(self) -> [u8; 16] {
        let mut out = [0; 16];
        out[..8].copy_from_slice(&self.tokens.to_le_bytes());
        out[8..].copy_from_slice(&self.updated_ns.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        Some(Self {
            tokens: f64::from_le_bytes(bytes.get(..8)?.try_into().ok()?),
            updated_ns: u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?),
        })
    }
}

struct Limiter {
    config: Config,
    /// How long an untouched bucket is kept: by then it would be full again,
    /// which is what a missing bucket reads as.
    idle: Duration,
}

impl Limiter {
    /// `bucket` refilled up to `now_ns` and, when it holds a token, less
    /// one; `Err` with the seconds to wait when it holds none.
    fn take(&self, bucket: Bucket, now_ns: u64) -> (Bucket, Result<(), f64>) {
        let c = &self.config;
        let elapsed = now_ns.saturating_sub(bucket.updated_ns) as f64 / 1e9;
        let tokens = (bucket.tokens + elapsed * c.rate).min(c.burst);
        let (left, verdict) = if tokens >= 1.0 {
            (tokens - 1.0, Ok(()))
        } else {
            (tokens, Err((1.0 - tokens) / c.rate))
        };
        let bucket = Bucket {
            tokens: left,
            updated_ns: now_ns,
        };
        (bucket, verdict)
    }

    /// Takes a token from the shared bucket `key` at `now_ns`, retrying when
    /// another VM wrote it in between (compare-and-swap).
    fn take_shared(&self, key: &str, now_ns: u64) -> Result<Result<(), f64>, HostError> {
        loop {
            let (bucket, cas) = match shared::get(key)? {
                Some(entry) => match Bucket::decode(&entry.value) {
                    Some(bucket) => (bucket, Some(entry.cas)),
                    None => (self.full(now_ns), Some(entry.cas)),
                },
                None => (self.full(now_ns), None),
            };
            let (bucket, verdict) = self.take(bucket, now_ns);
            match shared::set(key, &bucket.encode(), cas) {
                Ok(()) => {
                    // Kept while in use; forgotten once it would be full.
                    let _ = shared::set_ttl(key, self.idle);
                    return Ok(verdict);
                }
                Err(HostError::CasMismatch) => continue,
                Err(error) => return Err(error),
            }
        }
    }

    fn full(&self, now_ns: u64) -> Bucket {
        Bucket {
            tokens: self.config.burst,
            updated_ns: now_ns,
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
        let idle = Duration::from_secs_f64((config.burst / config.rate).min(86_400.0))
            + Duration::from_secs(1);
        Ok(Self { config, idle })
    }

    fn filter(self: &Rc<Self>) -> Limit {
        Limit(self.clone())
    }
}

struct Limit(Rc<Limiter>);

impl Filter for Limit {
    fn on_request_headers(&mut self, http: &mut Http<'_, Self>) -> Outcome {
        let value = match &self.0.config.key_header {
            Some(header) => http.request_header(header)?.unwrap_or_default(),
            None => String::new(),
        };
        // Each route that uses the plugin has buckets of its own.
        let route = http.property(&["route_name"])?.unwrap_or_default();
        let key = format!("{}\n{value}", String::from_utf8_lossy(&route));
        let now = http
            .now()?
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        match self.0.take_shared(&key, now) {
            Ok(Ok(())) => Ok(Flow::Continue),
            Ok(Err(wait)) => {
                let retry_after = (wait.ceil() as u64).max(1).to_string();
                http.deny_with(
                    429,
                    "rate_limited",
                    "too many requests",
                    &[("retry-after", &retry_after)],
                )
            }
            // Shared data full (its quota): admit rather than refuse everyone.
            Err(error) => {
                http.warn(&format!("cannot count the request, admitted: {error}"));
                Ok(Flow::Continue)
            }
        }
    }
}

weir_sdk::export!(Limiter);
