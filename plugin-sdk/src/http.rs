//! [`Http`]: what a filter callback can see and do to its request.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{self, Error};
use crate::host::{self, Buffer, LogLevel, Map};
use crate::redis::{self, RedisValue};
use crate::status::HostResult;
use crate::{Filter, Flow, Outcome};

/// The header Weir (and Envoy) carry the request id in.
const REQUEST_ID: &str = "x-request-id";

/// A paused request's continuation: runs with the filter, its request and
/// what it waited for.
pub(crate) type Continuation<F> =
    Box<dyn FnOnce(&mut F, &mut Http<'_, F>, Answer) -> Outcome + 'static>;

/// What a paused request waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ticket {
    /// The answer to the callout with this token.
    Callout(u32),
    /// A [`background::wake`](crate::background::wake) of this event.
    Event(String),
}

/// What a continuation gets.
pub(crate) enum Answer {
    Call(Result<CallResponse, Error>),
    Redis(Result<RedisValue, Error>),
    Woken,
}

/// The size of a body seen so far, in a body callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Body {
    /// Bytes buffered so far (all of them when the previous callback paused).
    pub size: usize,
    /// Whether this is the end of the body.
    pub end_of_stream: bool,
}

/// One request as a filter callback sees it: headers, bodies, properties,
/// local replies, callouts and logging. Every host call returns a `Result`.
pub struct Http<'a, F: Filter> {
    pub(crate) plugin: &'static str,
    pub(crate) continuations: &'a mut Vec<(Ticket, Continuation<F>)>,
    pub(crate) replied: &'a mut bool,
    pub(crate) request_id: &'a mut Option<Option<String>>,
    pub(crate) end_of_stream: bool,
}

