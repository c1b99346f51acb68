//! One VM: a wasmtime store and instance of a plugin, holding its root context
//! and the HTTP contexts of the streams bound to it, exactly as Envoy does.
//!
//! Every guest call runs under an epoch deadline and the store's memory cap;
//! a trap comes back as an error, and the filter instance stops binding new
//! streams to the VM (`filter`, `slot`). Host calls that do work in
//! proportion to guest input check the same deadline ([`VmState::deadline`])
//! and fail the callback with [`DeadlineExceeded`].

use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use wasmtime::{
    Instance, Store, StoreLimits, StoreLimitsBuilder, TypedFunc, WasmParams, WasmResults,
};

use std::sync::Weak;

use super::filter::{FilterInstance, FilterSettings};
use super::grpc::{GrpcCallback, GrpcCallout, Received};
use super::plugin::Plugin;
use super::stream::StreamData;
use super::trace::{Tracer, note_failure};
use crate::services::plugin_health::FailureKind;
use crate::services::{CallResponse, GrpcEvent, Services};

/// The root context id of every VM (each VM holds one plugin's root context).
pub const ROOT_CONTEXT_ID: u32 = 1;

/// How many callback deadlines a VM's start-up gets: instantiation, the
/// module's initializers, and the root context's creation, `on_vm_start` and
/// `on_configure`, each of which may build tables (a rule set's regexes).
const STARTUP_BUDGETS: u64 = 10;

/// What the host keeps per VM, reachable from host functions.
pub struct VmState {
    pub(crate) limits: GuestLimits,
    pub(crate) allocator: Option<TypedFunc<i32, i32>>,
    /// The guest's exported memory (looked up once, not per host call).
    pub(crate) memory: Option<wasmtime::Memory>,
    pub(crate) plugin: Arc<Plugin>,
    /// The filter's root id (the `plugin_root_id` property).
    pub(crate) root_id: Arc<str>,
    /// The plugin configuration, readable only during start-up callbacks.
    pub(crate) configuration: Option<Bytes>,
    /// What the plugin reported about a configuration it refuses.
    pub(crate) configuration_error: Option<ConfigurationError>,
    /// Streams lent to this VM: the one in a callback and those paused here.
    pub(crate) streams: FxHashMap<u32, Box<StreamData>>,
    /// Every HTTP context created and not yet deleted (lent to the VM or not):
    /// `proxy_set_effective_context` accepts these, as Envoy does.
    pub(crate) live_contexts: FxHashSet<u32>,
    /// The context host calls act on (the callback's, or one set by `proxy_set_effective_context`).
    pub(crate) effective: u32,
    /// Requested `proxy_on_tick` period; `None` = no ticks.
    pub(crate) tick_period: Option<Duration>,
    /// Callouts, shared data, queues and metrics.
    pub(crate) services: Arc<Services>,
    /// Where asynchronous answers (callouts, queue items) are delivered.
    pub(crate) home: Option<Home>,
    /// The last callout token handed out (tokens are `4n`, as Envoy numbers HTTP calls).
    pub(crate) last_token: u32,
    /// The callout response, readable during `proxy_on_http_call_response`.
    pub(crate) call_response: Option<CallResponse>,
    /// The Redis reply, readable (buffer 9) during `proxy_on_redis_call_response`.
    pub(crate) redis_response: Option<Bytes>,
    /// The gRPC callouts the filter opened and has not seen end, by token.
    pub(crate) grpc: FxHashMap<u32, GrpcCallout>,
    /// What a gRPC callback can read (maps 4 and 5, buffer 5).
    pub(crate) grpc_received: Option<Received>,
    /// What `proxy_get_status` reports.
    pub(crate) status: (u32, String),
    /// The epoch (see `Plugin::epoch`) at which the running callback's time is up.
    pub(crate) deadline: u64,
    /// Callouts started and not yet answered (each holds its request until then).
    pub(crate) callouts: Arc<std::sync::atomic::AtomicUsize>,
    /// Records host calls and failures for `weir plugin test`; `None` in the
    /// gateway, where no host call looks at it.
    pub(crate) tracer: Option<Box<Tracer>>,
}

