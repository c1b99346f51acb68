//! `weir plugin test`: one request through one Proxy-Wasm filter, in the
//! gateway's own runtime (the same engine, host functions, VM start-up and
//! `ProxyWasmFilter`), with no listener and no upstream: the upstream's
//! answer comes from a file. Each phase is reported with the flow the filter
//! returned, what it changed, its log lines and the host calls it made.
//!
//! The phases run in the lifecycle's order and by its rules (a pause waits
//! for the filter's wake-up, bounded; a local reply skips the upstream and
//! still goes through the response phases; a failed filter is not called
//! again). The plugin is loaded with `Runtime::load_traced`, the only
//! difference from the gateway's.

mod message;
mod render;

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::config::model::{LbPolicy, Metadata, Target, Upstream, UpstreamTimeouts};
use crate::config::{DEFAULT_CALLBACK_DEADLINE, DEFAULT_PLUGIN_MEMORY};
use crate::exchange::{
    LocalReply, Phase, RequestHead, ResponseHead, Resume, StreamData, StreamInfo,
};
use crate::filters::ProxyWasmFilter;
use crate::lifecycle::{FailMode, FilterRun, Flow, HttpFilter, Lent};
use crate::services::quota::Quotas;
use crate::services::{RedisServices, Services};
use crate::upstream::{Directory, UpstreamCaller};
use crate::wasm::{
    Event, FilterInstance, FilterSettings, LoadError, MapType, PluginLimits, Runtime, Trace,
};

pub use message::{MessageError, RequestMessage, ResponseMessage, parse_request, parse_response};
pub use render::render;

/// What to test.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The plugin's name, as logs and errors show it.
    pub name: String,
    /// The module.
    pub wasm: Vec<u8>,
    /// The filter's configuration, as the guest reads it in `proxy_on_configure`.
    pub configuration: Bytes,
    /// The root id (`plugin_root_id`).
    pub root_id: String,
    /// Upstream groups callouts may reach: name and `host:port`.
    pub upstreams: Vec<(String, String)>,
    /// How long a paused phase may wait for the filter to resume it.
    pub pause_limit: Duration,
    /// Where compiled code is cached (none: compile every time).
    pub cache_dir: Option<PathBuf>,
}

/// Why a test could not run at all (bad input, not a filter failure).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The Wasm runtime could not start, or the module is not a plugin Weir can load.
    #[error("cannot load the plugin: {0}")]
    Load(#[from] LoadError),
    /// An `--upstream` is not a usable `host:port`.
    #[error("upstream `{name}`: `{address}` is not a host:port ({reason})")]
    Upstream {
        /// The group's name.
        name: String,
        /// What was given.
        address: String,
        /// Why it is refused.
        reason: String,
    },
}

/// A phase of the test, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// VM start-up (`on_vm_start`, `on_configure`) and the HTTP context's creation.
    Start,
    /// `on_request_headers`.
    RequestHeaders,
    /// `on_request_body`.
    RequestBody,
    /// `on_response_headers`.
    ResponseHeaders,
    /// `on_response_body`.
    ResponseBody,
    /// `on_log`, `on_done`, `on_delete`.
    Finish,
}

impl Stage {
    /// How the report names it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::RequestHeaders => "request headers",
            Self::RequestBody => "request body",
            Self::ResponseHeaders => "response headers",
            Self::ResponseBody => "response body",
            Self::Finish => "finish",
        }
    }
}

/// What a phase's callback told the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowReport {
    /// Go on.
    Continue,
    /// Paused, then woken by the filter (`woken`) or not within the limit.
    Pause {
        /// Whether the filter resumed the stream in time.
        woken: bool,
    },
    /// Body phases: hold the body (at the end of the body it goes on whole).
    Buffer,
    /// The filter answered locally.
    LocalReply,
    /// The filter closed the stream.
    Closed,
    /// The filter failed (trap, deadline, a lost VM).
    Failed(String),
}

/// Headers as `(name, value)` text, pseudo-headers first.
pub type HeaderList = Vec<(String, String)>;

