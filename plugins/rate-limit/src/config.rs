//! The configuration as written (serde) and validated into [`Settings`], the
//! only form the rest of the plugin sees. The shorthand `rate`, `burst`,
//! `key_header` reads as one GCRA limit keyed by route and that header.

use serde::Deserialize;
use weir_sdk::ConfigError;
use weir_sdk::net::parse_cidrs;

use crate::key::{Key, Part};
use crate::limit::{self, Algorithm, Limit};

/// The plugin configuration as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Shorthand: tokens added per second.
    #[serde(default)]
    rate: Option<f64>,
    /// Shorthand: the bucket's size.
    #[serde(default)]
    burst: Option<f64>,
    /// Shorthand: the request header whose value keys the bucket.
    #[serde(default)]
    key_header: Option<String>,
    /// The limits every key is held to.
    #[serde(default)]
    limits: Option<Vec<LimitConfig>>,
    /// How the limits count.
    #[serde(default)]
    algorithm: Option<AlgorithmName>,
    /// The key's parts.
    #[serde(default)]
    key: Option<KeyConfig>,
    /// Proxies whose `x-forwarded-for` is believed for the `ip` part.
    #[serde(default)]
    trusted_proxies: Vec<String>,
    /// Count in Redis, across nodes.
    #[serde(default)]
    redis: Option<RedisConfig>,
    /// Whether responses carry the `RateLimit-Policy` and `RateLimit` fields.
    #[serde(default = "yes")]
    headers: bool,
}

fn yes() -> bool {
    true
}

/// One limit as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitConfig {
    requests: u64,
    per: Duration,
    #[serde(default)]
    burst: Option<f64>,
    #[serde(default)]
    name: Option<String>,
}

/// A duration: `"1s"`, `"500ms"`, or a number of seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Duration {
    Seconds(f64),
    Text(String),
}

impl Duration {
    fn nanos(&self) -> Option<u64> {
        match self {
            Self::Seconds(seconds) => limit::seconds_ns(*seconds),
            Self::Text(text) => limit::parse_duration(text),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum AlgorithmName {
    Gcra,
    TokenBucket,
    SlidingWindow,
}

/// `key: ip` or `key: [ip, header:x-api-key]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum KeyConfig {
    One(String),
    Parts(Vec<String>),
}

/// The Redis backend as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedisConfig {
    service: String,
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    lease: Option<u64>,
    #[serde(default)]
    on_error: OnError,
    #[serde(default = "default_prefix")]
    prefix: String,
}

fn default_prefix() -> String {
    "weir:rl:".to_owned()
}

/// How a node counts through Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// One script per decision.
    #[default]
    Exact,
    /// Batches of permits served from the node.
    Leased,
}

/// What a request gets when Redis cannot decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Let it through.
    #[default]
    FailOpen,
    /// Refuse it with 503.
    FailClosed,
}

/// The default lease size.
pub const DEFAULT_LEASE: u64 = 10;

/// The largest lease.
const MAX_LEASE: u64 = 10_000;

/// The shortest GCRA interval Redis counts in (its clock is in microseconds).
const MIN_REDIS_INTERVAL_NS: f64 = 1_000.0;

/// The Redis backend, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redis {
    /// The manifest's Redis service.
    pub service: String,
    /// Exact or leased.
    pub mode: Mode,
    /// Permits a node takes at once (leased).
    pub lease: u64,
    /// Fail open or closed.
    pub on_error: OnError,
    /// Prefix of every key the plugin writes.
    pub prefix: String,
}

/// The configuration, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The limits.
    pub limits: Vec<Limit>,
    /// How they count.
    pub algorithm: Algorithm,
    /// What they count per.
    pub key: Key,
    /// Redis, or `None` for a count per node.
    pub redis: Option<Redis>,
    /// Whether to send the IETF fields.
    pub headers: bool,
}

