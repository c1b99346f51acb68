//! `proxy_get_property`: the request, connection and plugin attributes filters
//! read, with Envoy's encodings (strings raw, integers 8-byte little-endian,
//! booleans one byte, maps as Proxy-Wasm pairs).

use super::pairs;
use crate::wasm::stream::StreamData;
use crate::wasm::vm::VmState;

/// The value at `path` (segments separated by NUL), if there is one.
pub fn get(state: &VmState, stream: Option<&StreamData>, path: &[u8]) -> Option<Vec<u8>> {
    if let Some(stream) = stream
        && let Some((_, value)) = stream.properties.iter().find(|(p, _)| p == path)
    {
        return Some(value.clone());
    }
    let text = std::str::from_utf8(path).ok()?;
    let segments: Vec<&str> = text.split('\0').collect();
    let plugin = &state.plugin;
    match segments.as_slice() {
        ["plugin_name"] => return Some(plugin.name.as_bytes().to_vec()),
        ["plugin_root_id"] => return Some(state.root_id.as_bytes().to_vec()),
        ["plugin_vm_id"] => return Some(plugin.name.as_bytes().to_vec()),
        _ => {}
    }
    let stream = stream?;
    let info = &stream.info;
    let request = &stream.request;
    let string = |s: &str| Some(s.as_bytes().to_vec());
    let int = |n: u64| Some(n.to_le_bytes().to_vec());
    match segments.as_slice() {
        ["request", "path"] => string(&request.path),
        ["request", "url_path"] => string(request.path.split('?').next().unwrap_or("")),
        ["request", "query"] => string(request.path.split_once('?').map_or("", |(_, q)| q)),
        ["request", "host"] => string(&request.authority),
        ["request", "scheme"] => string(&request.scheme),
        ["request", "method"] => string(&request.method),
        ["request", "protocol"] => string(info.protocol),
        ["request", "id"] => string(&info.request_id),
        ["request", "time"] => int(info.start_unix_nanos),
        ["request", "useragent"] => header(&request.headers, "user-agent"),
        ["request", "referer"] => header(&request.headers, "referer"),
        ["request", "headers"] => Some(header_pairs(&request.headers)),
        ["request", "headers", name] => header(&request.headers, name),
        ["response", "code"] => int(u64::from(stream.response.as_ref()?.status)),
        ["response", "code_details"] => string(&stream.response.as_ref()?.details),
        ["response", "headers"] => Some(header_pairs(&stream.response.as_ref()?.headers)),
        ["response", "headers", name] => header(&stream.response.as_ref()?.headers, name),
        ["source", "address"] => string(&info.source.to_string()),
        ["source", "port"] => int(u64::from(info.source.port())),
        ["destination", "address"] => string(&info.destination?.to_string()),
        ["destination", "port"] => int(u64::from(info.destination?.port())),
        ["connection", "mtls"] => Some(vec![0]),
        ["connection", "tls"] => Some(vec![u8::from(info.tls)]),
        ["connection", "requested_server_name"] => string(info.sni.as_deref()?),
        ["route_name"] | ["xds", "route_name"] => string(&info.route_name),
        ["cluster_name"] | ["xds", "cluster_name"] => string(info.upstream_name.as_deref()?),
        ["x_request_id"] => string(&info.request_id),
        _ => None,
    }
}

/// The values of header `name`, comma-joined as Envoy does.
fn header(headers: &http::HeaderMap, name: &str) -> Option<Vec<u8>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let mut out = first.as_bytes().to_vec();
    for v in values {
        out.extend_from_slice(b",");
        out.extend_from_slice(v.as_bytes());
    }
    Some(out)
}

fn header_pairs(headers: &http::HeaderMap) -> Vec<u8> {
    pairs::encode(
        headers
            .iter()
            .map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes()))
            .collect::<Vec<_>>(),
    )
}