/// One phase as it ran (or why it did not).
#[derive(Debug, Clone)]
pub struct PhaseReport {
    /// Which phase.
    pub stage: Stage,
    /// Why it did not run, when it did not.
    pub skipped: Option<&'static str>,
    /// What the callback returned (none for start and finish that went well).
    pub flow: Option<FlowReport>,
    /// Headers phases: the headers before and after the callback.
    pub headers: Option<(HeaderList, HeaderList)>,
    /// Body phases: the body before and after the callback.
    pub body: Option<(Bytes, Bytes)>,
    /// The local reply the filter asked for.
    pub local_reply: Option<LocalReply>,
    /// Log lines, host calls and failures, in order.
    pub events: Vec<Event>,
}

impl PhaseReport {
    fn new(stage: Stage) -> Self {
        Self {
            stage,
            skipped: None,
            flow: None,
            headers: None,
            body: None,
            local_reply: None,
            events: Vec::new(),
        }
    }

    fn skipped(stage: Stage, why: &'static str) -> Self {
        Self {
            skipped: Some(why),
            ..Self::new(stage)
        }
    }
}

/// How the exchange ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The request went upstream; the client got `status`.
    Forwarded {
        /// The status the client got (after the response phases).
        status: u16,
    },
    /// The filter answered with `status` in `stage`.
    Answered {
        /// The local reply's status.
        status: u16,
        /// Where it answered.
        stage: Stage,
    },
    /// The filter failed, closed the stream, or did not resume it in time.
    Failed {
        /// Where.
        stage: Stage,
        /// What happened.
        reason: String,
    },
}

/// Everything `weir plugin test` prints.
#[derive(Debug, Clone)]
pub struct Report {
    /// The phases, in order.
    pub phases: Vec<PhaseReport>,
    /// How it ended.
    pub outcome: Outcome,
}

impl Report {
    /// Whether the filter failed (the command's exit code 1).
    pub fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::Failed { .. })
    }

    /// The one-line summary, e.g. `answered 403 locally in request headers`.
    pub fn summary(&self) -> String {
        match &self.outcome {
            Outcome::Forwarded { status } => format!("forwarded; response {status}"),
            Outcome::Answered { status, stage } => {
                format!("answered {status} locally in {}", stage.label())
            }
            Outcome::Failed { stage, reason } => format!("failed in {}: {reason}", stage.label()),
        }
    }
}

/// Runs `request` through the filter `setup` describes; the upstream (if the
/// filter lets the request through) answers `response`. Must run inside a
/// tokio runtime: callouts and their answers run on it.
pub async fn run(
    setup: &Setup,
    request: RequestMessage,
    response: ResponseMessage,
) -> Result<Report, SetupError> {
    let runtime = Runtime::shared(setup.cache_dir.clone())?;
    let trace = Arc::new(Trace::default());
    let limits = PluginLimits {
        memory_bytes: usize::try_from(DEFAULT_PLUGIN_MEMORY).unwrap_or(usize::MAX),
        callback_deadline: DEFAULT_CALLBACK_DEADLINE,
        quotas: Quotas::default(),
    };
    let plugin = runtime.load_traced(&setup.name, &setup.wasm, limits, trace.clone())?;
    let services = services(&setup.upstreams)?;
    let mut test = Test {
        trace,
        pause_limit: setup.pause_limit,
        phases: Vec::new(),
    };
    let settings = FilterSettings {
        root_id: setup.root_id.as_str().into(),
        configuration: setup.configuration.clone(),
    };
    let mut start = PhaseReport::new(Stage::Start);
    let started = FilterInstance::new(plugin, settings, 1, services)
        .map_err(|e| e.to_string())
        .and_then(|instance| {
            let filter = ProxyWasmFilter::new(instance, FailMode::Closed);
            let mut head = request_head(&request);
            // As the gateway does before any filter runs: keep the client's
            // `x-request-id`, or give the request one.
            let id = crate::request_id::ensure(&mut head.headers);
            let info = stream_info(crate::request_id::text(&id));
            let mut data: Lent = Some(Box::new(StreamData::new(info, head)));
            let run = filter.start(&mut data).map_err(|e| e.to_string())?;
            Ok((filter, run, data))
        });
    start.events = test.trace.take();
    let (_filter, mut run, mut data) = match started {
        Ok(started) => started,
        Err(reason) => {
            start.flow = Some(FlowReport::Failed(reason.clone()));
            test.phases.push(start);
            test.skip_rest("the filter did not start");
            test.skip(Stage::Finish, "the filter did not start");
            return Ok(test.end(Outcome::Failed {
                stage: Stage::Start,
                reason,
            }));
        }
    };
    test.phases.push(start);
    let outcome = test.exchange(&mut *run, &mut data, request, response).await;
    if matches!(outcome, Outcome::Failed { .. }) {
        test.skip_rest("the exchange ended in an earlier phase");
        // As in the chain: a failed filter is dropped without `finish`.
        test.phases.push(PhaseReport::skipped(
            Stage::Finish,
            "the filter failed and is not called again",
        ));
    } else {
        let mut finish = PhaseReport::new(Stage::Finish);
        if let Some(data) = data.as_mut() {
            data.phase = Phase::Log;
            data.request_sent = true;
            data.response_sent = true;
        }
        run.finish(&mut data);
        finish.events = test.trace.take();
        test.phases.push(finish);
    }
    Ok(test.end(outcome))
}

