//! `rate-limit` (local): a token bucket per key in each VM. A request that
//! finds the bucket empty gets a JSON 429 with `retry-after`. The key is a
//! request header's value (or one bucket for everything when no header is
//! configured).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

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

/// Most keys remembered per VM (the least recently refilled are dropped beyond it).
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

#[derive(Default)]
struct Root {
    limiter: Option<Rc<Limiter>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match serde_json::from_slice::<Config>(&bytes) {
            Ok(config) if config.rate > 0.0 && config.burst >= 1.0 => {
                self.limiter = Some(Rc::new(Limiter {
                    config,
                    buckets: RefCell::new(HashMap::new()),
                }));
                true
            }
            Ok(_) => {
                let _ = proxy_wasm::hostcalls::log(
                    LogLevel::Error,
                    "rate-limit: rate must be > 0 and burst >= 1",
                );
                false
            }
            Err(e) => {
                let _ = proxy_wasm::hostcalls::log(
                    LogLevel::Error,
                    &format!("rate-limit: bad config: {e}"),
                );
                false
            }
        }
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Limit {
            limiter: self.limiter.clone()?,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Limit {
    limiter: Rc<Limiter>,
}

impl Context for Limit {}

impl HttpContext for Limit {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let key = match &self.limiter.config.key_header {
            Some(header) => self.get_http_request_header(header).unwrap_or_default(),
            None => String::new(),
        };
        let now = self
            .get_current_time()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        match self.limiter.take(&key, now) {
            Ok(()) => Action::Continue,
            Err(wait) => {
                let retry_after = (wait.ceil() as u64).max(1).to_string();
                let body = serde_json::json!({
                    "error": { "status": 429, "code": "rate_limited", "message": "too many requests" }
                })
                .to_string();
                self.send_http_response(
                    429,
                    vec![
                        ("content-type", "application/json"),
                        ("retry-after", &retry_after),
                    ],
                    Some(body.as_bytes()),
                );
                Action::Pause
            }
        }
    }
}
