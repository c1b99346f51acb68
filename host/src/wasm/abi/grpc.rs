//! gRPC callouts: `proxy_grpc_call`, `proxy_grpc_stream`, `proxy_grpc_send`,
//! `proxy_grpc_cancel` and `proxy_grpc_close`, with Envoy's statuses.
//!
//! The `service` argument names an upstream group of the manifest (Envoy's
//! cluster name); anything else answers `PARSE_FAILURE`, as Envoy answers
//! bytes that are neither a cluster nor a `GrpcService` it can use. A call
//! that cannot start answers `INTERNAL_FAILURE`, the other status the SDKs
//! expect (the Rust SDK panics on any third). Tokens are `4n + 1` for calls and
//! `4n + 2` for streams, and the callbacks arrive on the root context.

use bytes::Bytes;
use tokio::sync::mpsc;

use super::memory::{self, Ctx, span};
use super::services::{CalloutKind, Reserved, callout_room, header_pairs, reserve};
use super::{Registry, Status, caps, on_time};
use crate::services::GrpcEvent;
use crate::services::grpc_call::{
    Driver, GrpcExchange, GrpcRejected, GrpcRequest, MAX_MESSAGE_BYTES, UnaryOutcome,
};
use crate::wasm::grpc::GrpcCallout;
use crate::wasm::vm::Delivery;

pub fn add(r: &mut Registry<'_>) -> wasmtime::Result<()> {
    r.env(
        "proxy_grpc_call",
        |mut c: Ctx<'_>,
         up_ptr: i32,
         up_len: i32,
         svc_ptr: i32,
         svc_len: i32,
         m_ptr: i32,
         m_len: i32,
         md_ptr: i32,
         md_len: i32,
         msg_ptr: i32,
         msg_len: i32,
         timeout_ms: i32,
         token_ptr: i32| {
            on_time(c.data(), "proxy_grpc_call")?;
            let message = read_or_return!(&mut c, msg_ptr, msg_len, MAX_MESSAGE_BYTES);
            let names = [(up_ptr, up_len), (svc_ptr, svc_len), (m_ptr, m_len)];
            let exchange = match open(&mut c, names, (md_ptr, md_len), timeout_ms, true) {
                Ok(exchange) => exchange,
                Err(status) => return Ok(status as i32),
            };
            // Room for one message: the channel is empty. Dropping the
            // sender then half-closes the call.
            let _ = exchange.outgoing.try_send(Bytes::from(message));
            Ok(start(&mut c, CalloutKind::GrpcCall, token_ptr, exchange))
        },
    )?;
    r.env(
        "proxy_grpc_stream",
        |mut c: Ctx<'_>,
         up_ptr: i32,
         up_len: i32,
         svc_ptr: i32,
         svc_len: i32,
         m_ptr: i32,
         m_len: i32,
         md_ptr: i32,
         md_len: i32,
         token_ptr: i32| {
            on_time(c.data(), "proxy_grpc_stream")?;
            let names = [(up_ptr, up_len), (svc_ptr, svc_len), (m_ptr, m_len)];
            let exchange = match open(&mut c, names, (md_ptr, md_len), 0, false) {
                Ok(exchange) => exchange,
                Err(status) => return Ok(status as i32),
            };
            Ok(start(&mut c, CalloutKind::GrpcStream, token_ptr, exchange))
        },
    )?;
    r.env(
        "proxy_grpc_send",
        |mut c: Ctx<'_>, token: i32, ptr: i32, len: i32, end_stream: i32| {
            on_time(c.data(), "proxy_grpc_send")?;
            let token = token as u32;
            // As Envoy: a call takes no more messages; any other unknown token is not found.
            if CalloutKind::of(token) == CalloutKind::GrpcCall {
                return Ok(Status::BadArgument as i32);
            }
            let message = read_or_return!(&mut c, ptr, len, MAX_MESSAGE_BYTES);
            let grpc = &mut c.data_mut().grpc;
            let Some(callout) = grpc.get_mut(&token) else {
                return Ok(Status::NotFound as i32);
            };
            let Some(outgoing) = &callout.outgoing else {
                // The filter closed its side already.
                return Ok(Status::BadArgument as i32);
            };
            match outgoing.try_send(Bytes::from(message)) {
                // A stream the server has ended drops what is sent, as in Envoy.
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
                Err(mpsc::error::TrySendError::Full(_)) => return Ok(Status::BadArgument as i32),
            }
            if end_stream != 0 {
                close_local(grpc, token);
            }
            Ok(Status::Ok as i32)
        },
    )?;
    r.env("proxy_grpc_cancel", |mut c: Ctx<'_>, token: i32| {
        // Dropping the callout aborts its task: no callback follows.
        Ok(match c.data_mut().grpc.remove(&(token as u32)) {
            Some(_) => Status::Ok as i32,
            None => Status::NotFound as i32,
        })
    })?;
    r.env("proxy_grpc_close", |mut c: Ctx<'_>, token: i32| {
        let token = token as u32;
        let grpc = &mut c.data_mut().grpc;
        if !grpc.contains_key(&token) {
            return Ok(Status::NotFound as i32);
        }
        // Envoy: closing a call cancels it; closing a stream half-closes it.
        if CalloutKind::of(token) == CalloutKind::GrpcCall {
            grpc.remove(&token);
        } else {
            close_local(grpc, token);
        }
        Ok(Status::Ok as i32)
    })?;
    Ok(())
}

