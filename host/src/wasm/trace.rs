//! What a filter asked of the host, recorded for `weir plugin test`: every
//! host call with its cheap arguments and the status it returned, the
//! plugin's log lines, and the full description of a failure (with the
//! guest's backtrace).
//!
//! Recording costs the gateway nothing: no host function knows about it. A
//! traced plugin is linked through a linker of its own ([`linker`]) in which
//! every import of the module is a wrapper that notes the call, then calls the
//! real host function of the runtime's linker through the same `Caller`. A
//! plugin loaded the ordinary way is linked straight to the real functions,
//! and its VMs hold no [`Tracer`].

use std::sync::{Arc, Mutex, PoisonError};

use rustc_hash::FxHashMap;
use wasmtime::{Caller, Engine, ExternType, Func, Linker, Module, Val};

use super::headers::MapType;
use super::vm::VmState;

/// The longest argument text shown for one host call (names, header values).
const ARGUMENT_TEXT: usize = 80;

/// The longest log message kept.
const LOG_TEXT: usize = 4096;

/// At most this many events are kept between two [`Trace::take`]s (a guest
/// looping on a host call must not fill the memory of the tool that watches it).
const MAX_EVENTS: usize = 10_000;

/// What a traced VM did, in order, since it was last taken.
#[derive(Debug, Default)]
pub struct Trace {
    events: Mutex<Vec<Event>>,
}

/// One thing a traced VM did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A host call (other than `proxy_log`, which is a [`Event::Log`]).
    Call {
        /// The function's name, e.g. `proxy_get_header_map_value`.
        name: String,
        /// Its arguments worth showing, e.g. `request_headers, "x-user"`.
        arguments: String,
        /// What it returned: a Proxy-Wasm status (`OK`, `NOT_FOUND`), a WASI
        /// errno, or the failure that ended the callback.
        result: String,
    },
    /// A `proxy_log` line.
    Log {
        /// `trace`, `debug`, `info`, `warn`, `error` or `critical`.
        level: &'static str,
        /// The message.
        message: String,
    },
    /// A callback failed: the reason, then wasmtime's backtrace of the guest
    /// (function names from the module's name section).
    Failure(String),
    /// Events were dropped after [`MAX_EVENTS`].
    Truncated,
}