impl Config {
    /// Checks the configuration and resolves it.
    pub fn validate(self) -> Result<Settings, ConfigError> {
        let algorithm = match self.algorithm {
            None | Some(AlgorithmName::Gcra | AlgorithmName::TokenBucket) => Algorithm::Gcra,
            Some(AlgorithmName::SlidingWindow) => Algorithm::SlidingWindow,
        };
        let shorthand = self.rate.is_some() || self.burst.is_some() || self.key_header.is_some();
        let (limits, parts) = if shorthand {
            if self.limits.is_some() || self.key.is_some() {
                let at = if self.limits.is_some() {
                    "/limits"
                } else {
                    "/key"
                };
                return Err(ConfigError::at(
                    at,
                    "use either `limits` and `key`, or the shorthand `rate`, `burst`, `key_header`",
                ));
            }
            if algorithm != Algorithm::Gcra {
                return Err(ConfigError::at(
                    "/algorithm",
                    "the shorthand `rate`, `burst` is a token bucket; write `limits` for a sliding window",
                ));
            }
            shorthand_limit(self.rate, self.burst, self.key_header)?
        } else {
            let limits = self.limits.as_deref().ok_or_else(|| {
                ConfigError::new("needs `limits` (or the shorthand `rate` and `burst`)")
            })?;
            let limits = validate_limits(limits, algorithm)?;
            let parts = match self.key {
                None => vec![Part::Route],
                Some(key) => key_parts(key)?,
            };
            (limits, parts)
        };
        let trusted = parse_cidrs(&self.trusted_proxies).map_err(|(index, error)| {
            ConfigError::at(format!("/trusted_proxies/{index}"), error.to_string())
        })?;
        let redis = self.redis.map(validate_redis).transpose()?;
        let too_fast = limits
            .iter()
            .position(|l| l.interval_ns < MIN_REDIS_INTERVAL_NS);
        if let (Some(at), Some(_), Algorithm::Gcra) = (too_fast, &redis, algorithm) {
            let pointer = if shorthand {
                "/rate".to_owned()
            } else {
                format!("/limits/{at}")
            };
            return Err(ConfigError::at(
                pointer,
                "Redis counts at most one request per microsecond per key",
            ));
        }
        Ok(Settings {
            limits,
            algorithm,
            key: Key { parts, trusted },
            redis,
            headers: self.headers,
        })
    }
}

/// The shorthand's one limit and key.
fn shorthand_limit(
    rate: Option<f64>,
    burst: Option<f64>,
    key_header: Option<String>,
) -> Result<(Vec<Limit>, Vec<Part>), ConfigError> {
    let rate = rate.ok_or_else(|| ConfigError::at("/rate", "the shorthand needs `rate`"))?;
    if !(rate > 0.0 && rate.is_finite()) {
        return Err(ConfigError::at("/rate", "must be a number above 0"));
    }
    let burst = burst.ok_or_else(|| ConfigError::at("/burst", "the shorthand needs `burst`"))?;
    if !(burst >= 1.0 && burst.is_finite()) {
        return Err(ConfigError::at("/burst", "must be at least 1"));
    }
    let mut parts = vec![Part::Route];
    if let Some(header) = key_header {
        if header.trim().is_empty() {
            return Err(ConfigError::at("/key_header", "must name a header"));
        }
        parts.push(Part::Header(header.trim().to_ascii_lowercase()));
    }
    Ok((vec![Limit::shorthand(rate, burst)], parts))
}

