//! The test kit: run a filter's callbacks under `cargo test`, on a fake host
//! that records what the filter did.
//!
//! The kit drives the SDK's own dispatcher (the code the wasm exports call),
//! so a test exercises the filter as a host would, minus the host:
//!
//! ```ignore
//! use weir_sdk::testing::{Request, Response, TestKit};
//! use weir_sdk::Flow;
//!
//! let kit = TestKit::<Hello>::configure(r#"{"greeting": "hi"}"#).unwrap();
//! let mut denied = kit.request(Request::get("/forbidden"));
//! assert_eq!(denied.send_headers(), Flow::Pause);
//! assert_eq!(denied.local_reply().unwrap().status, 403);
//!
//! let mut ok = kit.request(Request::get("/"));
//! assert_eq!(ok.send_headers(), Flow::Continue);
//! ok.respond(Response::new(200));
//! assert_eq!(ok.response_header("x-hello").as_deref(), Some("hi"));
//! ```
//!
//! Upstream calls and Redis commands a filter makes are recorded
//! ([`Exchange::calls`], [`Exchange::redis_calls`]) and answered by the test
//! ([`Exchange::answer_call`], [`Exchange::answer_redis`]). Each test thread
//! has its own fake host; one kit per test.

pub(crate) mod host;

use std::cell::Cell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use self::host::{Call, LocalReply, RedisCall, TestConsumer};
use crate::host::{Buffer, LogLevel, Map, Stream};
use crate::redis::{RedisValue, encode_value};
use crate::runtime::{Dispatch, Runtime};
use crate::status::HostError;
use crate::{ConfigError, Flow, Plugin};

/// The root context id the kit gives the plugin.
const ROOT_ID: u32 = 1;

/// A configured plugin on the fake host.
pub struct TestKit<P: Plugin> {
    runtime: Runtime<P>,
    next_id: Cell<u32>,
}

impl<P: Plugin> TestKit<P> {
    /// Configures the plugin with `config` (JSON) on a fresh fake host; the
    /// error the plugin reported when it refused it.
    pub fn configure(config: &str) -> Result<Self, ConfigError> {
        Self::configure_with(config, Vec::new())
    }

    /// [`configure`](Self::configure) on a host that knows `consumers`.
    pub fn configure_with(config: &str, consumers: Vec<TestConsumer>) -> Result<Self, ConfigError> {
        host::reset();
        crate::background::reset();
        host::with(|h| {
            h.consumers = consumers;
            h.buffers
                .insert(Buffer::PluginConfiguration, config.as_bytes().to_vec());
            h.now_nanos = 1_700_000_000_000_000_000;
        });
        let kit = Self {
            runtime: Runtime::default(),
            next_id: Cell::new(ROOT_ID + 1),
        };
        kit.runtime.on_context_create(ROOT_ID, 0);
        if kit.runtime.on_configure(ROOT_ID, config.len()) {
            return Ok(kit);
        }
        let reported = host::with(|h| h.configuration_errors.pop());
        Err(match reported {
            Some(report) => ConfigError::at(
                report["pointer"].as_str().unwrap_or_default(),
                report["message"].as_str().unwrap_or_default(),
            ),
            None => ConfigError::new("the plugin refused its configuration"),
        })
    }