impl Trace {
    /// Takes every event recorded so far.
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.lock())
    }

    fn push(&self, event: Event) {
        let mut events = self.lock();
        match events.len() {
            n if n < MAX_EVENTS => events.push(event),
            MAX_EVENTS => events.push(Event::Truncated),
            _ => {}
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Event>> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A traced VM's recorder: where its events go, and the real host functions
/// already resolved in its store (by import index), so each is resolved once.
pub(crate) struct Tracer {
    trace: Arc<Trace>,
    real: FxHashMap<usize, Func>,
}

impl Tracer {
    /// A recorder writing to `trace`.
    pub(crate) fn new(trace: Arc<Trace>) -> Self {
        Self {
            trace,
            real: FxHashMap::default(),
        }
    }
}

/// Records a failed guest call in full, when the VM is traced. Called on the
/// error path only.
#[cold]
pub(crate) fn note_failure(state: &VmState, error: &wasmtime::Error) {
    if let Some(tracer) = &state.tracer {
        tracer.trace.push(Event::Failure(describe_in_full(error)));
    }
}

/// The one-line description the gateway logs, followed by the guest's
/// backtrace when wasmtime captured one.
pub fn describe_in_full(error: &wasmtime::Error) -> String {
    let first = super::vm::describe_error(error);
    match error.downcast_ref::<wasmtime::WasmBacktrace>() {
        Some(backtrace) => format!("{first}\n{backtrace}"),
        None => first,
    }
}

/// A linker for `module` in which each import is a recording wrapper around
/// the host function `real` defines under that name.
pub(crate) fn linker(
    engine: &Engine,
    real: &Linker<VmState>,
    module: &Module,
) -> wasmtime::Result<Linker<VmState>> {
    let real = Arc::new(real.clone());
    let mut linker = Linker::new(engine);
    for (index, import) in module.imports().enumerate() {
        let ExternType::Func(ty) = import.ty() else {
            continue;
        };
        let import_module: Arc<str> = import.module().into();
        let name: Arc<str> = import.name().into();
        let real = real.clone();
        linker.func_new(
            import.module(),
            import.name(),
            ty,
            move |mut caller, params, results| {
                let func = resolve(&mut caller, &real, index, &import_module, &name)?;
                if &*name == "proxy_log" {
                    note_log(&mut caller, params);
                    return func.call(&mut caller, params, results);
                }
                let arguments = arguments(&mut caller, &name, params);
                let outcome = func.call(&mut caller, params, results);
                let result = match &outcome {
                    Ok(()) => describe_result(&import_module, results),
                    Err(error) => super::vm::describe_error(error),
                };
                if let Some(tracer) = &caller.data().tracer {
                    tracer.trace.push(Event::Call {
                        name: name.to_string(),
                        arguments,
                        result,
                    });
                }
                outcome
            },
        )?;
    }
    Ok(linker)
}

/// The real host function behind import `index`, in the caller's store.
fn resolve(
    caller: &mut Caller<'_, VmState>,
    real: &Linker<VmState>,
    index: usize,
    module: &str,
    name: &str,
) -> wasmtime::Result<Func> {
    if let Some(func) = caller
        .data()
        .tracer
        .as_ref()
        .and_then(|t| t.real.get(&index))
    {
        return Ok(*func);
    }
    let func = real
        .get(&mut *caller, module, name)?
        .into_func()
        .ok_or_else(|| wasmtime::format_err!("`{module}.{name}` is not a function"))?;
    if let Some(tracer) = caller.data_mut().tracer.as_mut() {
        tracer.real.insert(index, func);
    }
    Ok(func)
}

/// Records the message of a `proxy_log(level, ptr, len)` call.
fn note_log(caller: &mut Caller<'_, VmState>, params: &[Val]) {
    let level = match int(params, 0) {
        Some(0) => "trace",
        Some(1) => "debug",
        Some(2) => "info",
        Some(3) => "warn",
        Some(4) => "error",
        Some(5) => "critical",
        _ => "?",
    };
    let message = text(caller, params, 1, LOG_TEXT).unwrap_or_else(|| "<unreadable>".to_owned());
    if let Some(tracer) = &caller.data().tracer {
        tracer.trace.push(Event::Log { level, message });
    }
}

/// The arguments of a host call worth showing: names, keys, map and buffer
/// kinds, statuses. Others show as nothing.
fn arguments(caller: &mut Caller<'_, VmState>, name: &str, params: &[Val]) -> String {
    let quoted = |caller: &mut Caller<'_, VmState>, at: usize| {
        text(caller, params, at, ARGUMENT_TEXT).map_or_else(|| "?".to_owned(), |t| format!("{t:?}"))
    };
    let number = |at: usize| int(params, at).map_or_else(|| "?".to_owned(), |n| n.to_string());
    match name {
        "proxy_get_header_map_value" | "proxy_remove_header_map_value" => {
            format!("{}, {}", map_name(params), quoted(caller, 1))
        }
        "proxy_add_header_map_value" | "proxy_replace_header_map_value" => format!(
            "{}, {}, {}",
            map_name(params),
            quoted(caller, 1),
            quoted(caller, 3)
        ),
        "proxy_get_header_map_pairs"
        | "proxy_set_header_map_pairs"
        | "proxy_get_header_map_size" => map_name(params),
        "proxy_get_buffer_bytes" | "proxy_get_buffer_status" | "proxy_set_buffer_bytes" => {
            buffer_name(int(params, 0))
        }
        "proxy_get_property" | "proxy_set_property" => text(caller, params, 0, ARGUMENT_TEXT)
            .map_or_else(
                || "?".to_owned(),
                |path| path.trim_end_matches('\0').replace('\0', "."),
            ),
        "proxy_send_local_response" => number(0),
        "proxy_http_call"
        | "proxy_dispatch_http_call"
        | "proxy_grpc_call"
        | "proxy_grpc_stream"
        | "proxy_get_shared_data"
        | "proxy_set_shared_data"
        | "proxy_register_shared_queue"
        | "proxy_redis_init"
        | "proxy_redis_call"
        | "proxy_call_foreign_function" => quoted(caller, 0),
        "proxy_define_metric" => quoted(caller, 1),
        "proxy_set_tick_period_milliseconds"
        | "proxy_set_effective_context"
        | "proxy_continue_stream"
        | "proxy_close_stream"
        | "fd_write" => number(0),
        _ => String::new(),
    }
}

/// The header map named by a call's first argument.
fn map_name(params: &[Val]) -> String {
    match int(params, 0).and_then(MapType::from_abi) {
        Some(MapType::RequestHeaders) => "request_headers".to_owned(),
        Some(MapType::RequestTrailers) => "request_trailers".to_owned(),
        Some(MapType::ResponseHeaders) => "response_headers".to_owned(),
        Some(MapType::ResponseTrailers) => "response_trailers".to_owned(),
        None => match int(params, 0) {
            Some(4) => "grpc_initial_metadata".to_owned(),
            Some(5) => "grpc_trailing_metadata".to_owned(),
            Some(6) => "http_call_response_headers".to_owned(),
            Some(7) => "http_call_response_trailers".to_owned(),
            other => format!("map {}", other.unwrap_or(-1)),
        },
    }
}

/// The buffer named by its ABI kind.
fn buffer_name(kind: Option<i32>) -> String {
    match kind {
        Some(0) => "request_body",
        Some(1) => "response_body",
        Some(2) => "downstream_data",
        Some(3) => "upstream_data",
        Some(4) => "http_call_response_body",
        Some(5) => "grpc_receive_buffer",
        Some(6) => "vm_configuration",
        Some(7) => "plugin_configuration",
        Some(9) => "redis_call_response",
        _ => return format!("buffer {}", kind.unwrap_or(-1)),
    }
    .to_owned()
}

/// What a host call returned: a Proxy-Wasm status name for `env` calls, the
/// errno for WASI ones.
fn describe_result(module: &str, results: &[Val]) -> String {
    let Some(value) = results.first() else {
        return "done".to_owned();
    };
    let Some(code) = value.i32() else {
        return format!("{value:?}");
    };
    if module != "env" {
        return if code == 0 {
            "OK".to_owned()
        } else {
            format!("errno {code}")
        };
    }
    match code {
        0 => "OK",
        1 => "NOT_FOUND",
        2 => "BAD_ARGUMENT",
        3 => "SERIALIZATION_FAILURE",
        4 => "PARSE_FAILURE",
        6 => "INVALID_MEMORY_ACCESS",
        7 => "EMPTY",
        8 => "CAS_MISMATCH",
        10 => "INTERNAL_FAILURE",
        12 => "UNIMPLEMENTED",
        _ => return format!("status {code}"),
    }
    .to_owned()
}

/// Argument `at` as an `i32`.
fn int(params: &[Val], at: usize) -> Option<i32> {
    params.get(at).and_then(Val::i32)
}

/// The guest bytes of the `(ptr, len)` pair at arguments `at` and `at + 1`, as
/// text, cut at `cap` bytes; `None` when they are outside guest memory.
fn text(caller: &mut Caller<'_, VmState>, params: &[Val], at: usize, cap: usize) -> Option<String> {
    let ptr = int(params, at)? as u32 as usize;
    let len = int(params, at + 1)? as u32 as usize;
    let memory = caller.data().memory?;
    let bytes = memory.data(&*caller).get(ptr..ptr.checked_add(len)?)?;
    let shown = &bytes[..bytes.len().min(cap)];
    let mut text = String::from_utf8_lossy(shown).into_owned();
    if shown.len() < bytes.len() {
        text.push('…');
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::services::Services;
    use crate::wasm::filter::{FilterInstance, FilterSettings};
    use crate::wasm::plugin::{PluginLimits, Runtime};
    use crate::wasm::stream::{RequestHead, StreamData, StreamInfo};
    use crate::wasm::vm::Callback;

    /// On request headers: logs, adds a request header and reads it back;
    /// with `trap`, then calls `$check_token`, which traps.
    fn module(trap: bool) -> Vec<u8> {
        let call_check = if trap { "(call $check_token)" } else { "" };
        let wat = format!(
            r#"(module
            (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
            (import "env" "proxy_add_header_map_value"
                (func $add (param i32 i32 i32 i32 i32) (result i32)))
            (import "env" "proxy_get_header_map_value"
                (func $get (param i32 i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 0) "hellox-a1")
            (func (export "proxy_abi_version_0_2_1"))
            (func (export "malloc") (param i32) (result i32) (i32.const 1024))
            (func $check_token unreachable)
            (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
                (drop (call $log (i32.const 2) (i32.const 0) (i32.const 5)))
                (drop (call $add (i32.const 0) (i32.const 5) (i32.const 3) (i32.const 8) (i32.const 1)))
                (drop (call $get (i32.const 0) (i32.const 5) (i32.const 3) (i32.const 512) (i32.const 516)))
                {call_check}
                (i32.const 0)))"#
        );
        wat::parse_str(wat).expect("the test module assembles")
    }

    fn traced(trap: bool) -> (Arc<FilterInstance>, Arc<Trace>) {
        let runtime = Runtime::shared(None).expect("runtime");
        let limits = PluginLimits {
            memory_bytes: 1 << 20,
            callback_deadline: Duration::from_secs(1),
            quotas: crate::services::quota::Quotas::default(),
        };
        let trace = Arc::new(Trace::default());
        let plugin = runtime
            .load_traced("traced", &module(trap), limits, trace.clone())
            .expect("plugin loads");
        let settings = FilterSettings {
            root_id: "traced".into(),
            configuration: Bytes::new(),
        };
        let instance = FilterInstance::new(plugin, settings, 1, Services::standalone())
            .expect("instance starts");
        (instance, trace)
    }

    fn data() -> Box<StreamData> {
        Box::new(StreamData::new(
            StreamInfo::for_tests(),
            RequestHead::default(),
        ))
    }

    const HEADERS: Callback = Callback::RequestHeaders {
        headers: 4,
        end_of_stream: true,
    };

    #[test]
    fn records_calls_that_the_real_host_functions_carry_out() {
        let (instance, trace) = traced(false);
        let (data, stream) = instance.bind(data());
        let stream = stream.expect("binds");
        trace.take();
        let (data, action) = stream.call(data, HEADERS);
        assert_eq!(action.expect("the callback runs"), 0);
        let data = data.expect("the data comes back");
        assert_eq!(
            data.request.headers.get("x-a").map(|v| v.as_bytes()),
            Some(&b"1"[..]),
            "the real proxy_add_header_map_value ran"
        );
        let call = |name: &str, arguments: &str| Event::Call {
            name: name.into(),
            arguments: arguments.into(),
            result: "OK".into(),
        };
        assert_eq!(
            trace.take(),
            [
                Event::Log {
                    level: "info",
                    message: "hello".into()
                },
                call(
                    "proxy_add_header_map_value",
                    r#"request_headers, "x-a", "1""#
                ),
                call("proxy_get_header_map_value", r#"request_headers, "x-a""#),
            ]
        );
    }

    #[test]
    fn a_trap_is_recorded_with_the_guest_backtrace_and_logged_as_one_line() {
        let (instance, trace) = traced(true);
        let (data, stream) = instance.bind(data());
        let stream = stream.expect("binds");
        trace.take();
        let (_, action) = stream.call(data, HEADERS);
        let reason = action.expect_err("the callback traps").to_string();
        assert_eq!(reason.lines().count(), 1, "{reason}");
        let failure = trace
            .take()
            .into_iter()
            .find_map(|e| match e {
                Event::Failure(text) => Some(text),
                _ => None,
            })
            .expect("the failure is recorded");
        assert!(
            failure.starts_with("trapped: wasm trap: wasm `unreachable` instruction executed\n"),
            "{failure}"
        );
        assert!(failure.contains("check_token"), "{failure}");
    }
}
