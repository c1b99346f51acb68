//! The host side of the Proxy-Wasm ABI (0.2.1 and 0.2.0): every `env` function
//! a filter may import, grouped as the ABI groups them, plus a minimal WASI.
//!
//! Host functions see a stream only through `StreamData`; they know no hyper
//! types. A bad pointer, a call in the wrong phase or an unknown id returns the
//! ABI's status code; only the guest's own allocator can trap.
//!
//! Guest input is bounded before the host acts on it: every span goes through
//! `memory::Span` (inside guest memory, within its cap from `caps`), host calls
//! whose work grows with guest input first check the callback's deadline
//! ([`on_time`]), and what a plugin may hold in the services is held to its
//! quotas ([`refuse`] answers a quota hit).

/// Reads `len` bytes at `ptr` (at most `cap`) or returns the status from the
/// enclosing host function.
macro_rules! read_or_return {
    ($c:expr, $ptr:expr, $len:expr, $cap:expr) => {
        match memory::read($c, span($ptr, $len, $cap)) {
            Ok(bytes) => bytes,
            Err(status) => return Ok(status as i32),
        }
    };
}

pub(crate) mod caps;
mod foreign;
mod grpc;
mod higress;
mod memory;
pub(crate) mod pairs;
mod properties;
mod response_cache;
mod services;
mod wasi;

pub use crate::exchange::unix_nanos;
use std::collections::HashSet;

use bytes::Bytes;
use wasmtime::{IntoFunc, Linker};

use memory::{Ctx, span};

use super::headers::MapType;
use super::stream::{LocalReply, Phase, StreamData};
use super::vm::{DeadlineExceeded, ROOT_CONTEXT_ID, VmState};
use crate::services::grpc_call;
use crate::services::quota::{Quota, QuotaExceeded};

/// Proxy-Wasm status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Status {
    /// 0.
    Ok = 0,
    /// 1.
    NotFound = 1,
    /// 2.
    BadArgument = 2,
    /// 4.
    ParseFailure = 4,
    /// 6: the guest passed a range outside its memory.
    InvalidMemoryAccess = 6,
    /// 7.
    Empty = 7,
    /// 8.
    CasMismatch = 8,
    /// 10.
    InternalFailure = 10,
    /// 12.
    Unimplemented = 12,
}

/// `Ok(())` → 0, `Err(status)` → its code.
fn code(result: Result<(), Status>) -> i32 {
    match result {
        Ok(()) => Status::Ok as i32,
        Err(status) => status as i32,
    }
}

/// Fails the callback once its deadline has passed. Host calls whose work
/// grows with guest input call this first, so a guest that loops on them stops
/// at its deadline just as one looping in its own code does.
fn on_time(state: &VmState, call: &'static str) -> wasmtime::Result<()> {
    if state.plugin.epoch() >= state.deadline {
        return Err(DeadlineExceeded { call }.into());
    }
    Ok(())
}

/// Answers a quota hit: warns (at most once per `quota::WARN_INTERVAL` per
/// plugin and quota) and returns `BAD_ARGUMENT`.
fn refuse(state: &VmState, exceeded: QuotaExceeded) -> i32 {
    warn_quota(state, exceeded.quota);
    Status::BadArgument as i32
}

/// Logs that the plugin hit `quota`, unless it was warned about recently.
fn warn_quota(state: &VmState, quota: Quota) {
    let plugin = &state.plugin;
    if plugin.warnings.should_warn(quota) {
        tracing::warn!(
            plugin = plugin.name.as_str(),
            quota = quota.name(),
            limit = quota.limit(&plugin.limits.quotas),
            "plugin `{}` hit its `{}` quota; refusing what exceeds it (next warning for this quota in {}s at the earliest)",
            plugin.name,
            quota.name(),
            crate::services::quota::WARN_INTERVAL.as_secs(),
        );
    }
}

