//! The response cache behind the `weir.cache_*` foreign functions (the
//! `cache` built-in is its user): whole responses (status, headers, body)
//! kept in memory, bounded in bytes (moka: TinyLFU admission, LRU eviction),
//! each for the time its plugin gives. A hit is answered from here as a local
//! reply, so its body never enters the Wasm guest.
//!
//! With a Redis service named, entries are written through to Redis and
//! looked up there on a local miss, so every node shares what one stored
//! (see [`tier`]). What is fresh, what may be served stale and what must be
//! revalidated is the plugin's to decide: each entry carries the plugin's own
//! metadata, which the host keeps and hands back untouched.
//!
//! Keys are the plugin's; entries are kept apart per plugin. Purges (admin
//! API) match keys across plugins: by the exact key, or by a prefix (a
//! route's entries are those whose key begins with the route name and a
//! space, as the built-in writes them).

pub mod tier;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use moka::Expiry;
use moka::sync::Cache;
use serde::{Deserialize, Serialize};

/// Default byte budget of the whole cache.
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;

/// Bytes an entry costs beyond its key, headers and body (bookkeeping).
const ENTRY_OVERHEAD: u64 = 128;

/// What a response is stored with, besides its body: what the plugin gave,
/// and when. Also the head of an entry's Redis encoding.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Head {
    /// Status code.
    pub status: u16,
    /// Headers as they are served (names in lower case).
    pub headers: Vec<(String, String)>,
    /// The plugin's own metadata (freshness, validators, variants), kept as given.
    #[serde(default)]
    pub meta: serde_json::Value,
    /// When it was stored, in milliseconds since the Unix epoch.
    pub stored_ms: u64,
    /// How long it is kept from then, in milliseconds.
    pub ttl_ms: u64,
    /// How long from then a lookup may serve it at once (the plugin's
    /// freshness); `None`: never without the plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fresh_ms: Option<u64>,
    /// Added to its time in the cache for the `age` header it is served with
    /// (the age it arrived with).
    #[serde(default)]
    pub age_offset_ms: u64,
}

impl Head {
    /// Milliseconds since it was stored.
    pub fn stored_for(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.stored_ms)
    }

    /// Whether a lookup may serve it at once.
    pub fn fresh(&self, now_ms: u64) -> bool {
        self.fresh_ms
            .is_some_and(|fresh| self.stored_for(now_ms) < fresh)
    }

    /// Its age in whole seconds, as the `age` header says it.
    pub fn age_seconds(&self, now_ms: u64) -> u64 {
        (self.stored_for(now_ms) + self.age_offset_ms) / 1000
    }

    /// How long from now it still has to live; `None` once it is past.
    fn remaining(&self, now_ms: u64) -> Option<Duration> {
        let end = self.stored_ms.saturating_add(self.ttl_ms);
        (end > now_ms).then(|| Duration::from_millis(end - now_ms))
    }
}

/// One stored response.
#[derive(Debug)]
pub struct Entry {
    /// Status, headers and metadata.
    pub head: Head,
    /// The body, shared with every reply served from it.
    pub body: Bytes,
    expires: Instant,
    /// Until when (ms on [`now_ms`]'s clock) one caller refreshes it; 0 when nobody does.
    refreshing_until: AtomicU64,
}

impl Entry {
    /// An entry for `head` and `body`, dropped when its `ttl_ms` from
    /// `stored_ms` has passed; `None` when that is already past.
    pub fn new(head: Head, body: Bytes) -> Option<Self> {
        let remaining = head.remaining(now_ms())?;
        Some(Self {
            head,
            body,
            expires: Instant::now() + remaining,
            refreshing_until: AtomicU64::new(0),
        })
    }

    fn weight(&self, key: &Key) -> u64 {
        let headers: usize = self
            .head
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.len())
            .sum();
        (key.plugin.len() + key.key.len() + headers + self.body.len()) as u64 + ENTRY_OVERHEAD
    }
}

/// An entry's place: the plugin that stored it and its key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    plugin: String,
    key: String,
}

/// Which entries a purge removes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purge {
    /// The entry with exactly this key.
    Key(String),
    /// Every entry whose key begins with this.
    Prefix(String),
}

impl Purge {
    /// Every entry of route `route` (keys begin with its name and a space).
    pub fn route(route: &str) -> Self {
        Self::Prefix(format!("{route} "))
    }

    fn matches(&self, key: &str) -> bool {
        match self {
            Self::Key(k) => key == k,
            Self::Prefix(p) => key.starts_with(p.as_str()),
        }
    }
}

struct EntryExpiry;

impl Expiry<Key, Arc<Entry>> for EntryExpiry {
    fn expire_after_create(&self, _: &Key, e: &Arc<Entry>, now: Instant) -> Option<Duration> {
        Some(e.expires.saturating_duration_since(now))
    }

    fn expire_after_update(
        &self,
        _: &Key,
        e: &Arc<Entry>,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(e.expires.saturating_duration_since(now))
    }
}

/// Milliseconds since the Unix epoch (the clock entries' `stored_ms` is on).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The process-wide response cache, and the Redis services its entries are
/// written through to.
pub struct ResponseCache {
    entries: Cache<Key, Arc<Entry>>,
    max_entry_bytes: u64,
    /// Redis services entries went to, so purges reach them (and other nodes).
    pub(crate) tiers: tier::Tiers,
}

