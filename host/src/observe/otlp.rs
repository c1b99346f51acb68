//! The OTLP/HTTP trace exporter: spans wait in a bounded queue (a request
//! never waits for it) and a thread of their own sends them in batches,
//! encoded as `ExportTraceServiceRequest` protobuf, to the collector.

use std::io;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{self as proto, ResourceSpans, ScopeSpans, status};
use prost::Message;
use tokio::sync::mpsc;

use super::metrics::SpanCounters;
use super::trace::{Export, SpanData, Value};

/// Where and how spans are exported.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The collector's traces URL.
    pub endpoint: String,
    /// The `service.name` of every span.
    pub service_name: String,
    /// Spans sent in one export request.
    pub batch: usize,
    /// Spans that may wait before new ones are dropped.
    pub queue: usize,
    /// How long a batch that is not full waits before it is sent.
    pub flush_interval: Duration,
    /// How long one export request may take.
    pub timeout: Duration,
}

/// Starts the exporter's thread; spans sent into the returned queue are
/// exported until every sender is gone (then what is queued is sent and
/// the thread ends). A flush sends the batch being gathered at once.
pub fn start(settings: Settings, counters: SpanCounters) -> io::Result<mpsc::Sender<Export>> {
    let (spans, received) = mpsc::channel(settings.queue.max(1));
    let client = reqwest::Client::builder()
        .timeout(settings.timeout)
        .build()
        .map_err(io::Error::other)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("weir-trace-export".into())
        .spawn(move || {
            runtime.block_on(export_batches(settings, client, received, counters));
        })?;
    Ok(spans)
}

/// Collects spans into batches of at most `settings.batch`, each sent when
/// full, `flush_interval` after its first span, or when a flush asks; one
/// export at a time. A flush is answered once what came before it is sent.
async fn export_batches(
    settings: Settings,
    client: reqwest::Client,
    mut spans: mpsc::Receiver<Export>,
    counters: SpanCounters,
) {
    let mut batch = Vec::with_capacity(settings.batch.min(4096));
    let mut failing = false;
    loop {
        let first = match spans.recv().await {
            None => break,
            Some(Export::Span(span)) => span,
            Some(Export::Flush(done)) => {
                // Nothing waits: every span before it is sent.
                let _ = done.send(());
                continue;
            }
        };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + settings.flush_interval;
        let mut closed = false;
        let mut flushed = None;
        while batch.len() < settings.batch {
            match tokio::time::timeout_at(deadline, spans.recv()).await {
                Ok(Some(Export::Span(span))) => batch.push(span),
                Ok(Some(Export::Flush(done))) => {
                    flushed = Some(done);
                    break;
                }
                Ok(None) => {
                    closed = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let count = batch.len() as u64;
        let body = encode(&settings.service_name, batch.drain(..)).encode_to_vec();
        match send(&client, &settings.endpoint, body).await {
            Ok(()) => {
                counters.exported.inc_by(count);
                failing = false;
            }
            Err(error) => {
                counters.failed.inc_by(count);
                if !failing {
                    tracing::warn!(endpoint = %settings.endpoint, %error, spans = count, "cannot export spans");
                }
                failing = true;
            }
        }
        if let Some(done) = flushed {
            let _ = done.send(());
        }
        if closed {
            break;
        }
    }
}

/// Posts one export request; an answer other than 2xx is an error.
async fn send(client: &reqwest::Client, endpoint: &str, body: Vec<u8>) -> Result<(), String> {
    let response = client
        .post(endpoint)
        .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the collector answered {status}"))
    }
}

/// The export request for `spans` of service `service_name`.
pub fn encode(
    service_name: &str,
    spans: impl Iterator<Item = SpanData>,
) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![key_value("service.name", Value::from(service_name))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "weir".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans: spans.map(span).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn span(data: SpanData) -> proto::Span {
    proto::Span {
        trace_id: data.trace_id.to_vec(),
        span_id: data.span_id.to_vec(),
        trace_state: data.trace_state.as_deref().unwrap_or_default().to_owned(),
        parent_span_id: data.parent.map(|p| p.to_vec()).unwrap_or_default(),
        name: data.name,
        kind: data.kind as i32,
        start_time_unix_nano: data.start,
        end_time_unix_nano: data.end,
        attributes: data
            .attributes
            .into_iter()
            .map(|(key, value)| key_value(key, value))
            .collect(),
        status: Some(match data.error {
            Some(message) => proto::Status {
                message,
                code: status::StatusCode::Error as i32,
            },
            None => proto::Status {
                message: String::new(),
                code: status::StatusCode::Unset as i32,
            },
        }),
        ..Default::default()
    }
}

fn key_value(key: &str, value: Value) -> KeyValue {
    let value = match value {
        Value::Str(s) => any_value::Value::StringValue(s),
        Value::Int(i) => any_value::Value::IntValue(i),
    };
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}
