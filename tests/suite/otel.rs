//! Traces, read by an OTLP/HTTP collector started by the test: the span
//! tree of a request (request, filter callbacks, a filter's callout, the
//! upstream attempt), the `traceparent` the upstream and the callout target
//! receive, trace context continued or replaced, the access log's trace id,
//! plugin log lines naming the trace, and nothing added when tracing is off.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind, status::StatusCode};
use prost::Message;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use weir_tests::{
    EchoUpstream, TestGateway, capture_logs_of, captured_logs, eventually, http1_client, json,
    serve, test_filter_wasm,
};

/// How long spans may take to reach the collector (a batch waits 50ms).
const SPANS_ARRIVE: Duration = Duration::from_secs(10);

/// An OTLP/HTTP collector on a free port keeping every span it is sent.
struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Span>>>,
    service_names: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let spans = Arc::new(Mutex::new(Vec::new()));
        let service_names = Arc::new(Mutex::new(Vec::new()));
        let (kept, names) = (spans.clone(), service_names.clone());
        let task = serve(listener, move |request: Request<hyper::body::Incoming>| {
            let (kept, names) = (kept.clone(), names.clone());
            async move {
                let path_ok = request.uri().path() == "/v1/traces"
                    && request.headers()["content-type"] == "application/x-protobuf";
                let body = request.into_body().collect().await.map(|b| b.to_bytes());
                let decoded = body
                    .ok()
                    .and_then(|b| ExportTraceServiceRequest::decode(b).ok());
                let Some(export) = decoded.filter(|_| path_ok) else {
                    return status(400);
                };
                for resource in export.resource_spans {
                    let name = (resource.resource.iter())
                        .flat_map(|r| r.attributes.iter())
                        .find(|kv| kv.key == "service.name")
                        .map(|kv| text(kv.value.as_ref()));
                    if let (Some(name), Ok(mut names)) = (name, names.lock()) {
                        names.push(name);
                    }
                    for scope in resource.scope_spans {
                        if let Ok(mut kept) = kept.lock() {
                            kept.extend(scope.spans);
                        }
                    }
                }
                status(200)
            }
        });
        Ok(Self {
            addr,
            spans,
            service_names,
            task,
        })
    }

    fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    /// The spans of trace `trace_id` (hex) received so far.
    fn trace(&self, trace_id: &str) -> Vec<Span> {
        let spans = self.spans.lock().map(|s| s.clone()).unwrap_or_default();
        spans
            .into_iter()
            .filter(|s| hex(&s.trace_id) == trace_id)
            .collect()
    }

    /// The spans of `trace_id` once its request (server) span has arrived.
    async fn finished_trace(&self, trace_id: &str) -> Vec<Span> {
        let arrived = eventually(SPANS_ARRIVE, async || {
            self.trace(trace_id)
                .iter()
                .any(|s| s.kind == SpanKind::Server as i32)
        })
        .await;
        assert!(arrived, "no request span of trace {trace_id} arrived");
        self.trace(trace_id)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn status(code: u16) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = http::StatusCode::from_u16(code).unwrap_or_default();
    response
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        other => format!("{other:?}"),
    }
}

/// The attribute `key` of `span`, as text.
fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| text(kv.value.as_ref()))
}

/// The one span of `spans` called `name`.
fn named<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| s.name == name).collect();
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(found.len(), 1, "one span `{name}` among {names:?}");
    found[0]
}

/// A `traceparent`'s trace id, parent id and flags.
fn fields(traceparent: &str) -> (String, String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "a version-00 traceparent: {traceparent}");
    assert_eq!(parts[0], "00");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

/// The headers the echo upstream saw, by name (first value).
fn echoed(echo: &Value, name: &str) -> Option<String> {
    echo["headers"][name][0].as_str().map(str::to_owned)
}

/// A callout target answering 200 `user-7`, keeping the `traceparent` of
/// each request it gets.
async fn callout_target() -> anyhow::Result<(SocketAddr, Arc<Mutex<Vec<String>>>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = seen.clone();
    // Detached: it ends with the test's runtime.
    drop(serve(
        listener,
        move |request: Request<hyper::body::Incoming>| {
            let kept = kept.clone();
            async move {
                let parent = (request.headers().get("traceparent"))
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("none")
                    .to_owned();
                if let Ok(mut kept) = kept.lock() {
                    kept.push(parent);
                }
                Response::new(Full::new(Bytes::from_static(b"user-7")))
            }
        },
    ));
    Ok((addr, seen))
}

