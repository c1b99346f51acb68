//! The per-route filter pipeline: drives one request through an ordered chain
//! of filters, phase by phase, in Envoy's order (request headers → body →
//! trailers → response headers → body → trailers → log/done/delete).
//!
//! It owns the pause/resume, buffering and fail-open/closed logic and knows no
//! wasmtime types: it talks to filters through `crate::wasm`'s API, and to the
//! proxy through [`Run`]'s step functions.

mod build;

pub use build::{BuildError, Pipelines, build};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;

use crate::wasm::{
    Callback, FailMode, FilterError, FilterInstance, FilterStream, LocalReply, Phase, RequestHead,
    ResponseHead, Resume, StreamData, StreamInfo,
};

/// An ordered chain of filter instances (global filters first, then the route's).
#[derive(Clone, Default)]
pub struct Pipeline {
    filters: Vec<Arc<FilterInstance>>,
}

/// Why a request cannot go on through the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A fail-closed filter failed.
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// A filter paused the stream and did not resume it in time.
    #[error("plugin `{plugin}` paused the request and did not resume it within {}ms", timeout.as_millis())]
    PauseTimeout {
        /// Plugin name.
        plugin: String,
        /// The limit.
        timeout: Duration,
    },
    /// A filter buffered more body than allowed.
    #[error("plugin `{plugin}` buffered more than {limit} bytes of body")]
    BufferLimit {
        /// Plugin name.
        plugin: String,
        /// The limit.
        limit: u64,
        /// Request or response body.
        request: bool,
    },
    /// A filter closed the stream.
    #[error("plugin `{plugin}` closed the stream")]
    Closed {
        /// Plugin name.
        plugin: String,
    },
}

/// A direction of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to upstream.
    Request,
    /// Upstream to client.
    Response,
}

/// What came of running a phase.
#[derive(Debug)]
pub enum Step {
    /// Every filter let it pass.
    Continue,
    /// A filter answered locally.
    Reply(LocalReply),
    /// Filter `filter` paused; await `resume`, then call [`Run::unpause`].
    Paused {
        /// Index of the pausing filter.
        filter: usize,
        /// Woken by the filter.
        resume: Arc<Resume>,
    },
}

/// What came of one body chunk.
#[derive(Debug)]
pub enum BodyStep {
    /// These bytes go on (the chunk after every filter, or a released buffer).
    Emit(Bytes),
    /// A filter is buffering; nothing goes on yet.
    Buffering,
    /// A filter answered locally.
    Reply(LocalReply),
}

impl Pipeline {
    /// A pipeline of `filters`, in order.
    pub fn new(filters: Vec<Arc<FilterInstance>>) -> Self {
        Self { filters }
    }

    /// True when there is no filter (the proxy then skips all of this).
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// Binds a request to one VM of each filter.
    pub fn start(&self, info: Arc<StreamInfo>, request: RequestHead) -> Result<Run, PipelineError> {
        let mut data = Box::new(StreamData::new(info, request));
        let mut streams = Vec::with_capacity(self.filters.len());
        for filter in &self.filters {
            let (back, bound) = filter.bind(data);
            data = back;
            match bound {
                Ok(stream) => streams.push(Some(stream)),
                Err(error) => match filter.fail_mode() {
                    FailMode::Open => {
                        tracing::warn!(%error, "skipping the filter (fail open)");
                        streams.push(None);
                    }
                    FailMode::Closed => {
                        let mut run = Run::new(streams, data);
                        run.finish();
                        return Err(error.into());
                    }
                },
            }
        }
        Ok(Run::new(streams, data))
    }
}

/// Per-direction body buffering state.
#[derive(Debug, Default)]
struct BodyState {
    /// The filter holding the buffer, if one is.
    paused_at: Option<usize>,
    pending: BytesMut,
}

/// One request's pass through a pipeline.
pub struct Run {
    streams: Vec<Option<FilterStream>>,
    data: Option<Box<StreamData>>,
    request_body: BodyState,
    response_body: BodyState,
    finished: bool,
}

impl Run {
    fn new(streams: Vec<Option<FilterStream>>, data: Box<StreamData>) -> Self {
        Self {
            streams,
            data: Some(data),
            request_body: BodyState::default(),
            response_body: BodyState::default(),
            finished: false,
        }
    }

    /// The stream data (heads as filters left them).
    pub fn data(&self) -> Option<&StreamData> {
        self.data.as_deref()
    }

    /// Mutable stream data (the proxy records what it sent).
    pub fn data_mut(&mut self) -> Option<&mut StreamData> {
        self.data.as_deref_mut()
    }

    /// Sets the response head before the response phases run.
    pub fn set_response(&mut self, head: ResponseHead) {
        if let Some(data) = self.data.as_mut() {
            data.response = Some(head);
        }
    }