    /// Starts a request (nothing runs until [`Exchange::send_headers`]).
    pub fn request(&self, request: Request) -> Exchange<'_, P> {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        host::with(|h| {
            let state = h.requests.entry(id).or_default();
            state.maps.insert(Map::Request, request.headers);
            state.buffers.insert(Buffer::RequestBody, request.body);
            state.consumer = request
                .consumer
                .and_then(|consumer| serde_json::to_vec(&consumer).ok());
        });
        self.runtime.on_context_create(id, ROOT_ID);
        Exchange { kit: self, id }
    }

    /// Sets the host's clock.
    pub fn set_time(&self, now: SystemTime) {
        let nanos = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        host::with(|h| h.now_nanos = u64::try_from(nanos).unwrap_or(u64::MAX));
    }

    /// Moves the host's clock forward.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        host::with(|h| h.now_nanos = h.now_nanos.saturating_add(by));
    }

    /// Every line the plugin logged, with its level.
    pub fn logs(&self) -> Vec<(LogLevel, String)> {
        host::with(|h| h.logs.clone())
    }

    /// The shared-data value under `key`.
    pub fn shared(&self, key: &str) -> Option<Vec<u8>> {
        host::with(|h| h.shared.get(key).map(|(value, _)| value.clone()))
    }

    /// Writes `value` under shared-data `key`, as another VM of the plugin would.
    pub fn set_shared(&self, key: &str, value: &[u8]) {
        let _ = host::set_shared_data(key, value, 0);
    }

    /// The value of metric `name`.
    pub fn metric(&self, name: &str) -> Option<i64> {
        host::with(|h| {
            h.metrics
                .iter()
                .find(|(_, n, _)| n == name)
                .map(|(_, _, v)| *v)
        })
    }

    /// Runs the plugin's tick, as the host does every period it asked for.
    pub fn tick(&self) {
        host::with(|h| h.effective = ROOT_ID);
        self.runtime.on_tick(ROOT_ID);
    }

    /// The tick period the plugin asked for, if any.
    pub fn tick_period(&self) -> Option<Duration> {
        let ms = host::with(|h| h.tick_period_ms);
        (ms > 0).then(|| Duration::from_millis(u64::from(ms)))
    }

    /// Upstream calls made so far, by the plugin and by every request.
    pub fn calls(&self) -> Vec<Call> {
        host::with(|h| h.calls.clone())
    }

    /// Answers upstream call `token` (a request's or the plugin's) with `response`.
    pub fn answer_call(&self, token: u32, response: Response) {
        let headers = response.headers.len();
        let size = response.body.len();
        host::with(|h| {
            h.effective = ROOT_ID;
            h.maps.insert(Map::CallResponse, response.headers);
            h.buffers.insert(Buffer::CallResponseBody, response.body);
        });
        self.runtime.on_http_call_response(token, headers, size);
    }

    /// Fails upstream call `token` (as a reset or timeout does).
    pub fn fail_call(&self, token: u32) {
        host::with(|h| h.effective = ROOT_ID);
        self.runtime.on_http_call_response(token, 0, 0);
    }

    /// Sets property `path` for every request, as the host would provide it.
    pub fn set_property(&self, path: &[&str], value: &[u8]) {
        let path = path.iter().map(|s| (*s).to_owned()).collect();
        host::with(|h| h.properties.insert(path, value.to_vec()));
    }

    /// Adds a consumer the plugin can find by its credentials (one its
    /// configuration names must be given to [`TestKit::configure_with`]).
    pub fn add_consumer(&self, consumer: TestConsumer) {
        host::with(|h| h.consumers.push(consumer));
    }

    /// Makes host function `name` (`"http_call"`, `"redis_call"`,
    /// `"send_local_response"`) answer `error` from now on.
    pub fn fail_host_call(&self, name: &'static str, error: HostError) {
        host::with(|h| h.failing.insert(name, error));
    }
}

/// One request of a [`TestKit`], driven callback by callback.
pub struct Exchange<'k, P: Plugin> {
    kit: &'k TestKit<P>,
    id: u32,
}