/// Registers host functions and remembers their names.
struct Registry<'a> {
    linker: &'a mut Linker<VmState>,
    names: HashSet<(&'static str, &'static str)>,
}

impl Registry<'_> {
    fn add<Params, Args>(
        &mut self,
        module: &'static str,
        name: &'static str,
        func: impl IntoFunc<VmState, Params, Args>,
    ) -> wasmtime::Result<()> {
        self.linker.func_wrap(module, name, func)?;
        self.names.insert((module, name));
        Ok(())
    }

    fn env<Params, Args>(
        &mut self,
        name: &'static str,
        func: impl IntoFunc<VmState, Params, Args>,
    ) -> wasmtime::Result<()> {
        self.add("env", name, func)
    }
}

/// Defines every host function; returns the `(module, name)` pairs defined.
pub fn add_to_linker(
    linker: &mut Linker<VmState>,
) -> wasmtime::Result<HashSet<(&'static str, &'static str)>> {
    let mut r = Registry {
        linker,
        names: HashSet::new(),
    };
    add_context_functions(&mut r)?;
    add_buffer_functions(&mut r)?;
    add_map_functions(&mut r)?;
    add_stream_functions(&mut r)?;
    services::add(&mut r)?;
    higress::add(&mut r)?;
    grpc::add(&mut r)?;
    wasi::add(&mut r)?;
    Ok(r.names)
}

/// The stream of the effective context, if it is an HTTP context lent to this VM.
fn stream<'c>(caller: &'c mut Ctx<'_>) -> Option<&'c mut StreamData> {
    stream_in(caller.data_mut())
}

/// [`stream`], given the host state.
fn stream_in(state: &mut VmState) -> Option<&mut StreamData> {
    let id = state.effective;
    state.streams.get_mut(&id).map(|b| &mut **b)
}