    /// Calls filter `i`, handling failure per its fail mode; `Ok(None)` = skipped.
    fn call(&mut self, i: usize, callback: Callback) -> Result<Option<i32>, PipelineError> {
        let (Some(Some(stream)), Some(data)) = (self.streams.get(i), self.data.take()) else {
            return Ok(None);
        };
        let (data, result) = stream.call(data, callback);
        self.data = Some(data);
        match result {
            Ok(action) => Ok(Some(action)),
            Err(error) => self.fail(i, error).map(|()| None),
        }
    }

    /// Applies filter `i`'s fail mode to `error`.
    fn fail(&mut self, i: usize, error: FilterError) -> Result<(), PipelineError> {
        let mode = self.streams[i]
            .as_ref()
            .map_or(FailMode::Closed, |s| s.instance().fail_mode());
        self.streams[i] = None;
        match mode {
            FailMode::Open => {
                tracing::warn!(%error, "skipping the failed filter (fail open)");
                Ok(())
            }
            FailMode::Closed => Err(error.into()),
        }
    }

    /// A local reply or a close a filter asked for during the last callback.
    fn interrupted(&mut self, i: usize) -> Result<Option<LocalReply>, PipelineError> {
        let Some(data) = self.data.as_mut() else {
            return Ok(None);
        };
        if let Some(reply) = data.local_reply.take() {
            return Ok(Some(reply));
        }
        if data.closed {
            let plugin = self.plugin_name(i);
            return Err(PipelineError::Closed { plugin });
        }
        Ok(None)
    }

    fn plugin_name(&self, i: usize) -> String {
        self.streams
            .get(i)
            .and_then(Option::as_ref)
            .map_or_else(String::new, |s| s.instance().plugin_name().to_owned())
    }

    /// Runs the headers phase of `direction` from filter `from` on.
    pub fn headers(
        &mut self,
        direction: Direction,
        end_of_stream: bool,
        from: usize,
    ) -> Result<Step, PipelineError> {
        for i in from..self.streams.len() {
            let Some(data) = self.data.as_mut() else {
                break;
            };
            Resume::renew(&mut data.resume);
            let (phase, count) = match direction {
                Direction::Request => (Phase::RequestHeaders, data.request.headers.len() + 4),
                Direction::Response => (
                    Phase::ResponseHeaders,
                    data.response.as_ref().map_or(0, |r| r.headers.len() + 1),
                ),
            };
            data.phase = phase;
            let callback = match direction {
                Direction::Request => Callback::RequestHeaders {
                    headers: count,
                    end_of_stream,
                },
                Direction::Response => Callback::ResponseHeaders {
                    headers: count,
                    end_of_stream,
                },
            };
            let action = self.call(i, callback)?;
            if let Some(reply) = self.interrupted(i)? {
                return Ok(Step::Reply(reply));
            }
            if action.is_some_and(|a| a != 0 && a != 2) {
                return self.pause(i);
            }
        }
        Ok(Step::Continue)
    }

    /// Parks the data with filter `i`'s VM and tells the caller what to await.
    fn pause(&mut self, i: usize) -> Result<Step, PipelineError> {
        let (Some(Some(stream)), Some(data)) = (self.streams.get(i), self.data.take()) else {
            return Ok(Step::Continue);
        };
        let resume = data.resume.clone();
        match stream.park(data) {
            Ok(()) => Ok(Step::Paused { filter: i, resume }),
            Err((data, error)) => {
                self.data = Some(data);
                self.fail(i, error).map(|()| Step::Continue)
            }
        }
    }

    /// Takes the data back from paused filter `i`; a local reply it set while paused is returned.
    pub fn unpause(&mut self, i: usize) -> Result<Option<LocalReply>, PipelineError> {
        let Some(Some(stream)) = self.streams.get(i) else {
            return Ok(None);
        };
        match stream.unpark() {
            Ok(data) => {
                self.data = Some(data);
                self.interrupted(i)
            }
            Err(Some((data, error))) => {
                self.data = Some(data);
                self.fail(i, error).map(|()| None)
            }
            Err(None) => Err(FilterError::Failed {
                plugin: self.plugin_name(i),
                reason: "the paused stream was lost with its VM".into(),
            }
            .into()),
        }
    }

    /// The name of filter `i`'s plugin (for errors).
    pub fn filter_name(&self, i: usize) -> String {
        self.plugin_name(i)
    }

