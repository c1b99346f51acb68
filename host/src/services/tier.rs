//! Shared data tiered onto Redis, so entries written on one gateway node reach
//! the others. Writes go through to Redis in the background. A local miss
//! answers "not found" at once and fetches the key from Redis in the
//! background, so the next read on that node sees the cluster's value. CAS stays
//! node-local: counters that must be exact across nodes belong in Redis itself
//! (`proxy_redis_call` with INCR).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::Services;
use super::redis::{PendingRedisCall, bulk_string};

/// The Redis key of a shared-data entry.
fn redis_key(plugin: &str, key: &str) -> Vec<u8> {
    format!("weir:shared:{plugin}:{key}").into_bytes()
}

/// Starts `args` on the plugin's tier; `None` when the plugin has no tier or
/// no runtime is there to wait for the answer.
fn start(
    services: &Arc<Services>,
    plugin: &str,
    args: Vec<Vec<u8>>,
) -> Option<(PendingRedisCall, tokio::runtime::Handle)> {
    let service = services.tiers.get(plugin)?;
    let pending = services.redis.command(service, args).ok()?;
    Some((pending, tokio::runtime::Handle::try_current().ok()?))
}

/// Runs `args` on the plugin's tier in the background (errors are logged).
fn background(services: &Arc<Services>, plugin: &str, args: Vec<Vec<u8>>) {
    let Some((pending, runtime)) = start(services, plugin, args) else {
        return;
    };
    runtime.spawn(async move {
        if let Err(error) = pending.await {
            tracing::debug!(%error, "shared-data tier write failed");
        }
    });
}

/// Writes an entry through to the tier.
pub fn write_through(
    services: &Arc<Services>,
    plugin: &str,
    key: &str,
    value: &[u8],
    ttl: Option<Duration>,
) {
    let mut args = vec![b"SET".to_vec(), redis_key(plugin, key), value.to_vec()];
    if let Some(ttl) = ttl {
        args.extend([b"PX".to_vec(), ttl.as_millis().to_string().into_bytes()]);
    }
    background(services, plugin, args);
}

/// Removes an entry from the tier.
pub fn delete(services: &Arc<Services>, plugin: &str, key: &str) {
    background(
        services,
        plugin,
        vec![b"DEL".to_vec(), redis_key(plugin, key)],
    );
}

/// Sets an entry's TTL in the tier.
pub fn expire(services: &Arc<Services>, plugin: &str, key: &str, ttl: Duration) {
    let millis = ttl.as_millis().to_string().into_bytes();
    background(
        services,
        plugin,
        vec![b"PEXPIRE".to_vec(), redis_key(plugin, key), millis],
    );
}

/// Fetches a missing entry from the tier into the local store, in the
/// background, if the namespace has `max_bytes` room for it.
pub fn fetch(services: &Arc<Services>, plugin: &str, key: &str, max_bytes: u64) {
    let args = vec![b"GET".to_vec(), redis_key(plugin, key)];
    let Some((pending, runtime)) = start(services, plugin, args) else {
        return;
    };
    let (services, plugin, key) = (services.clone(), plugin.to_owned(), key.to_owned());
    runtime.spawn(async move {
        if let Ok(reply) = pending.await
            && let Some(value) = bulk_string(&reply)
        {
            services
                .shared_data
                .insert_if_absent(&plugin, &key, Bytes::from(value), max_bytes);
        }
    });
}
