//! Host functions that reach beyond the stream: HTTP callouts, shared data,
//! shared queues, metrics and Weir's foreign functions.
//!
//! Each argument is capped (`caps`), each callout VM may have at most
//! [`caps::CALLOUTS_IN_FLIGHT`] outstanding, and what a plugin keeps in the
//! services is held to its quotas; a refusal answers `BAD_ARGUMENT`.

use std::time::Duration;

use bytes::Bytes;

use std::sync::atomic::Ordering;

use super::memory::{self, Ctx, span};
use super::{Registry, Status, caps, code, foreign, on_time, pairs, refuse};
use crate::services::http_call::{CallRejected, CallRequest};
use crate::services::metrics::{Kind, MetricError};
use crate::services::queues::EnqueueError;
use crate::services::shared_data::SetError;
use crate::services::tier;
use crate::wasm::vm::{Delivery, Home, VmState};

pub fn add(r: &mut Registry<'_>) -> wasmtime::Result<()> {
    add_http_call(r)?;
    add_shared_data(r)?;
    add_queues(r)?;
    add_metrics(r)?;
    add_foreign_functions(r)?;
    add_redis(r)?;
    Ok(())
}

fn add_http_call(r: &mut Registry<'_>) -> wasmtime::Result<()> {
    for name in ["proxy_http_call", "proxy_dispatch_http_call"] {
        r.env(
            name,
            move |mut c: Ctx<'_>,
                  up_ptr: i32,
                  up_len: i32,
                  h_ptr: i32,
                  h_len: i32,
                  b_ptr: i32,
                  b_len: i32,
                  _t_ptr: i32,
                  _t_len: i32,
                  timeout_ms: i32,
                  token_ptr: i32| {
                on_time(c.data(), name)?;
                if !callout_room(&c) {
                    return Ok(Status::BadArgument as i32);
                }
                let upstream = read_or_return!(&mut c, up_ptr, up_len, caps::NAME);
                let headers = read_or_return!(&mut c, h_ptr, h_len, caps::MAP_BYTES);
                let body = read_or_return!(&mut c, b_ptr, b_len, caps::HTTP_CALL_BODY);
                let Some(headers) = header_pairs(&headers) else {
                    return Ok(Status::BadArgument as i32);
                };
                let request = CallRequest {
                    upstream: String::from_utf8_lossy(&upstream).into_owned(),
                    headers,
                    body: Bytes::from(body),
                    timeout: (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms as u64)),
                };
                let pending = match c.data().services.http.call(request) {
                    Ok(pending) => pending,
                    Err(CallRejected::UnknownUpstream(_) | CallRejected::BadRequest(_)) => {
                        return Ok(Status::BadArgument as i32);
                    }
                };
                Ok(start_callout(&mut c, CalloutKind::Http, token_ptr, pending))
            },
        )?;
    }
    r.env(
        "proxy_get_status",
        |mut c: Ctx<'_>, code_ptr: i32, msg_ptr: i32, msg_len: i32| {
            let (status, message) = c.data().status.clone();
            if let Err(s) = memory::write_u32(&mut c, code_ptr, status) {
                return Ok(s as i32);
            }
            Ok(code(memory::give(
                &mut c,
                message.as_bytes(),
                msg_ptr,
                msg_len,
            )?))
        },
    )?;
    Ok(())
}

/// A guest-encoded map as header pairs with lower-cased names; `None` when
/// the bytes are not a well-formed map.
pub(super) fn header_pairs(bytes: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let pairs = pairs::decode(bytes)?;
    Some(
        pairs
            .into_iter()
            .map(|(k, v)| (String::from_utf8_lossy(&k).to_ascii_lowercase(), v))
            .collect(),
    )
}

/// What kind of callout a token belongs to (Envoy numbers tokens `4n + kind`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum CalloutKind {
    /// `proxy_http_call`: kind 0.
    Http = 0,
    /// `proxy_grpc_call`: kind 1.
    GrpcCall = 1,
    /// `proxy_grpc_stream`: kind 2.
    GrpcStream = 2,
    /// `proxy_redis_call`: kind 3, as Higress numbers it.
    Redis = 3,
}

impl CalloutKind {
    /// The kind a token was handed out for.
    pub(super) fn of(token: u32) -> Self {
        match token & 3 {
            0 => Self::Http,
            1 => Self::GrpcCall,
            2 => Self::GrpcStream,
            _ => Self::Redis,
        }
    }
}

/// Whether this VM may start another callout (fewer than
/// [`caps::CALLOUTS_IN_FLIGHT`] outstanding, counting gRPC streams the
/// server has closed and the filter not yet).
pub(super) fn callout_room(c: &Ctx<'_>) -> bool {
    has_callout_room(c.data())
}