    /// Runs one body chunk of `direction` through the filters. `limit` bounds what
    /// a pausing filter may buffer.
    pub fn body(
        &mut self,
        direction: Direction,
        chunk: Bytes,
        end_of_stream: bool,
        limit: u64,
    ) -> Result<BodyStep, PipelineError> {
        let state = match direction {
            Direction::Request => &mut self.request_body,
            Direction::Response => &mut self.response_body,
        };
        let (start, mut buffer) = match state.paused_at.take() {
            Some(at) => {
                let mut pending = std::mem::take(&mut state.pending);
                pending.extend_from_slice(&chunk);
                (at, pending)
            }
            None => (0, BytesMut::from(chunk)),
        };
        let phase = match direction {
            Direction::Request => Phase::RequestBody,
            Direction::Response => Phase::ResponseBody,
        };
        for i in start..self.streams.len() {
            let Some(data) = self.data.as_mut() else {
                break;
            };
            data.phase = phase;
            data.body = std::mem::take(&mut buffer);
            let buffered = data.body.len();
            let callback = match direction {
                Direction::Request => Callback::RequestBody {
                    buffered,
                    end_of_stream,
                },
                Direction::Response => Callback::ResponseBody {
                    buffered,
                    end_of_stream,
                },
            };
            let action = self.call(i, callback)?;
            if let Some(data) = self.data.as_mut() {
                buffer = std::mem::take(&mut data.body);
            }
            if let Some(reply) = self.interrupted(i)? {
                return Ok(BodyStep::Reply(reply));
            }
            let pauses = action.is_some_and(|a| a != 0);
            if pauses && !end_of_stream {
                if buffer.len() as u64 > limit {
                    return Err(PipelineError::BufferLimit {
                        plugin: self.plugin_name(i),
                        limit,
                        request: direction == Direction::Request,
                    });
                }
                let state = match direction {
                    Direction::Request => &mut self.request_body,
                    Direction::Response => &mut self.response_body,
                };
                state.paused_at = Some(i);
                state.pending = buffer;
                return Ok(BodyStep::Buffering);
            }
        }
        Ok(BodyStep::Emit(buffer.freeze()))
    }

    /// Runs the trailers of `direction` through the filters; returns them as changed.
    pub fn trailers(
        &mut self,
        direction: Direction,
        trailers: HeaderMap,
    ) -> Result<(HeaderMap, Option<LocalReply>), PipelineError> {
        let count = trailers.len();
        if let Some(data) = self.data.as_mut() {
            match direction {
                Direction::Request => data.request_trailers = Some(trailers),
                Direction::Response => data.response_trailers = Some(trailers),
            }
        }
        let mut reply = None;
        for i in 0..self.streams.len() {
            let Some(data) = self.data.as_mut() else {
                break;
            };
            let (phase, callback) = match direction {
                Direction::Request => (
                    Phase::RequestTrailers,
                    Callback::RequestTrailers { trailers: count },
                ),
                Direction::Response => (
                    Phase::ResponseTrailers,
                    Callback::ResponseTrailers { trailers: count },
                ),
            };
            data.phase = phase;
            self.call(i, callback)?;
            if let Some(r) = self.interrupted(i)? {
                reply = Some(r);
                break;
            }
        }
        let trailers = self
            .data
            .as_mut()
            .and_then(|d| match direction {
                Direction::Request => d.request_trailers.take(),
                Direction::Response => d.response_trailers.take(),
            })
            .unwrap_or_default();
        Ok((trailers, reply))
    }

    /// `on_log`, `on_done`, `on_delete` on every filter, once.
    pub fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        if let Some(data) = self.data.as_mut() {
            data.phase = Phase::Log;
            data.request_sent = true;
            data.response_sent = true;
        }
        for i in 0..self.streams.len() {
            for callback in [Callback::Log, Callback::Done, Callback::Delete] {
                if self.call(i, callback).is_err() {
                    break;
                }
            }
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A run shared by the request-body stream and the response path.
pub type SharedRun = Arc<Mutex<Run>>;

/// Locks a shared run (a poisoned lock still holds consistent data).
pub fn lock(run: &SharedRun) -> std::sync::MutexGuard<'_, Run> {
    run.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs a headers phase to the end, waiting out pauses (each bounded by `pause_limit`).
pub async fn headers(
    run: &SharedRun,
    direction: Direction,
    end_of_stream: bool,
    pause_limit: Duration,
) -> Result<Option<LocalReply>, PipelineError> {
    let mut from = 0;
    loop {
        let step = lock(run).headers(direction, end_of_stream, from)?;
        match step {
            Step::Continue => return Ok(None),
            Step::Reply(reply) => return Ok(Some(reply)),
            Step::Paused { filter, resume } => {
                let woke = tokio::time::timeout(pause_limit, resume.wait())
                    .await
                    .is_ok();
                let mut guard = lock(run);
                let reply = guard.unpause(filter)?;
                if reply.is_some() {
                    return Ok(reply);
                }
                if !woke {
                    return Err(PipelineError::PauseTimeout {
                        plugin: guard.filter_name(filter),
                        timeout: pause_limit,
                    });
                }
                from = filter + 1;
            }
        }
    }
}
