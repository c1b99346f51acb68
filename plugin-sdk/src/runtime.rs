//! The dispatcher: the Proxy-Wasm callbacks of one module, routed to its
//! plugins (one per root context) and their requests' filters. The wasm
//! exports call it; so does the test kit, which makes it the code under test
//! in both.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::error::{self, Error};
use crate::host::{self, Buffer, LogLevel, Map, Stream as Direction};
use crate::http::{Answer, Body, CallResponse, Continuation, Http, Ticket};
use crate::redis;
use crate::{Filter, Flow, Outcome, Plugin, background, config};

/// Rounds of wake-ups one callback may trigger (a woken request that wakes
/// again, and so on) before the rest wait for the next callback.
const WAKE_ROUNDS: usize = 8;

/// The callbacks the host makes, as the exports receive them.
pub(crate) trait Dispatch {
    fn on_context_create(&self, context_id: u32, parent_id: u32);
    fn on_configure(&self, root_id: u32, size: usize) -> bool;
    fn on_request_headers(&self, context_id: u32, end_of_stream: bool) -> u32;
    fn on_request_body(&self, context_id: u32, size: usize, end_of_stream: bool) -> u32;
    fn on_response_headers(&self, context_id: u32, end_of_stream: bool) -> u32;
    fn on_response_body(&self, context_id: u32, size: usize, end_of_stream: bool) -> u32;
    fn on_http_call_response(&self, token: u32, headers: usize, body_size: usize);
    fn on_redis_call_response(&self, token: u32, status: u32, size: usize);
    fn on_tick(&self, root_id: u32);
    fn on_log(&self, context_id: u32);
    fn on_delete(&self, context_id: u32);
}

/// A request's filter and what the SDK keeps for it.
struct Stream<F: Filter> {
    filter: F,
    continuations: Vec<(Ticket, Continuation<F>)>,
    /// The direction waiting on a callout, resumed when one answers Continue.
    paused: Option<Direction>,
    replied: bool,
    request_id: Option<Option<String>>,
}

/// A request's stream, shared between the map and a callback running on it.
type Shared<F> = Rc<RefCell<Stream<F>>>;

/// The plugins and requests of one module instance.
pub(crate) struct Runtime<P: Plugin> {
    plugins: RefCell<HashMap<u32, Rc<P>>>,
    streams: RefCell<HashMap<u32, Shared<P::Filter>>>,
    /// Which request started each callout in flight.
    callouts: RefCell<HashMap<u32, u32>>,
    /// The requests parked on each event.
    waiting: RefCell<HashMap<String, Vec<u32>>>,
}

impl<P: Plugin> Default for Runtime<P> {
    fn default() -> Self {
        Self {
            plugins: RefCell::default(),
            streams: RefCell::default(),
            callouts: RefCell::default(),
            waiting: RefCell::default(),
        }
    }
}

impl<P: Plugin> Runtime<P> {
    fn stream(&self, context_id: u32) -> Option<Shared<P::Filter>> {
        self.streams.borrow().get(&context_id).cloned()
    }

