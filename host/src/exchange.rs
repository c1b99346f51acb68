//! The Weir-owned data of one HTTP exchange as filters see it: heads, bodies,
//! trailers, the local reply a filter asked for, and what the stream is doing
//! now.
//!
//! A `StreamData` lives in the request's filter chain between phases. Native
//! filters borrow it; the Proxy-Wasm adapter lends it to a VM for each
//! callback (and while that VM's filter holds the stream paused). Knows the
//! `http` types only: no hyper, no wasmtime.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};
use tokio::sync::Notify;

use crate::config::model::Metadata;

/// Facts about a request that do not change while it runs (properties read them).
#[derive(Debug, Clone)]
pub struct StreamInfo {
    /// The route's name.
    pub route_name: String,
    /// The upstream group's name, when the route forwards.
    pub upstream_name: Option<String>,
    /// The addresses of that group's targets (none for a fixed response).
    pub upstream_hosts: Arc<[String]>,
    /// The request id.
    pub request_id: String,
    /// Client address.
    pub source: SocketAddr,
    /// Local address the client connected to.
    pub destination: Option<SocketAddr>,
    /// Whether the client used TLS.
    pub tls: bool,
    /// The TLS server name (SNI) the client asked for.
    pub sni: Option<String>,
    /// HTTP version as `HTTP/1.1` or `HTTP/2`.
    pub protocol: &'static str,
    /// When the request started (ns since the Unix epoch).
    pub start_unix_nanos: u64,
    /// The route's metadata (`route_metadata`).
    pub route_metadata: Metadata,
    /// The upstream's metadata (`cluster_metadata`), when the route forwards.
    pub cluster_metadata: Option<Metadata>,
}

/// A request head with the pseudo-headers Proxy-Wasm exposes.
#[derive(Debug, Clone, Default)]
pub struct RequestHead {
    /// `:method`.
    pub method: String,
    /// `:path` (path and query).
    pub path: String,
    /// `:authority`.
    pub authority: String,
    /// `:scheme`.
    pub scheme: String,
    /// Regular headers.
    pub headers: HeaderMap,
}

/// A response head with its `:status`.
#[derive(Debug, Clone, Default)]
pub struct ResponseHead {
    /// `:status`.
    pub status: u16,
    /// Regular headers.
    pub headers: HeaderMap,
    /// Where it came from, as Envoy's response code details name it (the
    /// `response.code_details` property): `via_upstream`, `direct_response`
    /// (a route's fixed response), or a filter's local reply's details; no
    /// allocation for the first two.
    pub details: std::borrow::Cow<'static, str>,
}

/// A response a filter asked to send instead of going on.
#[derive(Debug, Clone)]
pub struct LocalReply {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body.
    pub body: Bytes,
    /// The filter's reason text (for logs).
    pub details: String,
}

impl LocalReply {
    /// The headers the reply is sent with: the filter's (those that are not
    /// valid HTTP are dropped), `content-type: text/plain` for a body that
    /// names no type (as Envoy gives one), and the body's own
    /// `content-length`, whatever the filter wrote. The response phases see
    /// these.
    pub fn response_headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::with_capacity(self.headers.len() + 2);
        for (name, value) in &self.headers {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(value),
            ) {
                headers.append(n, v);
            }
        }
        if !self.body.is_empty() && !headers.contains_key(header::CONTENT_TYPE) {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        }
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(self.body.len()));
        headers
    }
}

/// Which callback a stream is in; decides which maps and buffers host calls may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `on_request_headers`.
    RequestHeaders,
    /// `on_request_body`.
    RequestBody,
    /// `on_request_trailers`.
    RequestTrailers,
    /// `on_response_headers`.
    ResponseHeaders,
    /// `on_response_body`.
    ResponseBody,
    /// `on_response_trailers`.
    ResponseTrailers,
    /// `on_log` and after.
    Log,
}

