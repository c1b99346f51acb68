//! Traces: W3C Trace Context (`traceparent`, `tracestate`) read from a
//! request and written on what it sends on, and the spans of a request
//! (the request itself, each filter callback, each callout, each upstream
//! attempt), handed to the [`otlp`](super::otlp) exporter once they end.
//!
//! Spans are plain values built here, not an SDK's: a request that is not
//! sampled builds none (its ids are still made, so the trace propagates),
//! and a gateway without tracing has no [`Tracer`] and pays one `Option`
//! check per place.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, oneshot};

/// The W3C `traceparent` header.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C `tracestate` header.
pub const TRACESTATE: &str = "tracestate";

/// A 16-byte trace id (never all zero).
pub type TraceId = [u8; 16];
/// An 8-byte span id (never all zero).
pub type SpanId = [u8; 8];

/// What a span stands for, as OTLP's `SpanKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Work inside the gateway (a filter callback).
    Internal = 1,
    /// The request the gateway serves.
    Server = 2,
    /// A request the gateway sends (upstream attempt, callout).
    Client = 3,
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
}

impl From<&str> for Value {
    fn from(value: &str) -> Self {
        Self::Str(value.to_owned())
    }
}

impl From<String> for Value {
    fn from(value: String) -> Self {
        Self::Str(value)
    }
}

impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Self::Int(value)
    }
}

/// A span that has ended, ready for export.
#[derive(Debug, Clone)]
pub struct SpanData {
    /// Its trace.
    pub trace_id: TraceId,
    /// Its own id.
    pub span_id: SpanId,
    /// Its parent's id (none for a trace's root).
    pub parent: Option<SpanId>,
    /// The `tracestate` it carries.
    pub trace_state: Option<Arc<str>>,
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// Start, in nanoseconds since the Unix epoch.
    pub start: u64,
    /// End, in nanoseconds since the Unix epoch.
    pub end: u64,
    /// Its attributes.
    pub attributes: Vec<(&'static str, Value)>,
    /// Its error status message, when it failed.
    pub error: Option<String>,
}

/// How the tracer samples and where its spans go.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The share of new traces recorded, 0.0 to 1.0 (a trace that arrives
    /// with a `traceparent` follows its sampled flag).
    pub sample: f64,
}

/// Starts traces and hands ended spans to the exporter, never waiting:
/// a span that finds the queue full is dropped and counted. Cheap to clone.
#[derive(Clone)]
pub struct Tracer(Arc<Shared>);

struct Shared {
    spans: mpsc::Sender<Export>,
    /// New traces sampled, by the low 8 bytes of their id.
    sample: super::Sample,
    dropped: Counter,
}

impl fmt::Debug for Tracer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracer")
            .field("sample", &self.0.sample)
            .finish_non_exhaustive()
    }
}

impl Tracer {
    /// A tracer handing spans to `spans`; `dropped` counts those the queue
    /// had no room for.
    pub fn new(settings: &Settings, spans: mpsc::Sender<Export>, dropped: Counter) -> Self {
        Self(Arc::new(Shared {
            spans,
            sample: super::Sample::new(settings.sample),
            dropped,
        }))
    }

    /// Starts the trace of a request with `headers`: continues the trace of
    /// a valid `traceparent` (following its sampled flag), or starts a new
    /// one (sampled by the configured share). An invalid `traceparent` is
    /// ignored, and the `tracestate` that came with it is removed, as the
    /// W3C spec asks.
    pub fn start(&self, headers: &mut HeaderMap) -> RequestTrace {
        let incoming = single(headers, TRACEPARENT).and_then(|v| parse(v.as_bytes()));
        let (trace_id, parent, sampled) = match incoming {
            Some(parent) => (parent.trace_id, Some(parent.span_id), parent.sampled),
            None => {
                headers.remove(TRACESTATE);
                let trace_id = new_trace_id();
                (trace_id, None, self.samples(&trace_id))
            }
        };
        let trace_state = tracestate(headers);
        RequestTrace {
            context: Context {
                tracer: self.clone(),
                trace_id,
                span_id: new_span_id(),
                sampled,
                trace_state,
            },
            parent,
            start: unix_nanos(SystemTime::now()),
            attributes: Vec::new(),
        }
    }

