//! A route's filter chain and one request's pass through it: phases in
//! Envoy's order, pause and resume, body buffering, fail open or closed.
//!
//! The request goes through the filters in their order, the response back
//! through them in reverse (Envoy's decoder and encoder order), and only
//! through the filters the request reached: a filter that answered locally or
//! paused past its limit sees the answer, the filters after it never saw the
//! request and see nothing.
//!
//! Knows filters only through the [`HttpFilter`] trait: no wasmtime, no hyper.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use prometheus_client::metrics::histogram::Histogram;

use super::filter::{FailMode, FilterFailure, FilterRun, Flow, HttpFilter, Lent};
use crate::error::{Fault, HttpError};
use crate::exchange::{
    LocalReply, Phase, RequestHead, ResponseHead, Resume, StreamData, StreamInfo,
};
use crate::observe::trace::{self, Kind, Span};
use crate::observe::{Flag, Metrics, Record};

/// An ordered chain of filters (global filters first, then the route's).
#[derive(Clone, Default)]
pub struct Chain {
    filters: Arc<[Arc<dyn HttpFilter>]>,
    /// Each filter's callback-time histograms, when the chain is timed.
    clocks: Option<Arc<[PhaseClocks]>>,
}

/// One filter's callback-time histograms, one per [`Call`] kind.
struct PhaseClocks([Histogram; 6]);

/// The `phase` label of each [`Call`] kind, in [`Call::index`] order.
const PHASES: [&str; 6] = [
    "request_headers",
    "request_body",
    "request_trailers",
    "response_headers",
    "response_body",
    "response_trailers",
];

/// Why a request cannot go on through its chain.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// A fail-closed filter failed.
    #[error("{0}")]
    Filter(FilterFailure),
    /// A filter paused the stream and did not resume it in time.
    #[error("plugin `{plugin}` paused the request and did not resume it within {}ms", timeout.as_millis())]
    PauseTimeout {
        /// Filter name.
        plugin: String,
        /// The limit.
        timeout: Duration,
    },
    /// A filter buffered more body than allowed.
    #[error("plugin `{plugin}` buffered more than {limit} bytes of body")]
    BufferLimit {
        /// Filter name.
        plugin: String,
        /// The limit.
        limit: u64,
        /// Request or response body.
        request: bool,
    },
    /// A filter closed the stream.
    #[error("plugin `{plugin}` closed the stream")]
    Closed {
        /// Filter name.
        plugin: String,
    },
    /// The exchange was lost with the VM of a filter that held it paused.
    #[error("plugin `{plugin}` lost the paused stream with its VM")]
    Lost {
        /// Filter name.
        plugin: String,
    },
}

impl HttpError for ChainError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Filter(e) => e.status(),
            Self::Closed { .. } | Self::Lost { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::PauseTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::BufferLimit { request: true, .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BufferLimit { request: false, .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Filter(e) => e.code(),
            Self::Closed { .. } => "plugin_closed_stream",
            Self::Lost { .. } => "plugin_failed",
            Self::PauseTimeout { .. } => "plugin_timeout",
            Self::BufferLimit { request: true, .. } => "body_too_large",
            Self::BufferLimit { request: false, .. } => "response_too_large",
        }
    }

    fn fault(&self) -> Fault {
        match self {
            Self::Filter(e) => e.fault(),
            Self::BufferLimit { request: true, .. } => Fault::Downstream,
            _ => Fault::Internal,
        }
    }

    fn add_headers(&self, headers: &mut http::HeaderMap) {
        if let Self::Filter(e) = self {
            e.add_headers(headers);
        }
    }
}

/// A direction of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to upstream.
    Request,
    /// Upstream to client.
    Response,
}