/// A host call found the callback's deadline already past; returned from the
/// host call, it fails the callback as an epoch deadline would.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("exceeded its CPU deadline (during host call `{call}`)")]
pub struct DeadlineExceeded {
    /// The host function that noticed.
    pub call: &'static str,
}

/// The VM slot a VM lives in, so answers that arrive later find their way back.
#[derive(Clone)]
pub struct Home {
    /// The filter instance.
    pub instance: Weak<FilterInstance>,
    /// The slot in its pool.
    pub slot: usize,
    /// The VM's generation: names it among every VM its slot has had.
    pub generation: u64,
}

impl Home {
    /// Delivers `event` to this VM from a background task on the worker that owns the VM.
    pub fn deliver_later(&self, event: Delivery) -> bool {
        let Some(runtime) = crate::worker::runtime_for(self.slot) else {
            return false;
        };
        let home = self.clone();
        runtime.spawn(async move {
            if let Some(instance) = home.instance.upgrade() {
                instance.deliver(home.slot, home.generation, event);
            }
        });
        true
    }
}

/// Something that arrives for a VM outside any stream callback.
#[derive(Debug)]
pub enum Delivery {
    /// A callout finished (or failed with a reason).
    HttpCall {
        /// The token handed out.
        token: u32,
        /// The response or why it failed.
        result: Result<CallResponse, String>,
    },
    /// A shared queue this VM registered has items.
    QueueReady(u32),
    /// A gRPC callout's server sent something (or the exchange ended).
    Grpc {
        /// The token handed out.
        token: u32,
        /// What arrived.
        event: GrpcEvent,
    },
    /// A Redis call finished: the raw RESP reply, or why the server could not be reached.
    RedisCall {
        /// The token handed out.
        token: u32,
        /// The reply or the network error.
        result: Result<Vec<u8>, String>,
    },
}

/// A callback of an HTTP context.
#[derive(Debug, Clone, Copy)]
pub enum Callback {
    /// `proxy_on_request_headers(ctx, headers, end_of_stream)`.
    RequestHeaders {
        /// Number of headers.
        headers: usize,
        /// No body follows.
        end_of_stream: bool,
    },
    /// `proxy_on_request_body(ctx, buffered, end_of_stream)`.
    RequestBody {
        /// Bytes buffered so far.
        buffered: usize,
        /// Last chunk.
        end_of_stream: bool,
    },
    /// `proxy_on_request_trailers(ctx, trailers)`.
    RequestTrailers {
        /// Number of trailers.
        trailers: usize,
    },
    /// `proxy_on_response_headers(ctx, headers, end_of_stream)`.
    ResponseHeaders {
        /// Number of headers.
        headers: usize,
        /// No body follows.
        end_of_stream: bool,
    },
    /// `proxy_on_response_body(ctx, buffered, end_of_stream)`.
    ResponseBody {
        /// Bytes buffered so far.
        buffered: usize,
        /// Last chunk.
        end_of_stream: bool,
    },
    /// `proxy_on_response_trailers(ctx, trailers)`.
    ResponseTrailers {
        /// Number of trailers.
        trailers: usize,
    },
    /// `proxy_on_log(ctx)`.
    Log,
    /// `proxy_on_done(ctx)`.
    Done,
    /// `proxy_on_delete(ctx)`.
    Delete,
}

type F1 = TypedFunc<i32, ()>;
type F1R = TypedFunc<i32, i32>;
type F2 = TypedFunc<(i32, i32), ()>;
type F2R = TypedFunc<(i32, i32), i32>;
type F3 = TypedFunc<(i32, i32, i32), ()>;
type F3R = TypedFunc<(i32, i32, i32), i32>;
type F4 = TypedFunc<(i32, i32, i32, i32), ()>;
type F5 = TypedFunc<(i32, i32, i32, i32, i32), ()>;