    /// Runs `callback` on request `context_id`'s filter in direction
    /// `direction`, and turns its outcome into the ABI's return value.
    fn phase(
        &self,
        context_id: u32,
        direction: Direction,
        end_of_stream: bool,
        callback: impl FnOnce(&mut P::Filter, &mut Http<'_, P::Filter>) -> Outcome,
    ) -> u32 {
        let Some(stream) = self.stream(context_id) else {
            return 0;
        };
        let flow = self.run(context_id, &stream, end_of_stream, callback);
        let code = {
            let mut stream = stream.borrow_mut();
            match flow {
                Flow::Continue => 0,
                Flow::Pause => {
                    if !stream.continuations.is_empty() {
                        stream.paused = Some(direction);
                    }
                    1
                }
            }
        };
        self.settle();
        code
    }

    /// Runs `callback` and handles its outcome: callouts it started are
    /// registered, and a failure is logged and answered with a JSON 500.
    fn run(
        &self,
        context_id: u32,
        stream: &RefCell<Stream<P::Filter>>,
        end_of_stream: bool,
        callback: impl FnOnce(&mut P::Filter, &mut Http<'_, P::Filter>) -> Outcome,
    ) -> Flow {
        let mut guard = stream.borrow_mut();
        let Stream {
            filter,
            continuations,
            replied,
            request_id,
            ..
        } = &mut *guard;
        let before = continuations.len();
        let mut http = Http {
            plugin: P::NAME,
            continuations,
            replied,
            request_id,
            end_of_stream,
        };
        let outcome = callback(filter, &mut http);
        let flow = match outcome {
            Ok(flow) => flow,
            Err(error) => {
                fail(&mut http, &error);
                Flow::Pause
            }
        };
        let mut callouts = self.callouts.borrow_mut();
        let mut waiting = self.waiting.borrow_mut();
        for (ticket, _) in &guard.continuations[before..] {
            match ticket {
                Ticket::Callout(token) => {
                    callouts.insert(*token, context_id);
                }
                Ticket::Event(event) => waiting.entry(event.clone()).or_default().push(context_id),
            }
        }
        flow
    }

    /// Hands `answer` to the continuation of callout `token`: a request's,
    /// or else the plugin's.
    fn answer(&self, token: u32, answer: impl FnOnce() -> Answer) {
        let context_id = self.callouts.borrow_mut().remove(&token);
        match context_id {
            Some(context_id) => self.resume(context_id, &Ticket::Callout(token), answer),
            None => {
                if let Some(then) = background::take_call(token)
                    && let Answer::Call(result) = answer()
                {
                    then(result);
                }
            }
        }
        self.settle();
    }

    /// Runs the continuation of request `context_id` waiting on `ticket`
    /// with `answer`, then resumes the request if it answered Continue.
    fn resume(&self, context_id: u32, ticket: &Ticket, answer: impl FnOnce() -> Answer) {
        let Some(stream) = self.stream(context_id) else {
            return;
        };
        if host::set_effective_context(context_id).is_err() {
            return;
        }
        let continuation = {
            let mut stream = stream.borrow_mut();
            let at = stream.continuations.iter().position(|(t, _)| t == ticket);
            at.map(|at| stream.continuations.remove(at).1)
        };
        let Some(continuation) = continuation else {
            return;
        };
        let answer = answer();
        let flow = self.run(context_id, &stream, false, |filter, http| {
            continuation(filter, http, answer)
        });
        let mut stream = stream.borrow_mut();
        if flow == Flow::Continue
            && !stream.replied
            && let Some(direction) = stream.paused.take()
        {
            let _ = host::continue_stream(direction);
        }
    }

    /// Resumes the requests parked on the events plugin code woke.
    fn settle(&self) {
        for _ in 0..WAKE_ROUNDS {
            let events = background::take_wakes();
            if events.is_empty() {
                return;
            }
            for event in events {
                let parked = self.waiting.borrow_mut().remove(&event).unwrap_or_default();
                let ticket = Ticket::Event(event);
                for context_id in parked {
                    self.resume(context_id, &ticket, || Answer::Woken);
                }
            }
        }
    }
}

/// Logs a failed callback and answers its request with a JSON 500.
fn fail<F: Filter>(http: &mut Http<'_, F>, error: &Error) {
    http.log(LogLevel::Error, &format!("failed: {error}"));
    if *http.replied {
        return;
    }
    let request_id = http.request_id();
    let body = error::body(
        500,
        "plugin_error",
        &format!("plugin {} failed", http.plugin),
        request_id.as_deref(),
    );
    let headers = [("content-type", "application/json")];
    if host::send_local_response(500, "plugin_error", body.as_bytes(), &headers).is_ok() {
        *http.replied = true;
    }
}

impl<P: Plugin> Dispatch for Runtime<P> {
    fn on_context_create(&self, context_id: u32, parent_id: u32) {
        if parent_id == 0 {
            return;
        }
        let Some(plugin) = self.plugins.borrow().get(&parent_id).cloned() else {
            return;
        };
        let stream = Stream {
            filter: plugin.filter(),
            continuations: Vec::new(),
            paused: None,
            replied: false,
            request_id: None,
        };
        self.streams
            .borrow_mut()
            .insert(context_id, Rc::new(RefCell::new(stream)));
    }

    fn on_configure(&self, root_id: u32, size: usize) -> bool {
        let bytes = match host::get_buffer(Buffer::PluginConfiguration, 0, size) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(error) => {
                let _ = host::log(
                    LogLevel::Error,
                    &format!("{}: cannot read the configuration: {error}", P::NAME),
                );
                return false;
            }
        };
        match config::parse(&bytes).and_then(P::configure) {
            Ok(plugin) => {
                self.plugins.borrow_mut().insert(root_id, Rc::new(plugin));
                true
            }
            Err(error) => {
                config::report(P::NAME, &error);
                false
            }
        }
    }

    fn on_request_headers(&self, context_id: u32, end_of_stream: bool) -> u32 {
        self.phase(context_id, Direction::Request, end_of_stream, |f, http| {
            f.on_request_headers(http)
        })
    }

    fn on_request_body(&self, context_id: u32, size: usize, end_of_stream: bool) -> u32 {
        let body = Body {
            size,
            end_of_stream,
        };
        self.phase(context_id, Direction::Request, end_of_stream, |f, http| {
            f.on_request_body(http, body)
        })
    }

    fn on_response_headers(&self, context_id: u32, end_of_stream: bool) -> u32 {
        self.phase(context_id, Direction::Response, end_of_stream, |f, http| {
            f.on_response_headers(http)
        })
    }

    fn on_response_body(&self, context_id: u32, size: usize, end_of_stream: bool) -> u32 {
        let body = Body {
            size,
            end_of_stream,
        };
        self.phase(context_id, Direction::Response, end_of_stream, |f, http| {
            f.on_response_body(http, body)
        })
    }

    fn on_http_call_response(&self, token: u32, headers: usize, body_size: usize) {
        self.answer(token, || Answer::Call(call_response(headers, body_size)))
    }

    fn on_redis_call_response(&self, token: u32, status: u32, size: usize) {
        self.answer(token, || {
            Answer::Redis(if status != 0 {
                Err(Error::msg("the Redis service is unreachable"))
            } else {
                host::get_buffer(Buffer::RedisCallResponse, 0, size)
                    .map_err(Error::from)
                    .and_then(|reply| {
                        redis::decode(&reply.unwrap_or_default())
                            .ok_or_else(|| Error::msg("the Redis reply is not valid RESP"))
                    })
            })
        })
    }

    fn on_tick(&self, root_id: u32) {
        let plugin = self.plugins.borrow().get(&root_id).cloned();
        if let Some(plugin) = plugin {
            plugin.on_tick();
        }
        self.settle();
    }

    fn on_log(&self, context_id: u32) {
        if let Some(stream) = self.stream(context_id) {
            self.run(context_id, &stream, true, |filter, http| {
                filter.on_log(http);
                Ok(Flow::Continue)
            });
        }
    }

    fn on_delete(&self, context_id: u32) {
        if self.streams.borrow_mut().remove(&context_id).is_some() {
            self.callouts.borrow_mut().retain(|_, id| *id != context_id);
            self.waiting.borrow_mut().retain(|_, parked| {
                parked.retain(|id| *id != context_id);
                !parked.is_empty()
            });
        } else {
            self.plugins.borrow_mut().remove(&context_id);
        }
    }
}

/// The answer of an upstream call, read from the call-response map and buffer.
fn call_response(headers: usize, body_size: usize) -> Result<CallResponse, Error> {
    if headers == 0 {
        return Err(Error::msg(
            "the upstream call failed (refused, reset or timed out)",
        ));
    }
    let mut all = host::get_map(Map::CallResponse)?;
    let status = all
        .iter()
        .position(|(k, _)| k == ":status")
        .map(|at| all.remove(at).1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::msg("the upstream answer has no status"))?;
    let body = host::get_buffer(Buffer::CallResponseBody, 0, body_size)?.unwrap_or_default();
    Ok(CallResponse {
        status,
        headers: all,
        body,
    })
}