/// [`callout_room`] of a VM's state.
pub(super) fn has_callout_room(state: &VmState) -> bool {
    let lingering = state.grpc.values().filter(|g| g.remote_closed).count();
    state.callouts.load(Ordering::Acquire) + lingering < caps::CALLOUTS_IN_FLIGHT
}

/// A callout that has its token: where its answers go, and the count of
/// callouts in flight, which it leaves when dropped.
pub(super) struct Reserved {
    /// The token written to the guest.
    pub token: u32,
    /// The VM's slot, for delivering answers.
    pub home: Home,
    /// The runtime of the worker that owns the VM.
    pub runtime: tokio::runtime::Handle,
    /// Counts the callout in flight while it lives.
    pub in_flight: InFlight,
}

/// One callout in flight, counted in its VM's `callouts` while it lives.
pub(super) struct InFlight(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Hands out a token of `kind`, writes it to `token_ptr`, and counts the
/// callout in flight. Answers are awaited and delivered on the worker that
/// owns the VM.
pub(super) fn reserve(
    c: &mut Ctx<'_>,
    kind: CalloutKind,
    token_ptr: i32,
) -> Result<Reserved, Status> {
    let reserved = reserve_token(c.data_mut(), kind)?;
    memory::write_u32(c, token_ptr, reserved.token)?;
    Ok(reserved)
}

/// Hands out a token of `kind` and counts the callout in flight.
pub(super) fn reserve_token(state: &mut VmState, kind: CalloutKind) -> Result<Reserved, Status> {
    let home = state.home.clone().ok_or(Status::InternalFailure)?;
    let runtime = crate::worker::runtime_for(home.slot).ok_or(Status::InternalFailure)?;
    let next = state.last_token.wrapping_add(4);
    state.last_token = next;
    let counter = state.callouts.clone();
    counter.fetch_add(1, Ordering::AcqRel);
    Ok(Reserved {
        token: next | kind as u32,
        home,
        runtime,
        in_flight: InFlight(counter),
    })
}

/// Reserves a token for `pending` and delivers its outcome to this VM's root
/// context when it completes. Returns the status.
fn start_callout<T: Send + 'static>(
    c: &mut Ctx<'_>,
    kind: CalloutKind,
    token_ptr: i32,
    pending: impl std::future::Future<Output = Result<T, String>> + Send + 'static,
) -> i32
where
    Result<T, String>: IntoDelivery,
{
    match reserve(c, kind, token_ptr) {
        Ok(reserved) => {
            launch(reserved, pending);
            Status::Ok as i32
        }
        Err(status) => status as i32,
    }
}

/// Runs `pending` on the VM's worker and delivers its outcome under the
/// reserved token.
pub(super) fn launch<T: Send + 'static>(
    reserved: Reserved,
    pending: impl std::future::Future<Output = Result<T, String>> + Send + 'static,
) where
    Result<T, String>: IntoDelivery,
{
    let Reserved {
        token,
        home,
        runtime,
        in_flight,
    } = reserved;
    runtime.spawn(async move {
        let result = pending.await;
        drop(in_flight);
        if let Some(instance) = home.instance.upgrade() {
            instance.deliver(home.slot, home.generation, result.into_delivery(token));
        }
    });
}

/// Turns a callout's outcome into what the VM receives.
pub(super) trait IntoDelivery {
    fn into_delivery(self, token: u32) -> Delivery;
}

impl IntoDelivery for Result<crate::services::CallResponse, String> {
    fn into_delivery(self, token: u32) -> Delivery {
        Delivery::HttpCall {
            token,
            result: self,
        }
    }
}

impl IntoDelivery for Result<Vec<u8>, String> {
    fn into_delivery(self, token: u32) -> Delivery {
        Delivery::RedisCall {
            token,
            result: self,
        }
    }
}

