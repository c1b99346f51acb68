//! `proxy_get_property`: the request, connection, route and plugin attributes
//! filters read, with Envoy's encodings (strings raw, integers 8-byte
//! little-endian, booleans one byte, maps as Proxy-Wasm pairs), and the
//! stream's filter state that `proxy_set_property` writes.
//!
//! As in Envoy, a path under one of Weir's attributes (`request.*`,
//! `source.*`, …) always reads the attribute: a filter cannot make a later
//! filter see a forged `source.address`. Any other path reads back what a
//! filter of the stream wrote there, `metadata.filter_metadata.<ns>.<key>`
//! included (the dynamic metadata Envoy's native filters write).
//! `weir.consumer` reads the consumer an auth filter identified; filters
//! cannot write it as a property.

use super::pairs;
use crate::config::model::Metadata;
use crate::wasm::stream::StreamData;
use crate::wasm::vm::VmState;

/// The first segments of the attributes Weir answers (and Envoy's names that
/// Weir leaves unset): filter state never shadows them.
const ATTRIBUTES: [&str; 19] = [
    "request",
    "response",
    "source",
    "destination",
    "connection",
    "upstream",
    "xds",
    "node",
    "route_name",
    "route_metadata",
    "cluster_name",
    "cluster_metadata",
    "listener_direction",
    "listener_metadata",
    "upstream_host_metadata",
    "plugin_name",
    "plugin_root_id",
    "plugin_vm_id",
    "x_request_id",
];

/// The `xds.*` names Weir answers, each the same as the top-level name.
const XDS: [&str; 4] = [
    "route_name",
    "route_metadata",
    "cluster_name",
    "cluster_metadata",
];

/// The consumer the request was identified as (JSON: `name`, `groups`,
/// `limits`, `anonymous`); only `weir.consumer_set` writes it.
pub const CONSUMER: &[u8] = b"weir\0consumer";

/// The value at `path` (segments separated by NUL), if there is one.
pub fn get(state: &VmState, stream: Option<&StreamData>, path: &[u8]) -> Option<Vec<u8>> {
    if path == CONSUMER {
        return Some(stream?.consumer.as_ref()?.property.to_vec());
    }
    let first = path.split(|&b| b == 0).next().unwrap_or_default();
    let is_attribute = std::str::from_utf8(first).is_ok_and(|f| ATTRIBUTES.contains(&f));
    if !is_attribute {
        let (_, value) = stream?.properties.iter().find(|(p, _)| p == path)?;
        return Some(value.clone());
    }
    let text = std::str::from_utf8(path).ok()?;
    let segments: Vec<&str> = text.split('\0').collect();
    let plugin = &state.plugin;
    match segments.as_slice() {
        ["plugin_name"] => return Some(plugin.name.as_bytes().to_vec()),
        ["plugin_root_id"] => return Some(state.root_id.as_bytes().to_vec()),
        ["plugin_vm_id"] => return Some(plugin.vm_id.as_bytes().to_vec()),
        _ => {}
    }
    let stream = stream?;
    let info = &stream.info;
    let request = &stream.request;
    let string = |s: &str| Some(s.as_bytes().to_vec());
    let int = |n: u64| Some(n.to_le_bytes().to_vec());
    // `xds.route_name` is `route_name`, and so on for the xDS names Weir has.
    let segments = match segments.as_slice() {
        ["xds", rest @ ..] if rest.first().is_some_and(|name| XDS.contains(name)) => rest,
        all => all,
    };
    match segments {
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
        ["route_name"] => string(&info.route_name),
        ["cluster_name"] => string(info.upstream_name.as_deref()?),
        ["route_metadata", rest @ ..] => metadata(&info.route_metadata, rest),
        ["cluster_metadata", rest @ ..] => metadata(info.cluster_metadata.as_ref()?, rest),
        ["x_request_id"] => string(&info.request_id),
        _ => None,
    }
}

/// A value of `metadata` at `path` below it: `filter_metadata`, then a
/// namespace, then keys (or list indexes) into its values.
fn metadata(metadata: &Metadata, path: &[&str]) -> Option<Vec<u8>> {
    let Some((&"filter_metadata", path)) = path.split_first() else {
        // The whole message is a protobuf in Envoy; Weir answers its JSON.
        return path.is_empty().then(|| {
            serde_json::json!({ "filter_metadata": *metadata.0 })
                .to_string()
                .into_bytes()
        });
    };
    let Some((namespace, keys)) = path.split_first() else {
        return Some(
            serde_json::Value::Object((*metadata.0).clone())
                .to_string()
                .into_bytes(),
        );
    };
    let mut value = metadata.0.get(*namespace)?;
    for key in keys {
        value = match value {
            serde_json::Value::Object(map) => map.get(*key)?,
            serde_json::Value::Array(items) => items.get(key.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(metadata_value(value))
}

/// One metadata value as Envoy serializes a `google.protobuf.Value`: a string
/// raw, a number as an 8-byte little-endian double, a boolean as one byte;
/// Weir gives a mapping or a list as JSON text (Envoy: a serialized protobuf).
fn metadata_value(value: &serde_json::Value) -> Vec<u8> {
    match value {
        serde_json::Value::String(s) => s.as_bytes().to_vec(),
        serde_json::Value::Number(n) => n.as_f64().unwrap_or_default().to_le_bytes().to_vec(),
        serde_json::Value::Bool(b) => vec![u8::from(*b)],
        serde_json::Value::Null => Vec::new(),
        other => other.to_string().into_bytes(),
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