/// The guest's callbacks; a missing one acts as the SDK default (continue / no-op).
struct Callbacks {
    on_context_create: Option<F2>,
    on_vm_start: Option<F2R>,
    on_configure: Option<F2R>,
    on_request_headers: Option<F3R>,
    on_request_body: Option<F3R>,
    on_request_trailers: Option<F2R>,
    on_response_headers: Option<F3R>,
    on_response_body: Option<F3R>,
    on_response_trailers: Option<F2R>,
    on_log: Option<F1>,
    on_done: Option<F1R>,
    on_delete: Option<F1>,
    on_tick: Option<F1>,
    on_http_call_response: Option<F5>,
    on_queue_ready: Option<F2>,
    on_redis_call_response: Option<F4>,
    on_grpc_receive_initial_metadata: Option<F3>,
    on_grpc_receive: Option<F3>,
    on_grpc_receive_trailing_metadata: Option<F3>,
    on_grpc_close: Option<F3>,
}

/// Why a VM could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Instantiation or a start-up function trapped.
    #[error("{0}")]
    Trap(String),
    /// An export has the wrong signature.
    #[error("export `{0}` has the wrong signature")]
    Signature(&'static str),
    /// `proxy_on_vm_start` returned false.
    #[error("proxy_on_vm_start returned false")]
    VmStartRejected,
    /// `proxy_on_configure` returned false, with the plugin's reason when
    /// it gave one (weir-sdk does, through `weir.configuration_error`).
    #[error("{}", match .0 {
        Some(reason) if reason.pointer.is_empty() => {
            format!("its configuration is refused: {}", reason.message)
        }
        Some(reason) => format!(
            "its configuration is refused at {}: {}", reason.pointer, reason.message
        ),
        None => "proxy_on_configure rejected the configuration".to_owned(),
    })]
    ConfigureRejected(Option<ConfigurationError>),
}

/// A plugin's own account of what is wrong with its configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ConfigurationError {
    /// A JSON pointer into the configuration (empty: the whole of it).
    #[serde(default)]
    pub pointer: String,
    /// What is wrong.
    pub message: String,
}

/// A live VM.
pub struct Vm {
    store: Store<VmState>,
    /// Shared so a callback can be borrowed while the store is (cloning a
    /// `TypedFunc` per call costs a type-registry round trip).
    callbacks: Arc<Callbacks>,
    next_context_id: u32,
    deadline_ticks: u64,
}