/// A gateway whose one route, `all`, goes to `app`, with the top-level
/// sections `extra`.
async fn in_front_of(app: &EchoUpstream, extra: &str) -> anyhow::Result<TestGateway> {
    TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: app, targets: ["{}"] }}]
routes: [{{ name: all, upstream: app }}]
{extra}"#,
        app.addr
    ))
    .await
}

fn tracing_section(collector: &Collector, sample_percent: u32) -> String {
    format!(
        "tracing:\n  service_name: edge\n  sample_percent: {sample_percent}\n  otlp: {{ endpoint: \"{}\", flush_interval: 50ms }}\n",
        collector.endpoint()
    )
}

#[tokio::test]
async fn a_request_its_filter_callbacks_callout_and_upstream_form_one_trace() -> anyhow::Result<()>
{
    let collector = Collector::start().await?;
    let app = EchoUpstream::start("app").await?;
    let (auth, auth_parents) = callout_target().await?;
    capture_logs_of("traced");
    let config = json!({ "callouts": ["auth"], "callout_timeout_ms": 2000, "log_callbacks": true });
    let gw = TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams:
  - {{ name: app, targets: ["{app}"] }}
  - {{ name: auth, targets: ["{auth}"] }}
plugins: [{{ name: traced, file: "{wasm}" }}]
routes: [{{ name: r, upstream: app, filters: [{{ plugin: traced, config: {config} }}] }}]
access_log: {{ path: access.log }}
{tracing}"#,
        app = app.addr,
        wasm = test_filter_wasm(),
        tracing = tracing_section(&collector, 100),
    ))
    .await?;

    let response = http1_client().get(gw.url("main", "/in")).send().await?;
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"].to_str()?.to_owned();
    let echo = json(response).await?;
    assert_eq!(
        echoed(&echo, "x-auth").as_deref(),
        Some("user-7"),
        "the callout ran"
    );
    let sent = echoed(&echo, "traceparent").expect("the upstream got a traceparent");
    let (trace_id, upstream_parent, flags) = fields(&sent);
    assert_eq!(flags, "01", "a new trace at 100% is sampled");

    let spans = collector.finished_trace(&trace_id).await;
    let server: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server as i32)
        .collect();
    assert_eq!(server.len(), 1);
    let server = server[0];
    assert_eq!(server.name, "GET r");
    assert!(
        server.parent_span_id.is_empty(),
        "a new trace's request span is its root"
    );
    let server_id = hex(&server.span_id);
    for (key, value) in [
        ("http.request.method", "GET"),
        ("url.path", "/in"),
        ("url.scheme", "http"),
        ("http.route", "r"),
        ("http.response.status_code", "200"),
        ("client.address", "127.0.0.1"),
        ("server.address", "127.0.0.1"),
        ("server.port", &gw.addr("main").port().to_string()),
        ("weir.request_id", &request_id),
        ("weir.upstream", "app"),
    ] {
        assert_eq!(
            attr(server, key).as_deref(),
            Some(value),
            "request span's {key}"
        );
    }
    assert_ne!(
        server.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );

    let upstream = named(&spans, "GET");
    assert_eq!(upstream.kind, SpanKind::Client as i32);
    assert_eq!(hex(&upstream.parent_span_id), server_id);
    assert_eq!(
        hex(&upstream.span_id),
        upstream_parent,
        "the upstream's parent is the attempt span"
    );
    for (key, value) in [
        ("http.request.method", "GET"),
        ("http.response.status_code", "200"),
        ("server.address", "127.0.0.1"),
        ("server.port", &app.addr.port().to_string()),
        ("network.peer.address", "127.0.0.1"),
        ("network.peer.port", &app.addr.port().to_string()),
        ("weir.upstream", "app"),
    ] {
        assert_eq!(
            attr(upstream, key).as_deref(),
            Some(value),
            "upstream span's {key}"
        );
    }

    let request_headers = named(&spans, "plugin traced request_headers");
    assert_eq!(request_headers.kind, SpanKind::Internal as i32);
    assert_eq!(hex(&request_headers.parent_span_id), server_id);
    assert_eq!(
        attr(request_headers, "weir.plugin").as_deref(),
        Some("traced")
    );
    assert_eq!(
        attr(request_headers, "weir.request_id").as_deref(),
        Some(request_id.as_str())
    );
    let response_headers = named(&spans, "plugin traced response_headers");
    assert_eq!(hex(&response_headers.parent_span_id), server_id);

    let callout = named(&spans, "callout auth");
    assert_eq!(callout.kind, SpanKind::Client as i32);
    assert_eq!(
        hex(&callout.parent_span_id),
        hex(&request_headers.span_id),
        "the callout hangs under the callback that sent it"
    );
    assert_eq!(
        attr(callout, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(attr(callout, "weir.plugin").as_deref(), Some("traced"));
    let auth_saw = auth_parents.lock().map(|p| p.clone()).unwrap_or_default();
    assert_eq!(
        auth_saw,
        vec![format!("00-{trace_id}-{}-01", hex(&callout.span_id))],
        "the callout target's parent is the callout span"
    );
    for span in &spans {
        assert!(
            span.end_time_unix_nano >= span.start_time_unix_nano,
            "{}",
            span.name
        );
    }
    let names = collector
        .service_names
        .lock()
        .map(|n| n.clone())
        .unwrap_or_default();
    assert!(names.iter().all(|n| n == "edge"), "{names:?}");

    let log = gw.dir().join("access.log");
    let logged = eventually(SPANS_ARRIVE, async || {
        std::fs::read_to_string(&log).is_ok_and(|t| !t.is_empty())
    })
    .await;
    assert!(logged, "the access log line was written");
    let line: Value = serde_json::from_str(std::fs::read_to_string(&log)?.trim())?;
    assert_eq!(line["trace_id"], trace_id.as_str());

    let lines = captured_logs(&format!("trace_id=\"{trace_id}\""));
    assert_eq!(lines.len(), 1, "the on_log line names the trace: {lines:?}");
    assert!(lines[0].contains("plugin=\"traced\""), "{}", lines[0]);
    assert!(lines[0].contains("route=\"r\""), "{}", lines[0]);
    assert!(
        lines[0].contains(&format!("request_id=\"{request_id}\"")),
        "{}",
        lines[0]
    );

    assert_eq!(gw.metric("weir_trace_spans_dropped"), Some(0));
    let exported = eventually(SPANS_ARRIVE, async || {
        gw.metric("weir_trace_spans_exported") >= Some(spans.len() as i64)
    })
    .await;
    assert!(exported, "{:?}", gw.metric("weir_trace_spans_exported"));
    Ok(())
}

#[tokio::test]
async fn an_incoming_trace_is_continued_and_an_invalid_one_replaced() -> anyhow::Result<()> {
    let collector = Collector::start().await?;
    let app = EchoUpstream::start("app").await?;
    // New traces are never sampled: only the callers' flags decide.
    let gw = in_front_of(&app, &tracing_section(&collector, 0)).await?;
    let client = http1_client();
    let send = async |traceparent: &str| -> anyhow::Result<Value> {
        let response = client
            .get(gw.url("main", "/x"))
            .header("traceparent", traceparent)
            .header("tracestate", "vendor=abc,other=1")
            .send()
            .await?;
        assert_eq!(response.status(), 200);
        json(response).await
    };

    // An unsampled caller: propagated, not recorded.
    let unsampled = "00-11111111111111111111111111111111-2222222222222222-00";
    let echo = send(unsampled).await?;
    let (trace_id, parent, flags) = fields(&echoed(&echo, "traceparent").unwrap_or_default());
    assert_eq!(trace_id, "11111111111111111111111111111111");
    assert_ne!(
        parent, "2222222222222222",
        "the gateway's own span id goes on"
    );
    assert_eq!(flags, "00");

    // A sampled caller: continued and recorded.
    let incoming_trace = "0af7651916cd43dd8448eb211c80319c";
    let echo = send(&format!("00-{incoming_trace}-b7ad6b7169203331-01")).await?;
    let (trace_id, parent, flags) = fields(&echoed(&echo, "traceparent").unwrap_or_default());
    assert_eq!(trace_id, incoming_trace, "the caller's trace is continued");
    assert_eq!(flags, "01");
    assert_eq!(
        echoed(&echo, "tracestate").as_deref(),
        Some("vendor=abc,other=1")
    );
    let spans = collector.finished_trace(incoming_trace).await;
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .expect("request span");
    assert_eq!(hex(&server.parent_span_id), "b7ad6b7169203331");
    assert_eq!(server.trace_state, "vendor=abc,other=1");
    let upstream = named(&spans, "GET");
    assert_eq!(hex(&upstream.span_id), parent);
    assert_eq!(hex(&upstream.parent_span_id), hex(&server.span_id));
    assert!(
        collector
            .trace("11111111111111111111111111111111")
            .is_empty(),
        "an unsampled trace exports nothing (it was queued first)"
    );

    // An invalid traceparent: a new trace (unsampled at 0%), tracestate dropped.
    let invalid = "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01";
    let echo = send(invalid).await?;
    let (trace_id, _, flags) = fields(&echoed(&echo, "traceparent").unwrap_or_default());
    assert_ne!(trace_id, "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(flags, "00", "a new trace at 0% is not sampled");
    assert_eq!(
        echoed(&echo, "tracestate"),
        None,
        "tracestate goes with an invalid parent"
    );
    Ok(())
}

#[tokio::test]
async fn an_invalid_traceparent_starts_a_new_recorded_trace() -> anyhow::Result<()> {
    let collector = Collector::start().await?;
    let app = EchoUpstream::start("app").await?;
    let gw = in_front_of(&app, &tracing_section(&collector, 100)).await?;
    let response = http1_client()
        .get(gw.url("main", "/x"))
        .header(
            "traceparent",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        )
        .send()
        .await?;
    let echo = json(response).await?;
    let (trace_id, parent, flags) = fields(&echoed(&echo, "traceparent").unwrap_or_default());
    assert_ne!(trace_id, "00000000000000000000000000000000");
    assert_eq!(flags, "01");
    let spans = collector.finished_trace(&trace_id).await;
    assert_eq!(spans.len(), 2, "the request and its upstream attempt");
    let server = named(&spans, "GET all");
    assert!(
        server.parent_span_id.is_empty(),
        "a new trace, not a child of the invalid one"
    );
    assert_eq!(hex(&named(&spans, "GET").span_id), parent);
    Ok(())
}

#[tokio::test]
async fn spans_and_log_lines_still_waiting_go_out_at_shutdown() -> anyhow::Result<()> {
    let collector = Collector::start().await?;
    let app = EchoUpstream::start("app").await?;
    // A minute's flush interval: within the test, only shutdown sends the span.
    let mut gw = TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: app, targets: ["{app}"] }}]
