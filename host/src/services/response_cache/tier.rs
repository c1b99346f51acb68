//! The response cache shared by every node through a Redis service.
//!
//! An entry is stored under `weir:cache:<plugin>:<key>` as
//! `WRC1 | head length (u32 LE) | head (JSON) | body`, with Redis's own expiry
//! set to the entry's. Writes go through in the background; a local miss
//! looks the key up in Redis and, when found, keeps the entry in memory too.
//! Purges remove the keys from Redis and are published on
//! `weir:cache:purge`, which every node that uses the service listens to, so
//! the copies other nodes hold in memory go as well.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use redis::Value;

use super::{Entry, Head, Purge};
use crate::services::Services;

/// The channel purges are published on.
const PURGE_CHANNEL: &str = "weir:cache:purge";

/// The first bytes of an encoded entry.
const MAGIC: &[u8; 4] = b"WRC1";

/// How many keys one SCAN step asks for.
const SCAN_COUNT: &str = "500";

/// How long a lost purge subscription waits before subscribing again.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

/// The Redis services entries were written to or read from.
#[derive(Default)]
pub struct Tiers {
    used: Mutex<HashSet<String>>,
}

impl Tiers {
    /// Records that `service` is used; true the first time.
    fn first_use(&self, service: &str) -> bool {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        used.insert(service.to_owned())
    }

    fn used(&self) -> Vec<String> {
        let used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        used.iter().cloned().collect()
    }
}

fn redis_key(plugin: &str, key: &str) -> Vec<u8> {
    format!("weir:cache:{plugin}:{key}").into_bytes()
}

/// An entry as Redis holds it.
pub fn encode(head: &Head, body: &[u8]) -> Vec<u8> {
    let head = serde_json::to_vec(head).unwrap_or_default();
    let len = u32::try_from(head.len()).unwrap_or(u32::MAX).to_le_bytes();
    [MAGIC.as_slice(), &len, &head, body].concat()
}

/// An entry read back from Redis; `None` for bytes that are not one.
pub fn decode(bytes: &[u8]) -> Option<(Head, Bytes)> {
    let rest = bytes.strip_prefix(MAGIC.as_slice())?;
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
    let head = serde_json::from_slice(rest.get(..len)?).ok()?;
    Some((head, Bytes::copy_from_slice(rest.get(len..)?)))
}

/// Starts listening for purges on `service` the first time it is used.
fn used(services: &Arc<Services>, service: &str) {
    if !services.response_cache.tiers.first_use(service) {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let url = services.redis.url(service);
    let services = Arc::downgrade(services);
    if let Some(url) = url {
        runtime.spawn(listen_for_purges(services, url));
    }
}

/// Writes an entry through to `service` in the background.
pub fn store(services: &Arc<Services>, service: &str, plugin: &str, key: &str, entry: &Entry) {
    used(services, service);
    let ttl = entry
        .head
        .ttl_ms
        .saturating_sub(super::now_ms().saturating_sub(entry.head.stored_ms));
    if ttl == 0 {
        return;
    }
    let args = vec![
        b"SET".to_vec(),
        redis_key(plugin, key),
        encode(&entry.head, &entry.body),
        b"PX".to_vec(),
        ttl.to_string().into_bytes(),
    ];
    let (Ok(pending), Ok(runtime)) = (
        services.redis.command(service, args),
        tokio::runtime::Handle::try_current(),
    ) else {
        return;
    };
    runtime.spawn(async move {
        if let Err(error) = pending.await {
            tracing::debug!(%error, "a response cache write to Redis failed");
        }
    });
}

/// Looks `key` up in `service`; when found, keeps it in this node's memory
/// and resolves to its entry. `Err` when Redis could not be asked.
pub fn fetch(
    services: &Arc<Services>,
    service: &str,
    plugin: &str,
    key: &str,
) -> Result<impl Future<Output = Result<Option<Arc<Entry>>, String>> + Send + 'static, String> {
    used(services, service);
    let pending = services
        .redis
        .command(service, vec![b"GET".to_vec(), redis_key(plugin, key)])
        .map_err(|e| e.to_string())?;
    let services = services.clone();
    let (plugin, key) = (plugin.to_owned(), key.to_owned());
    Ok(async move {
        let reply = pending.await?;
        let Some((head, body)) = crate::services::redis::bulk_string(&reply)
            .as_deref()
            .and_then(decode)
        else {
            return Ok(None);
        };
        let Some(entry) = Entry::new(head, body) else {
            return Ok(None);
        };
        Ok(services.response_cache.insert(&plugin, &key, entry))
    })
}