/// What came of running a headers phase up to a pause.
#[derive(Debug)]
pub enum Step {
    /// Every filter let it pass.
    Continue,
    /// A filter answered locally.
    Reply(LocalReply),
    /// The filter at `position` paused; await `resume`, then call [`Run::unpause`].
    Paused {
        /// Where the pausing filter is in the direction's order.
        position: usize,
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

impl Chain {
    /// A chain of `filters`, in order.
    pub fn new(filters: Vec<Arc<dyn HttpFilter>>) -> Self {
        Self {
            filters: filters.into(),
            clocks: None,
        }
    }

    /// Times every filter callback into `metrics`' per-plugin, per-phase
    /// histograms.
    pub fn timed(mut self, metrics: &Metrics) -> Self {
        let clocks = self.filters.iter().map(|filter| {
            let plugin: Arc<str> = filter.name().into();
            PhaseClocks(PHASES.map(|phase| metrics.plugin_phase(&plugin, phase)))
        });
        self.clocks = Some(clocks.collect());
        self
    }

    /// Its filters' names, in order.
    pub fn filter_names(&self) -> impl Iterator<Item = &str> {
        self.filters.iter().map(|filter| filter.name())
    }

    /// True when there is no filter: the lifecycle then skips every phase.
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// Starts every filter for one request.
    pub fn start(&self, info: Arc<StreamInfo>, request: RequestHead) -> Result<Run, ChainError> {
        let mut run = Run {
            chain: self.clone(),
            runs: Vec::with_capacity(self.filters.len()),
            data: Some(Box::new(StreamData::new(info, request))),
            request_body: BodyState::default(),
            response_body: BodyState::default(),
            reached: 0,
            finished: false,
            record: None,
        };
        for filter in self.filters.iter() {
            match filter.start(&mut run.data) {
                Ok(started) => run.runs.push(Some(started)),
                Err(error) => match filter.fail_mode() {
                    FailMode::Open => {
                        tracing::warn!(filter = filter.name(), %error, "skipping the filter (fail open)");
                        run.runs.push(None);
                    }
                    FailMode::Closed => return Err(ChainError::Filter(error)),
                },
            }
        }
        Ok(run)
    }
}

/// Per-direction body buffering state.
#[derive(Debug, Default)]
struct BodyState {
    /// The position of the filter holding the buffer, if one is.
    paused_at: Option<usize>,
    pending: BytesMut,
}

/// The phases a [`Run`] calls on a filter.
#[derive(Clone, Copy)]
enum Call {
    Headers(Direction, bool),
    Body(Direction, bool),
    Trailers(Direction),
}

impl Call {
    /// Its place in [`PHASES`].
    fn index(self) -> usize {
        let (direction, part) = match self {
            Call::Headers(d, _) => (d, 0),
            Call::Body(d, _) => (d, 1),
            Call::Trailers(d) => (d, 2),
        };
        match direction {
            Direction::Request => part,
            Direction::Response => 3 + part,
        }
    }
}

/// One request's pass through a chain.
pub struct Run {
    chain: Chain,
    runs: Vec<Option<Box<dyn FilterRun>>>,
    data: Lent,
    request_body: BodyState,
    response_body: BodyState,
    /// How many filters, from the first, the request headers phase reached.
    reached: usize,
    finished: bool,
    /// The request's record: filter time and failures are added to it.
    record: Option<Arc<Record>>,
}

impl Run {
    /// Adds the time filters take, and their failures, to `record`.
    pub fn observe(&mut self, record: Arc<Record>) {
        self.record = Some(record);
    }

    /// The stream data (heads as filters left them).
    pub fn data(&self) -> Option<&StreamData> {
        self.data.as_deref()
    }

    /// Mutable stream data (the lifecycle records what it sent).
    pub fn data_mut(&mut self) -> Option<&mut StreamData> {
        self.data.as_deref_mut()
    }

    /// Sets the response head before the response phases run.
    pub fn set_response(&mut self, head: ResponseHead) {
        if let Some(data) = self.data.as_mut() {
            data.response = Some(head);
        }
    }

    /// How many filters the phases of `direction` go through.
    fn span(&self, direction: Direction) -> usize {
        match direction {
            Direction::Request => self.runs.len(),
            Direction::Response => self.reached,
        }
    }

    /// The index of the filter at `position` in the order of `direction`.
    fn at(&self, direction: Direction, position: usize) -> usize {
        match direction {
            Direction::Request => position,
            Direction::Response => self.reached.saturating_sub(position + 1),
        }
    }

    /// The name of the filter at `position` in the order of `direction`.
    fn name_at(&self, direction: Direction, position: usize) -> String {
        self.name(self.at(direction, position))
    }

    fn name(&self, i: usize) -> String {
        self.chain
            .filters
            .get(i)
            .map_or_else(String::new, |f| f.name().to_owned())
    }

    /// Calls filter `i`, handling failure per its fail mode; `Ok(None)` = skipped.
    fn call(&mut self, i: usize, call: Call) -> Result<Option<Flow>, ChainError> {
        if !matches!(self.runs.get(i), Some(Some(_))) {
            return Ok(None);
        }
        let mut span = self.traced(i, call);
        let Some(Some(run)) = self.runs.get_mut(i) else {
            return Ok(None);
        };
        let data = &mut self.data;
        let entered = span.as_ref().map(|(span, plugin)| {
            trace::enter(trace::Current {
                context: span.context().clone(),
                plugin: plugin.clone(),
            })
        });
        let started = Instant::now();
        let result = match call {
            Call::Headers(Direction::Request, end) => run.on_request_headers(data, end),
            Call::Headers(Direction::Response, end) => run.on_response_headers(data, end),
            Call::Body(Direction::Request, end) => run.on_request_body(data, end),
            Call::Body(Direction::Response, end) => run.on_response_body(data, end),
            Call::Trailers(Direction::Request) => run.on_request_trailers(data),
            Call::Trailers(Direction::Response) => run.on_response_trailers(data),
        };
        let took = started.elapsed();
        drop(entered);
        if let Some((mut span, _)) = span.take() {
            if let Err(error) = &result {
                span.fail("plugin_failed", || error.to_string());
            }
            span.end();
        }
        if let Some(record) = &self.record {
            record.add_plugin_time(took);
        }
        if let Some(clocks) = self.chain.clocks.as_ref().and_then(|c| c.get(i)) {
            clocks.0[call.index()].observe(took.as_secs_f64());
        }
        match result {
            Ok(flow) => Ok(Some(flow)),
            Err(error) => self.fail(i, error).map(|()| None),
        }
    }

    /// The span of filter `i`'s `call` and the filter's name, when the
    /// request is traced.
    fn traced(&self, i: usize, call: Call) -> Option<(Span, Arc<str>)> {
        let record = self.record.as_ref()?;
        let trace = record.trace()?;
        let plugin: Arc<str> = self.name(i).into();
        let phase = PHASES[call.index()];
        let mut span = (trace.context).child(|| format!("plugin {plugin} {phase}"), Kind::Internal);
        span.set("weir.plugin", || &*plugin);
        span.set("weir.phase", || phase);
        span.set("weir.request_id", || {
            record.request_id.to_str().unwrap_or("-")
        });
        if let Some(data) = self.data() {
            span.set("http.route", || data.info.route_name.as_str());
        }
        Some((span, plugin))
    }

    /// Applies filter `i`'s fail mode to `error`.
    fn fail(&mut self, i: usize, error: FilterFailure) -> Result<(), ChainError> {
        if let Some(record) = &self.record {
            record.flag(Flag::PluginFailed);
        }
        // Dropped without `finish`: a filter that just failed is not called again.
        if let Some(slot) = self.runs.get_mut(i) {
            *slot = None;
        }
        let mode = self
            .chain
            .filters
            .get(i)
            .map_or(FailMode::Closed, |f| f.fail_mode());
        match mode {
            FailMode::Open => {
                tracing::warn!(filter = %self.name(i), %error, "skipping the failed filter for this request (fail open)");
                Ok(())
            }
            FailMode::Closed => Err(ChainError::Filter(error)),
        }
    }

    /// A local reply or a close a filter asked for during the last call.
    fn interrupted(&mut self, i: usize) -> Result<Option<LocalReply>, ChainError> {
        let Some(data) = self.data.as_mut() else {
            return Ok(None);
        };
        if let Some(reply) = data.local_reply.take() {
            return Ok(Some(reply));
        }
        if data.closed {
            return Err(ChainError::Closed {
                plugin: self.name(i),
            });
        }
        Ok(None)
    }

    /// Runs the headers phase of `direction` from position `from` on.
    pub fn headers(
        &mut self,
        direction: Direction,
        end_of_stream: bool,
        from: usize,
    ) -> Result<Step, ChainError> {
        for position in from..self.span(direction) {
            let i = self.at(direction, position);
            if direction == Direction::Request {
                self.reached = self.reached.max(i + 1);
            }
            let Some(data) = self.data.as_mut() else {
                break;
            };
            Resume::renew(&mut data.resume);
            data.phase = match direction {
                Direction::Request => Phase::RequestHeaders,
                Direction::Response => Phase::ResponseHeaders,
            };
            let flow = self.call(i, Call::Headers(direction, end_of_stream))?;
            if let Some(reply) = self.interrupted(i)? {
                return Ok(Step::Reply(reply));
            }
            if let Some(Flow::Pause(resume)) = flow {
                return Ok(Step::Paused { position, resume });
            }
        }
        Ok(Step::Continue)
    }

    /// Takes the exchange back from the filter paused at `position`; a local
    /// reply it set while paused is returned.
    pub fn unpause(
        &mut self,
        direction: Direction,
        position: usize,
    ) -> Result<Option<LocalReply>, ChainError> {
        let i = self.at(direction, position);
        let Some(Some(run)) = self.runs.get_mut(i) else {
            return Ok(None);
        };
        if let Err(error) = run.resume(&mut self.data) {
            self.fail(i, error)?;
        }
        if self.data.is_none() {
            return Err(ChainError::Lost {
                plugin: self.name(i),
            });
        }
        self.interrupted(i)
    }

    /// Runs one body chunk of `direction` through the filters. `limit` bounds what
    /// a buffering filter may hold.
    pub fn body(
        &mut self,
        direction: Direction,
        chunk: Bytes,
        end_of_stream: bool,
        limit: u64,
    ) -> Result<BodyStep, ChainError> {
        let state = self.body_state(direction);
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
        for position in start..self.span(direction) {
            let i = self.at(direction, position);
            let Some(data) = self.data.as_mut() else {
                break;
            };
            data.phase = phase;
            data.body = std::mem::take(&mut buffer);
            let flow = self.call(i, Call::Body(direction, end_of_stream))?;
            if let Some(data) = self.data.as_mut() {
                buffer = std::mem::take(&mut data.body);
            }
            if let Some(reply) = self.interrupted(i)? {
                return Ok(BodyStep::Reply(reply));
            }
            let holds = matches!(flow, Some(Flow::Buffer | Flow::Pause(_)));
            if holds && !end_of_stream {
                if buffer.len() as u64 > limit {
                    return Err(ChainError::BufferLimit {
                        plugin: self.name(i),
                        limit,
                        request: direction == Direction::Request,
                    });
                }
                let state = self.body_state(direction);
                state.paused_at = Some(position);
                state.pending = buffer;
                return Ok(BodyStep::Buffering);
            }
        }
        Ok(BodyStep::Emit(buffer.freeze()))
    }

    fn body_state(&mut self, direction: Direction) -> &mut BodyState {
        match direction {
            Direction::Request => &mut self.request_body,
            Direction::Response => &mut self.response_body,
        }
    }

    /// Runs the trailers of `direction` through the filters; returns them as changed.
    pub fn trailers(
        &mut self,
        direction: Direction,
        trailers: HeaderMap,
    ) -> Result<(HeaderMap, Option<LocalReply>), ChainError> {
        if let Some(data) = self.data.as_mut() {
            match direction {
                Direction::Request => data.request_trailers = Some(trailers),
                Direction::Response => data.response_trailers = Some(trailers),
            }
        }
        let mut reply = None;
        for position in 0..self.span(direction) {
            let i = self.at(direction, position);
            let Some(data) = self.data.as_mut() else {
                break;
            };
            data.phase = match direction {
                Direction::Request => Phase::RequestTrailers,
                Direction::Response => Phase::ResponseTrailers,
            };
            self.call(i, Call::Trailers(direction))?;
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

    /// [`FilterRun::finish`] on every filter still in the run, once.
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
        // Plugins' log lines in `on_log` name the request's trace.
        let trace = (self.record.as_ref())
            .and_then(|r| r.trace())
            .map(|t| t.context.clone());
        for (i, run) in self.runs.iter_mut().enumerate() {
            let Some(run) = run else { continue };
            let _entered = trace.as_ref().map(|context| {
                trace::enter(trace::Current {
                    context: context.clone(),
                    plugin: self
                        .chain
                        .filters
                        .get(i)
                        .map_or("".into(), |f| f.name().into()),
                })
            });
            run.finish(&mut self.data);
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
) -> Result<Option<LocalReply>, ChainError> {
    let mut from = 0;
    loop {
        let step = lock(run).headers(direction, end_of_stream, from)?;
        match step {
            Step::Continue => return Ok(None),
            Step::Reply(reply) => return Ok(Some(reply)),
            Step::Paused { position, resume } => {
                let woke = tokio::time::timeout(pause_limit, resume.wait())
                    .await
                    .is_ok();
                let mut guard = lock(run);
                let reply = guard.unpause(direction, position)?;
                if reply.is_some() {
                    return Ok(reply);
                }
                if !woke {
                    return Err(ChainError::PauseTimeout {
                        plugin: guard.name_at(direction, position),
                        timeout: pause_limit,
                    });
                }
                from = position + 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The chain driven by native filters: no Wasm involved, so these pin the
    //! lifecycle's own rules (order, local replies, pauses, fail modes, finish).

    use std::sync::Mutex as StdMutex;

    use http::HeaderValue;

    use super::*;

    /// What the filters of a test did, in order.
    type Journal = Arc<StdMutex<Vec<String>>>;

    /// How a [`Native`] filter behaves in the request headers phase.
    #[derive(Clone, Copy)]
    enum Act {
        AddHeader,
        Reply,
        Pause,
        Fail,
    }

    struct Native {
        name: &'static str,
        act: Act,
        mode: FailMode,
        journal: Journal,
    }

    struct NativeRun {
        name: &'static str,
        act: Act,
        journal: Journal,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("native filter refused")]
    struct Refused;

    impl HttpError for Refused {
        fn status(&self) -> StatusCode {
            StatusCode::FORBIDDEN
        }
        fn code(&self) -> &'static str {
            "refused"
        }
        fn fault(&self) -> Fault {
            Fault::Downstream
        }
    }

    impl HttpFilter for Native {
        fn name(&self) -> &str {
            self.name
        }
        fn fail_mode(&self) -> FailMode {
            self.mode
        }
        fn start(&self, _: &mut Lent) -> Result<Box<dyn FilterRun>, FilterFailure> {
            Ok(Box::new(NativeRun {
                name: self.name,
                act: self.act,
                journal: self.journal.clone(),
            }))
        }
    }

    impl NativeRun {
        fn note(&self, what: &str) {
            let mut journal = self.journal.lock().unwrap_or_else(|e| e.into_inner());
            journal.push(format!("{}:{what}", self.name));
        }
    }

    impl FilterRun for NativeRun {
        fn on_request_headers(&mut self, data: &mut Lent, _: bool) -> Result<Flow, FilterFailure> {
            self.note("request_headers");
            let Some(data) = data.as_mut() else {
                return Ok(Flow::Continue);
            };
            match self.act {
                Act::AddHeader => {
                    let value = HeaderValue::from_static("yes");
                    data.request.headers.insert("x-native", value);
                    Ok(Flow::Continue)
                }
                Act::Reply => {
                    data.local_reply = Some(LocalReply {
                        status: 401,
                        headers: Vec::new(),
                        body: Bytes::from_static(b"denied"),
                        details: String::new(),
                    });
                    Ok(Flow::Continue)
                }
                Act::Pause => {
                    let resume = data.resume.clone();
                    let waker = resume.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        waker.wake();
                    });
                    Ok(Flow::Pause(resume))
                }
                Act::Fail => Err(Box::new(Refused)),
            }
        }

        fn on_response_headers(&mut self, _: &mut Lent, _: bool) -> Result<Flow, FilterFailure> {
            self.note("response_headers");
            Ok(Flow::Continue)
        }

        fn resume(&mut self, _: &mut Lent) -> Result<(), FilterFailure> {
            self.note("resume");
            Ok(())
        }

        fn finish(&mut self, _: &mut Lent) {
            self.note("finish");
        }
    }

    fn chain(filters: &[(&'static str, Act, FailMode)]) -> (Chain, Journal) {
        let journal = Journal::default();
        let filters = filters
            .iter()
            .map(|&(name, act, mode)| {
                Arc::new(Native {
                    name,
                    act,
                    mode,
                    journal: journal.clone(),
                }) as Arc<dyn HttpFilter>
            })
            .collect();
        (Chain::new(filters), journal)
    }

    fn info() -> Arc<StreamInfo> {
        StreamInfo::for_tests()
    }

    fn journal(journal: &Journal) -> Vec<String> {
        journal.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn shared(run: Run) -> SharedRun {
        Arc::new(Mutex::new(run))
    }

    const LIMIT: Duration = Duration::from_secs(5);

    /// Runs the response headers phase of an answer with no body; every filter lets it pass.
    async fn answer_without_a_body(run: &SharedRun) {
        lock(run).set_response(ResponseHead::default());
        assert!(matches!(
            headers(run, Direction::Response, true, LIMIT).await,
            Ok(None)
        ));
    }

    #[tokio::test]
    async fn native_filters_run_in_order_and_finish_once_when_the_run_ends() {
        let (chain, log) = chain(&[
            ("a", Act::AddHeader, FailMode::Closed),
            ("b", Act::AddHeader, FailMode::Closed),
        ]);
        let run = shared(chain.start(info(), RequestHead::default()).expect("start"));
        let reply = headers(&run, Direction::Request, true, LIMIT).await;
        assert!(matches!(reply, Ok(None)));
        let added = lock(&run)
            .data()
            .map(|d| d.request.headers["x-native"].clone());
        assert_eq!(added, Some(HeaderValue::from_static("yes")));
        answer_without_a_body(&run).await;
        drop(run);
        assert_eq!(
            journal(&log),
            [
                "a:request_headers",
                "b:request_headers",
                "b:response_headers",
                "a:response_headers",
                "a:finish",
                "b:finish"
            ]
        );
    }

    #[tokio::test]
    async fn the_answer_to_a_local_reply_goes_back_through_the_filters_the_request_reached() {
        let (chain, log) = chain(&[
            ("first", Act::AddHeader, FailMode::Closed),
            ("deny", Act::Reply, FailMode::Closed),
            ("never", Act::AddHeader, FailMode::Closed),
        ]);
        let run = shared(chain.start(info(), RequestHead::default()).expect("start"));
        let reply = headers(&run, Direction::Request, true, LIMIT).await;
        assert!(matches!(reply, Ok(Some(_))));
        answer_without_a_body(&run).await;
        drop(run);
        assert_eq!(
            journal(&log),
            [
                "first:request_headers",
                "deny:request_headers",
                "deny:response_headers",
                "first:response_headers",
                "first:finish",
                "deny:finish",
                "never:finish"
            ]
        );
    }

    #[tokio::test]
    async fn a_local_reply_stops_the_phase_before_later_filters() {
        let (chain, log) = chain(&[
            ("deny", Act::Reply, FailMode::Closed),
            ("after", Act::AddHeader, FailMode::Closed),
        ]);
        let run = shared(chain.start(info(), RequestHead::default()).expect("start"));
        let reply = headers(&run, Direction::Request, true, LIMIT)
            .await
            .expect("no error")
            .expect("a local reply");
        assert_eq!((reply.status, &reply.body[..]), (401, &b"denied"[..]));
        drop(run);
        assert_eq!(
            journal(&log),
            ["deny:request_headers", "deny:finish", "after:finish"]
        );
    }

    #[tokio::test]
    async fn a_pause_waits_for_its_wake_then_the_next_filter_runs() {
        let (chain, log) = chain(&[
            ("waits", Act::Pause, FailMode::Closed),
            ("after", Act::AddHeader, FailMode::Closed),
        ]);
        let run = shared(chain.start(info(), RequestHead::default()).expect("start"));
        let reply = headers(&run, Direction::Request, true, LIMIT).await;
        assert!(matches!(reply, Ok(None)));
        assert_eq!(
            journal(&log),
            [
                "waits:request_headers",
                "waits:resume",
                "after:request_headers"
            ]
        );
    }

    #[tokio::test]
    async fn a_pause_nobody_wakes_times_out_with_the_filters_name() {
        let (chain, _) = chain(&[("waits", Act::Pause, FailMode::Closed)]);
        let run = shared(chain.start(info(), RequestHead::default()).expect("start"));
        // The filter wakes after 20 ms; a 1 ms limit passes first.
        let error = headers(&run, Direction::Request, true, Duration::from_millis(1))
            .await
            .expect_err("timed out");
        assert_eq!(error.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(error.code(), "plugin_timeout");
        assert!(error.to_string().contains("`waits`"), "{error}");
    }

    #[tokio::test]
    async fn fail_closed_answers_with_the_filters_error_and_fail_open_skips_it() {
        let (closed, _) = chain(&[("strict", Act::Fail, FailMode::Closed)]);
        let run = shared(closed.start(info(), RequestHead::default()).expect("start"));
        let error = headers(&run, Direction::Request, true, LIMIT)
            .await
            .expect_err("fails closed");
        assert_eq!(
            (error.status(), error.code(), error.fault()),
            (StatusCode::FORBIDDEN, "refused", Fault::Downstream)
        );

        let (open, log) = chain(&[
            ("lenient", Act::Fail, FailMode::Open),
            ("after", Act::AddHeader, FailMode::Closed),
        ]);
        let run = shared(open.start(info(), RequestHead::default()).expect("start"));
        assert!(matches!(
            headers(&run, Direction::Request, true, LIMIT).await,
            Ok(None)
        ));
        drop(run);
        // The failed filter is not called again, not even to finish.
        assert_eq!(
            journal(&log),
            [
                "lenient:request_headers",
                "after:request_headers",
                "after:finish"
            ]
        );
    }
}