routes: [{{ name: r, upstream: app }}]
access_log: {{ path: access.log }}
tracing:
  otlp: {{ endpoint: "{endpoint}", flush_interval: 60s }}
"#,
        app = app.addr,
        endpoint = collector.endpoint(),
    ))
    .await?;
    let response = http1_client().get(gw.url("main", "/in")).send().await?;
    let request_id = response.headers()["x-request-id"].to_str()?.to_owned();
    let sent = echoed(&json(response).await?, "traceparent").expect("a traceparent");
    let (trace_id, _, _) = fields(&sent);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        collector.trace(&trace_id).is_empty(),
        "held for the interval"
    );

    assert!(gw.shutdown().await, "nothing left in flight");
    let spans = collector.finished_trace(&trace_id).await;
    assert_eq!(
        attr(named(&spans, "GET r"), "weir.request_id").as_deref(),
        Some(request_id.as_str())
    );
    let log = std::fs::read_to_string(gw.dir().join("access.log"))?;
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), 1, "{log}");
    assert_eq!(lines[0]["request_id"], request_id.as_str());
    assert_eq!(lines[0]["trace_id"], trace_id.as_str());
    Ok(())
}

#[tokio::test]
async fn a_failed_upstream_marks_both_spans_failed() -> anyhow::Result<()> {
    let collector = Collector::start().await?;
    let dead = weir_tests::dead_address().await?;
    let gw = TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: gone, targets: ["{dead}"], retries: 0 }}]