/// Removes what `purge` selects from every Redis service in use and tells
/// the other nodes; how many Redis keys went. Services that fail are logged
/// and skipped.
pub async fn purge(services: &Arc<Services>, purge: &Purge) -> usize {
    let mut removed = 0;
    for service in services.response_cache.tiers.used() {
        match purge_service(services, &service, purge).await {
            Ok(n) => removed += n,
            Err(error) => {
                tracing::warn!(%service, %error, "the response cache could not purge Redis");
            }
        }
    }
    removed
}

async fn purge_service(
    services: &Arc<Services>,
    service: &str,
    purge: &Purge,
) -> Result<usize, String> {
    let run = |args: Vec<Vec<u8>>| async move {
        let reply = services
            .redis
            .command(service, args)
            .map_err(|e| e.to_string())?
            .await?;
        redis::parse_redis_value(&reply).map_err(|e| e.to_string())
    };
    let pattern = match purge {
        Purge::Key(key) => format!("weir:cache:*:{}", glob_escape(key)),
        Purge::Prefix(prefix) => format!("weir:cache:*:{}*", glob_escape(prefix)),
    };
    let mut cursor = b"0".to_vec();
    let mut removed = 0;
    loop {
        let reply = run(vec![
            b"SCAN".to_vec(),
            cursor,
            b"MATCH".to_vec(),
            pattern.clone().into_bytes(),
            b"COUNT".to_vec(),
            SCAN_COUNT.into(),
        ])
        .await?;
        let (next, keys) = scan_reply(reply).ok_or("SCAN answered something else")?;
        if !keys.is_empty() {
            let mut del = vec![b"DEL".to_vec()];
            del.extend(keys);
            if let Value::Int(n) = run(del).await? {
                removed += usize::try_from(n).unwrap_or(0);
            }
        }
        if next == b"0" {
            break;
        }
        cursor = next;
    }
    let message = serde_json::to_vec(purge).map_err(|e| e.to_string())?;
    run(vec![b"PUBLISH".to_vec(), PURGE_CHANNEL.into(), message]).await?;
    Ok(removed)
}

/// A SCAN reply's next cursor and keys.
fn scan_reply(reply: Value) -> Option<(Vec<u8>, Vec<Vec<u8>>)> {
    let Value::Array(mut parts) = reply else {
        return None;
    };
    let (Value::BulkString(cursor), Value::Array(keys)) = (parts.remove(0), parts.pop()?) else {
        return None;
    };
    let keys = keys
        .into_iter()
        .filter_map(|k| match k {
            Value::BulkString(k) => Some(k),
            _ => None,
        })
        .collect();
    Some((cursor, keys))
}

/// `text` with Redis glob characters matched literally.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Drops from this node's memory what other nodes purge, for as long as the
/// services live; a lost subscription is made again.
async fn listen_for_purges(services: Weak<Services>, url: String) {
    use tokio_stream::StreamExt;
    loop {
        let subscribed = async {
            let client = redis::Client::open(url.as_str())?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(PURGE_CHANNEL).await?;
            Ok::<_, redis::RedisError>(pubsub.into_on_message())
        };
        match subscribed.await {
            Ok(mut messages) => {
                while let Some(message) = messages.next().await {
                    let Some(services) = services.upgrade() else {
                        return;
                    };
                    if let Ok(purge) = serde_json::from_slice::<Purge>(message.get_payload_bytes())
                    {
                        services.response_cache.purge_local(&purge);
                    }
                }
            }
            Err(error) => tracing::debug!(%error, "response cache purges: cannot subscribe"),
        }
        if services.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(RESUBSCRIBE_AFTER).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_survives_its_encoding() {
        let head = Head {
            status: 203,
            headers: vec![("etag".into(), "\"a\"".into())],
            meta: serde_json::json!({"fresh_ms": 5}),
            stored_ms: 42,
            ttl_ms: 1_000,
            fresh_ms: Some(500),
            age_offset_ms: 3_000,
        };
        let bytes = encode(&head, b"body \r\n bytes");
        let (back, body) = decode(&bytes).expect("decodes");
        assert_eq!(back, head);
        assert_eq!(&body[..], b"body \r\n bytes");
        assert!(decode(b"WRC1\xff\xff\xff\xff{}").is_none());
        assert!(decode(b"nope").is_none());
    }

    #[test]
    fn glob_characters_are_matched_literally() {
        assert_eq!(glob_escape("shop GET /a?b=[1]*"), r"shop GET /a\?b=\[1\]\*");
    }
}