fn add_context_functions(r: &mut Registry<'_>) -> wasmtime::Result<()> {
    r.env(
        "proxy_log",
        |mut c: Ctx<'_>, level: i32, ptr: i32, len: i32| {
            on_time(c.data(), "proxy_log")?;
            if !(0..=5).contains(&level) {
                return Ok(Status::BadArgument as i32);
            }
            // Any length inside guest memory is accepted (the Rust SDK panics
            // on any status but OK); only the first `caps::LOG_MESSAGE` bytes
            // are logged, and nothing is copied when nobody listens.
            let ([bytes], state) = match memory::borrow(&mut c, [span(ptr, len, usize::MAX)]) {
                Ok(borrowed) => borrowed,
                Err(status) => return Ok(status as i32),
            };
            if !plugin_log_enabled(level) {
                return Ok(Status::Ok as i32);
            }
            let bytes = &bytes[..bytes.len().min(caps::LOG_MESSAGE)];
            if !state.plugin.log_bucket.take(bytes.len()) {
                warn_quota(state, Quota::LogRate);
                return Ok(Status::Ok as i32);
            }
            let message = String::from_utf8_lossy(bytes);
            let plugin = state.plugin.name.as_str();
            // The stream the callback serves, when it serves one.
            let stream = state.streams.get(&state.effective).map(|s| &s.info);
            let route = stream.map(|info| info.route_name.as_str());
            let request_id = stream.map(|info| info.request_id.as_str());
            let trace_id = crate::observe::trace::current_trace_id();
            let trace_id = trace_id.as_deref();
            match level {
                0 => tracing::trace!(target: "weir::plugin", plugin, route, request_id, trace_id, "{message}"),
                1 => tracing::debug!(target: "weir::plugin", plugin, route, request_id, trace_id, "{message}"),
                2 => tracing::info!(target: "weir::plugin", plugin, route, request_id, trace_id, "{message}"),
                3 => tracing::warn!(target: "weir::plugin", plugin, route, request_id, trace_id, "{message}"),
                4 | 5 => tracing::error!(target: "weir::plugin", plugin, route, request_id, trace_id, "{message}"),
                _ => return Ok(Status::BadArgument as i32),
            }
            Ok(Status::Ok as i32)
        },
    )?;
    r.env("proxy_get_log_level", |mut c: Ctx<'_>, ret: i32| {
        Ok(code(memory::write_u32(&mut c, ret, log_level())))
    })?;
    r.env(
        "proxy_get_current_time_nanoseconds",
        |mut c: Ctx<'_>, ret: i32| Ok(code(memory::write_u64(&mut c, ret, unix_nanos()))),
    )?;
    r.env(
        "proxy_set_tick_period_milliseconds",
        |mut c: Ctx<'_>, ms: i32| {
            let period = (ms > 0).then(|| std::time::Duration::from_millis(ms as u32 as u64));
            c.data_mut().tick_period = period;
            Ok(Status::Ok as i32)
        },
    )?;
    r.env("proxy_set_effective_context", |mut c: Ctx<'_>, id: i32| {
        let id = id as u32;
        if id == ROOT_CONTEXT_ID || c.data().live_contexts.contains(&id) {
            c.data_mut().effective = id;
            Ok(Status::Ok as i32)
        } else {
            Ok(Status::BadArgument as i32)
        }
    })?;
    r.env("proxy_done", |_: Ctx<'_>| Ok(Status::Ok as i32))?;
    r.env(
        "proxy_get_property",
        |mut c: Ctx<'_>, ptr: i32, len: i32, ret_ptr: i32, ret_len: i32| {
            on_time(c.data(), "proxy_get_property")?;
            let value = match memory::borrow(&mut c, [span(ptr, len, caps::PROPERTY_PATH)]) {
                Ok(([path], state)) => properties::get(
                    state,
                    state.streams.get(&state.effective).map(|b| &**b),
                    path,
                ),
                Err(status) => return Ok(status as i32),
            };
            match value {
                Some(bytes) => Ok(code(memory::give(&mut c, &bytes, ret_ptr, ret_len)?)),
                None => Ok(Status::NotFound as i32),
            }
        },
    )?;
    r.env(
        "proxy_set_property",
        |mut c: Ctx<'_>, ptr: i32, len: i32, vptr: i32, vlen: i32| {
            on_time(c.data(), "proxy_set_property")?;
            let spans = [
                span(ptr, len, caps::PROPERTY_PATH),
                span(vptr, vlen, caps::PROPERTY_VALUE),
            ];
            let ([path, value], state) = match memory::borrow(&mut c, spans) {
                Ok(borrowed) => borrowed,
                Err(status) => return Ok(status as i32),
            };
            if path == properties::CONSUMER {
                return Ok(Status::BadArgument as i32);
            }
            let Some(stream) = stream_in(state) else {
                return Ok(Status::NotFound as i32);
            };
            stream.properties.retain(|(p, _)| p.as_slice() != path);
            if stream.properties.len() >= caps::PROPERTIES {
                return Ok(Status::BadArgument as i32);
            }
            stream.properties.push((path.to_vec(), value.to_vec()));
            Ok(Status::Ok as i32)
        },
    )?;
    Ok(())
}

/// The ABI log level (0 trace … 4 error, 5 critical: nothing is kept) below
/// which plugin messages are dropped.
fn log_level() -> u32 {
    use tracing::level_filters::LevelFilter;
    match LevelFilter::current() {
        LevelFilter::TRACE => 0,
        LevelFilter::DEBUG => 1,
        LevelFilter::INFO => 2,
        LevelFilter::WARN => 3,
        LevelFilter::ERROR => 4,
        _ => 5,
    }
}

/// Whether a plugin log line at ABI `level` would be recorded.
fn plugin_log_enabled(level: i32) -> bool {
    use tracing::Level;
    match level {
        0 => tracing::enabled!(target: "weir::plugin", Level::TRACE),
        1 => tracing::enabled!(target: "weir::plugin", Level::DEBUG),
        2 => tracing::enabled!(target: "weir::plugin", Level::INFO),
        3 => tracing::enabled!(target: "weir::plugin", Level::WARN),
        _ => tracing::enabled!(target: "weir::plugin", Level::ERROR),
    }
}