fn validate_limits(
    limits: &[LimitConfig],
    algorithm: Algorithm,
) -> Result<Vec<Limit>, ConfigError> {
    if limits.is_empty() {
        return Err(ConfigError::at("/limits", "needs at least one limit"));
    }
    let mut names: Vec<String> = Vec::new();
    let mut out = Vec::with_capacity(limits.len());
    for (i, limit) in limits.iter().enumerate() {
        let at = |field: &str| format!("/limits/{i}/{field}");
        if limit.requests == 0 {
            return Err(ConfigError::at(at("requests"), "must be at least 1"));
        }
        let window = limit
            .per
            .nanos()
            .filter(|ns| *ns >= 1_000_000)
            .ok_or_else(|| {
                ConfigError::at(at("per"), format!("{} (1ms or more)", limit::DURATION_HELP))
            })?;
        let burst = match (limit.burst, algorithm) {
            (None, _) => limit.requests as f64,
            (Some(_), Algorithm::SlidingWindow) => {
                return Err(ConfigError::at(
                    at("burst"),
                    "a sliding window has no burst: its `requests` may come at once",
                ));
            }
            (Some(burst), Algorithm::Gcra) if burst >= 1.0 && burst.is_finite() => burst,
            (Some(_), Algorithm::Gcra) => {
                return Err(ConfigError::at(at("burst"), "must be at least 1"));
            }
        };
        let name = limit
            .name
            .clone()
            .unwrap_or_else(|| format!("{}/{}", limit.requests, limit::duration_text(window)));
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\')
        {
            return Err(ConfigError::at(
                at("name"),
                "must be printable ASCII without `\"` or `\\`",
            ));
        }
        if names.contains(&name) {
            return Err(ConfigError::at(
                at("name"),
                format!("two limits are named `{name}`"),
            ));
        }
        names.push(name.clone());
        out.push(Limit::new(name, limit.requests, window, burst));
    }
    Ok(out)
}

fn key_parts(key: KeyConfig) -> Result<Vec<Part>, ConfigError> {
    let (texts, one) = match key {
        KeyConfig::One(text) => (vec![text], true),
        KeyConfig::Parts(texts) => (texts, false),
    };
    if texts.is_empty() {
        return Err(ConfigError::at(
            "/key",
            "needs at least one part (`route` for one count per route)",
        ));
    }
    let mut parts = Vec::with_capacity(texts.len());
    for (i, text) in texts.iter().enumerate() {
        let at = if one {
            "/key".to_owned()
        } else {
            format!("/key/{i}")
        };
        let part = Part::parse(text.trim()).map_err(|why| ConfigError::at(at.clone(), why))?;
        if parts.contains(&part) {
            return Err(ConfigError::at(at, format!("`{text}` is named twice")));
        }
        parts.push(part);
    }
    Ok(parts)
}