/// A test in progress.
struct Test {
    trace: Arc<Trace>,
    pause_limit: Duration,
    phases: Vec<PhaseReport>,
}

/// Which way a headers or body phase goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Request,
    Response,
}

/// What a phase left for the next.
enum Next {
    /// Go on.
    Continue,
    /// The filter answered.
    Reply(LocalReply),
    /// The exchange is over.
    Stop(Outcome),
}

impl Test {
    fn end(self, outcome: Outcome) -> Report {
        Report {
            phases: self.phases,
            outcome,
        }
    }

    /// The request phases, the upstream (or the local reply), the response phases.
    async fn exchange(
        &mut self,
        run: &mut dyn FilterRun,
        data: &mut Lent,
        request: RequestMessage,
        response: ResponseMessage,
    ) -> Outcome {
        let mut reply = None;
        match self
            .headers(run, data, Direction::Request, request.body.is_empty())
            .await
        {
            Next::Continue => {}
            Next::Reply(r) => reply = Some((r, Stage::RequestHeaders)),
            Next::Stop(outcome) => return outcome,
        }
        if reply.is_some() {
            self.skip(Stage::RequestBody, "the filter answered locally");
        } else if request.body.is_empty() {
            self.skip(Stage::RequestBody, "the request has no body");
        } else {
            match self.body(run, data, Direction::Request, request.body) {
                Next::Continue => {}
                Next::Reply(r) => reply = Some((r, Stage::RequestBody)),
                Next::Stop(outcome) => return outcome,
            }
        }
        let answered = reply.as_ref().map(|(r, stage)| (r.status, *stage));
        let (head, body) = match reply {
            Some((reply, _)) => {
                // The headers the gateway sends a local reply with.
                let head = ResponseHead {
                    status: reply.status,
                    headers: reply.response_headers(),
                    details: Cow::Owned(reply.details),
                };
                (head, reply.body)
            }
            None => {
                let head = ResponseHead {
                    status: response.status,
                    headers: response.headers,
                    details: Cow::Borrowed("via_upstream"),
                };
                (head, response.body)
            }
        };
        let Some(lent) = data.as_mut() else {
            return lost(Stage::ResponseHeaders);
        };
        lent.request_sent = true;
        lent.response = Some(head);
        let mut answered = answered;
        match self
            .headers(run, data, Direction::Response, body.is_empty())
            .await
        {
            Next::Continue => {}
            Next::Reply(r) => {
                answered = Some((r.status, Stage::ResponseHeaders));
                self.skip(Stage::ResponseBody, "the filter answered locally");
                return answered_or_forwarded(answered, data);
            }
            Next::Stop(outcome) => return outcome,
        }
        if body.is_empty() {
            self.skip(Stage::ResponseBody, "the response has no body");
        } else {
            match self.body(run, data, Direction::Response, body) {
                Next::Continue => {}
                Next::Reply(r) => answered = Some((r.status, Stage::ResponseBody)),
                Next::Stop(outcome) => return outcome,
            }
        }
        answered_or_forwarded(answered, data)
    }