routes: [{{ name: down, upstream: gone }}]
{}"#,
        tracing_section(&collector, 100),
    ))
    .await?;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = http1_client()
        .get(gw.url("main", "/x"))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .send()
        .await?;
    assert_eq!(response.status(), 502);
    let spans = collector.finished_trace(trace_id).await;
    let server = named(&spans, "GET down");
    assert_eq!(
        server.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
    assert_eq!(attr(server, "error.type").as_deref(), Some("502"));
    assert_eq!(
        attr(server, "http.response.status_code").as_deref(),
        Some("502")
    );
    let attempt = named(&spans, "GET");
    assert_eq!(
        attempt.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
    assert_eq!(
        attr(attempt, "error.type").as_deref(),
        Some("connection_failed")
    );
    Ok(())
}

#[tokio::test]
async fn without_tracing_the_upstream_sees_only_what_the_client_sent() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let gw = in_front_of(&app, "access_log: { path: access.log }\n").await?;
    let client = http1_client();
    let echo = json(client.get(gw.url("main", "/x")).send().await?).await?;
    assert_eq!(echoed(&echo, "traceparent"), None);
    assert_eq!(echoed(&echo, "tracestate"), None);

    // Not even validated: the client's headers pass through untouched.
    let theirs = "00-ZZZ-not-a-valid-one";
    let echo = json(
        client
            .get(gw.url("main", "/x"))
            .header("traceparent", theirs)
            .header("tracestate", "vendor=abc")
            .send()
            .await?,
    )
    .await?;
    assert_eq!(echoed(&echo, "traceparent").as_deref(), Some(theirs));
    assert_eq!(echoed(&echo, "tracestate").as_deref(), Some("vendor=abc"));

    let log = gw.dir().join("access.log");
    let logged = eventually(SPANS_ARRIVE, async || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() == 2)
    })
    .await;
    assert!(logged);
    for line in std::fs::read_to_string(&log)?.lines() {
        let line: Value = serde_json::from_str(line)?;
        assert_eq!(line.get("trace_id"), None, "{line}");
    }
    assert_eq!(gw.metric("weir_trace_spans_exported"), Some(0));
    Ok(())
}