    fn samples(&self, trace_id: &TraceId) -> bool {
        self.0.sample.keeps(|| {
            let mut low = [0; 8];
            low.copy_from_slice(&trace_id[8..]);
            u64::from_be_bytes(low)
        })
    }

    /// Hands `span` to the exporter unless its queue is full.
    pub fn export(&self, span: SpanData) {
        if self.0.spans.try_send(Export::Span(span)).is_err() {
            self.0.dropped.inc();
        }
    }

    /// Has the exporter send every span handed to it so far, and waits
    /// for that, `within` at most (at shutdown, once no request is left).
    pub async fn flush(&self, within: Duration) {
        let (done, flushed) = oneshot::channel();
        let flush = async {
            if self.0.spans.send(Export::Flush(done)).await.is_ok() {
                let _ = flushed.await;
            }
        };
        if tokio::time::timeout(within, flush).await.is_err() {
            tracing::warn!(
                within_ms = within.as_millis(),
                "spans not exported in time at shutdown; the rest are dropped"
            );
        }
    }
}

/// What the exporter is handed.
#[derive(Debug)]
pub enum Export {
    /// An ended span.
    Span(SpanData),
    /// Send what waits now, then answer.
    Flush(oneshot::Sender<()>),
}

/// A span that children hang under, and what it propagates.
#[derive(Clone)]
pub struct Context {
    tracer: Tracer,
    /// Its trace.
    pub trace_id: TraceId,
    /// Its id.
    pub span_id: SpanId,
    /// Whether its trace is recorded.
    pub sampled: bool,
    /// The `tracestate` of its trace.
    pub trace_state: Option<Arc<str>>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.traceparent_text())
    }
}

impl Context {
    /// Starts a child span called `name`, now.
    pub fn child(&self, name: impl FnOnce() -> String, kind: Kind) -> Span {
        let context = Context {
            span_id: new_span_id(),
            ..self.clone()
        };
        let record = self.sampled.then(|| {
            Box::new(SpanData {
                trace_id: self.trace_id,
                span_id: context.span_id,
                parent: Some(self.span_id),
                trace_state: self.trace_state.clone(),
                name: name(),
                kind,
                start: unix_nanos(SystemTime::now()),
                end: 0,
                attributes: Vec::new(),
                error: None,
            })
        });
        Span { context, record }
    }

    /// The `traceparent` that makes this span the parent of the receiver's.
    pub fn traceparent(&self) -> HeaderValue {
        // Lower-case hex and dashes only: always a valid header value.
        HeaderValue::from_str(&self.traceparent_text())
            .unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    fn traceparent_text(&self) -> String {
        format!(
            "00-{}-{}-{}",
            Hex(&self.trace_id),
            Hex(&self.span_id),
            if self.sampled { "01" } else { "00" }
        )
    }

    /// The trace id as 32 lower-case hex digits.
    pub fn trace_id_hex(&self) -> String {
        Hex(&self.trace_id).to_string()
    }

    /// Sets `traceparent` on `headers` (replacing any) and the trace's
    /// `tracestate` when it has one and `headers` carry none.
    pub fn inject(&self, headers: &mut HeaderMap) {
        headers.insert(TRACEPARENT, self.traceparent());
        if let Some(state) = &self.trace_state
            && !headers.contains_key(TRACESTATE)
            && let Ok(value) = HeaderValue::from_str(state)
        {
            headers.insert(TRACESTATE, value);
        }
    }
}

/// A span under way: attributes are kept only when its trace is sampled,
/// and it is exported when it [`end`](Span::end)s.
#[must_use = "a span is exported when it ends"]
pub struct Span {
    context: Context,
    record: Option<Box<SpanData>>,
}

impl Span {
    /// The span as a parent of others.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// Whether the span is recorded (its trace is sampled).
    pub fn is_recording(&self) -> bool {
        self.record.is_some()
    }

    /// Sets attribute `key`, made only when the span is recorded.
    pub fn set<V: Into<Value>>(&mut self, key: &'static str, value: impl FnOnce() -> V) {
        if let Some(record) = &mut self.record {
            record.attributes.push((key, value().into()));
        }
    }

    /// Marks the span failed: `error.type` is `kind`, the status message `message`.
    pub fn fail(&mut self, kind: &str, message: impl FnOnce() -> String) {
        if let Some(record) = &mut self.record {
            record.attributes.push(("error.type", kind.into()));
            record.error = Some(message());
        }
    }

