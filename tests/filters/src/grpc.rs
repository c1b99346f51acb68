//! The filter's gRPC modes: a unary call or a bidirectional stream from the
//! request-headers callback, a call from the root context on a tick, and the
//! SDK's `grpc_auth_random` example. Messages are protobuf with one string
//! field (tag 1), encoded here by hand. Results reach the upstream (or
//! shared data, from the root) so tests can read them.

use std::time::Duration;

use proxy_wasm::traits::Context;
use proxy_wasm::types::{Action, GrpcStatusCode};
use serde::Deserialize;

/// What to call, from the plugin configuration's `grpc` object.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcConfig {
    /// The upstream group (Envoy's cluster).
    pub upstream: String,
    /// The service, e.g. `weir.test.Echo`.
    pub service: String,
    /// The method.
    pub method: String,
    /// Initial metadata.
    pub metadata: Vec<(String, String)>,
    /// A unary call's request text.
    pub message: String,
    /// Take the request text from this request header instead, when present.
    pub message_header: Option<String>,
    /// Open a stream instead, send these texts, and close it after as many replies.
    pub stream: Vec<String>,
    /// The call's timeout (0 = the upstream group's).
    pub timeout_ms: u64,
    /// Call from the root context on its first tick; the outcome goes to
    /// shared data `grpc_tick` as `<status>:<text or message>`.
    pub on_tick: bool,
    /// Cancel the call 300 ms after starting it (root mode). Any callback
    /// that still arrives counts in shared data `grpc_late`.
    pub cancel: bool,
}

/// A protobuf message whose field 1 is `text`.
pub fn encode(text: &str) -> Vec<u8> {
    let mut out = vec![0x0a];
    let mut len = text.len();
    while len >= 0x80 {
        out.push((len as u8) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend_from_slice(text.as_bytes());
    out
}

/// Field 1 of a protobuf message as text (`<undecodable>` when it is not that shape).
pub fn decode(bytes: &[u8]) -> String {
    let Some((&0x0a, rest)) = bytes.split_first() else {
        return if bytes.is_empty() {
            String::new()
        } else {
            "<undecodable>".into()
        };
    };
    let (mut len, mut shift, mut at) = (0usize, 0, 0);
    while let Some(&b) = rest.get(at) {
        len |= ((b & 0x7f) as usize) << shift;
        at += 1;
        shift += 7;
        if b & 0x80 == 0 {
            break;
        }
    }
    rest.get(at..at + len).map_or_else(
        || "<undecodable>".into(),
        |text| String::from_utf8_lossy(text).into_owned(),
    )
}

/// A metadata value as text, `<none>` when absent.
pub fn text(value: Option<Vec<u8>>) -> String {
    value.map_or_else(
        || "<none>".into(),
        |v| String::from_utf8_lossy(&v).into_owned(),
    )
}

fn metadata(config: &GrpcConfig) -> Vec<(&str, &[u8])> {
    config
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .collect()
}

fn timeout(config: &GrpcConfig) -> Duration {
    Duration::from_millis(config.timeout_ms)
}

/// Starts the unary call of `config` from `context`; `Err` is the SDK's status.
pub fn call(context: &dyn Context, config: &GrpcConfig) -> Result<u32, String> {
    context
        .dispatch_grpc_call(
            &config.upstream,
            &config.service,
            &config.method,
            metadata(config),
            Some(&encode(&config.message)),
            timeout(config),
        )
        .map_err(|status| format!("{status:?}"))
}

/// Opens the stream of `config` and sends its messages.
pub fn open_stream(context: &dyn Context, config: &GrpcConfig) -> Result<u32, String> {
    let token = context
        .open_grpc_stream(
            &config.upstream,
            &config.service,
            &config.method,
            metadata(config),
        )
        .map_err(|status| format!("{status:?}"))?;
    for text in &config.stream {
        context.send_grpc_stream_message(token, Some(&encode(text)), false);
    }
    Ok(token)
}

/// A unary call's outcome as `(status, text)`: the reply's text on success,
/// else the status message `proxy_get_status` gives.
pub fn outcome(context: &dyn Context, status: u32, size: usize) -> (u32, String) {
    if status == 0 {
        let body = context
            .get_grpc_call_response_body(0, size)
            .unwrap_or_default();
        return (0, decode(&body));
    }
    let (_, message) = context.get_grpc_status();
    (status, message.unwrap_or_default())
}

/// The SDK's `grpc_auth_random` example, request side: non-gRPC clients get
/// 503, the reflection API passes, every other call waits for
/// `grpcbin.GRPCBin/RandomError`.
pub fn auth_random_request(context: &mut dyn proxy_wasm::traits::HttpContext) -> Action {
    match context.get_http_request_header("content-type") {
        Some(value) if value.starts_with("application/grpc") => {}
        _ => {
            context.send_http_response(
                503,
                vec![("Powered-By", "proxy-wasm")],
                Some(b"Service accessible only to gRPC clients.\n"),
            );
            return Action::Pause;
        }
    }
    match context.get_http_request_header(":path") {
        Some(value) if value.starts_with("/grpc.reflection") => Action::Continue,
        _ => {
            let dispatched = context.dispatch_grpc_call(
                "grpcbin",
                "grpcbin.GRPCBin",
                "RandomError",
                vec![],
                None,
                Duration::from_secs(1),
            );
            if dispatched.is_err() {
                context.send_http_response(500, vec![], Some(b"grpc_call refused"));
            }
            Action::Pause
        }
    }
}

/// The SDK's `grpc_auth_random` example, answer side: an even status resumes,
/// an odd one answers gRPC `ABORTED`.
pub fn auth_random_response(context: &mut dyn proxy_wasm::traits::HttpContext, status: u32) {
    if status.is_multiple_of(2) {
        context.resume_http_request();
    } else {
        context.send_grpc_response(
            GrpcStatusCode::Aborted,
            Some("Aborted by Proxy-Wasm!"),
            vec![("Powered-By", b"proxy-wasm")],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_messages_round_trip() {
        for text in ["", "hi", &"x".repeat(300)] {
            assert_eq!(decode(&encode(text)), text);
        }
    }
}