#[tokio::test]
async fn a_full_span_queue_drops_and_counts_without_slowing_requests() -> anyhow::Result<()> {
    // A collector that accepts and never answers: the exporter is stuck on
    // its first batch for the whole test.
    let stuck = TcpListener::bind("127.0.0.1:0").await?;
    let stuck_addr = stuck.local_addr()?;
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = stuck.accept().await {
            open.push(stream);
        }
    });
    let app = EchoUpstream::start("app").await?;
    let gw = in_front_of(
        &app,
        &format!(
            "tracing:\n  otlp: {{ endpoint: \"http://{stuck_addr}/v1/traces\", batch: 1, queue: 1, timeout: 60s }}\n"
        ),
    )
    .await?;
    let client = http1_client();
    for _ in 0..5 {
        let response = client.get(gw.url("main", "/x")).send().await?;
        assert_eq!(response.status(), 200);
        response.bytes().await?;
    }
    // 10 spans (a request and an attempt each): one in the stuck export,
    // one in the queue, the rest dropped.
    let counted = eventually(SPANS_ARRIVE, async || {
        gw.metric("weir_trace_spans_dropped") == Some(8)
    })
    .await;
    assert!(
        counted,
        "dropped: {:?}",
        gw.metric("weir_trace_spans_dropped")
    );
    assert_eq!(gw.metric("weir_trace_spans_exported"), Some(0));
    held.abort();
    Ok(())
}

#[tokio::test]
async fn a_websocket_handshake_and_its_upstream_leg_are_spans_of_one_trace() -> anyhow::Result<()> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let collector = Collector::start().await?;
    let chat = weir_tests::websocket::WsEchoUpstream::start().await?;
    let gw = TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: chat, targets: ["{}"] }}]