impl Vm {
    /// Instantiates `plugin`, runs its start-up, creates the root context of
    /// `settings.root_id`, and runs `on_vm_start` (with the plugin's VM
    /// configuration) and `on_configure` (with `settings.configuration`).
    pub fn start(
        plugin: &Arc<Plugin>,
        settings: &FilterSettings,
        services: Arc<Services>,
        home: Home,
    ) -> Result<Self, StartError> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(plugin.limits.memory_bytes)
            .instances(1)
            .memories(1)
            .tables(4)
            .table_elements(100_000)
            .build();
        let state = VmState {
            limits: GuestLimits {
                limits,
                grow_refused: false,
            },
            allocator: None,
            memory: None,
            plugin: plugin.clone(),
            root_id: settings.root_id.clone(),
            configuration: Some(settings.configuration.clone()),
            configuration_error: None,
            streams: FxHashMap::default(),
            live_contexts: FxHashSet::default(),
            effective: ROOT_CONTEXT_ID,
            tick_period: None,
            services,
            home: Some(home),
            last_token: 0,
            call_response: None,
            redis_response: None,
            grpc: FxHashMap::default(),
            grpc_received: None,
            status: (0, String::new()),
            deadline: u64::MAX,
            callouts: Arc::default(),
            tracer: plugin.trace.clone().map(|t| Box::new(Tracer::new(t))),
        };
        let mut store = Store::new(plugin.engine(), state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        let deadline_ticks = plugin.limits.deadline_ticks();
        let startup_ticks = deadline_ticks.saturating_mul(STARTUP_BUDGETS);
        store.set_epoch_deadline(startup_ticks);
        store.data_mut().deadline = plugin.epoch().saturating_add(startup_ticks);
        let trap = |e: wasmtime::Error| StartError::Trap(describe_error(&e));
        let instance = match plugin.instance_pre().instantiate(&mut store) {
            Ok(instance) => instance,
            Err(error) => {
                note_failure(store.data(), &error);
                return Err(trap(error));
            }
        };
        let allocator = typed::<i32, i32>(&instance, &mut store, "proxy_on_memory_allocate")?
            .or(typed::<i32, i32>(&instance, &mut store, "malloc")?);
        store.data_mut().allocator = allocator;
        store.data_mut().memory = instance.get_memory(&mut store, "memory");
        run_startup(&instance, &mut store).map_err(|e| {
            note_failure(store.data(), &e);
            trap(e)
        })?;
        let callbacks = Callbacks {
            on_context_create: typed(&instance, &mut store, "proxy_on_context_create")?,
            on_vm_start: typed(&instance, &mut store, "proxy_on_vm_start")?,
            on_configure: typed(&instance, &mut store, "proxy_on_configure")?,
            on_request_headers: typed(&instance, &mut store, "proxy_on_request_headers")?,
            on_request_body: typed(&instance, &mut store, "proxy_on_request_body")?,
            on_request_trailers: typed(&instance, &mut store, "proxy_on_request_trailers")?,
            on_response_headers: typed(&instance, &mut store, "proxy_on_response_headers")?,
            on_response_body: typed(&instance, &mut store, "proxy_on_response_body")?,
            on_response_trailers: typed(&instance, &mut store, "proxy_on_response_trailers")?,
            on_log: typed(&instance, &mut store, "proxy_on_log")?,
            on_done: typed(&instance, &mut store, "proxy_on_done")?,
            on_delete: typed(&instance, &mut store, "proxy_on_delete")?,
            on_tick: typed(&instance, &mut store, "proxy_on_tick")?,
            on_http_call_response: typed(&instance, &mut store, "proxy_on_http_call_response")?,
            on_queue_ready: typed(&instance, &mut store, "proxy_on_queue_ready")?,
            on_redis_call_response: typed(&instance, &mut store, "proxy_on_redis_call_response")?,
            on_grpc_receive_initial_metadata: typed(
                &instance,
                &mut store,
                "proxy_on_grpc_receive_initial_metadata",
            )?,
            on_grpc_receive: typed(&instance, &mut store, "proxy_on_grpc_receive")?,
            on_grpc_receive_trailing_metadata: typed(
                &instance,
                &mut store,
                "proxy_on_grpc_receive_trailing_metadata",
            )?,
            on_grpc_close: typed(&instance, &mut store, "proxy_on_grpc_close")?,
        };
        let mut vm = Vm {
            store,
            callbacks: Arc::new(callbacks),
            next_context_id: ROOT_CONTEXT_ID + 1,
            deadline_ticks,
        };
        let root = ROOT_CONTEXT_ID as i32;
        let c = vm.callbacks.clone();
        if let Some(f) = &c.on_context_create {
            vm.call_with(f, (root, 0), ROOT_CONTEXT_ID, startup_ticks)
                .map_err(trap)?;
        }
        let vm_config_len = size_arg(plugin.vm_configuration.len());
        if let Some(f) = &c.on_vm_start
            && vm
                .call_with(f, (root, vm_config_len), ROOT_CONTEXT_ID, startup_ticks)
                .map_err(trap)?
                == 0
        {
            return Err(StartError::VmStartRejected);
        }
        let config_len = size_arg(settings.configuration.len());
        if let Some(f) = &c.on_configure
            && vm
                .call_with(f, (root, config_len), ROOT_CONTEXT_ID, startup_ticks)
                .map_err(trap)?
                == 0
        {
            let reason = vm.store.data_mut().configuration_error.take();
            return Err(StartError::ConfigureRejected(reason));
        }
        vm.store.data_mut().configuration = None;
        Ok(vm)
    }