    /// Reports the request and response phases after the last one that
    /// ran as not run, for `why`.
    fn skip_rest(&mut self, why: &'static str) {
        const EXCHANGE: [Stage; 4] = [
            Stage::RequestHeaders,
            Stage::RequestBody,
            Stage::ResponseHeaders,
            Stage::ResponseBody,
        ];
        let last = self.phases.last().map(|p| p.stage);
        let from = EXCHANGE
            .iter()
            .position(|&s| Some(s) == last)
            .map_or(0, |at| at + 1);
        for &stage in &EXCHANGE[from..] {
            self.skip(stage, why);
        }
    }

    fn skip(&mut self, stage: Stage, why: &'static str) {
        self.phases.push(PhaseReport::skipped(stage, why));
    }

    /// A headers phase, waiting out a pause as the lifecycle does.
    async fn headers(
        &mut self,
        run: &mut dyn FilterRun,
        data: &mut Lent,
        direction: Direction,
        end_of_stream: bool,
    ) -> Next {
        let stage = match direction {
            Direction::Request => Stage::RequestHeaders,
            Direction::Response => Stage::ResponseHeaders,
        };
        let mut report = PhaseReport::new(stage);
        let before = header_list(data, direction);
        if let Some(lent) = data.as_mut() {
            Resume::renew(&mut lent.resume);
            lent.phase = match direction {
                Direction::Request => Phase::RequestHeaders,
                Direction::Response => Phase::ResponseHeaders,
            };
        }
        let flow = match direction {
            Direction::Request => run.on_request_headers(data, end_of_stream),
            Direction::Response => run.on_response_headers(data, end_of_stream),
        };
        let flow = match flow {
            Ok(Flow::Pause(resume)) => {
                let woken = tokio::time::timeout(self.pause_limit, resume.wait())
                    .await
                    .is_ok();
                match run.resume(data) {
                    Ok(()) => Ok(FlowReport::Pause { woken }),
                    Err(failure) => Err(failure.to_string()),
                }
            }
            Ok(Flow::Continue) => Ok(FlowReport::Continue),
            Ok(Flow::Buffer) => Ok(FlowReport::Buffer),
            Err(failure) => Err(failure.to_string()),
        };
        report.headers = Some((before, header_list(data, direction)));
        self.conclude(report, data, flow)
    }

    /// A body phase: the whole body as one chunk, at the end of the stream.
    fn body(
        &mut self,
        run: &mut dyn FilterRun,
        data: &mut Lent,
        direction: Direction,
        body: Bytes,
    ) -> Next {
        let stage = match direction {
            Direction::Request => Stage::RequestBody,
            Direction::Response => Stage::ResponseBody,
        };
        let mut report = PhaseReport::new(stage);
        if let Some(lent) = data.as_mut() {
            lent.phase = match direction {
                Direction::Request => Phase::RequestBody,
                Direction::Response => Phase::ResponseBody,
            };
            lent.body = BytesMut::from(body.clone());
        }
        let flow = match direction {
            Direction::Request => run.on_request_body(data, true),
            Direction::Response => run.on_response_body(data, true),
        };
        let after = data
            .as_mut()
            .map(|lent| std::mem::take(&mut lent.body).freeze())
            .unwrap_or_default();
        report.body = Some((body, after));
        let flow = match flow {
            Ok(Flow::Continue) => Ok(FlowReport::Continue),
            Ok(Flow::Buffer | Flow::Pause(_)) => Ok(FlowReport::Buffer),
            Err(failure) => Err(failure.to_string()),
        };
        self.conclude(report, data, flow)
    }

