//! Shared data (`proxy_get/set_shared_data`): a bounded key/value cache with
//! compare-and-swap, shared by every VM of the same plugin (Weir's `vm_id` is
//! the plugin name), backed by moka. Entries may carry a TTL (Weir extension).

use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::Expiry;
use moka::sync::Cache;

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
}

impl SharedData {
    /// A store bounded to `max_bytes` (keys, values and per-entry overhead).
    pub fn new(max_bytes: u64) -> Self {
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &(String, String), e: &Entry| {
                let len = k.0.len() + k.1.len() + e.value.len();
                u32::try_from(len)
                    .unwrap_or(u32::MAX)
                    .saturating_add(ENTRY_OVERHEAD)
            })
            .expire_after(EntryExpiry)
            .build();
        Self { cache }
    }

    /// The value and its CAS for `key` in namespace `vm_id`.
    pub fn get(&self, vm_id: &str, key: &str) -> Option<(Bytes, u32)> {
        self.cache
            .get(&(vm_id.to_owned(), key.to_owned()))
            .map(|e| (e.value, e.cas))
    }

    /// Sets `key`; `cas` 0 is unconditional, otherwise it must match the current
    /// CAS (ignored for a new key). Each write bumps the CAS. `ttl` `None` keeps
    /// the entry's current expiry.
    pub fn set(
        &self,
        vm_id: &str,
        key: &str,
        value: Bytes,
        cas: u32,
        ttl: Option<Duration>,
    ) -> Result<(), SetError> {
        use moka::ops::compute::Op;
        let mut outcome = Ok(());
        self.cache
            .entry((vm_id.to_owned(), key.to_owned()))
            .and_compute_with(|current| {
                let current = current.map(|e| e.into_value());
                match current {
                    Some(e) if cas != 0 && e.cas != cas => {
                        outcome = Err(SetError::CasMismatch);
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

    /// Stores `value` unless `key` already has one (used to fill from a tier).
    pub fn insert_if_absent(&self, vm_id: &str, key: &str, value: Bytes) {
        self.cache
            .entry((vm_id.to_owned(), key.to_owned()))
            .or_insert_with(|| Entry {
                value,
                cas: 1,
                expires: None,
            });
    }

    /// Gives an existing entry a new TTL.
    pub fn set_ttl(&self, vm_id: &str, key: &str, ttl: Duration) -> Result<(), SetError> {
        let (value, _) = self.get(vm_id, key).ok_or(SetError::NotFound)?;
        self.set(vm_id, key, value, 0, Some(ttl))
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
        data.set("p", "k", Bytes::from_static(b"1"), 0, None)
            .expect("set");
        let (_, cas) = data.get("p", "k").expect("present");
        data.set("p", "k", Bytes::from_static(b"2"), cas, None)
            .expect("cas matches");
        assert_eq!(
            data.set("p", "k", Bytes::from_static(b"3"), cas, None),
            Err(SetError::CasMismatch)
        );
        assert_eq!(
            data.get("p", "k").map(|(v, _)| v),
            Some(Bytes::from_static(b"2"))
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
        )
        .expect("set");
        assert!(data.get("b", "k").is_none());
        std::thread::sleep(Duration::from_millis(5));
        assert!(data.get("a", "k").is_none());
    }
}