    /// Calls a guest function under the deadline with `context` as the effective context.
    fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        f: &TypedFunc<P, R>,
        params: P,
        context: u32,
    ) -> wasmtime::Result<R> {
        self.call_with(f, params, context, self.deadline_ticks)
    }

    /// [`call`](Self::call) under a deadline of `ticks`.
    fn call_with<P: WasmParams, R: WasmResults>(
        &mut self,
        f: &TypedFunc<P, R>,
        params: P,
        context: u32,
        ticks: u64,
    ) -> wasmtime::Result<R> {
        self.store.set_epoch_deadline(ticks);
        let state = self.store.data_mut();
        state.deadline = state.plugin.epoch().saturating_add(ticks);
        state.effective = context;
        let result = f.call(&mut self.store, params);
        let state = self.store.data_mut();
        state.effective = ROOT_CONTEXT_ID;
        if let Err(error) = &result {
            note_failure(state, error);
        }
        result
    }

    /// Creates an HTTP context for a new stream; returns its id.
    pub fn create_context(
        &mut self,
        data: Box<StreamData>,
    ) -> (Box<StreamData>, wasmtime::Result<u32>) {
        let id = self.next_context_id;
        self.next_context_id = self
            .next_context_id
            .wrapping_add(1)
            .max(ROOT_CONTEXT_ID + 1);
        self.store.data_mut().live_contexts.insert(id);
        let c = self.callbacks.clone();
        let Some(f) = &c.on_context_create else {
            return (data, Ok(id));
        };
        self.store.data_mut().streams.insert(id, data);
        let result = self.call(f, (id as i32, ROOT_CONTEXT_ID as i32), id);
        let data = self.take_stream(id);
        (data, result.map(|()| id))
    }

    /// Runs `callback` for context `id` with `data` lent to the VM; returns the
    /// data and the callback's raw return value (0 for callbacks without one).
    pub fn callback(
        &mut self,
        id: u32,
        data: Box<StreamData>,
        callback: Callback,
    ) -> (Box<StreamData>, wasmtime::Result<i32>) {
        self.store.data_mut().streams.insert(id, data);
        let ctx = id as i32;
        let flag = |b: bool| i32::from(b);
        let size = size_arg;
        let c = self.callbacks.clone();
        let result = match callback {
            Callback::RequestHeaders {
                headers,
                end_of_stream,
            } => c
                .on_request_headers
                .as_ref()
                .map(|f| self.call(f, (ctx, size(headers), flag(end_of_stream)), id)),
            Callback::RequestBody {
                buffered,
                end_of_stream,
            } => c
                .on_request_body
                .as_ref()
                .map(|f| self.call(f, (ctx, size(buffered), flag(end_of_stream)), id)),
            Callback::RequestTrailers { trailers } => c
                .on_request_trailers
                .as_ref()
                .map(|f| self.call(f, (ctx, size(trailers)), id)),
            Callback::ResponseHeaders {
                headers,
                end_of_stream,
            } => c
                .on_response_headers
                .as_ref()
                .map(|f| self.call(f, (ctx, size(headers), flag(end_of_stream)), id)),
            Callback::ResponseBody {
                buffered,
                end_of_stream,
            } => c
                .on_response_body
                .as_ref()
                .map(|f| self.call(f, (ctx, size(buffered), flag(end_of_stream)), id)),
            Callback::ResponseTrailers { trailers } => c
                .on_response_trailers
                .as_ref()
                .map(|f| self.call(f, (ctx, size(trailers)), id)),
            Callback::Log => c.on_log.as_ref().map(|f| self.call(f, ctx, id).map(|()| 0)),
            Callback::Done => c.on_done.as_ref().map(|f| self.call(f, ctx, id)),
            Callback::Delete => c
                .on_delete
                .as_ref()
                .map(|f| self.call(f, ctx, id).map(|()| 0)),
        }
        .unwrap_or(Ok(0));
        if matches!(callback, Callback::Delete) {
            self.store.data_mut().live_contexts.remove(&id);
        }
        let data = self.take_stream(id);
        (data, result)
    }

    /// `proxy_on_tick` on the root context.
    pub fn tick(&mut self) -> wasmtime::Result<()> {
        match self.callbacks.clone().on_tick.as_ref() {
            Some(f) => self.call(f, ROOT_CONTEXT_ID as i32, ROOT_CONTEXT_ID),
            None => Ok(()),
        }
    }

    /// Runs the root callback for `event`.
    pub fn deliver(&mut self, event: Delivery) -> wasmtime::Result<()> {
        let root = ROOT_CONTEXT_ID as i32;
        match event {
            Delivery::HttpCall { token, result } => {
                let c = self.callbacks.clone();
                let Some(f) = &c.on_http_call_response else {
                    return Ok(());
                };
                let (response, status) = match result {
                    Ok(response) => (response, (0, String::new())),
                    Err(reason) => (CallResponse::default(), (11, reason)),
                };
                let n = |v: &Vec<(Vec<u8>, Vec<u8>)>| i32::try_from(v.len()).unwrap_or(i32::MAX);
                let params = (
                    root,
                    token as i32,
                    n(&response.headers),
                    i32::try_from(response.body.len()).unwrap_or(i32::MAX),
                    n(&response.trailers),
                );
                let state = self.store.data_mut();
                state.call_response = Some(response);
                state.status = status;
                let result = self.call(f, params, ROOT_CONTEXT_ID);
                let state = self.store.data_mut();
                state.call_response = None;
                state.status = (0, String::new());
                result
            }
            Delivery::QueueReady(id) => match self.callbacks.clone().on_queue_ready.as_ref() {
                Some(f) => self.call(f, (root, id as i32), ROOT_CONTEXT_ID),
                None => Ok(()),
            },
            Delivery::Grpc { token, event } => self.deliver_grpc(token, event),
            Delivery::RedisCall { token, result } => {
                let c = self.callbacks.clone();
                let Some(f) = &c.on_redis_call_response else {
                    return Ok(());
                };
                // Higress: status 0 = OK, 1 = network error (the reply is empty then).
                let (status, reply) = match result {
                    Ok(reply) => (0, Bytes::from(reply)),
                    Err(reason) => {
                        tracing::debug!(plugin = %self.store.data().plugin.name, %reason, "Redis call failed");
                        (1, Bytes::new())
                    }
                };
                let len = i32::try_from(reply.len()).unwrap_or(i32::MAX);
                self.store.data_mut().redis_response = Some(reply);
                let result = self.call(f, (root, token as i32, status, len), ROOT_CONTEXT_ID);
                self.store.data_mut().redis_response = None;
                result
            }
        }
    }

    /// Runs the gRPC callback for `event` of callout `token`, unless the
    /// filter cancelled it (then nothing more is called, as in Envoy).
    fn deliver_grpc(&mut self, token: u32, event: GrpcEvent) -> wasmtime::Result<()> {
        let state = self.store.data_mut();
        let Some(callout) = state.grpc.get_mut(&token) else {
            return Ok(());
        };
        let mut done = false;
        let step = callout.step(event, &mut done);
        if done {
            state.grpc.remove(&token);
        }
        let Some(step) = step else {
            return Ok(());
        };
        let c = self.callbacks.clone();
        let f = match step.callback {
            GrpcCallback::InitialMetadata => &c.on_grpc_receive_initial_metadata,
            GrpcCallback::Receive => &c.on_grpc_receive,
            GrpcCallback::TrailingMetadata => &c.on_grpc_receive_trailing_metadata,
            GrpcCallback::Close => &c.on_grpc_close,
        };
        let Some(f) = f else {
            return Ok(());
        };
        let state = self.store.data_mut();
        state.grpc_received = Some(step.received);
        if let Some(status) = step.status {
            state.status = status;
        }
        let params = (
            ROOT_CONTEXT_ID as i32,
            token as i32,
            size_arg(step.argument),
        );
        let result = self.call(f, params, ROOT_CONTEXT_ID);
        let state = self.store.data_mut();
        state.grpc_received = None;
        state.status = (0, String::new());
        result
    }

    /// The size of the guest's linear memory, in bytes (0 when it exports none).
    pub fn memory_bytes(&self) -> usize {
        (self.store.data().memory).map_or(0, |memory| memory.data_size(&self.store))
    }

    /// The tick period the plugin asked for.
    pub fn tick_period(&self) -> Option<Duration> {
        self.store.data().tick_period
    }

    /// Leaves a paused stream's data with the VM, where later callbacks can reach it.
    pub fn park(&mut self, id: u32, data: Box<StreamData>) {
        self.store.data_mut().streams.insert(id, data);
    }

    /// Takes a stream's data back (after a callback or a pause).
    pub fn unpark(&mut self, id: u32) -> Option<Box<StreamData>> {
        self.store.data_mut().streams.remove(&id)
    }

    /// A stream's binding ended: forgets its context and any data still parked
    /// here (a request that ended while paused).
    pub fn forget(&mut self, id: u32) {
        let state = self.store.data_mut();
        state.streams.remove(&id);
        state.live_contexts.remove(&id);
    }

    /// Every stream still lent to this VM (used when the VM is dropped).
    pub fn drain_streams(&mut self) -> Vec<(u32, Box<StreamData>)> {
        self.store.data_mut().streams.drain().collect()
    }

    fn take_stream(&mut self, id: u32) -> Box<StreamData> {
        match self.store.data_mut().streams.remove(&id) {
            Some(data) => data,
            // The map only loses an entry through `unpark`, which callers never
            // do during a callback; keep the invariant visible if it ever breaks.
            None => unreachable_stream(id),
        }
    }
}

