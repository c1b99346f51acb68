//! The Proxy-Wasm imports (module `env`) behind safe functions. Bytes the
//! host hands back were allocated by the host through
//! [`proxy_on_memory_allocate`] with exactly their length, and are taken
//! back into a `Vec` here.
#![allow(unsafe_code)]

use std::ptr::null_mut;

use super::{Buffer, LogLevel, Map, MetricKind, Stream, deserialize_pairs, serialize_pairs};
use crate::status::{HostError, HostResult};

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_log(level: u32, ptr: *const u8, len: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(ret: *mut u64) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(
        kind: u32,
        start: usize,
        max: usize,
        ret_ptr: *mut *mut u8,
        ret_len: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(
        kind: u32,
        start: usize,
        size: usize,
        ptr: *const u8,
        len: usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(map: u32, ret_ptr: *mut *mut u8, ret_len: *mut usize) -> u32;
    fn proxy_get_header_map_value(
        map: u32,
        key_ptr: *const u8,
        key_len: usize,
        ret_ptr: *mut *mut u8,
        ret_len: *mut usize,
    ) -> u32;
    fn proxy_add_header_map_value(
        map: u32,
        key_ptr: *const u8,
        key_len: usize,
        value_ptr: *const u8,
        value_len: usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map: u32,
        key_ptr: *const u8,
        key_len: usize,
        value_ptr: *const u8,
        value_len: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map: u32, key_ptr: *const u8, key_len: usize) -> u32;
    fn proxy_get_property(
        path_ptr: *const u8,
        path_len: usize,
        ret_ptr: *mut *mut u8,
        ret_len: *mut usize,
    ) -> u32;
    fn proxy_set_property(
        path_ptr: *const u8,
        path_len: usize,
        value_ptr: *const u8,
        value_len: usize,
    ) -> u32;
    fn proxy_send_local_response(
        status: u32,
        details_ptr: *const u8,
        details_len: usize,
        body_ptr: *const u8,
        body_len: usize,
        headers_ptr: *const u8,
        headers_len: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_continue_stream(stream: u32) -> u32;
    fn proxy_http_call(
        upstream_ptr: *const u8,
        upstream_len: usize,
        headers_ptr: *const u8,
        headers_len: usize,
        body_ptr: *const u8,
        body_len: usize,
        trailers_ptr: *const u8,
        trailers_len: usize,
        timeout_ms: u32,
        ret_token: *mut u32,
    ) -> u32;
    fn proxy_redis_call(
        service_ptr: *const u8,
        service_len: usize,
        query_ptr: *const u8,
        query_len: usize,
        ret_token: *mut u32,
    ) -> u32;
    fn proxy_get_shared_data(
        key_ptr: *const u8,
        key_len: usize,
        ret_ptr: *mut *mut u8,
        ret_len: *mut usize,
        ret_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_ptr: *const u8,
        key_len: usize,
        value_ptr: *const u8,
        value_len: usize,
        cas: u32,
    ) -> u32;
    fn proxy_define_metric(kind: u32, name_ptr: *const u8, name_len: usize, ret: *mut u32) -> u32;
    fn proxy_increment_metric(id: u32, delta: i64) -> u32;
    fn proxy_record_metric(id: u32, value: u64) -> u32;
    fn proxy_call_foreign_function(
        name_ptr: *const u8,
        name_len: usize,
        args_ptr: *const u8,
        args_len: usize,
        ret_ptr: *mut *mut u8,
        ret_len: *mut usize,
    ) -> u32;
}

/// The allocator the host calls to hand the guest bytes: exactly `size`
/// bytes, owned by the guest from then on (taken back by [`take`]).
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let mut block = std::mem::ManuallyDrop::new(Vec::<u8>::with_capacity(size));
    debug_assert_eq!(block.capacity(), size);
    block.as_mut_ptr()
}

/// `Ok(())` for status 0, the error otherwise.
fn check(status: u32) -> HostResult<()> {
    HostError::from_status(status).map_or(Ok(()), Err)
}

/// Takes back bytes the host allocated (`None` for a null pointer).
fn take(ptr: *mut u8, len: usize) -> Option<Vec<u8>> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: the host allocated `len` bytes at `ptr` through
    // `proxy_on_memory_allocate` (capacity `len`) and handed them over.
    Some(unsafe { Vec::from_raw_parts(ptr, len, len) })
}

/// Runs an import that returns bytes through `ret_ptr`/`ret_len`; `None`
/// when it answered NOT_FOUND.
fn fetch(call: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> HostResult<Option<Vec<u8>>> {
    let mut ptr = null_mut();
    let mut len = 0usize;
    match check(call(&mut ptr, &mut len)) {
        Ok(()) => Ok(Some(take(ptr, len).unwrap_or_default())),
        Err(HostError::NotFound) => Ok(None),
        Err(error) => Err(error),
    }
}

pub(crate) fn log(level: LogLevel, message: &str) -> HostResult<()> {
    // SAFETY: the pointer and length describe `message`, alive for the call.
    check(unsafe { proxy_log(level as u32, message.as_ptr(), message.len()) })
}

pub(crate) fn current_time_nanos() -> HostResult<u64> {
    let mut now = 0u64;
    // SAFETY: `now` is a valid u64 to write.
    check(unsafe { proxy_get_current_time_nanoseconds(&mut now) })?;
    Ok(now)
}

pub(crate) fn set_effective_context(context_id: u32) -> HostResult<()> {
    // SAFETY: no pointers.
    check(unsafe { proxy_set_effective_context(context_id) })
}

pub(crate) fn set_tick_period_milliseconds(period: u32) -> HostResult<()> {
    // SAFETY: no pointers.
    check(unsafe { proxy_set_tick_period_milliseconds(period) })
}

pub(crate) fn get_buffer(buffer: Buffer, start: usize, max: usize) -> HostResult<Option<Vec<u8>>> {
    // SAFETY: the out-pointers are valid for the call.
    fetch(|ptr, len| unsafe { proxy_get_buffer_bytes(buffer as u32, start, max, ptr, len) })
}

pub(crate) fn set_buffer(buffer: Buffer, start: usize, size: usize, data: &[u8]) -> HostResult<()> {
    // SAFETY: the pointer and length describe `data`.
    check(unsafe { proxy_set_buffer_bytes(buffer as u32, start, size, data.as_ptr(), data.len()) })
}

pub(crate) fn get_map(map: Map) -> HostResult<Vec<(String, String)>> {
    // SAFETY: the out-pointers are valid for the call.
    let bytes = fetch(|ptr, len| unsafe { proxy_get_header_map_pairs(map as u32, ptr, len) })?;
    deserialize_pairs(&bytes.unwrap_or_default()).ok_or(HostError::SerializationFailure)
}

pub(crate) fn get_map_value(map: Map, key: &str) -> HostResult<Option<String>> {
    // SAFETY: the key and the out-pointers are valid for the call.
    let bytes = fetch(|ptr, len| unsafe {
        proxy_get_header_map_value(map as u32, key.as_ptr(), key.len(), ptr, len)
    })?;
    Ok(bytes.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

pub(crate) fn add_map_value(map: Map, key: &str, value: &str) -> HostResult<()> {
    // SAFETY: key and value are valid for the call.
    check(unsafe {
        proxy_add_header_map_value(
            map as u32,
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

pub(crate) fn replace_map_value(map: Map, key: &str, value: &str) -> HostResult<()> {
    // SAFETY: key and value are valid for the call.
    check(unsafe {
        proxy_replace_header_map_value(
            map as u32,
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

pub(crate) fn remove_map_value(map: Map, key: &str) -> HostResult<()> {
    // SAFETY: the key is valid for the call.
    check(unsafe { proxy_remove_header_map_value(map as u32, key.as_ptr(), key.len()) })
}

/// A property path as the ABI passes it: segments joined by NUL.
fn property_path(path: &[&str]) -> Vec<u8> {
    path.join("\0").into_bytes()
}

pub(crate) fn get_property(path: &[&str]) -> HostResult<Option<Vec<u8>>> {
    let path = property_path(path);
    // SAFETY: the path and the out-pointers are valid for the call.
    fetch(|ptr, len| unsafe { proxy_get_property(path.as_ptr(), path.len(), ptr, len) })
}

pub(crate) fn set_property(path: &[&str], value: &[u8]) -> HostResult<()> {
    let path = property_path(path);
    // SAFETY: path and value are valid for the call.
    check(unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) })
}

pub(crate) fn send_local_response(
    status: u32,
    details: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> HostResult<()> {
    let headers = serialize_pairs(headers);
    // SAFETY: every pointer and length describes a live slice.
    check(unsafe {
        proxy_send_local_response(
            status,
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    })
}

pub(crate) fn continue_stream(stream: Stream) -> HostResult<()> {
    // SAFETY: no pointers.
    check(unsafe { proxy_continue_stream(stream as u32) })
}

pub(crate) fn http_call(
    upstream: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout_ms: u32,
) -> HostResult<u32> {
    let headers = serialize_pairs(headers);
    let trailers = serialize_pairs(&[]);
    let mut token = 0u32;
    // SAFETY: every pointer and length describes a live slice; `token` is writable.
    check(unsafe {
        proxy_http_call(
            upstream.as_ptr(),
            upstream.len(),
            headers.as_ptr(),
            headers.len(),
            body.as_ptr(),
            body.len(),
            trailers.as_ptr(),
            trailers.len(),
            timeout_ms,
            &mut token,
        )
    })?;
    Ok(token)
}

pub(crate) fn redis_call(service: &str, query: &[u8]) -> HostResult<u32> {
    let mut token = 0u32;
    // SAFETY: service and query are live slices; `token` is writable.
    check(unsafe {
        proxy_redis_call(
            service.as_ptr(),
            service.len(),
            query.as_ptr(),
            query.len(),
            &mut token,
        )
    })?;
    Ok(token)
}

pub(crate) fn get_shared_data(key: &str) -> HostResult<(Option<Vec<u8>>, u32)> {
    let mut cas = 0u32;
    // SAFETY: the key and the out-pointers are valid for the call.
    let value = fetch(|ptr, len| unsafe {
        proxy_get_shared_data(key.as_ptr(), key.len(), ptr, len, &mut cas)
    })?;
    Ok((value, cas))
}

pub(crate) fn set_shared_data(key: &str, value: &[u8], cas: u32) -> HostResult<()> {
    // SAFETY: key and value are live slices.
    check(unsafe {
        proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
    })
}

pub(crate) fn define_metric(kind: MetricKind, name: &str) -> HostResult<u32> {
    let mut id = 0u32;
    // SAFETY: the name is a live slice; `id` is writable.
    check(unsafe { proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub(crate) fn increment_metric(id: u32, delta: i64) -> HostResult<()> {
    // SAFETY: no pointers.
    check(unsafe { proxy_increment_metric(id, delta) })
}

pub(crate) fn record_metric(id: u32, value: u64) -> HostResult<()> {
    // SAFETY: no pointers.
    check(unsafe { proxy_record_metric(id, value) })
}

pub(crate) fn call_foreign_function(name: &str, args: &[u8]) -> HostResult<Vec<u8>> {
    // SAFETY: name, arguments and out-pointers are valid for the call.
    let answer = fetch(|ptr, len| unsafe {
        proxy_call_foreign_function(
            name.as_ptr(),
            name.len(),
            args.as_ptr(),
            args.len(),
            ptr,
            len,
        )
    })?;
    answer.ok_or(HostError::NotFound)
}