fn add_shared_data(r: &mut Registry<'_>) -> wasmtime::Result<()> {
    r.env(
        "proxy_get_shared_data",
        |mut c: Ctx<'_>, k_ptr: i32, k_len: i32, ret_ptr: i32, ret_len: i32, cas_ptr: i32| {
            // A miss may start a tier fetch: a guest looping on misses stops at its deadline.
            on_time(c.data(), "proxy_get_shared_data")?;
            let key = read_or_return!(&mut c, k_ptr, k_len, caps::SHARED_DATA_KEY);
            let key = String::from_utf8_lossy(&key);
            let found = {
                let state = c.data();
                state.services.shared_data.get(&state.plugin.vm_id, &key)
            };
            let Some((value, cas)) = found else {
                let state = c.data();
                let max_bytes = state.plugin.limits.quotas.shared_data_bytes;
                tier::fetch(&state.services, &state.plugin.vm_id, &key, max_bytes);
                return Ok(Status::NotFound as i32);
            };
            if let Err(s) = memory::write_u32(&mut c, cas_ptr, cas) {
                return Ok(s as i32);
            }
            Ok(code(memory::give(&mut c, &value, ret_ptr, ret_len)?))
        },
    )?;
    r.env(
        "proxy_set_shared_data",
        |mut c: Ctx<'_>, k_ptr: i32, k_len: i32, v_ptr: i32, v_len: i32, cas: i32| {
            on_time(c.data(), "proxy_set_shared_data")?;
            let key = read_or_return!(&mut c, k_ptr, k_len, caps::SHARED_DATA_KEY);
            let value = read_or_return!(&mut c, v_ptr, v_len, caps::SHARED_DATA_VALUE);
            let state = c.data();
            let key = String::from_utf8_lossy(&key);
            // One copy out of the guest, shared by the store and the tier.
            let value = Bytes::from(value);
            let result = state.services.shared_data.set(
                &state.plugin.vm_id,
                &key,
                value.clone(),
                cas as u32,
                None,
                state.plugin.limits.quotas.shared_data_bytes,
            );
            if result.is_ok() {
                tier::write_through(&state.services, &state.plugin.vm_id, &key, &value, None);
            }
            Ok(match result {
                Ok(()) => Status::Ok as i32,
                Err(SetError::CasMismatch) => Status::CasMismatch as i32,
                Err(SetError::NotFound) => Status::NotFound as i32,
                Err(SetError::Quota(exceeded)) => refuse(state, exceeded),
            })
        },
    )?;
    Ok(())
}

fn add_queues(r: &mut Registry<'_>) -> wasmtime::Result<()> {
    r.env(
        "proxy_register_shared_queue",
        |mut c: Ctx<'_>, n_ptr: i32, n_len: i32, ret: i32| {
            let name = read_or_return!(&mut c, n_ptr, n_len, caps::NAME);
            let Some(home) = c.data().home.clone() else {
                return Ok(Status::InternalFailure as i32);
            };
            let hook = std::sync::Arc::new(move |id: u32| {
                home.deliver_later(Delivery::QueueReady(id));
            });
            let id = {
                let state = c.data();
                let name = String::from_utf8_lossy(&name);
                let quotas = &state.plugin.limits.quotas;
                match state
                    .services
                    .queues
                    .register(&state.plugin.vm_id, &name, hook, quotas)
                {
                    Ok(id) => id,
                    Err(exceeded) => return Ok(refuse(state, exceeded)),
                }
            };
            Ok(code(memory::write_u32(&mut c, ret, id)))
        },
    )?;
    r.env(
        "proxy_resolve_shared_queue",
        |mut c: Ctx<'_>, vm_ptr: i32, vm_len: i32, n_ptr: i32, n_len: i32, ret: i32| {
            let vm_id = read_or_return!(&mut c, vm_ptr, vm_len, caps::NAME);
            let name = read_or_return!(&mut c, n_ptr, n_len, caps::NAME);
            let id = {
                let state = c.data();
                let vm_id = match String::from_utf8_lossy(&vm_id) {
                    v if v.is_empty() => state.plugin.vm_id.clone(),
                    v => v.into_owned(),
                };
                state
                    .services
                    .queues
                    .resolve(&vm_id, &String::from_utf8_lossy(&name))
            };
            match id {
                Some(id) => Ok(code(memory::write_u32(&mut c, ret, id))),
                None => Ok(Status::NotFound as i32),
            }
        },
    )?;
    r.env(
        "proxy_enqueue_shared_queue",
        |mut c: Ctx<'_>, id: i32, ptr: i32, len: i32| {
            on_time(c.data(), "proxy_enqueue_shared_queue")?;
            let item = read_or_return!(&mut c, ptr, len, caps::QUEUE_ITEM);
            let state = c.data();
            Ok(
                match state.services.queues.enqueue(id as u32, Bytes::from(item)) {
                    Ok(()) => Status::Ok as i32,
                    Err(EnqueueError::Unknown(_)) => Status::NotFound as i32,
                    Err(EnqueueError::Quota(exceeded)) => refuse(state, exceeded),
                },
            )
        },
    )?;
    r.env(
        "proxy_dequeue_shared_queue",
        |mut c: Ctx<'_>, id: i32, ret_ptr: i32, ret_len: i32| {
            let item = c.data().services.queues.dequeue(id as u32);
            match item {
                Ok(Some(bytes)) => Ok(code(memory::give(&mut c, &bytes, ret_ptr, ret_len)?)),
                Ok(None) => Ok(Status::Empty as i32),
                Err(_) => Ok(Status::NotFound as i32),
            }
        },
    )?;
    Ok(())
}

