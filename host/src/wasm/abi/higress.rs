//! Higress's host functions beyond its Redis calls (which sit with the other
//! services): the upstream hosts of the request's route, a filter's choice
//! among them, and injecting encoded data into the filter chain. Higress's Go
//! SDK imports them (its `ai-load-balancer`, `ai-security-guard` and MCP
//! plugins call them), and a module whose imports Weir lacks does not load.

use super::memory::{self, Ctx, span};
use super::{Registry, Status, caps, code, pairs, stream, stream_in};

/// What Higress reports of a host beside its address: JSON with its health.
/// Weir does not check its targets' health, so each is reported healthy.
const HOST_INFO: &[u8] = br#"{"health_status":"Healthy"}"#;

pub fn add(r: &mut Registry<'_>) -> wasmtime::Result<()> {
    r.env(
        "proxy_get_upstream_hosts",
        |mut c: Ctx<'_>, ret_ptr: i32, ret_len: i32| {
            let Some(hosts) = stream(&mut c).map(|s| s.info.upstream_hosts.clone()) else {
                return Ok(Status::NotFound as i32);
            };
            if hosts.is_empty() {
                return Ok(Status::NotFound as i32);
            }
            let bytes = pairs::encode(hosts.iter().map(|h| (h.as_bytes(), HOST_INFO)));
            Ok(code(memory::give(&mut c, &bytes, ret_ptr, ret_len)?))
        },
    )?;
    r.env(
        "proxy_set_upstream_override_host",
        |mut c: Ctx<'_>, ptr: i32, len: i32| {
            let ([address], state) = match memory::borrow(&mut c, [span(ptr, len, caps::NAME)]) {
                Ok(borrowed) => borrowed,
                Err(status) => return Ok(status as i32),
            };
            let Some(stream) = stream_in(state).filter(|s| !s.request_sent) else {
                return Ok(Status::BadArgument as i32);
            };
            let Some(host) = stream
                .info
                .upstream_hosts
                .iter()
                .find(|h| h.as_bytes() == address)
                .cloned()
            else {
                return Ok(Status::BadArgument as i32);
            };
            stream.upstream_override = Some(host);
            Ok(Status::Ok as i32)
        },
    )?;
    // Sending body data of the filter's own down the chain while the stream
    // is held (an SSE answer written by the plugin) needs a body channel from
    // a filter to the response; Weir has none, so the call is refused and the
    // plugin's fallback (answering at once) runs.
    r.env(
        "proxy_inject_encoded_data_to_filter_chain",
        |_: Ctx<'_>, _: i32, _: i32, _: i32| Ok(Status::Unimplemented as i32),
    )?;
    Ok(())
}
