//! The host's functions, one safe Rust function per ABI import.
//!
//! In a filter (`wasm32`) they call the Proxy-Wasm imports ([`abi`]); in a
//! native build they act on the test kit's fake host (`crate::testing`), so
//! the same filter code runs under `cargo test`. Both sides have exactly the
//! functions listed here, and only functions a filter uses are linked: a
//! filter that never calls Redis does not import `proxy_redis_call`, so it
//! loads in hosts that lack it (Envoy).

#[cfg(target_arch = "wasm32")]
mod abi;
#[cfg(not(target_arch = "wasm32"))]
pub(crate) use crate::testing::host::*;
#[cfg(target_arch = "wasm32")]
pub(crate) use abi::*;

/// How important a log line is (the host keeps those at or above its level).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Step-by-step detail.
    Trace = 0,
    /// Detail for debugging.
    Debug = 1,
    /// Normal events.
    Info = 2,
    /// Something unexpected that was handled.
    Warn = 3,
    /// A failure.
    Error = 4,
    /// A failure of the whole filter.
    Critical = 5,
}

/// A header map of the ABI (the SDK reads and writes headers, not trailers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Map {
    Request = 0,
    Response = 2,
    CallResponse = 6,
}

/// A byte buffer of the ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Buffer {
    RequestBody = 0,
    ResponseBody = 1,
    CallResponseBody = 4,
    PluginConfiguration = 7,
    RedisCallResponse = 9,
}

/// A direction of the HTTP stream, for `proxy_continue_stream`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Request = 0,
    Response = 1,
}

/// A metric's kind, for `proxy_define_metric`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MetricKind {
    Counter = 0,
    Gauge = 1,
    Histogram = 2,
}

/// The first value of header `name` (any case) among `pairs`.
pub(crate) fn first_value<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

// Only the ABI serializes maps (the fake host keeps them as pairs); they are
// tested natively all the same.
/// Serializes header pairs as the ABI passes maps: a count, each pair's
/// lengths, then each key and value followed by a NUL.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) fn serialize_pairs(pairs: &[(&str, &str)]) -> Vec<u8> {
    let size: usize = 4 + pairs
        .iter()
        .map(|(k, v)| 8 + k.len() + v.len() + 2)
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (key, value) in pairs {
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (key, value) in pairs {
        out.extend_from_slice(key.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    out
}

/// Reads a serialized map; `None` when the bytes are not one.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) fn deserialize_pairs(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let word = |at: usize| -> Option<usize> {
        let raw: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        Some(u32::from_le_bytes(raw) as usize)
    };
    let count = word(0)?;
    let mut data = 4usize.checked_add(count.checked_mul(8)?)?;
    let mut pairs = Vec::with_capacity(count.min(1024));
    for index in 0..count {
        let key_len = word(4 + index * 8)?;
        let value_len = word(8 + index * 8)?;
        let key = bytes.get(data..data + key_len)?;
        data += key_len + 1;
        let value = bytes.get(data..data + value_len)?;
        data += value_len + 1;
        pairs.push((
            String::from_utf8_lossy(key).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        ));
    }
    Some(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_survive_serialization_and_truncated_maps_are_refused() {
        let pairs = [(":path", "/a"), ("x-empty", ""), ("k", "v")];
        let bytes = serialize_pairs(&pairs);
        let back = deserialize_pairs(&bytes).expect("a map");
        let back: Vec<(&str, &str)> = back.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(back, pairs);
        assert_eq!(deserialize_pairs(&bytes[..bytes.len() - 3]), None);
        assert_eq!(deserialize_pairs(&[]), Some(Vec::new()));
    }
}