/// The buffer of ABI type `kind` for reading, when it exists now.
fn buffer(state: &VmState, kind: i32) -> Option<Bytes> {
    let stream = state.streams.get(&state.effective);
    match kind {
        0 => stream
            .filter(|s| s.phase == Phase::RequestBody)
            .map(|s| Bytes::copy_from_slice(&s.body)),
        1 => stream
            .filter(|s| s.phase == Phase::ResponseBody)
            .map(|s| Bytes::copy_from_slice(&s.body)),
        4 => state.call_response.as_ref().map(|r| r.body.clone()),
        5 => match &state.grpc_received {
            Some(super::grpc::Received::Buffer(bytes)) => Some(bytes.clone()),
            _ => None,
        },
        9 => state.redis_response.clone(),
        // As in Envoy: the VM configuration at any time, the plugin
        // configuration only during start-up.
        6 => Some(state.plugin.vm_configuration.clone()),
        7 => state.configuration.clone(),
        _ => None,
    }
}

fn add_buffer_functions(r: &mut Registry<'_>) -> wasmtime::Result<()> {
    r.env(
        "proxy_get_buffer_bytes",
        |mut c: Ctx<'_>, kind: i32, start: i32, max: i32, ret_ptr: i32, ret_len: i32| {
            on_time(c.data(), "proxy_get_buffer_bytes")?;
            let Some(bytes) = buffer(c.data(), kind) else {
                return Ok(Status::NotFound as i32);
            };
            let start = (start as u32 as usize).min(bytes.len());
            let end = start.saturating_add(max as u32 as usize).min(bytes.len());
            Ok(code(memory::give(
                &mut c,
                &bytes[start..end],
                ret_ptr,
                ret_len,
            )?))
        },
    )?;
    r.env(
        "proxy_get_buffer_status",
        |mut c: Ctx<'_>, kind: i32, len_ptr: i32, flags_ptr: i32| {
            let Some(bytes) = buffer(c.data(), kind) else {
                return Ok(Status::NotFound as i32);
            };
            let result = memory::write_u32(&mut c, len_ptr, bytes.len() as u32)
                .and_then(|()| memory::write_u32(&mut c, flags_ptr, 0));
            Ok(code(result))
        },
    )?;
    r.env(
        "proxy_set_buffer_bytes",
        |mut c: Ctx<'_>, kind: i32, start: i32, size: i32, ptr: i32, len: i32| {
            on_time(c.data(), "proxy_set_buffer_bytes")?;
            let ([data], state) = match memory::borrow(&mut c, [span(ptr, len, caps::BODY_BYTES)]) {
                Ok(borrowed) => borrowed,
                Err(status) => return Ok(status as i32),
            };
            let phase = match kind {
                0 => Phase::RequestBody,
                1 => Phase::ResponseBody,
                _ => return Ok(Status::BadArgument as i32),
            };
            // A body that is not available now cannot be written: BAD_ARGUMENT,
            // as Envoy answers (its buffer is null then, and refuses writes).
            let Some(stream) = stream_in(state).filter(|s| s.phase == phase) else {
                return Ok(Status::BadArgument as i32);
            };
            let span = (start as u32 as usize, size as u32 as usize);
            Ok(code(splice(&mut stream.body, span, data)))
        },
    )?;
    Ok(())
}

