//! Shared data: a key/value store the VMs of a plugin share (per `vm_id`),
//! with compare-and-swap, and in Weir a time to live and deletion.

use std::time::Duration;

use crate::host;
use crate::status::{HostError, HostResult};

/// A value and the version it was read at (pass it to [`set`] to write only
/// if nobody wrote in between).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The value.
    pub value: Vec<u8>,
    /// Its version.
    pub cas: u32,
}

/// The entry under `key`, if any.
pub fn get(key: &str) -> HostResult<Option<Entry>> {
    let (value, cas) = host::get_shared_data(key)?;
    Ok(value.map(|value| Entry { value, cas }))
}

/// Writes `value` under `key`. With `cas`, only if the entry is still at that
/// version: [`HostError::CasMismatch`] when another writer came first (read
/// again and retry).
pub fn set(key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()> {
    host::set_shared_data(key, value, cas.unwrap_or(0))
}

/// Gives `key` a time to live (Weir's `weir.shared_data_set_ttl`);
/// [`HostError::NotFound`] for a missing key or a host without it.
pub fn set_ttl(key: &str, ttl: Duration) -> HostResult<()> {
    let args = serde_json::json!({ "key": key, "ttl_ms": ttl.as_millis() as u64 });
    host::call_foreign_function("weir.shared_data_set_ttl", args.to_string().as_bytes()).map(drop)
}

/// Removes `key` (Weir's `weir.shared_data_delete`). Hosts without it keep
/// the key; there it is overwritten with an empty value instead, which
/// [`get`] callers should treat as absent.
pub fn delete(key: &str) -> HostResult<()> {
    let args = serde_json::json!({ "key": key });
    match host::call_foreign_function("weir.shared_data_delete", args.to_string().as_bytes()) {
        Ok(_) => Ok(()),
        Err(HostError::NotFound) if get(key)?.is_none() => Ok(()),
        Err(HostError::NotFound) => set(key, b"", None),
        Err(error) => Err(error),
    }
}
