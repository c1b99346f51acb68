//! The manifest's `tracing:` settings: which requests get OpenTelemetry
//! spans and where the spans are exported (OTLP over HTTP/protobuf).

use std::ops::RangeInclusive;
use std::time::Duration;

use super::decode::{Decode, Diagnostics, Fields, HumanDuration, Located};
use super::node::Node;

/// Spans sent in one export: 1 to 100,000.
pub const BATCH_SPANS: RangeInclusive<usize> = 1..=100_000;
/// Spans that may wait for the exporter: 1 to a million.
pub const QUEUE_SPANS: RangeInclusive<usize> = 1..=1_000_000;
/// How long a partial batch may wait: 10ms to 1 minute.
pub const FLUSH_INTERVAL: RangeInclusive<HumanDuration> =
    HumanDuration(Duration::from_millis(10))..=HumanDuration(Duration::from_secs(60));
/// How long one export may take: 100ms to 1 minute.
pub const EXPORT_TIMEOUT: RangeInclusive<HumanDuration> =
    HumanDuration(Duration::from_millis(100))..=HumanDuration(Duration::from_secs(60));

/// Tracing's settings (a manifest without `tracing:` traces nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracingConfig {
    /// The `service.name` resource attribute of every span.
    pub service_name: String,
    /// The share (percent) of new traces recorded; a request that arrives
    /// with a `traceparent` follows its sampled flag instead.
    pub sample_percent: u32,
    /// Where spans go.
    pub otlp: OtlpConfig,
}

/// The OTLP/HTTP exporter's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    /// The collector's traces URL (`http://collector:4318/v1/traces`).
    pub endpoint: http::Uri,
    /// Spans sent in one export request.
    pub batch: usize,
    /// Spans that may wait for the exporter before new ones are dropped
    /// (and counted).
    pub queue: usize,
    /// How long a batch that is not full waits before it is sent.
    pub flush_interval: Duration,
    /// How long one export request may take.
    pub timeout: Duration,
}

impl Decode for TracingConfig {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "tracing settings", diags)?;
        let service_name = f.or("service_name", "weir".to_owned(), diags);
        let sample_percent = f.within("sample_percent", 0..=100, 100, diags);
        let otlp = f.required("otlp", diags);
        f.finish(diags);
        Some(Self {
            service_name,
            sample_percent,
            otlp: otlp?,
        })
    }
}

impl Decode for OtlpConfig {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "OTLP exporter settings", diags)?;
        let endpoint = f
            .required::<Located<String>>("endpoint", diags)
            .and_then(|text| endpoint(text, diags));
        let settings = Self {
            endpoint: endpoint.clone().unwrap_or_default(),
            batch: f.within("batch", BATCH_SPANS, 512, diags),
            queue: f.within("queue", QUEUE_SPANS, 4096, diags),
            flush_interval: f
                .within(
                    "flush_interval",
                    FLUSH_INTERVAL,
                    HumanDuration(Duration::from_secs(1)),
                    diags,
                )
                .0,
            timeout: f
                .within(
                    "timeout",
                    EXPORT_TIMEOUT,
                    HumanDuration(Duration::from_secs(10)),
                    diags,
                )
                .0,
        };
        f.finish(diags);
        endpoint.is_some().then_some(settings)
    }
}

/// An `http://` or `https://` URL with a host.
fn endpoint(text: Located<String>, diags: &mut Diagnostics) -> Option<http::Uri> {
    let uri = text.value.parse::<http::Uri>().ok().filter(|uri| {
        matches!(uri.scheme_str(), Some("http" | "https"))
            && uri.host().is_some_and(|h| !h.is_empty())
    });
    if uri.is_none() {
        diags.error(
            text.location,
            format!(
                "the OTLP endpoint must be an `http://` or `https://` URL like `http://collector:4318/v1/traces`, found `{}`",
                text.value
            ),
        );
    }
    uri
}