/// `proxy_set_buffer_bytes` on a body: replaces `size` bytes at `start` with
/// `data`. Envoy's cases behave as in Envoy (`Buffer::copyFrom`): `(0, 0)`
/// prepends, `(0, n ≥ len)` replaces the whole body, and a `start` at or past
/// the end appends (the Go SDK's `Append…Body` passes `MaxInt32`). Envoy
/// refuses any other range with `BAD_ARGUMENT`; Weir replaces it (`size`
/// clipped to the end). `BAD_ARGUMENT` when the result would exceed
/// [`caps::BODY_BYTES`].
fn splice(
    body: &mut bytes::BytesMut,
    (start, size): (usize, usize),
    data: &[u8],
) -> Result<(), Status> {
    let start = start.min(body.len());
    let end = start.saturating_add(size).min(body.len());
    if body.len() - (end - start) + data.len() > caps::BODY_BYTES {
        return Err(Status::BadArgument);
    }
    let tail = body.split_off(end);
    body.truncate(start);
    body.extend_from_slice(data);
    body.extend_from_slice(&tail);
    Ok(())
}

/// For the callout maps (4 and 5 gRPC metadata, 6 and 7 HTTP callout
/// headers and trailers): `Some(pairs)` while they are being delivered,
/// `Some(None)` otherwise; `None` for the stream's own maps.
fn call_response_map(state: &VmState, map: i32) -> Option<Option<&Vec<pairs::Pair>>> {
    let response = state.call_response.as_ref();
    match map {
        4 | 5 => Some(state.grpc_received.as_ref().and_then(|r| r.map(map))),
        6 => Some(response.map(|r| &r.headers)),
        7 => Some(response.map(|r| &r.trailers)),
        _ => None,
    }
}

fn add_map_functions(r: &mut Registry<'_>) -> wasmtime::Result<()> {
    r.env(
        "proxy_get_header_map_pairs",
        |mut c: Ctx<'_>, map: i32, ret_ptr: i32, ret_len: i32| {
            on_time(c.data(), "proxy_get_header_map_pairs")?;
            let pairs = match call_response_map(c.data(), map) {
                Some(found) => found.cloned().unwrap_or_default(),
                None => MapType::from_abi(map)
                    .and_then(|m| stream(&mut c).and_then(|s| s.pairs(m)))
                    .unwrap_or_default(),
            };
            let bytes = if pairs.is_empty() {
                Vec::new()
            } else {
                pairs::encode(pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
            };
            Ok(code(memory::give(&mut c, &bytes, ret_ptr, ret_len)?))
        },
    )?;
    r.env(
        "proxy_set_header_map_pairs",
        |mut c: Ctx<'_>, map: i32, ptr: i32, len: i32| {
            on_time(c.data(), "proxy_set_header_map_pairs")?;
            let ([bytes], state) = match memory::borrow(&mut c, [span(ptr, len, caps::MAP_BYTES)]) {
                Ok(borrowed) => borrowed,
                Err(status) => return Ok(status as i32),
            };
            let Some(pairs) = pairs::decode(bytes) else {
                return Ok(Status::BadArgument as i32);
            };
            let (Some(map), Some(stream)) = (MapType::from_abi(map), stream_in(state)) else {
                return Ok(Status::BadArgument as i32);
            };
            Ok(code(stream.set_pairs(map, &pairs)))
        },
    )?;
    r.env(
        "proxy_get_header_map_value",
        |mut c: Ctx<'_>, map: i32, kptr: i32, klen: i32, ret_ptr: i32, ret_len: i32| {
            // A stream's header value is shared, not copied, until it is given to the guest.
            enum Found {
                Stream(http::HeaderValue),
                CallResponse(Vec<u8>),
            }
            let found = match memory::borrow(&mut c, [span(kptr, klen, caps::HEADER_NAME)]) {
                Err(status) => return Ok(status as i32),
                Ok(([key], state)) => match call_response_map(state, map) {
                    Some(pairs) => pairs.and_then(|pairs| {
                        pairs
                            .iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case(key))
                            .map(|(_, v)| Found::CallResponse(v.clone()))
                    }),
                    None => MapType::from_abi(map)
                        .and_then(|m| stream_in(state)?.value(m, key))
                        .map(Found::Stream),
                },
            };
            let value = match &found {
                Some(Found::Stream(v)) => v.as_bytes(),
                Some(Found::CallResponse(v)) => v.as_slice(),
                None => return Ok(Status::NotFound as i32),
            };
            Ok(code(memory::give(&mut c, value, ret_ptr, ret_len)?))
        },
    )?;
    r.env(
        "proxy_get_header_map_size",
        |mut c: Ctx<'_>, map: i32, ret: i32| {
            let size = MapType::from_abi(map)
                .and_then(|m| stream(&mut c).and_then(|s| s.pairs(m)))
                .map_or(0, |p| {
                    p.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
                });
            Ok(code(memory::write_u32(&mut c, ret, size as u32)))
        },
    )?;
    for (name, op) in [
        ("proxy_add_header_map_value", Edit::Add),
        ("proxy_replace_header_map_value", Edit::Replace),
    ] {
        r.env(
            name,
            move |mut c: Ctx<'_>, map: i32, kptr: i32, klen: i32, vptr: i32, vlen: i32| {
                on_time(c.data(), name)?;
                let spans = [
                    span(kptr, klen, caps::HEADER_NAME),
                    span(vptr, vlen, caps::HEADER_VALUE),
                ];
                let ([key, value], state) = match memory::borrow(&mut c, spans) {
                    Ok(borrowed) => borrowed,
                    Err(status) => return Ok(status as i32),
                };
                let (Some(map), Some(stream)) = (MapType::from_abi(map), stream_in(state)) else {
                    return Ok(Status::BadArgument as i32);
                };
                Ok(code(match op {
                    Edit::Add => stream.add(map, key, value),
                    Edit::Replace => stream.replace(map, key, value),
                }))
            },
        )?;
    }
    r.env(
        "proxy_remove_header_map_value",
        |mut c: Ctx<'_>, map: i32, kptr: i32, klen: i32| {
            let ([key], state) = match memory::borrow(&mut c, [span(kptr, klen, caps::HEADER_NAME)])
            {
                Ok(borrowed) => borrowed,
                Err(status) => return Ok(status as i32),
            };
            let (Some(map), Some(stream)) = (MapType::from_abi(map), stream_in(state)) else {
                return Ok(Status::BadArgument as i32);
            };
            Ok(code(stream.remove(map, key)))
        },
    )?;
    Ok(())
}