/// The filter closed its side of stream `token`: no more messages go out; the
/// stream is forgotten if the server closed its side already.
fn close_local(grpc: &mut rustc_hash::FxHashMap<u32, GrpcCallout>, token: u32) {
    if let Some(callout) = grpc.get_mut(&token) {
        callout.outgoing = None;
        if callout.remote_closed {
            grpc.remove(&token);
        }
    }
}

/// Reads the upstream, service and method names and the initial metadata,
/// and opens the exchange; or the status that refuses it.
fn open(
    c: &mut Ctx<'_>,
    [upstream, service, method]: [(i32, i32); 3],
    (md_ptr, md_len): (i32, i32),
    timeout_ms: i32,
    unary: bool,
) -> Result<GrpcExchange, Status> {
    if !callout_room(c) {
        return Err(Status::InternalFailure);
    }
    let mut name = |(ptr, len): (i32, i32)| {
        memory::read(c, span(ptr, len, caps::NAME))
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
    };
    let (upstream, service, method) = (name(upstream)?, name(service)?, name(method)?);
    let metadata = memory::read(c, span(md_ptr, md_len, caps::MAP_BYTES))?;
    let metadata = header_pairs(&metadata).ok_or(Status::BadArgument)?;
    let timeout_ms = timeout_ms as u32;
    let request = GrpcRequest {
        upstream,
        service,
        method,
        metadata,
        timeout: (timeout_ms > 0).then(|| std::time::Duration::from_millis(timeout_ms.into())),
        unary,
    };
    c.data().services.grpc.open(request).map_err(|e| match e {
        GrpcRejected::UnknownUpstream(_) => Status::ParseFailure,
        GrpcRejected::BadRequest(_) => Status::InternalFailure,
    })
}

/// Hands out the token, starts the exchange's task on the VM's worker and
/// records the callout. Returns the status.
fn start(c: &mut Ctx<'_>, kind: CalloutKind, token_ptr: i32, exchange: GrpcExchange) -> i32 {
    let reserved = match reserve(c, kind, token_ptr) {
        Ok(reserved) => reserved,
        Err(status) => return status as i32,
    };
    let token = reserved.token;
    let GrpcExchange {
        outgoing,
        events,
        driver,
    } = exchange;
    let task = spawn(reserved, driver, events);
    let unary = kind == CalloutKind::GrpcCall;
    let callout = GrpcCallout {
        outgoing: (!unary).then_some(outgoing),
        task,
        unary: unary.then(UnaryOutcome::default),
        remote_closed: false,
    };
    c.data_mut().grpc.insert(token, callout);
    Status::Ok as i32
}

/// Runs the exchange on the VM's worker and delivers each event to the VM in
/// order, until the exchange has ended and every event is delivered, or the
/// VM is gone.
fn spawn(
    reserved: Reserved,
    mut driver: Driver,
    mut events: mpsc::Receiver<GrpcEvent>,
) -> tokio::task::AbortHandle {
    let Reserved {
        token,
        home,
        runtime,
        in_flight,
    } = reserved;
    let task = runtime.spawn(async move {
        let _in_flight = in_flight;
        let mut driving = true;
        loop {
            tokio::select! {
                () = &mut driver, if driving => driving = false,
                event = events.recv() => {
                    let (Some(event), Some(instance)) = (event, home.instance.upgrade()) else {
                        return;
                    };
                    instance.deliver(home.slot, home.generation, Delivery::Grpc { token, event });
                }
            }
        }
    });
    task.abort_handle()
}