impl ResponseCache {
    /// A cache bounded to `max_bytes`; one entry may take an eighth of it.
    pub fn new(max_bytes: u64) -> Self {
        let entries = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &Key, e: &Arc<Entry>| u32::try_from(e.weight(k)).unwrap_or(u32::MAX))
            .expire_after(EntryExpiry)
            .build();
        Self {
            entries,
            max_entry_bytes: max_bytes / 8,
            tiers: tier::Tiers::default(),
        }
    }

    /// The largest entry (headers and body) the cache takes.
    pub fn max_entry_bytes(&self) -> u64 {
        self.max_entry_bytes
    }

    /// Plugin `plugin`'s entry under `key`, while it lives.
    pub fn get(&self, plugin: &str, key: &str) -> Option<Arc<Entry>> {
        let entry = self.entries.get(&Key {
            plugin: plugin.to_owned(),
            key: key.to_owned(),
        })?;
        (entry.expires > Instant::now()).then_some(entry)
    }

    /// Stores `entry` under `key` for plugin `plugin`, replacing what was
    /// there, and gives it back shared; `None` when it is larger than one
    /// entry may be.
    pub fn insert(&self, plugin: &str, key: &str, entry: Entry) -> Option<Arc<Entry>> {
        let key = Key {
            plugin: plugin.to_owned(),
            key: key.to_owned(),
        };
        if entry.weight(&key) > self.max_entry_bytes {
            return None;
        }
        let entry = Arc::new(entry);
        self.entries.insert(key, entry.clone());
        Some(entry)
    }

    /// Whether the caller is the one to refresh `plugin`'s entry `key` for
    /// the next `period`: true for one caller per period, false for the rest
    /// and when there is no such entry.
    pub fn claim_refresh(&self, plugin: &str, key: &str, period: Duration) -> bool {
        let Some(entry) = self.get(plugin, key) else {
            return false;
        };
        let now = now_ms();
        let until = now.saturating_add(u64::try_from(period.as_millis()).unwrap_or(u64::MAX));
        entry
            .refreshing_until
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                (current <= now).then_some(until)
            })
            .is_ok()
    }

    /// Removes the entries `purge` selects on this node; how many there were.
    pub fn purge_local(&self, purge: &Purge) -> usize {
        let keys: Vec<Arc<Key>> = self
            .entries
            .iter()
            .filter(|(k, _)| purge.matches(&k.key))
            .map(|(k, _)| k)
            .collect();
        for key in &keys {
            self.entries.invalidate(key.as_ref());
        }
        keys.len()
    }
}

impl Default for ResponseCache {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(ttl_ms: u64) -> Head {
        Head {
            status: 200,
            headers: vec![("content-type".into(), "text/plain".into())],
            meta: serde_json::json!({"etag": "\"v1\""}),
            stored_ms: now_ms(),
            ttl_ms,
            fresh_ms: None,
            age_offset_ms: 0,
        }
    }

    #[test]
    fn keeps_an_entry_for_its_time_and_per_plugin() {
        let cache = ResponseCache::new(1 << 20);
        let entry = Entry::new(head(60_000), Bytes::from_static(b"hello")).expect("alive");
        assert!(cache.insert("one", "r GET /a", entry).is_some());
        let found = cache.get("one", "r GET /a").expect("stored");
        assert_eq!(&found.body[..], b"hello");
        assert_eq!(found.head.meta["etag"], "\"v1\"");
        assert!(
            cache.get("two", "r GET /a").is_none(),
            "kept apart per plugin"
        );
    }

    #[test]
    fn an_expired_entry_is_gone() {
        let cache = ResponseCache::new(1 << 20);
        let entry = Entry::new(head(20), Bytes::from_static(b"x")).expect("alive");
        cache.insert("p", "k", entry);
        std::thread::sleep(Duration::from_millis(40));
        assert!(cache.get("p", "k").is_none());
        let mut old = head(10);
        old.stored_ms -= 1_000;
        assert!(Entry::new(old, Bytes::new()).is_none(), "born dead");
    }

    #[test]
    fn refuses_an_entry_over_an_eighth_of_the_budget() {
        let cache = ResponseCache::new(8 * 1024);
        let big = Entry::new(head(60_000), Bytes::from(vec![0; 2048])).expect("alive");
        assert!(cache.insert("p", "big", big).is_none());
        assert!(cache.get("p", "big").is_none());
    }

    #[test]
    fn one_caller_per_period_claims_the_refresh() {
        let cache = ResponseCache::new(1 << 20);
        cache.insert(
            "p",
            "k",
            Entry::new(head(60_000), Bytes::new()).expect("alive"),
        );
        assert!(cache.claim_refresh("p", "k", Duration::from_millis(50)));
        assert!(!cache.claim_refresh("p", "k", Duration::from_millis(50)));
        std::thread::sleep(Duration::from_millis(70));
        assert!(cache.claim_refresh("p", "k", Duration::from_millis(50)));
        assert!(!cache.claim_refresh("p", "missing", Duration::from_millis(50)));
    }

    #[test]
    fn purges_by_key_prefix_and_route() {
        let cache = ResponseCache::new(1 << 20);
        for key in ["shop GET /a", "shop GET /b", "blog GET /a"] {
            cache.insert(
                "p",
                key,
                Entry::new(head(60_000), Bytes::new()).expect("alive"),
            );
        }
        assert_eq!(cache.purge_local(&Purge::Key("shop GET /a".into())), 1);
        assert_eq!(cache.purge_local(&Purge::route("shop")), 1);
        assert!(cache.get("p", "shop GET /b").is_none());
        assert!(cache.get("p", "blog GET /a").is_some());
    }
}