#[derive(Clone, Copy)]
enum Edit {
    Add,
    Replace,
}

fn add_stream_functions(r: &mut Registry<'_>) -> wasmtime::Result<()> {
    r.env(
        "proxy_send_local_response",
        |mut c: Ctx<'_>,
         status: i32,
         dptr: i32,
         dlen: i32,
         bptr: i32,
         blen: i32,
         hptr: i32,
         hlen: i32,
         grpc_status: i32| {
            on_time(c.data(), "proxy_send_local_response")?;
            let spans = [
                span(dptr, dlen, caps::LOCAL_REPLY_DETAILS),
                span(bptr, blen, caps::LOCAL_REPLY_BODY),
                span(hptr, hlen, caps::MAP_BYTES),
            ];
            let ([details, body, headers], state) = match memory::borrow(&mut c, spans) {
                Ok(borrowed) => borrowed,
                Err(status) => return Ok(status as i32),
            };
            let Some(mut headers) = pairs::decode(headers) else {
                return Ok(Status::BadArgument as i32);
            };
            if !(200..=599).contains(&status) {
                return Ok(Status::BadArgument as i32);
            }
            let Some(stream) = stream_in(state).filter(|s| !s.response_sent) else {
                return Ok(Status::BadArgument as i32);
            };
            let grpc_request = stream
                .request
                .headers
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
            // As Envoy: a gRPC client gets a trailers-only answer (200, the
            // body as `grpc-message`); any other client the reply as given.
            let (status, body) = if grpc_request {
                let grpc_status = u32::try_from(grpc_status)
                    .ok()
                    .filter(|s| *s <= 16)
                    .unwrap_or_else(|| grpc_call::status::from_http(status as u16));
                headers.extend(grpc_call::trailers_only(grpc_status, body));
                (200, Bytes::new())
            } else {
                (status as u16, Bytes::copy_from_slice(body))
            };
            stream.local_reply = Some(LocalReply {
                status,
                headers: headers
                    .into_iter()
                    .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
                    .collect(),
                body,
                details: String::from_utf8_lossy(details).into_owned(),
            });
            stream.resume.wake();
            Ok(Status::Ok as i32)
        },
    )?;
    r.env("proxy_continue_stream", |mut c: Ctx<'_>, kind: i32| {
        Ok(code(resume(&mut c, kind)))
    })?;
    r.env("proxy_continue_request", |mut c: Ctx<'_>| {
        Ok(code(resume(&mut c, 0)))
    })?;
    r.env("proxy_continue_response", |mut c: Ctx<'_>| {
        Ok(code(resume(&mut c, 1)))
    })?;
    r.env("proxy_close_stream", |mut c: Ctx<'_>, kind: i32| {
        if !(0..=1).contains(&kind) {
            return Ok(Status::BadArgument as i32);
        }
        let Some(stream) = stream(&mut c) else {
            return Ok(Status::BadArgument as i32);
        };
        stream.closed = true;
        stream.resume.wake();
        Ok(Status::Ok as i32)
    })?;
    r.env(
        "proxy_clear_route_cache",
        |_: Ctx<'_>| Ok(Status::Ok as i32),
    )?;
    Ok(())
}

