//! Shared data (`proxy_get/set_shared_data`): a bounded key/value cache with
//! compare-and-swap, shared by every VM of the same plugin (Weir's `vm_id` is
//! the plugin's `vm_id`, by default its name), backed by moka. Entries may carry a TTL (Weir extension).
//!
//! The whole cache is bounded (moka evicts beyond it); each namespace is also
//! held to its plugin's `shared_data_bytes`: a write that would take it past
//! that is refused, not evicted for, so one plugin cannot push out another's data.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::Expiry;
use moka::notification::RemovalCause;
use moka::sync::Cache;

use super::quota::{Quota, QuotaExceeded};

/// Default byte budget of the whole cache.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;

/// Bytes an entry costs beyond its key and value (bookkeeping), so the byte
/// bound also bounds the number of entries.
const ENTRY_OVERHEAD: u32 = 64;

/// One stored value.
#[derive(Debug, Clone)]
struct Entry {
    value: Bytes,
    cas: u32,
    expires: Option<Instant>,
}

/// Why a write was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    /// The CAS value no longer matches.
    #[error("CAS mismatch")]
    CasMismatch,
    /// The key does not exist (for TTL updates and deletes).
    #[error("not found")]
    NotFound,
    /// The namespace would hold more than its plugin's `shared_data_bytes`.
    #[error(transparent)]
    Quota(#[from] QuotaExceeded),
}

/// What an entry costs: its key, value and bookkeeping.
fn weight(k: &(String, String), e: &Entry) -> u64 {
    (k.0.len() + k.1.len() + e.value.len()) as u64 + u64::from(ENTRY_OVERHEAD)
}

/// Bytes held per namespace: a write adds its entry's weight once it is
/// stored; the cache's removal listener (replaced, deleted, expired, evicted)
/// takes each entry's weight back off.
#[derive(Default)]
struct Usage {
    namespaces: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

impl Usage {
    fn of(&self, vm_id: &str) -> Arc<AtomicU64> {
        let mut namespaces = self
            .namespaces
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match namespaces.get(vm_id) {
            Some(used) => used.clone(),
            None => namespaces.entry(vm_id.to_owned()).or_default().clone(),
        }
    }

    fn release(&self, vm_id: &str, bytes: u64) {
        let used = self.of(vm_id);
        let _ = used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
            Some(u.saturating_sub(bytes))
        });
    }
}

/// Adds `add` bytes to `used` if, with `freed` bytes about to be released, it
/// stays within `limit`.
fn reserve(used: &AtomicU64, add: u64, freed: u64, limit: u64) -> Result<(), QuotaExceeded> {
    used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
        (u.saturating_sub(freed).saturating_add(add) <= limit).then(|| u + add)
    })
    .map(|_| ())
    .map_err(|_| Quota::SharedDataBytes.into())
}

struct EntryExpiry;

impl Expiry<(String, String), Entry> for EntryExpiry {
    fn expire_after_create(
        &self,
        _: &(String, String),
        e: &Entry,
        now: Instant,
    ) -> Option<Duration> {
        e.expires.map(|at| at.saturating_duration_since(now))
    }

    fn expire_after_update(
        &self,
        _: &(String, String),
        e: &Entry,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        e.expires.map(|at| at.saturating_duration_since(now))
    }
}

/// The process-wide shared-data store.
pub struct SharedData {
    cache: Cache<(String, String), Entry>,
    usage: Arc<Usage>,
}