/// A size as a callback argument (sizes past `i32::MAX` are capped there).
fn size_arg(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[cold]
fn unreachable_stream(id: u32) -> ! {
    panic!("stream {id} vanished from its VM during a callback")
}

/// Runs the module's start-up exports the way Envoy does.
fn run_startup(instance: &Instance, store: &mut Store<VmState>) -> wasmtime::Result<()> {
    if let Ok(init) = instance.get_typed_func::<(), ()>(&mut *store, "_initialize") {
        init.call(&mut *store, ())?;
        if let Ok(main) = instance.get_typed_func::<(i32, i32), i32>(&mut *store, "main") {
            main.call(&mut *store, (0, 0))?;
        } else if let Ok(main) = instance.get_typed_func::<(), i32>(&mut *store, "__main_void") {
            main.call(&mut *store, ())?;
        }
    } else if let Ok(start) = instance.get_typed_func::<(), ()>(&mut *store, "_start") {
        start.call(&mut *store, ())?;
    }
    Ok(())
}

/// An optional export of a given signature; a present export of another signature is an error.
fn typed<P: WasmParams, R: WasmResults>(
    instance: &Instance,
    store: &mut Store<VmState>,
    name: &'static str,
) -> Result<Option<TypedFunc<P, R>>, StartError> {
    if instance.get_func(&mut *store, name).is_none() {
        return Ok(None);
    }
    instance
        .get_typed_func::<P, R>(&mut *store, name)
        .map(Some)
        .map_err(|_| StartError::Signature(name))
}

/// The store's resource limits, noting when they refuse the guest more
/// memory (so that the trap that usually follows reads as out of memory).
pub struct GuestLimits {
    limits: StoreLimits,
    grow_refused: bool,
}

impl wasmtime::ResourceLimiter for GuestLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        self.grow_refused |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// A call into a VM that failed: what kind of failure, and a line saying it.
pub struct GuestFailure {
    /// Its kind, for metrics.
    pub kind: FailureKind,
    /// [`describe_error`]'s line.
    pub reason: String,
}

impl Vm {
    /// The failure `error` (from a call into this VM) stands for.
    pub fn failure(&self, error: &wasmtime::Error) -> GuestFailure {
        GuestFailure {
            kind: self.failure_kind(error),
            reason: describe_error(error),
        }
    }

    fn failure_kind(&self, error: &wasmtime::Error) -> FailureKind {
        if error.downcast_ref::<DeadlineExceeded>().is_some() {
            return FailureKind::Deadline;
        }
        match error.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => FailureKind::Deadline,
            Some(_) if self.store.data().limits.grow_refused => FailureKind::OutOfMemory,
            Some(_) => FailureKind::Trap,
            None => FailureKind::Abi,
        }
    }
}

/// A one-line description of a guest failure (trap kind, deadline, or message).
pub fn describe_error(error: &wasmtime::Error) -> String {
    if let Some(overrun) = error.downcast_ref::<DeadlineExceeded>() {
        return overrun.to_string();
    }
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => "exceeded its CPU deadline".to_owned(),
        Some(trap) => format!("trapped: {trap}"),
        None => format!("{error:#}")
            .lines()
            .next()
            .unwrap_or("failed")
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_noticed_in_a_host_call_reads_like_an_epoch_interrupt() {
        let error = wasmtime::Error::from(DeadlineExceeded { call: "proxy_log" });
        assert_eq!(
            describe_error(&error),
            "exceeded its CPU deadline (during host call `proxy_log`)"
        );
        let interrupt = wasmtime::Error::from(wasmtime::Trap::Interrupt);
        assert_eq!(describe_error(&interrupt), "exceeded its CPU deadline");
    }
}
