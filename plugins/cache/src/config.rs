//! The cache's configuration, as written and as checked.

use std::time::Duration;

use serde::Deserialize;
use weir_sdk::ConfigError;

use crate::Cache;
use crate::policy::Defaults;

/// The plugin configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
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
pub struct KeyConfig {
    /// The query string.
    #[serde(default = "yes")]
    pub query: bool,
    /// The consumer's name (entries per consumer).
    #[serde(default)]
    pub consumer: bool,
    /// Request headers, besides those the response varies on.
    #[serde(default)]
    pub headers: Vec<String>,
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

fn duration(text: &str, pointer: &str) -> Result<Duration, ConfigError> {
    weir_sdk::duration::parse(text)
        .ok_or_else(|| ConfigError::at(pointer, "must be a duration such as 30s, 5m or 1h"))
}

/// Checks `config` field by field; the settings a filter runs with, or the
/// first refusal with its pointer.
pub fn settle(config: Config) -> Result<Cache, ConfigError> {
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
    Ok(Cache {
        defaults: Defaults {
            ttl: duration(&config.ttl, "/ttl")?,
            statuses: config.statuses,
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
        outcomes: super::Outcomes::define(),
    })
}