/// `proxy_continue_stream`: wake the effective stream's paused direction.
fn resume(c: &mut Ctx<'_>, kind: i32) -> Result<(), Status> {
    if !(0..=1).contains(&kind) {
        return Err(if (2..=3).contains(&kind) {
            Status::Unimplemented
        } else {
            Status::BadArgument
        });
    }
    let live = c.data().live_contexts.contains(&c.data().effective);
    match stream(c) {
        Some(stream) => {
            stream.resume.wake();
            Ok(())
        }
        // A live stream that is not paused here: continuing it changes nothing (as in Envoy).
        None if live => Ok(()),
        None => Err(Status::BadArgument),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spliced(body: &str, span: (usize, usize), data: &str) -> Result<String, Status> {
        let mut buffer = bytes::BytesMut::from(body);
        splice(&mut buffer, span, data.as_bytes())?;
        Ok(String::from_utf8_lossy(&buffer).into_owned())
    }

    #[test]
    fn set_buffer_bytes_prepends_replaces_and_appends_as_envoy_does() {
        let max = i32::MAX as usize;
        assert_eq!(spliced("body", (0, 0), "<"), Ok("<body".into()));
        assert_eq!(spliced("body", (0, max), "new"), Ok("new".into()));
        assert_eq!(spliced("body", (0, 4), "new"), Ok("new".into()));
        assert_eq!(spliced("body", (max, 0), ">"), Ok("body>".into()));
        assert_eq!(spliced("body", (4, 0), ">"), Ok("body>".into()));
        assert_eq!(spliced("", (u32::MAX as usize, max), "x"), Ok("x".into()));
    }

    #[test]
    fn set_buffer_bytes_splices_ranges_envoy_refuses() {
        assert_eq!(spliced("body", (1, 2), "OD"), Ok("bODy".into()));
        assert_eq!(spliced("body", (0, 2), "n"), Ok("ndy".into()));
        assert_eq!(spliced("body", (2, 99), "!"), Ok("bo!".into()));
    }

    #[test]
    fn set_buffer_bytes_keeps_the_body_cap() {
        let mut buffer = bytes::BytesMut::from(&b"x"[..]);
        let big = vec![0; caps::BODY_BYTES];
        assert_eq!(
            splice(&mut buffer, (i32::MAX as usize, 0), &big),
            Err(Status::BadArgument)
        );
        assert_eq!(splice(&mut buffer, (0, 1), &big), Ok(()));
    }
}