/// Wakes a paused stream when a filter calls `proxy_continue_stream`.
#[derive(Debug, Default)]
pub struct Resume {
    notify: Notify,
    woken: AtomicBool,
}

impl Resume {
    /// Signals the waiting stream (a signal sent before the wait is kept).
    pub fn wake(&self) {
        self.woken.store(true, Ordering::Relaxed);
        self.notify.notify_one();
    }

    /// Makes `current` a signal nobody has sent yet, for the next phase: it is
    /// kept when no one else holds it and it was never sent, else replaced.
    pub fn renew(current: &mut Arc<Resume>) {
        let unused = Arc::get_mut(current).is_some_and(|r| !*r.woken.get_mut());
        if !unused {
            *current = Arc::default();
        }
    }

    /// Waits for [`Resume::wake`].
    pub async fn wait(&self) {
        self.notify.notified().await;
    }
}

/// The consumer an auth filter identified a request's caller as
/// (`weir.consumer_set`).
#[derive(Debug, Clone)]
pub struct ConsumerIdentity {
    /// The consumer's name.
    pub name: Arc<str>,
    /// Whether it stands for a caller with no valid credential.
    pub anonymous: bool,
    /// The `weir.consumer` property: the consumer's view with `anonymous`.
    pub property: bytes::Bytes,
}

/// Everything filters can read and change about one stream.
#[derive(Debug)]
pub struct StreamData {
    /// Immutable facts.
    pub info: Arc<StreamInfo>,
    /// The request head (changes are forwarded).
    pub request: RequestHead,
    /// The response head, once the upstream answered.
    pub response: Option<ResponseHead>,
    /// Request trailers, when the request has them.
    pub request_trailers: Option<HeaderMap>,
    /// Response trailers, when the response has them.
    pub response_trailers: Option<HeaderMap>,
    /// The body buffer of the current body callback.
    pub body: BytesMut,
    /// Set by `proxy_send_local_response`.
    pub local_reply: Option<LocalReply>,
    /// The callback in progress.
    pub phase: Phase,
    /// Whether the request head has gone upstream (no more edits).
    pub request_sent: bool,
    /// Whether the response head has gone to the client (no more edits).
    pub response_sent: bool,
    /// Wakes the stream after a pause.
    pub resume: Arc<Resume>,
    /// Set when a filter asked for the stream to be reset.
    pub closed: bool,
    /// Values written with `proxy_set_property`, by path.
    pub properties: Vec<(Vec<u8>, Vec<u8>)>,
    /// The target (one of `info.upstream_hosts`) a filter chose for the
    /// request (Higress's `proxy_set_upstream_override_host`).
    pub upstream_override: Option<String>,
    /// The consumer an auth filter identified the caller as.
    pub consumer: Option<ConsumerIdentity>,
}

#[cfg(test)]
impl StreamInfo {
    /// The facts of a request on route `r` from 127.0.0.1:1, for unit tests.
    pub(crate) fn for_tests() -> Arc<Self> {
        Arc::new(Self {
            route_name: "r".into(),
            upstream_name: None,
            upstream_hosts: Arc::from([]),
            request_id: "id".into(),
            source: ([127, 0, 0, 1], 1).into(),
            destination: None,
            tls: false,
            sni: None,
            protocol: "HTTP/1.1",
            start_unix_nanos: 0,
            route_metadata: Default::default(),
            cluster_metadata: None,
        })
    }
}

impl StreamData {
    /// A new stream for `request`.
    pub fn new(info: Arc<StreamInfo>, request: RequestHead) -> Self {
        Self {
            info,
            request,
            response: None,
            request_trailers: None,
            response_trailers: None,
            body: BytesMut::new(),
            local_reply: None,
            phase: Phase::RequestHeaders,
            request_sent: false,
            response_sent: false,
            resume: Arc::new(Resume::default()),
            closed: false,
            properties: Vec::new(),
            upstream_override: None,
            consumer: None,
        }
    }
}

/// Nanoseconds since the Unix epoch (request start times, the ABI's clock).
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
