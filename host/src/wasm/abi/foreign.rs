//! `proxy_call_foreign_function`: the host extensions a filter calls by name,
//! in one table from name to handler. Weir's own (`weir.*`: shared-data TTL
//! and deletion, the configuration-error report of weir-sdk, consumer
//! lookup and identification, the response cache) and the ones
//! Higress's plugin library calls (`get_log_level`,
//! `set_global_max_requests_per_io_cycle`). A name that is not in the table
//! answers `NOT_FOUND`, as in Envoy and Higress, so callers fall back.

use std::time::Duration;

use super::{Status, response_cache};
use crate::exchange::ConsumerIdentity;
use crate::services::consumers::Query;
use crate::services::tier;
use crate::wasm::vm::VmState;

/// A foreign function: the VM's state and the guest's argument bytes in; the
/// bytes handed back to the guest, or the status it gets instead.
type Handler = fn(&mut VmState, &[u8]) -> Result<Vec<u8>, Status>;

/// Every foreign function, by name.
const FUNCTIONS: [(&str, Handler); 11] = [
    ("weir.shared_data_set_ttl", shared_data_set_ttl),
    ("weir.shared_data_delete", shared_data_delete),
    ("weir.configuration_error", configuration_error),
    ("weir.consumer_find", consumer_find),
    ("weir.consumer_set", consumer_set),
    ("weir.cache_lookup", response_cache::lookup),
    ("weir.cache_respond", response_cache::respond),
    ("weir.cache_store", response_cache::store),
    ("weir.cache_claim_refresh", response_cache::claim_refresh),
    ("get_log_level", get_log_level),
    (
        "set_global_max_requests_per_io_cycle",
        set_global_max_requests_per_io_cycle,
    ),
];

/// Calls foreign function `name` with `args`.
pub fn call(state: &mut VmState, name: &[u8], args: &[u8]) -> Result<Vec<u8>, Status> {
    let (_, handler) = FUNCTIONS
        .iter()
        .find(|(known, _)| known.as_bytes() == name)
        .ok_or(Status::NotFound)?;
    handler(state, args)
}

/// Arguments of `weir.shared_data_set_ttl` / `weir.shared_data_delete` (JSON).
#[derive(serde::Deserialize)]
struct KeyArgs {
    key: String,
    #[serde(default)]
    ttl_ms: Option<u64>,
}

/// `weir.shared_data_set_ttl` `{"key", "ttl_ms"}`: gives a shared-data entry
/// of the plugin a time to live; `NOT_FOUND` for a missing key.
fn shared_data_set_ttl(state: &mut VmState, args: &[u8]) -> Result<Vec<u8>, Status> {
    let Ok(KeyArgs {
        key,
        ttl_ms: Some(ms),
    }) = serde_json::from_slice(args)
    else {
        return Err(Status::BadArgument);
    };
    let vm_id = state.plugin.vm_id.as_str();
    let ttl = Duration::from_millis(ms);
    tier::expire(&state.services, vm_id, &key, ttl);
    let data = &state.services.shared_data;
    data.set_ttl(vm_id, &key, ttl)
        .map_err(|_| Status::NotFound)?;
    Ok(Vec::new())
}

/// `weir.shared_data_delete` `{"key"}`: removes a shared-data entry of the
/// plugin; `NOT_FOUND` for a missing key.
fn shared_data_delete(state: &mut VmState, args: &[u8]) -> Result<Vec<u8>, Status> {
    let KeyArgs { key, .. } = serde_json::from_slice(args).map_err(|_| Status::BadArgument)?;
    let vm_id = state.plugin.vm_id.as_str();
    tier::delete(&state.services, vm_id, &key);
    let data = &state.services.shared_data;
    data.delete(vm_id, &key).map_err(|_| Status::NotFound)?;
    Ok(Vec::new())
}

/// `weir.configuration_error` `{"pointer", "message"}`: why the plugin is
/// about to refuse its configuration, which Weir reports at the YAML line of
/// the field the pointer names. Only `proxy_on_configure` may call it
/// (`BAD_ARGUMENT` elsewhere, or for arguments that are not such an object).
fn configuration_error(state: &mut VmState, args: &[u8]) -> Result<Vec<u8>, Status> {
    if state.configuration.is_none() {
        return Err(Status::BadArgument);
    }
    let report = serde_json::from_slice(args).map_err(|_| Status::BadArgument)?;
    state.configuration_error = Some(report);
    Ok(Vec::new())
}

/// `weir.consumer_find` with one credential (`{"key": …}`, `{"username": …}`,
/// `{"subject": {"issuer", "subject"}}`, `{"name": …}`): the consumer that
/// holds it as JSON (`name`, `groups`, `limits`; `password_hash` for a user
/// name), `NOT_FOUND` when none does. During `on_configure`, from the
/// consumers of the manifest being built.
fn consumer_find(state: &mut VmState, args: &[u8]) -> Result<Vec<u8>, Status> {
    let query: Query = serde_json::from_slice(args).map_err(|_| Status::BadArgument)?;
    let configuring = state.configuration.is_some();
    let consumers = &state.services.consumers;
    consumers.find(&query, configuring).ok_or(Status::NotFound)
}

/// Arguments of `weir.consumer_set`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SetConsumer {
    name: String,
    #[serde(default)]
    anonymous: bool,
}

/// `weir.consumer_set` `{"name", "anonymous"}`: the request's caller is
/// consumer `name` (or, with `anonymous`, a caller with no valid credential
/// served as `name`). Only during a request (`BAD_ARGUMENT` elsewhere);
/// `NOT_FOUND` for a name no consumer has.
fn consumer_set(state: &mut VmState, args: &[u8]) -> Result<Vec<u8>, Status> {
    let SetConsumer { name, anonymous } =
        serde_json::from_slice(args).map_err(|_| Status::BadArgument)?;
    let property = state
        .services
        .consumers
        .identify(&name, anonymous)
        .ok_or(Status::NotFound)?;
    let identified = ConsumerIdentity {
        name: name.into(),
        anonymous,
        property,
    };
    let stream = super::stream_in(state).ok_or(Status::BadArgument)?;
    stream.consumer = Some(identified);
    Ok(Vec::new())
}

/// Higress's `get_log_level` (no arguments): the level plugin logs are kept
/// at, as 4 bytes little-endian (0 trace … 4 error, 5 critical), the value
/// `proxy_get_log_level` gives. Higress's log wrapper asks before every
/// message and drops those below it; without an answer it formats them all.
fn get_log_level(_: &mut VmState, _: &[u8]) -> Result<Vec<u8>, Status> {
    Ok(super::log_level().to_le_bytes().to_vec())
}

/// Higress's `set_global_max_requests_per_io_cycle` (8 bytes, a u64
/// little-endian): Envoy handles at most that many new requests per event-loop
/// cycle, so callout answers are not starved by plugin work. Weir's workers
/// are tokio tasks that yield between requests and wake callouts on their
/// own, so there is no cycle to cap: the call is accepted and changes nothing.
fn set_global_max_requests_per_io_cycle(_: &mut VmState, args: &[u8]) -> Result<Vec<u8>, Status> {
    let _limit: [u8; 8] = args.try_into().map_err(|_| Status::BadArgument)?;
    Ok(Vec::new())
}