routes: [{{ name: ws, upstream: chat, websocket: {{ enabled: true }} }}]
access_log: {{ path: access.log }}
{}"#,
        chat.addr,
        tracing_section(&collector, 0),
    ))
    .await?;
    let trace_id = "5bf92f3577b34da6a3ce929d0e0e4736";
    let mut request = format!("ws://{}/room", gw.addr("main")).into_client_request()?;
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    request
        .headers_mut()
        .insert("traceparent", traceparent.parse()?);
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await?;
    assert_eq!(response.status(), 101);
    ws.close(None).await?;

    let spans = collector.finished_trace(trace_id).await;
    let server = named(&spans, "GET ws");
    assert_eq!(hex(&server.parent_span_id), "00f067aa0ba902b7");
    let leg = named(&spans, "GET");
    assert_eq!(leg.kind, SpanKind::Client as i32);
    assert_eq!(hex(&leg.parent_span_id), hex(&server.span_id));
    assert_eq!(attr(leg, "weir.upstream").as_deref(), Some("chat"));
    assert_eq!(attr(leg, "url.path").as_deref(), Some("/room"));
    assert_eq!(
        attr(leg, "http.response.status_code").as_deref(),
        Some("101")
    );
    assert_eq!(attr(leg, "server.port"), Some(chat.addr.port().to_string()));
    // The upstream's handshake names the leg as its parent.
    let handshake = chat.handshakes().into_iter().next().unwrap_or_default();
    let sent = (handshake.iter()).find(|(name, _)| name == "traceparent");
    let (sent_trace, parent, flags) = fields(sent.map_or("", |(_, v)| v));
    assert_eq!((sent_trace.as_str(), flags.as_str()), (trace_id, "01"));
    assert_eq!(parent, hex(&leg.span_id));
    // The access log names the group and the target the leg went to.
    let lines = crate::observability::lines(&gw.dir().join("access.log"), 1).await?;
    assert_eq!(lines[0]["trace_id"], trace_id);
    assert_eq!(lines[0]["status"], 101);
    assert_eq!(lines[0]["upstream"], "chat");
    assert_eq!(lines[0]["upstream_target"], chat.addr.to_string());
    Ok(())
}

#[tokio::test]
async fn a_filters_grpc_callout_is_a_client_span_its_server_sees_as_parent() -> anyhow::Result<()> {
    let collector = Collector::start().await?;
    let app = EchoUpstream::start("app").await?;
    let grpc = crate::grpc::server::GrpcServer::start().await?;
    let config = json!({ "grpc": {
        "upstream": "grpc",
        "service": "weir.test.Echo",
        "method": "Say",
        "message": "weir",
        "timeout_ms": 2000,
    }});
    let gw = TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams:
  - {{ name: app, targets: ["{app}"] }}
  - {{ name: grpc, targets: ["{grpc}"] }}
plugins: [{{ name: caller, file: "{wasm}" }}]
routes: [{{ name: r, upstream: app, filters: [{{ plugin: caller, config: {config} }}] }}]
{tracing}"#,
        app = app.addr,
        grpc = grpc.addr,
        wasm = test_filter_wasm(),
        tracing = tracing_section(&collector, 100),
    ))
    .await?;
    let response = http1_client().get(gw.url("main", "/in")).send().await?;
    assert_eq!(response.status(), 200);
    let echo = json(response).await?;
    assert_eq!(echoed(&echo, "x-grpc-reply").as_deref(), Some("hello weir"));
    let (trace_id, _, _) = fields(&echoed(&echo, "traceparent").unwrap_or_default());

    let spans = collector.finished_trace(&trace_id).await;
    let callout = named(&spans, "callout grpc");
    assert_eq!(callout.kind, SpanKind::Client as i32);
    assert_eq!(attr(callout, "weir.plugin").as_deref(), Some("caller"));
    assert_eq!(attr(callout, "weir.upstream").as_deref(), Some("grpc"));
    assert_eq!(
        attr(callout, "url.path").as_deref(),
        Some("/weir.test.Echo/Say")
    );
    // It belongs to the filter callback that made the call.
    let callback = named(&spans, "plugin caller request_headers");
    assert_eq!(hex(&callout.parent_span_id), hex(&callback.span_id));
    // The gRPC server's request names the callout span as its parent.
    let sent = grpc.seen.last_request().traceparent.unwrap_or_default();
    let (sent_trace, parent, flags) = fields(&sent);
    assert_eq!((sent_trace, flags.as_str()), (trace_id, "01"));
    assert_eq!(parent, hex(&callout.span_id));
    Ok(())
}