    /// Ends the span now and hands it to the exporter.
    pub fn end(self) {
        if let Some(mut record) = self.record {
            record.end = unix_nanos(SystemTime::now());
            self.context.tracer.export(*record);
        }
    }
}

/// The trace of one request: its own (server) span, and what it continues.
#[derive(Debug)]
pub struct RequestTrace {
    /// The request's span.
    pub context: Context,
    /// The span of the caller's `traceparent`, when it sent a valid one.
    pub parent: Option<SpanId>,
    /// When the request arrived, in nanoseconds since the Unix epoch.
    pub start: u64,
    /// Attributes known on arrival (scheme, server address, protocol).
    pub attributes: Vec<(&'static str, Value)>,
}

impl RequestTrace {
    /// Ends the request's span now with `attributes`, failed with `error`
    /// (`error.type`, status message) when it is given.
    pub fn end(
        &self,
        name: String,
        more: impl IntoIterator<Item = (&'static str, Value)>,
        error: Option<(String, String)>,
    ) {
        if !self.context.sampled {
            return;
        }
        let mut attributes = self.attributes.clone();
        attributes.extend(more);
        let error = error.map(|(kind, message)| {
            attributes.push(("error.type", Value::Str(kind)));
            message
        });
        self.context.tracer.export(SpanData {
            trace_id: self.context.trace_id,
            span_id: self.context.span_id,
            parent: self.parent,
            trace_state: self.context.trace_state.clone(),
            name,
            kind: Kind::Server,
            start: self.start,
            end: unix_nanos(SystemTime::now()),
            attributes,
            error,
        });
    }
}

/// A valid `traceparent`'s fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    /// The trace.
    pub trace_id: TraceId,
    /// The caller's span.
    pub span_id: SpanId,
    /// The caller's sampled flag.
    pub sampled: bool,
}

/// Parses a `traceparent` value by the W3C Trace Context rules: version
/// `00` is exactly `00-<32 hex>-<16 hex>-<2 hex>`; a later version may
/// append `-…` fields, which are ignored; `ff` is invalid; hex is lower
/// case; neither id may be all zeros.
pub fn parse(value: &[u8]) -> Option<Parent> {
    if value.len() < 55 {
        return None;
    }
    let version = hex_byte(&value[0..2])?;
    match version {
        0xff => return None,
        0 if value.len() != 55 => return None,
        _ if value.len() > 55 && value[55] != b'-' => return None,
        _ => {}
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let mut trace_id = [0; 16];
    for (i, byte) in trace_id.iter_mut().enumerate() {
        *byte = hex_byte(&value[3 + 2 * i..5 + 2 * i])?;
    }
    let mut span_id = [0; 8];
    for (i, byte) in span_id.iter_mut().enumerate() {
        *byte = hex_byte(&value[36 + 2 * i..38 + 2 * i])?;
    }
    let flags = hex_byte(&value[53..55])?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(Parent {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
    })
}

/// Two lower-case hex digits.
fn hex_byte(digits: &[u8]) -> Option<u8> {
    let digit = |d: u8| match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        _ => None,
    };
    Some(digit(digits[0])? << 4 | digit(digits[1])?)
}

/// The one value of header `name`; none when absent or repeated.
fn single<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a HeaderValue> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    values.next().is_none().then_some(first)
}

/// The `tracestate` values, joined as one list (as the spec allows).
fn tracestate(headers: &HeaderMap) -> Option<Arc<str>> {
    let mut joined = String::new();
    for value in headers.get_all(TRACESTATE) {
        let text = value.to_str().ok()?.trim();
        if text.is_empty() {
            continue;
        }
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(text);
    }
    (!joined.is_empty()).then(|| joined.into())
}

fn new_trace_id() -> TraceId {
    loop {
        let id = fastrand::u128(..).to_be_bytes();
        if id != [0; 16] {
            return id;
        }
    }
}

fn new_span_id() -> SpanId {
    fastrand::u64(1..).to_be_bytes()
}

/// Nanoseconds since the Unix epoch.
pub fn unix_nanos(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Bytes as lower-case hex.
struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// The filter callback running on this thread, set while it runs so what
/// it starts (a callout) and logs can name it.
#[derive(Clone, Debug)]
pub struct Current {
    /// The callback's span.
    pub context: Context,
    /// The filter's name.
    pub plugin: Arc<str>,
}

thread_local! {
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
}

/// Makes `current` this thread's [`Current`] until the guard drops.
pub fn enter(current: Current) -> Entered {
    let previous = CURRENT.with(|c| c.replace(Some(current)));
    Entered(previous)
}

/// The filter callback running on this thread, if it is traced.
pub fn current() -> Option<Current> {
    CURRENT.with(|c| c.borrow().clone())
}

/// The trace id of the filter callback running on this thread, if traced.
pub fn current_trace_id() -> Option<String> {
    CURRENT.with(|c| c.borrow().as_ref().map(|c| c.context.trace_id_hex()))
}

/// Restores the previous [`Current`] when dropped.
pub struct Entered(Option<Current>);

impl Drop for Entered {
    fn drop(&mut self) {
        let previous = self.0.take();
        CURRENT.with(|c| c.replace(previous));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn parses_a_valid_traceparent() {
        let parent = parse(VALID.as_bytes()).expect("valid");
        assert_eq!(
            Hex(&parent.trace_id).to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(Hex(&parent.span_id).to_string(), "b7ad6b7169203331");
        assert!(parent.sampled);
        let unsampled = VALID.replace("-01", "-00");
        assert!(!parse(unsampled.as_bytes()).expect("valid").sampled);
    }

    #[test]
    fn refuses_invalid_traceparents() {
        let invalid = [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "0x-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0g",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x",
        ];
        for value in invalid {
            assert_eq!(parse(value.as_bytes()), None, "{value}");
        }
    }

    #[test]
    fn a_later_version_may_append_fields() {
        let later = "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-the-future-holds";
        assert!(parse(later.as_bytes()).is_some());
    }

    #[test]
    fn continues_a_valid_trace_and_replaces_an_invalid_one() {
        let (sender, _receiver) = mpsc::channel(4);
        let tracer = Tracer::new(&Settings { sample: 0.0 }, sender, Counter::default());
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static(VALID));
        headers.insert(TRACESTATE, HeaderValue::from_static("vendor=1"));
        let trace = tracer.start(&mut headers);
        assert_eq!(
            trace.context.trace_id_hex(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(
            trace.parent.map(|p| Hex(&p).to_string()).as_deref(),
            Some("b7ad6b7169203331")
        );
        assert!(
            trace.context.sampled,
            "the caller's sampled flag wins over the share"
        );
        assert_eq!(trace.context.trace_state.as_deref(), Some("vendor=1"));

        headers.insert(TRACEPARENT, HeaderValue::from_static("00-garbage"));
        let trace = tracer.start(&mut headers);
        assert_ne!(
            trace.context.trace_id_hex(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(trace.parent, None);
        assert!(!trace.context.sampled, "a share of 0 samples no new trace");
        assert!(
            headers.get(TRACESTATE).is_none(),
            "tracestate goes with an invalid parent"
        );
    }

    #[test]
    fn a_child_propagates_its_own_id() {
        let (sender, mut receiver) = mpsc::channel(4);
        let tracer = Tracer::new(&Settings { sample: 1.0 }, sender, Counter::default());
        let trace = tracer.start(&mut HeaderMap::new());
        let mut span = trace.context.child(|| "GET".into(), Kind::Client);
        span.set("http.response.status_code", || 200);
        let sent = span.context().traceparent();
        let expected = format!(
            "00-{}-{}-01",
            trace.context.trace_id_hex(),
            Hex(&span.context().span_id)
        );
        assert_eq!(sent.to_str().ok(), Some(expected.as_str()));
        span.end();
        let Ok(Export::Span(data)) = receiver.try_recv() else {
            panic!("no span exported");
        };
        assert_eq!(data.parent, Some(trace.context.span_id));
        assert_eq!(
            data.attributes,
            vec![("http.response.status_code", Value::Int(200))]
        );
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (sender, _receiver) = mpsc::channel(1);
        let dropped = Counter::default();
        let tracer = Tracer::new(&Settings { sample: 1.0 }, sender, dropped.clone());
        let trace = tracer.start(&mut HeaderMap::new());
        trace.context.child(|| "a".into(), Kind::Internal).end();
        trace.context.child(|| "b".into(), Kind::Internal).end();
        assert_eq!(dropped.get(), 1);
    }
}