impl<F: Filter> Http<'_, F> {
    /// Whether the headers of this callback end their message (no body follows).
    pub fn end_of_stream(&self) -> bool {
        self.end_of_stream
    }

    /// The first value of request header `name` (lower case).
    pub fn request_header(&self, name: &str) -> HostResult<Option<String>> {
        host::get_map_value(Map::Request, name)
    }

    /// Every request header, pseudo-headers (`:method`, `:path`, …) first.
    pub fn request_headers(&self) -> HostResult<Vec<(String, String)>> {
        host::get_map(Map::Request)
    }

    /// Makes `value` the only value of request header `name`.
    pub fn set_request_header(&mut self, name: &str, value: &str) -> HostResult<()> {
        host::replace_map_value(Map::Request, name, value)
    }

    /// Adds a value to request header `name`.
    pub fn add_request_header(&mut self, name: &str, value: &str) -> HostResult<()> {
        host::add_map_value(Map::Request, name, value)
    }

    /// Removes request header `name`.
    pub fn remove_request_header(&mut self, name: &str) -> HostResult<()> {
        host::remove_map_value(Map::Request, name)
    }

    /// The request's method.
    pub fn method(&self) -> HostResult<Option<String>> {
        self.request_header(":method")
    }

    /// The request's path with its query.
    pub fn path(&self) -> HostResult<Option<String>> {
        self.request_header(":path")
    }

    /// The request's path without its query.
    pub fn path_only(&self) -> HostResult<Option<String>> {
        Ok(self.path()?.map(|p| {
            p.split_once('?')
                .map_or(p.clone(), |(path, _)| path.to_owned())
        }))
    }

    /// The request's host (`:authority`).
    pub fn authority(&self) -> HostResult<Option<String>> {
        self.request_header(":authority")
    }

    /// The first value of response header `name`.
    pub fn response_header(&self, name: &str) -> HostResult<Option<String>> {
        host::get_map_value(Map::Response, name)
    }

    /// Every response header.
    pub fn response_headers(&self) -> HostResult<Vec<(String, String)>> {
        host::get_map(Map::Response)
    }

    /// The response's status.
    pub fn status(&self) -> HostResult<Option<u16>> {
        Ok(self
            .response_header(":status")?
            .and_then(|s| s.parse().ok()))
    }

    /// Makes `value` the only value of response header `name`.
    pub fn set_response_header(&mut self, name: &str, value: &str) -> HostResult<()> {
        host::replace_map_value(Map::Response, name, value)
    }

    /// Adds a value to response header `name`.
    pub fn add_response_header(&mut self, name: &str, value: &str) -> HostResult<()> {
        host::add_map_value(Map::Response, name, value)
    }

    /// Removes response header `name`.
    pub fn remove_response_header(&mut self, name: &str) -> HostResult<()> {
        host::remove_map_value(Map::Response, name)
    }

    /// Request body bytes `[start, start + max)` buffered so far.
    pub fn request_body(&self, start: usize, max: usize) -> HostResult<Vec<u8>> {
        Ok(host::get_buffer(Buffer::RequestBody, start, max)?.unwrap_or_default())
    }

    /// Replaces the whole request body buffered so far with `body`.
    pub fn set_request_body(&mut self, body: &[u8]) -> HostResult<()> {
        host::set_buffer(Buffer::RequestBody, 0, usize::MAX >> 1, body)
    }

    /// Response body bytes `[start, start + max)` buffered so far.
    pub fn response_body(&self, start: usize, max: usize) -> HostResult<Vec<u8>> {
        Ok(host::get_buffer(Buffer::ResponseBody, start, max)?.unwrap_or_default())
    }

    /// Replaces the whole response body buffered so far with `body`.
    pub fn set_response_body(&mut self, body: &[u8]) -> HostResult<()> {
        host::set_buffer(Buffer::ResponseBody, 0, usize::MAX >> 1, body)
    }

    /// Property `path` (e.g. `["source", "address"]`); `None` when the host has none.
    pub fn property(&self, path: &[&str]) -> HostResult<Option<Vec<u8>>> {
        host::get_property(path)
    }

    /// Sets property `path`, which later filters read back.
    pub fn set_property(&mut self, path: &[&str], value: &[u8]) -> HostResult<()> {
        host::set_property(path, value)
    }

    /// The host's clock.
    pub fn now(&self) -> HostResult<SystemTime> {
        Ok(UNIX_EPOCH + Duration::from_nanos(host::current_time_nanos()?))
    }

    /// The request's id (`x-request-id`), read once.
    pub fn request_id(&mut self) -> Option<String> {
        self.request_id
            .get_or_insert_with(|| host::get_map_value(Map::Request, REQUEST_ID).ok().flatten())
            .clone()
    }

    /// Answers the request with Weir's JSON error:
    /// `{"error": {"status", "code", "message", "request_id"}}`.
    pub fn deny(&mut self, status: u16, code: &str, message: &str) -> Outcome {
        self.deny_with(status, code, message, &[])
    }

    /// [`deny`](Self::deny) with extra headers (`www-authenticate`, `retry-after`).
    pub fn deny_with(
        &mut self,
        status: u16,
        code: &str,
        message: &str,
        headers: &[(&str, &str)],
    ) -> Outcome {
        self.deny_with_details(status, code, message, headers, &error::NoDetails {})
    }

    /// [`deny_with`](Self::deny_with) with the members of `details` (a
    /// struct or map, e.g. `{"violations": [...]}`) after Weir's own in the
    /// `error` object.
    pub fn deny_with_details<D: serde::Serialize + ?Sized>(
        &mut self,
        status: u16,
        code: &str,
        message: &str,
        headers: &[(&str, &str)],
        details: &D,
    ) -> Outcome {
        let request_id = self.request_id();
        let body = error::body_with(status, code, message, request_id.as_deref(), details);
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.respond_with_details(status, code, &all, body.as_bytes())
    }

    /// Answers the request with `status`, `headers` and `body`; the upstream
    /// is not called.
    pub fn respond(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> Outcome {
        self.respond_with_details(status, "direct_response", headers, body)
    }

    fn respond_with_details(
        &mut self,
        status: u16,
        details: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Outcome {
        host::send_local_response(u32::from(status), details, body, headers)?;
        *self.replied = true;
        Ok(Flow::Pause)
    }

    /// Calls upstream group `upstream` (a name of the manifest's `upstreams`
    /// in Weir, a cluster in Envoy); `then` runs with the answer, or with an
    /// error when the call failed or timed out. Return [`Flow::Pause`] from
    /// the callback that started the call; the request resumes when `then`
    /// returns [`Flow::Continue`].
    pub fn call(
        &mut self,
        upstream: &str,
        request: CallRequest,
        then: impl FnOnce(&mut F, &mut Http<'_, F>, Result<CallResponse, Error>) -> Outcome + 'static,
    ) -> HostResult<()> {
        let token = request.send(upstream)?;
        self.continuations.push((
            Ticket::Callout(token),
            Box::new(move |filter, http, answer| match answer {
                Answer::Call(result) => then(filter, http, result),
                _ => Err(Error::msg("another answer to an upstream call")),
            }),
        ));
        Ok(())
    }

    /// Sends a command (`["INCR", "hits"]`) to the manifest's Redis service
    /// `service` (Weir, and hosts with Higress's Redis extension); `then`
    /// runs with the reply. Pause and resume as with [`call`](Self::call).
    pub fn redis<A: AsRef<[u8]>>(
        &mut self,
        service: &str,
        command: &[A],
        then: impl FnOnce(&mut F, &mut Http<'_, F>, Result<RedisValue, Error>) -> Outcome + 'static,
    ) -> HostResult<()> {
        let token = host::redis_call(service, &redis::encode(command))?;
        self.continuations.push((
            Ticket::Callout(token),
            Box::new(move |filter, http, answer| match answer {
                Answer::Redis(result) => then(filter, http, result),
                _ => Err(Error::msg("another answer to a Redis call")),
            }),
        ));
        Ok(())
    }

    /// Parks the request until [`background::wake`](crate::background::wake)
    /// wakes `event` on this VM (from another request's callback, a
    /// plugin-level callout's answer, or a tick); then `then` runs. Return
    /// [`Flow::Pause`] from the callback that parked it; the request resumes
    /// when `then` returns [`Flow::Continue`]. A request parked on an event
    /// nobody wakes stays paused until the client or the host gives up, so
    /// wake from every path that ends the work waited for.
    pub fn wait(
        &mut self,
        event: &str,
        then: impl FnOnce(&mut F, &mut Http<'_, F>) -> Outcome + 'static,
    ) {
        self.continuations.push((
            Ticket::Event(event.to_owned()),
            Box::new(move |filter, http, answer| match answer {
                Answer::Woken => then(filter, http),
                _ => Err(Error::msg("a callout answer to a wait")),
            }),
        ));
    }

    /// Logs `message` at `level` with the plugin's name and the request id.
    pub fn log(&mut self, level: LogLevel, message: &str) {
        let id = self.request_id();
        let _ = host::log(
            level,
            &format!(
                "{}: {message} (request {})",
                self.plugin,
                id.as_deref().unwrap_or("-")
            ),
        );
    }

    /// [`log`](Self::log) at info level.
    pub fn info(&mut self, message: &str) {
        self.log(LogLevel::Info, message);
    }

    /// [`log`](Self::log) at warn level.
    pub fn warn(&mut self, message: &str) {
        self.log(LogLevel::Warn, message);
    }
}

/// A request to an upstream group, for [`Http::call`].
#[derive(Debug, Clone)]
pub struct CallRequest {
    method: String,
    path: String,
    authority: Option<String>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Duration,
}

impl CallRequest {
    /// Starts the call to `upstream`; its token.
    pub(crate) fn send(&self, upstream: &str) -> HostResult<u32> {
        let authority = self.authority.as_deref().unwrap_or(upstream);
        let mut headers = vec![
            (":method", self.method.as_str()),
            (":path", self.path.as_str()),
            (":authority", authority),
        ];
        headers.extend(self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let timeout_ms = u32::try_from(self.timeout.as_millis()).unwrap_or(u32::MAX);
        host::http_call(upstream, &headers, &self.body, timeout_ms)
    }

    /// A request with `method` for `path` (with its query), timing out after 5 s.
    pub fn new(method: &str, path: &str) -> Self {
        Self {
            method: method.to_owned(),
            path: path.to_owned(),
            authority: None,
            headers: Vec::new(),
            body: Vec::new(),
            timeout: Duration::from_secs(5),
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

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the `:authority` (the upstream group's name by default).
    pub fn authority(mut self, authority: &str) -> Self {
        self.authority = Some(authority.to_owned());
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets how long the call may take.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// An upstream's answer to [`Http::call`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallResponse {
    /// Its status.
    pub status: u16,
    /// Its headers (without `:status`).
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: Vec<u8>,
}

impl CallResponse {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        host::first_value(&self.headers, name)
    }
}