fn metric_code(result: Result<(), MetricError>) -> i32 {
    match result {
        Ok(()) => Status::Ok as i32,
        Err(MetricError::NotFound) => Status::NotFound as i32,
        Err(MetricError::BadArgument | MetricError::Quota(_)) => Status::BadArgument as i32,
    }
}

fn add_metrics(r: &mut Registry<'_>) -> wasmtime::Result<()> {
    r.env(
        "proxy_define_metric",
        |mut c: Ctx<'_>, kind: i32, n_ptr: i32, n_len: i32, ret: i32| {
            on_time(c.data(), "proxy_define_metric")?;
            let name = read_or_return!(&mut c, n_ptr, n_len, caps::NAME);
            let Some(kind) = Kind::from_abi(kind) else {
                return Ok(Status::BadArgument as i32);
            };
            let defined = {
                let state = c.data();
                state.services.metrics.define(
                    &state.plugin.vm_id,
                    kind,
                    &String::from_utf8_lossy(&name),
                    state.plugin.limits.quotas.metrics,
                )
            };
            match defined {
                Ok(id) => Ok(code(memory::write_u32(&mut c, ret, id))),
                Err(MetricError::Quota(exceeded)) => Ok(refuse(c.data(), exceeded)),
                Err(e) => Ok(metric_code(Err(e))),
            }
        },
    )?;
    r.env(
        "proxy_increment_metric",
        |c: Ctx<'_>, id: i32, delta: i64| {
            Ok(metric_code(
                c.data().services.metrics.increment(id as u32, delta),
            ))
        },
    )?;
    r.env("proxy_record_metric", |c: Ctx<'_>, id: i32, value: i64| {
        Ok(metric_code(
            c.data().services.metrics.record(id as u32, value),
        ))
    })?;
    r.env("proxy_get_metric", |mut c: Ctx<'_>, id: i32, ret: i32| {
        let value = c.data().services.metrics.get(id as u32);
        match value {
            Ok(v) => Ok(code(memory::write_u64(&mut c, ret, v))),
            Err(e) => Ok(metric_code(Err(e))),
        }
    })?;
    Ok(())
}

fn add_foreign_functions(r: &mut Registry<'_>) -> wasmtime::Result<()> {
    r.env(
        "proxy_call_foreign_function",
        |mut c: Ctx<'_>,
         n_ptr: i32,
         n_len: i32,
         a_ptr: i32,
         a_len: i32,
         ret_ptr: i32,
         ret_len: i32| {
            on_time(c.data(), "proxy_call_foreign_function")?;
            let name = read_or_return!(&mut c, n_ptr, n_len, caps::NAME);
            let args = read_or_return!(&mut c, a_ptr, a_len, caps::FOREIGN_ARGS);
            match foreign::call(c.data_mut(), &name, &args) {
                Ok(result) => Ok(code(memory::give(&mut c, &result, ret_ptr, ret_len)?)),
                Err(status) => Ok(status as i32),
            }
        },
    )?;
    Ok(())
}

/// The Higress Redis extension.
fn add_redis(r: &mut Registry<'_>) -> wasmtime::Result<()> {
    r.env(
        "proxy_redis_init",
        |mut c: Ctx<'_>,
         n_ptr: i32,
         n_len: i32,
         _u_ptr: i32,
         _u_len: i32,
         _p_ptr: i32,
         _p_len: i32,
         _timeout: i32| {
            let name = read_or_return!(&mut c, n_ptr, n_len, caps::NAME);
            // Credentials and timeouts come from the manifest's service; a
            // `?db=…` style suffix on the name is ignored.
            let name = String::from_utf8_lossy(&name);
            let base = name.split('?').next().unwrap_or_default();
            Ok(if c.data().services.redis.has(base) {
                Status::Ok as i32
            } else {
                Status::BadArgument as i32
            })
        },
    )?;
    r.env(
        "proxy_redis_call",
        |mut c: Ctx<'_>, n_ptr: i32, n_len: i32, q_ptr: i32, q_len: i32, token_ptr: i32| {
            on_time(c.data(), "proxy_redis_call")?;
            if !callout_room(&c) {
                return Ok(Status::BadArgument as i32);
            }
            let name = read_or_return!(&mut c, n_ptr, n_len, caps::NAME);
            let query = read_or_return!(&mut c, q_ptr, q_len, caps::REDIS_QUERY);
            let name = String::from_utf8_lossy(&name);
            let base = name.split('?').next().unwrap_or_default();
            let pending = match c.data().services.redis.call(base, &query) {
                Ok(pending) => pending,
                Err(_) => return Ok(Status::BadArgument as i32),
            };
            Ok(start_callout(
                &mut c,
                CalloutKind::Redis,
                token_ptr,
                pending,
            ))
        },
    )?;
    Ok(())
}