impl<P: Plugin> Exchange<'_, P> {
    fn enter(&self) {
        host::with(|h| h.effective = self.id);
    }

    fn has_body(&self, buffer: Buffer) -> bool {
        host::with(|h| {
            h.requests
                .get(&self.id)
                .and_then(|r| r.buffers.get(&buffer))
                .is_some_and(|b| !b.is_empty())
        })
    }

    fn flow(code: u32) -> Flow {
        if code == 0 {
            Flow::Continue
        } else {
            Flow::Pause
        }
    }

    /// Runs the request-headers callback (end of stream when the request has no body).
    pub fn send_headers(&mut self) -> Flow {
        self.enter();
        let end = !self.has_body(Buffer::RequestBody);
        Self::flow(self.kit.runtime.on_request_headers(self.id, end))
    }

    /// Runs the request-body callback once with the whole body.
    pub fn send_body(&mut self) -> Flow {
        self.enter();
        let size = host::with(|h| {
            h.requests
                .get(&self.id)
                .and_then(|r| r.buffers.get(&Buffer::RequestBody))
                .map_or(0, Vec::len)
        });
        Self::flow(self.kit.runtime.on_request_body(self.id, size, true))
    }

    /// Runs the response callbacks for `response`: headers, then the body
    /// if it has one. The flow of the last callback run.
    pub fn respond(&mut self, response: Response) -> Flow {
        self.enter();
        let has_body = !response.body.is_empty();
        let size = response.body.len();
        host::with(|h| {
            if let Some(state) = h.requests.get_mut(&self.id) {
                state.maps.insert(Map::Response, response.headers);
                state.buffers.insert(Buffer::ResponseBody, response.body);
            }
        });
        let flow = Self::flow(self.kit.runtime.on_response_headers(self.id, !has_body));
        if flow == Flow::Pause || !has_body {
            return flow;
        }
        Self::flow(self.kit.runtime.on_response_body(self.id, size, true))
    }

    /// The request's first value of header `name` as the filter left it.
    pub fn request_header(&self, name: &str) -> Option<String> {
        self.header(Map::Request, name)
    }

    /// The response's first value of header `name` as the filter left it.
    pub fn response_header(&self, name: &str) -> Option<String> {
        self.header(Map::Response, name)
    }

    fn header(&self, map: Map, name: &str) -> Option<String> {
        host::with(|h| {
            h.requests
                .get(&self.id)?
                .maps
                .get(&map)?
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    }

    /// The request body as the filter left it.
    pub fn request_body(&self) -> Vec<u8> {
        self.body(Buffer::RequestBody)
    }

    /// The response body as the filter left it.
    pub fn response_body(&self) -> Vec<u8> {
        self.body(Buffer::ResponseBody)
    }

    fn body(&self, buffer: Buffer) -> Vec<u8> {
        host::with(|h| {
            h.requests
                .get(&self.id)
                .and_then(|r| r.buffers.get(&buffer).cloned())
                .unwrap_or_default()
        })
    }

    /// Identifies the request as consumer `name` (one the kit was configured
    /// with), as an earlier auth filter would.
    pub fn identify(&mut self, name: &str, anonymous: bool) {
        let id = self.id;
        let known = host::with(|h| h.set_consumer(id, name, anonymous));
        assert!(known.is_ok(), "the kit has no consumer `{name}`");
    }

    /// Property `path` as the filter set it on this request.
    pub fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        let path: Vec<String> = path.iter().map(|s| (*s).to_owned()).collect();
        host::with(|h| h.requests.get(&self.id)?.properties.get(&path).cloned())
    }

    /// The consumer a filter identified the request as.
    pub fn consumer(&self) -> Option<crate::consumers::Consumer> {
        host::with(|h| {
            let state = h.requests.get(&self.id)?;
            serde_json::from_slice(state.consumer.as_deref()?).ok()
        })
    }

    /// The local reply the filter sent, if it did.
    pub fn local_reply(&self) -> Option<LocalReply> {
        host::with(|h| h.requests.get(&self.id)?.local_reply.clone())
    }

    /// Whether the filter resumed the request after pausing it.
    pub fn resumed(&self) -> bool {
        host::with(|h| {
            h.requests
                .get(&self.id)
                .is_some_and(|r| !r.resumed.is_empty())
        })
    }

    /// Whether the filter resumed the response after pausing it.
    pub fn response_resumed(&self) -> bool {
        host::with(|h| {
            h.requests
                .get(&self.id)
                .is_some_and(|r| r.resumed.contains(&Stream::Response))
        })
    }

    /// Upstream calls made so far (by every request of the kit).
    pub fn calls(&self) -> Vec<Call> {
        self.kit.calls()
    }

    /// Redis commands sent so far (by every request of the kit).
    pub fn redis_calls(&self) -> Vec<RedisCall> {
        host::with(|h| h.redis_calls.clone())
    }

    /// Answers upstream call `token` with `response`.
    pub fn answer_call(&mut self, token: u32, response: Response) {
        self.kit.answer_call(token, response);
    }

    /// Fails upstream call `token` (as a reset or timeout does).
    pub fn fail_call(&mut self, token: u32) {
        self.kit.fail_call(token);
    }

    /// Answers Redis command `token` with `reply`.
    pub fn answer_redis(&mut self, token: u32, reply: &RedisValue) {
        let bytes = encode_value(reply);
        let size = bytes.len();
        host::with(|h| h.buffers.insert(Buffer::RedisCallResponse, bytes));
        self.kit.runtime.on_redis_call_response(token, 0, size);
    }

    /// Fails Redis command `token` (the service is unreachable).
    pub fn fail_redis(&mut self, token: u32) {
        self.kit.runtime.on_redis_call_response(token, 1, 0);
    }
}

impl<P: Plugin> Drop for Exchange<'_, P> {
    /// Ends the request as a host does: the log callback, then deletion.
    fn drop(&mut self) {
        self.enter();
        self.kit.runtime.on_log(self.id);
        self.kit.runtime.on_delete(self.id);
        host::with(|h| h.requests.remove(&self.id));
    }
}

/// A request for [`TestKit::request`].
#[derive(Debug, Clone)]
pub struct Request {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    consumer: Option<crate::consumers::Consumer>,
}

impl Request {
    /// A request with `method` for `path`, host `example.test` and request id
    /// `test-request`.
    pub fn new(method: &str, path: &str) -> Self {
        Self {
            headers: vec![
                (":method".into(), method.into()),
                (":path".into(), path.into()),
                (":scheme".into(), "http".into()),
                (":authority".into(), "example.test".into()),
                ("x-request-id".into(), "test-request".into()),
            ],
            body: Vec::new(),
            consumer: None,
        }
    }

    /// A GET for `path`.
    pub fn get(path: &str) -> Self {
        Self::new("GET", path)
    }

    /// A POST of `body` to `path`.
    pub fn post(path: &str, body: impl Into<Vec<u8>>) -> Self {
        Self::new("POST", path).body(body)
    }

    /// Sets header `name` (replacing any value).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let name = name.to_ascii_lowercase();
        self.headers.retain(|(k, _)| *k != name);
        self.headers.push((name, value.to_owned()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Makes the request arrive identified as `consumer`, as an earlier
    /// auth filter would have left it.
    pub fn consumer(mut self, consumer: crate::consumers::Consumer) -> Self {
        self.consumer = Some(consumer);
        self
    }
}

/// A response for [`Exchange::respond`] or [`Exchange::answer_call`].
#[derive(Debug, Clone)]
pub struct Response {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    /// A response with `status`.
    pub fn new(status: u16) -> Self {
        Self {
            headers: vec![(":status".into(), status.to_string())],
            body: Vec::new(),
        }
    }

    /// Adds header `name`.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
}