    /// Reads what the phase left (a failure, a local reply, a closed
    /// stream, a pause not resumed) and files its report.
    fn conclude(
        &mut self,
        mut report: PhaseReport,
        data: &mut Lent,
        flow: Result<FlowReport, String>,
    ) -> Next {
        let stage = report.stage;
        let next = match flow {
            Err(reason) => {
                report.flow = Some(FlowReport::Failed(reason.clone()));
                Next::Stop(Outcome::Failed { stage, reason })
            }
            Ok(flow) => {
                let reply = data.as_mut().and_then(|lent| lent.local_reply.take());
                let closed = data.as_ref().is_some_and(|lent| lent.closed);
                let timed_out = flow == FlowReport::Pause { woken: false };
                report.flow = Some(match &reply {
                    Some(_) => FlowReport::LocalReply,
                    None if closed => FlowReport::Closed,
                    None => flow,
                });
                match reply {
                    Some(reply) => {
                        report.local_reply = Some(reply.clone());
                        Next::Reply(reply)
                    }
                    None if closed => Next::Stop(Outcome::Failed {
                        stage,
                        reason: "the filter closed the stream".into(),
                    }),
                    None if data.is_none() => Next::Stop(lost(stage)),
                    None if timed_out => Next::Stop(Outcome::Failed {
                        stage,
                        reason: format!(
                            "the filter paused the stream and did not resume it within {}",
                            humanize(self.pause_limit)
                        ),
                    }),
                    None => Next::Continue,
                }
            }
        };
        report.events = self.trace.take();
        self.phases.push(report);
        next
    }
}

/// The outcome once the response phases are done.
fn answered_or_forwarded(answered: Option<(u16, Stage)>, data: &Lent) -> Outcome {
    match answered {
        Some((status, stage)) => Outcome::Answered { status, stage },
        None => Outcome::Forwarded {
            status: data
                .as_ref()
                .and_then(|d| d.response.as_ref())
                .map_or(0, |r| r.status),
        },
    }
}

fn lost(stage: Stage) -> Outcome {
    Outcome::Failed {
        stage,
        reason: "the filter lost the stream's data".into(),
    }
}

/// `10s`, `1500ms`.
fn humanize(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

/// The headers of `direction` as the filter sees them, pseudo-headers first.
fn header_list(data: &Lent, direction: Direction) -> HeaderList {
    let map = match direction {
        Direction::Request => MapType::RequestHeaders,
        Direction::Response => MapType::ResponseHeaders,
    };
    data.as_ref()
        .and_then(|d| d.pairs(map))
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(&k).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            )
        })
        .collect()
}

/// The request as the filter's first phase sees it.
fn request_head(request: &RequestMessage) -> RequestHead {
    RequestHead {
        method: request.method.clone(),
        path: request.path.clone(),
        authority: request.authority.clone(),
        scheme: request.scheme.clone(),
        headers: request.headers.clone(),
    }
}

/// What properties read about the test's stream.
fn stream_info(request_id: &str) -> Arc<StreamInfo> {
    Arc::new(StreamInfo {
        route_name: "plugin-test".into(),
        upstream_name: None,
        upstream_hosts: Arc::from([]),
        request_id: request_id.to_owned(),
        source: ([127, 0, 0, 1], 0).into(),
        destination: None,
        tls: false,
        sni: None,
        protocol: "HTTP/1.1",
        start_unix_nanos: crate::exchange::unix_nanos(),
        route_metadata: Metadata::default(),
        cluster_metadata: None,
    })
}

/// Services whose callouts reach the `--upstream` groups; no Redis.
fn services(upstreams: &[(String, String)]) -> Result<Arc<Services>, SetupError> {
    let configs: Vec<Upstream> = upstreams
        .iter()
        .map(|(name, address)| Upstream {
            name: name.clone(),
            targets: vec![Target {
                address: address.clone(),
                weight: 1,
            }],
            lb: LbPolicy::RoundRobin,
            timeouts: UpstreamTimeouts::default(),
            retries: 0,
            metadata: Metadata::default(),
            tls: None,
            health: Default::default(),
            slow_start: None,
            circuit_breaker: Default::default(),
            protocol: Default::default(),
            discovery: None,
        })
        .collect();
    let groups = crate::upstream::build_groups(&configs, &Default::default()).map_err(|e| {
        let address = upstreams
            .iter()
            .find(|(name, _)| *name == e.upstream)
            .map(|(_, address)| address.clone())
            .unwrap_or_default();
        SetupError::Upstream {
            name: e.upstream,
            address,
            reason: e.source.to_string(),
        }
    })?;
    let directory = Arc::new(Directory::new());
    directory.publish(Arc::new(groups));
    let caller = Arc::new(UpstreamCaller::new(directory));
    Ok(Services::new(
        caller.clone(),
        caller,
        RedisServices::default(),
    ))
}