impl SharedData {
    /// A store bounded to `max_bytes` (keys, values and per-entry overhead).
    pub fn new(max_bytes: u64) -> Self {
        let usage = Arc::new(Usage::default());
        let listener = {
            let usage = usage.clone();
            move |k: Arc<(String, String)>, e: Entry, _: RemovalCause| {
                usage.release(&k.0, weight(&k, &e));
            }
        };
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &(String, String), e: &Entry| {
                u32::try_from(weight(k, e)).unwrap_or(u32::MAX)
            })
            .expire_after(EntryExpiry)
            .eviction_listener(listener)
            .build();
        Self { cache, usage }
    }

    /// Bytes namespace `vm_id` holds now (entries removed but not yet
    /// reported by the cache still count).
    pub fn bytes_held(&self, vm_id: &str) -> u64 {
        self.usage.of(vm_id).load(Ordering::Acquire)
    }

    /// The value and its CAS for `key` in namespace `vm_id`.
    pub fn get(&self, vm_id: &str, key: &str) -> Option<(Bytes, u32)> {
        self.cache
            .get(&(vm_id.to_owned(), key.to_owned()))
            .map(|e| (e.value, e.cas))
    }

    /// Sets `key`; `cas` 0 is unconditional, otherwise it must match the current
    /// CAS (ignored for a new key). Each write bumps the CAS. `ttl` `None` keeps
    /// the entry's current expiry. Refused when namespace `vm_id` would then
    /// hold more than `max_bytes`.
    pub fn set(
        &self,
        vm_id: &str,
        key: &str,
        value: Bytes,
        cas: u32,
        ttl: Option<Duration>,
        max_bytes: u64,
    ) -> Result<(), SetError> {
        use moka::ops::compute::Op;
        let mut outcome = Ok(());
        let used = self.usage.of(vm_id);
        let k = (vm_id.to_owned(), key.to_owned());
        let entry_weight = |value: &Bytes| {
            (k.0.len() + k.1.len() + value.len()) as u64 + u64::from(ENTRY_OVERHEAD)
        };
        let added = entry_weight(&value);
        self.cache.entry(k.clone()).and_compute_with(|current| {
            let current = current.map(|e| e.into_value());
            let freed = current.as_ref().map_or(0, |e| entry_weight(&e.value));
            match current {
                Some(e) if cas != 0 && e.cas != cas => {
                    outcome = Err(SetError::CasMismatch);
                    Op::Nop
                }
                _ if reserve(&used, added, freed, max_bytes).is_err() => {
                    outcome = Err(QuotaExceeded::from(Quota::SharedDataBytes).into());
                    Op::Nop
                }
                current => {
                    let next_cas = current.as_ref().map_or(1, |e| e.cas.wrapping_add(1).max(1));
                    let expires = match ttl {
                        Some(ttl) => Some(Instant::now() + ttl),
                        None => current.and_then(|e| e.expires),
                    };
                    Op::Put(Entry {
                        value,
                        cas: next_cas,
                        expires,
                    })
                }
            }
        });
        outcome
    }

    /// Stores `value` unless `key` already has one (used to fill from a tier),
    /// within `max_bytes` for the namespace like [`SharedData::set`].
    pub fn insert_if_absent(&self, vm_id: &str, key: &str, value: Bytes, max_bytes: u64) {
        let k = (vm_id.to_owned(), key.to_owned());
        if self.cache.contains_key(&k) {
            return;
        }
        let entry = Entry {
            value,
            cas: 1,
            expires: None,
        };
        let used = self.usage.of(vm_id);
        if reserve(&used, weight(&k, &entry), 0, max_bytes).is_err() {
            return;
        }
        let added = weight(&k, &entry);
        let stored = self.cache.entry(k).or_insert_with(|| entry);
        if !stored.is_fresh() {
            // Someone else stored it first; their write was counted.
            self.usage.release(vm_id, added);
        }
    }

    /// Gives an existing entry a new TTL, in one step with the entry: its
    /// value and CAS stay, so a writer that read it before still writes
    /// (and nothing written in between is lost).
    pub fn set_ttl(&self, vm_id: &str, key: &str, ttl: Duration) -> Result<(), SetError> {
        use moka::ops::compute::Op;
        let mut outcome = Err(SetError::NotFound);
        let used = self.usage.of(vm_id);
        let k = (vm_id.to_owned(), key.to_owned());
        self.cache.entry(k.clone()).and_compute_with(|current| {
            let Some(current) = current.map(|e| e.into_value()) else {
                return Op::Nop;
            };
            // The same entry again: its weight is added as the replaced
            // one's is released (by the removal listener).
            used.fetch_add(weight(&k, &current), Ordering::AcqRel);
            outcome = Ok(());
            Op::Put(Entry {
                expires: Some(Instant::now() + ttl),
                ..current
            })
        });
        outcome
    }

    /// Removes `key`.
    pub fn delete(&self, vm_id: &str, key: &str) -> Result<(), SetError> {
        self.cache
            .remove(&(vm_id.to_owned(), key.to_owned()))
            .map(|_| ())
            .ok_or(SetError::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_detects_a_concurrent_write() {
        let data = SharedData::new(1 << 20);
        data.set("p", "k", Bytes::from_static(b"1"), 0, None, u64::MAX)
            .expect("set");
        let (_, cas) = data.get("p", "k").expect("present");
        data.set("p", "k", Bytes::from_static(b"2"), cas, None, u64::MAX)
            .expect("cas matches");
        assert_eq!(
            data.set("p", "k", Bytes::from_static(b"3"), cas, None, u64::MAX),
            Err(SetError::CasMismatch)
        );
        assert_eq!(
            data.get("p", "k").map(|(v, _)| v),
            Some(Bytes::from_static(b"2"))
        );
    }

    #[test]
    fn a_ttl_keeps_the_value_and_its_cas() {
        let data = SharedData::new(1 << 20);
        data.set("p", "k", Bytes::from_static(b"1"), 0, None, u64::MAX)
            .expect("set");
        let (_, cas) = data.get("p", "k").expect("present");
        data.set_ttl("p", "k", Duration::from_millis(20))
            .expect("present");
        assert_eq!(data.get("p", "k"), Some((Bytes::from_static(b"1"), cas)));
        data.set("p", "k", Bytes::from_static(b"2"), cas, None, u64::MAX)
            .expect("a writer that read before the TTL still writes");
        data.cache.run_pending_tasks();
        assert_eq!(data.bytes_held("p"), 2 + 1 + u64::from(ENTRY_OVERHEAD));
        std::thread::sleep(Duration::from_millis(40));
        assert!(
            data.get("p", "k").is_none(),
            "the TTL holds across the write"
        );
        assert_eq!(
            data.set_ttl("p", "gone", Duration::from_secs(1)),
            Err(SetError::NotFound)
        );
    }

    #[test]
    fn namespaces_are_separate_and_ttl_expires() {
        let data = SharedData::new(1 << 20);
        data.set(
            "a",
            "k",
            Bytes::from_static(b"x"),
            0,
            Some(Duration::from_millis(1)),
            u64::MAX,
        )
        .expect("set");
        assert!(data.get("b", "k").is_none());
        std::thread::sleep(Duration::from_millis(5));
        assert!(data.get("a", "k").is_none());
    }

    #[test]
    fn a_namespace_holds_at_most_its_bytes_and_frees_them_on_replace_and_delete() {
        let data = SharedData::new(1 << 20);
        let cost = |value_len: u64| 3 + value_len + u64::from(ENTRY_OVERHEAD);
        let max = cost(100) + cost(50);
        let value = |n: usize| Bytes::from(vec![b'x'; n]);
        data.set("p", "k1", value(100), 0, None, max).expect("fits");
        data.set("p", "k2", value(50), 0, None, max)
            .expect("exactly full");
        assert_eq!(data.bytes_held("p"), max);
        assert_eq!(
            data.set("p", "k3", value(0), 0, None, max),
            Err(SetError::Quota(Quota::SharedDataBytes.into()))
        );
        data.set("q", "k3", value(100), 0, None, max)
            .expect("another plugin has its own bytes");
        data.set("p", "k1", value(90), 0, None, max)
            .expect("replacing frees the old value first");
        assert_eq!(
            data.bytes_held("p"),
            cost(90) + cost(50),
            "a replaced value is released at once"
        );
        data.set("p", "k1", value(100), 0, None, max)
            .expect("and can be replaced again at the limit");
        data.set("p", "k1", value(90), 0, None, max)
            .expect("shrinks");
        assert_eq!(
            data.set("p", "k1", value(101), 0, None, max),
            Err(SetError::Quota(Quota::SharedDataBytes.into()))
        );
        data.delete("p", "k2").expect("present");
        data.cache.run_pending_tasks();
        assert_eq!(data.bytes_held("p"), cost(90));
        data.insert_if_absent("p", "k2", value(50), max);
        data.insert_if_absent("p", "k4", value(50), max);
        data.cache.run_pending_tasks();
        assert_eq!(data.bytes_held("p"), cost(90) + cost(50), "k4 did not fit");
        assert!(data.get("p", "k4").is_none());
    }
}