fn validate_redis(redis: RedisConfig) -> Result<Redis, ConfigError> {
    if redis.service.trim().is_empty() {
        return Err(ConfigError::at(
            "/redis/service",
            "must name a Redis service of the manifest",
        ));
    }
    let lease = match (redis.mode, redis.lease) {
        (Mode::Exact, Some(_)) => {
            return Err(ConfigError::at(
                "/redis/lease",
                "only the `leased` mode takes leases",
            ));
        }
        (Mode::Exact, None) => 1,
        (Mode::Leased, None) => DEFAULT_LEASE,
        (Mode::Leased, Some(lease)) if (1..=MAX_LEASE).contains(&lease) => lease,
        (Mode::Leased, Some(_)) => {
            return Err(ConfigError::at(
                "/redis/lease",
                format!("must be 1 to {MAX_LEASE}"),
            ));
        }
    };
    Ok(Redis {
        service: redis.service.trim().to_owned(),
        mode: redis.mode,
        lease,
        on_error: redis.on_error,
        prefix: redis.prefix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(json: &str) -> Result<Settings, ConfigError> {
        weir_sdk::parse_config::<Config>(json.as_bytes())?.validate()
    }

    fn refused(json: &str) -> (String, String) {
        let error = settings(json).expect_err(json);
        (error.pointer, error.message)
    }

    #[test]
    fn the_shorthand_is_one_limit_keyed_by_route_and_header() {
        let s =
            settings(r#"{"rate": 100, "burst": 200, "key_header": "X-Api-Key"}"#).expect("valid");
        assert_eq!(s.limits, [Limit::shorthand(100.0, 200.0)]);
        assert_eq!(s.key.parts, [Part::Route, Part::Header("x-api-key".into())]);
        assert_eq!(s.algorithm, Algorithm::Gcra);
        assert!(s.redis.is_none() && s.headers);
    }

    #[test]
    fn limits_keys_and_redis_read_in_full() {
        let s = settings(
            r#"{"limits": [{"requests": 10, "per": "1s"}, {"requests": 1000, "per": 3600, "name": "hourly"}],
                "algorithm": "sliding_window", "key": ["ip", "header:x-tenant", "claim:sub"],
                "trusted_proxies": ["10.0.0.0/8"], "headers": false,
                "redis": {"service": "cache", "mode": "leased", "lease": 20, "on_error": "fail_closed"}}"#,
        )
        .expect("valid");
        assert_eq!(s.limits[0].name, "10/1s");
        assert_eq!(s.limits[1].name, "hourly");
        assert_eq!(s.limits[1].window_ns, 3_600_000_000_000);
        assert_eq!(s.algorithm, Algorithm::SlidingWindow);
        assert_eq!(s.key.parts.len(), 3);
        assert_eq!(s.key.trusted.len(), 1);
        let redis = s.redis.expect("redis");
        assert_eq!(
            (redis.mode, redis.lease, redis.on_error),
            (Mode::Leased, 20, OnError::FailClosed)
        );
        assert_eq!(redis.prefix, "weir:rl:");
        assert!(!s.headers);
        let one = settings(r#"{"limits": [{"requests": 5, "per": "1m"}], "key": "consumer"}"#)
            .expect("valid");
        assert_eq!(one.key.parts, [Part::Consumer]);
    }

    #[test]
    fn bad_configurations_are_refused_at_their_field() {
        assert_eq!(refused(r#"{"rate": 0, "burst": 5}"#).0, "/rate");
        assert_eq!(refused(r#"{"rate": 1, "burst": 0.5}"#).0, "/burst");
        assert_eq!(refused(r#"{"rate": 1}"#).0, "/burst");
        assert_eq!(refused(r#"{}"#).0, "");
        assert_eq!(
            refused(r#"{"rate": 1, "burst": 1, "limits": [{"requests": 1, "per": "1s"}]}"#).0,
            "/limits"
        );
        assert_eq!(refused(r#"{"limits": []}"#).0, "/limits");
        assert_eq!(
            refused(r#"{"limits": [{"requests": 0, "per": "1s"}]}"#).0,
            "/limits/0/requests"
        );
        assert_eq!(
            refused(r#"{"limits": [{"requests": 1, "per": "soon"}]}"#).0,
            "/limits/0/per"
        );
        assert_eq!(
            refused(r#"{"limits": [{"requests": 1, "per": "1s", "burst": 0}]}"#).0,
            "/limits/0/burst"
        );
        assert_eq!(
            refused(r#"{"algorithm": "sliding_window", "limits": [{"requests": 1, "per": "1s", "burst": 2}]}"#).0,
            "/limits/0/burst"
        );
        assert_eq!(
            refused(r#"{"limits": [{"requests": 1, "per": "1s"}, {"requests": 1, "per": "1s"}]}"#)
                .0,
            "/limits/1/name"
        );
        assert_eq!(
            refused(r#"{"limits": [{"requests": 1, "per": "1s"}], "key": ["ip", "cookie:x"]}"#).0,
            "/key/1"
        );
        assert_eq!(
            refused(r#"{"limits": [{"requests": 1, "per": "1s"}], "key": "nobody"}"#).0,
            "/key"
        );
        assert_eq!(
            refused(
                r#"{"limits": [{"requests": 1, "per": "1s"}], "trusted_proxies": ["10.0.0.1/8"]}"#
            )
            .0,
            "/trusted_proxies/0"
        );
        assert_eq!(
            refused(r#"{"limits": [{"requests": 1, "per": "1s"}], "redis": {"service": "c", "lease": 5}}"#).0,
            "/redis/lease"
        );
        assert_eq!(
            refused(r#"{"limits": [{"requests": 1, "per": "1s"}], "redis": {"service": "c", "mode": "leased", "lease": 0}}"#).0,
            "/redis/lease"
        );
        assert_eq!(
            refused(r#"{"rate": 1e7, "burst": 5, "redis": {"service": "c"}}"#).0,
            "/rate"
        );
        assert_eq!(refused(r#"{"limits": [{"requests": 1, "per": "1s"}], "redis": {"service": "c", "mode": "fast"}}"#).0, "/redis/mode");
    }
}
