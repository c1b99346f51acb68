//! The gateway's own metrics, kept in a `prometheus-client` registry per
//! gateway and exposed on the admin listener's `/metrics`: in the Prometheus
//! text format, or OpenMetrics when the scraper asks for it.
//!
//! Labels are names from the config (route, upstream, plugin, listener) and
//! small fixed sets (method and status classes), never raw paths, so the
//! number of series stays bounded. Values that already live elsewhere
//! (target health, plugin VMs, the metrics plugins define) are read at
//! scrape time by [`Collector`]s, so the request path never pays for them.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::Method;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::record::Record;

/// Latency buckets, in seconds: 0.5 ms to 10 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets for filter callbacks, in seconds: 5 µs to 100 ms.
const PLUGIN_BUCKETS: [f64; 12] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.005, 0.01, 0.05,
    0.1,
];

/// The method label of a request, by [`method_class`].
const METHOD_CLASSES: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other",
];

/// The status label of a request, by [`status_class`].
const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

/// The label a request without a route or an upstream gets.
const NONE: &str = "-";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Arc<str>,
    upstream: Arc<str>,
    method: &'static str,
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabel {
    upstream: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FlagLabel {
    route: Arc<str>,
    flag: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    plugin: Arc<str>,
    phase: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

fn latency() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

fn plugin_latency() -> Histogram {
    Histogram::new(PLUGIN_BUCKETS)
}

type Latencies<L> = Family<L, Histogram, fn() -> Histogram>;

/// What became of the spans handed to the trace exporter.
#[derive(Debug, Clone, Default)]
pub struct SpanCounters {
    /// Spans the collector accepted.
    pub exported: Counter,
    /// Spans dropped because the queue was full (the request never waits).
    pub dropped: Counter,
    /// Spans lost because their export failed.
    pub failed: Counter,
}

/// One route's series of the per-route metrics, kept on its
/// [`RouteStats`](super::RouteStats) once a request has found them, so a
/// request of a named route looks none of them up. Each is taken from its
/// family on first use, so a series appears when there is something to
/// show, as a lookup would make it.
#[derive(Debug, Default)]
pub struct RouteSeries {
    duration: OnceLock<Histogram>,
    received: OnceLock<Counter>,
    sent: OnceLock<Counter>,
    /// The series of the first upstream group the route's requests went
    /// to: its own (a split's other groups are looked up each time).
    upstream: OnceLock<UpstreamSeries>,
}

/// A route's series that are labelled with an upstream group too.
#[derive(Debug)]
struct UpstreamSeries {
    upstream: Arc<str>,
    /// Request counters by method class, then status class.
    requests: [[OnceLock<Counter>; STATUS_CLASSES.len()]; METHOD_CLASSES.len()],
    duration: OnceLock<Histogram>,
}

impl UpstreamSeries {
    fn new(upstream: Arc<str>) -> Self {
        Self {
            upstream,
            requests: Default::default(),
            duration: OnceLock::new(),
        }
    }
}

/// The series kept in `slot`, or looked up in `family` each time when there
/// is no slot to keep it in.
fn kept<L, M, C>(
    slot: Option<&OnceLock<M>>,
    family: &Family<L, M, C>,
    labels: impl FnOnce() -> L,
    apply: impl FnOnce(&M),
) where
    L: Clone + std::hash::Hash + Eq,
    M: Clone,
    C: MetricConstructor<M>,
{
    match slot {
        Some(slot) => apply(slot.get_or_init(|| family.get_or_create_owned(&labels()))),
        None => apply(&family.get_or_create(&labels())),
    }
}

/// Every metric the gateway keeps itself.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Latencies<RouteLabel>,
    upstream_duration: Latencies<UpstreamLabel>,
    plugin_duration: Latencies<PhaseLabels>,
    flags: Family<FlagLabel, Counter>,
    received_bytes: Family<RouteLabel, Counter>,
    sent_bytes: Family<RouteLabel, Counter>,
    active_requests: Family<ListenerLabel, Gauge>,
    active_connections: Family<ListenerLabel, Gauge>,
    retries: Family<UpstreamLabel, Counter>,
    config_generation: Gauge,
    reloads: Family<OutcomeLabel, Counter>,
    access_log_dropped: Counter,
    spans: SpanCounters,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every gateway metric, all at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("weir");
        let requests = Family::default();
        registry.register(
            "requests",
            "Requests answered, by route, upstream, method and status class",
            requests.clone(),
        );
        let request_duration: Latencies<RouteLabel> = Family::new_with_constructor(latency);
        registry.register_with_unit(
            "request_duration",
            "Time from a request's arrival until its response was sent, by route",
            Unit::Seconds,
            request_duration.clone(),
        );
        let upstream_duration: Latencies<UpstreamLabel> = Family::new_with_constructor(latency);
        registry.register_with_unit(
            "upstream_duration",
            "Time waiting for an upstream's response head, by upstream",
            Unit::Seconds,
            upstream_duration.clone(),
        );
        let plugin_duration: Latencies<PhaseLabels> = Family::new_with_constructor(plugin_latency);
        registry.register_with_unit(
            "plugin_duration",
            "Time one filter callback took, by plugin and phase",
            Unit::Seconds,
            plugin_duration.clone(),
        );
        let flags = Family::default();
        registry.register(
            "request_flags",
            "Requests with something unusual (the access log's flags), by route and flag",
            flags.clone(),
        );
        let received_bytes = Family::default();
        registry.register_with_unit(
            "received",
            "Request body bytes read from clients, by route",
            Unit::Bytes,
            received_bytes.clone(),
        );
        let sent_bytes = Family::default();
        registry.register_with_unit(
            "sent",
            "Response body bytes sent to clients, by route",
            Unit::Bytes,
            sent_bytes.clone(),
        );
        let active_requests = Family::default();
        registry.register(
            "active_requests",
            "Requests being served now, by listener",
            active_requests.clone(),
        );
        let active_connections = Family::default();
        registry.register(
            "active_connections",
            "Client connections open now, by listener",
            active_connections.clone(),
        );
        let retries = Family::default();
        registry.register(
            "upstream_retries",
            "Attempts beyond the first, by upstream",
            retries.clone(),
        );
        let config_generation = Gauge::default();
        registry.register(
            "config_generation",
            "The generation of the config serving new requests",
            config_generation.clone(),
        );
        let reloads = Family::default();
        registry.register(
            "config_reloads",
            "Config reloads, by outcome (applied or refused)",
            reloads.clone(),
        );
        let access_log_dropped = Counter::default();
        registry.register(
            "access_log_dropped_lines",
            "Access log lines dropped because the writer fell behind",
            access_log_dropped.clone(),
        );
        let spans = SpanCounters::default();
        registry.register(
            "trace_spans_exported",
            "Spans the collector accepted",
            spans.exported.clone(),
        );
        registry.register(
            "trace_spans_dropped",
            "Spans dropped because the exporter's queue was full",
            spans.dropped.clone(),
        );
        registry.register(
            "trace_spans_failed",
            "Spans lost because their export failed",
            spans.failed.clone(),
        );
        Self {
            registry,
            requests,
            request_duration,
            upstream_duration,
            plugin_duration,
            flags,
            received_bytes,
            sent_bytes,
            active_requests,
            active_connections,
            retries,
            config_generation,
            reloads,
            access_log_dropped,
            spans,
        }
    }

    /// Adds a collector read at every scrape (values kept elsewhere).
    pub fn register_collector(&mut self, collector: Box<dyn Collector>) {
        self.registry.register_collector(collector);
    }

    /// Counts a request finished `elapsed` after it arrived; the status it
    /// was answered with.
    pub fn count(&self, record: &Record, elapsed: Duration) -> u16 {
        let (status, route, upstream, route_stats) = record.inspect(|details| {
            if let Some(stats) = &details.route_stats {
                stats.count(details.status);
            }
            (
                details.status,
                details.route.clone(),
                details.upstream.clone(),
                details.route_stats.clone(),
            )
        });
        let route = route.unwrap_or_else(|| Arc::from(NONE));
        // A route's own series are looked up once, then kept on its stats.
        let series = route_stats.as_deref().map(|stats| &stats.series);
        let by_upstream = series
            .zip(upstream.as_ref())
            .and_then(|(series, upstream)| {
                let kept = (series.upstream).get_or_init(|| UpstreamSeries::new(upstream.clone()));
                (kept.upstream == *upstream).then_some(kept)
            });
        let (method, status_index) = (method_class(&record.method), status_class(status));
        kept(
            by_upstream.map(|kept| &kept.requests[method][status_index]),
            &self.requests,
            || RequestLabels {
                route: route.clone(),
                upstream: upstream.clone().unwrap_or_else(|| Arc::from(NONE)),
                method: METHOD_CLASSES[method],
                status: STATUS_CLASSES[status_index],
            },
            |counter| {
                counter.inc();
            },
        );
        let route = RouteLabel { route };
        let elapsed = elapsed.as_secs_f64();
        kept(
            series.map(|s| &s.duration),
            &self.request_duration,
            || route.clone(),
            |histogram| histogram.observe(elapsed),
        );
        if let Some(upstream) = upstream {
            let retries = record.retries();
            if retries > 0 {
                self.retries
                    .get_or_create(&UpstreamLabel {
                        upstream: upstream.clone(),
                    })
                    .inc_by(u64::from(retries));
            }
            let upstream_time = record.upstream_time();
            if !upstream_time.is_zero() {
                kept(
                    by_upstream.map(|kept| &kept.duration),
                    &self.upstream_duration,
                    || UpstreamLabel { upstream },
                    |histogram| histogram.observe(upstream_time.as_secs_f64()),
                );
            }
        }
        let (bytes_in, bytes_out) = (record.bytes_in(), record.bytes_out());
        for (bytes, family, slot) in [
            (bytes_in, &self.received_bytes, series.map(|s| &s.received)),
            (bytes_out, &self.sent_bytes, series.map(|s| &s.sent)),
        ] {
            if bytes > 0 {
                kept(
                    slot,
                    family,
                    || route.clone(),
                    |counter| {
                        counter.inc_by(bytes);
                    },
                );
            }
        }
        for flag in record.flags() {
            self.flags
                .get_or_create(&FlagLabel {
                    route: route.route.clone(),
                    flag: flag.as_str(),
                })
                .inc();
        }
        status
    }

    /// The gauge of requests in flight on `listener`.
    pub fn active_requests(&self, listener: &Arc<str>) -> Gauge {
        self.active_requests.get_or_create_owned(&ListenerLabel {
            listener: listener.clone(),
        })
    }

    /// The gauge of open client connections on `listener`.
    pub fn active_connections(&self, listener: &Arc<str>) -> Gauge {
        self.active_connections.get_or_create_owned(&ListenerLabel {
            listener: listener.clone(),
        })
    }

    /// The histogram of `plugin`'s callbacks in `phase`.
    pub fn plugin_phase(&self, plugin: &Arc<str>, phase: &'static str) -> Histogram {
        self.plugin_duration.get_or_create_owned(&PhaseLabels {
            plugin: plugin.clone(),
            phase,
        })
    }

    /// Records a reload's outcome, and the generation now serving.
    pub fn reloaded(&self, applied: bool, generation: u64) {
        let outcome = if applied { "applied" } else { "refused" };
        self.reloads.get_or_create(&OutcomeLabel { outcome }).inc();
        self.set_generation(generation);
    }

    /// Sets the generation now serving.
    pub fn set_generation(&self, generation: u64) {
        self.config_generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
    }

    /// The counter of access log lines dropped.
    pub fn access_log_dropped(&self) -> Counter {
        self.access_log_dropped.clone()
    }

    /// The counters of the trace exporter's spans.
    pub fn spans(&self) -> SpanCounters {
        self.spans.clone()
    }

    /// Every metric in `format`.
    pub fn render(&self, format: Format) -> String {
        let mut open = String::new();
        // Writing to a String cannot fail, and every metric encodes.
        let _ = prometheus_client::encoding::text::encode(&mut open, &self.registry);
        match format {
            Format::OpenMetrics => open,
            Format::Prometheus => to_prometheus(&open),
        }
    }
}

/// The exposition formats `/metrics` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    /// The format a scraper's `Accept` header asks for: OpenMetrics only
    /// when it names it.
    pub fn from_accept(accept: Option<&str>) -> Self {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Self::OpenMetrics,
            _ => Self::Prometheus,
        }
    }

    /// The response's `content-type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// OpenMetrics text as the Prometheus text format: a counter's family is
/// named with its `_total` suffix (as its samples are), `# UNIT` lines and
/// the `# EOF` end go.
fn to_prometheus(open: &str) -> String {
    let mut counters: Vec<&str> = Vec::new();
    for line in open.lines() {
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|rest| rest.strip_suffix(" counter"))
        {
            counters.push(name);
        }
    }
    let mut out = String::with_capacity(open.len());
    for line in open.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let described = ["# HELP ", "# TYPE "]
            .iter()
            .find_map(|prefix| Some((*prefix, line.strip_prefix(prefix)?)));
        match described {
            Some((prefix, rest)) => {
                let name = rest.split(' ').next().unwrap_or_default();
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(&name) {
                    out.push_str("_total");
                }
                out.push_str(&rest[name.len()..]);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// A method's label in [`METHOD_CLASSES`]: the common methods by name, the
/// rest as `other`.
fn method_class(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::PATCH => 4,
        Method::DELETE => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

/// A status's class label in [`STATUS_CLASSES`] (`2xx` …); a request that
/// got no status at all (the client left first) is `none`.
fn status_class(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100 - 1),
        _ => 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A finished GET of route `api` (with its stats) sent to `upstream`.
    fn finished(stats: &Arc<super::super::RouteStats>, upstream: &str, status: u16) -> Record {
        let record = Record::new(
            http::HeaderValue::from_static("id"),
            Method::GET,
            http::Uri::from_static("/"),
            "127.0.0.1:1".parse().expect("address"),
            Arc::from("main"),
            None,
        );
        record.update(|d| {
            d.route = Some(Arc::from("api"));
            d.route_stats = Some(stats.clone());
            d.upstream = Some(Arc::from(upstream));
            d.status = status;
        });
        record.add_upstream_time(Duration::from_millis(1));
        record
    }

    #[test]
    fn series_kept_for_a_routes_first_upstream_count_as_a_lookup_would() {
        let metrics = Metrics::new();
        let stats = Arc::new(super::super::RouteStats::new(Arc::from("api")));
        // A split: `stable` is found first and kept, `canary` looked up.
        for (upstream, status) in [
            ("stable", 200),
            ("canary", 200),
            ("stable", 503),
            ("stable", 200),
            ("canary", 404),
        ] {
            metrics.count(
                &finished(&stats, upstream, status),
                Duration::from_millis(2),
            );
        }
        let text = metrics.render(Format::Prometheus);
        let requests = |upstream: &str, status: &str| {
            let series = format!(
                "weir_requests_total{{route=\"api\",upstream=\"{upstream}\",method=\"GET\",status=\"{status}\"}} "
            );
            (text.lines()).find_map(|line| line.strip_prefix(series.as_str())?.parse::<u64>().ok())
        };
        assert_eq!(requests("stable", "2xx"), Some(2), "{text}");
        assert_eq!(requests("stable", "5xx"), Some(1), "{text}");
        assert_eq!(requests("canary", "2xx"), Some(1), "{text}");
        assert_eq!(requests("canary", "4xx"), Some(1), "{text}");
        let upstream_count = |upstream: &str| {
            let series =
                format!("weir_upstream_duration_seconds_count{{upstream=\"{upstream}\"}} ");
            (text.lines()).find_map(|line| line.strip_prefix(series.as_str())?.parse::<u64>().ok())
        };
        assert_eq!(upstream_count("stable"), Some(3), "{text}");
        assert_eq!(upstream_count("canary"), Some(2), "{text}");
    }

    #[test]
    fn counters_are_named_with_total_and_units_and_eof_go_in_the_prometheus_format() {
        let metrics = Metrics::new();
        metrics
            .retries
            .get_or_create(&UpstreamLabel {
                upstream: Arc::from("pool"),
            })
            .inc();
        metrics.set_generation(3);
        let text = metrics.render(Format::Prometheus);
        assert!(
            text.contains("# TYPE weir_upstream_retries_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP weir_upstream_retries_total Attempts"),
            "{text}"
        );
        assert!(
            text.contains("weir_upstream_retries_total{upstream=\"pool\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE weir_config_generation gauge\nweir_config_generation 3\n"));
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        let open = metrics.render(Format::OpenMetrics);
        assert!(
            open.contains("# TYPE weir_upstream_retries counter\n"),
            "{open}"
        );
        assert!(open.ends_with("# EOF\n"), "{open}");
    }

    #[test]
    fn openmetrics_only_when_asked() {
        assert_eq!(Format::from_accept(None), Format::Prometheus);
        assert_eq!(
            Format::from_accept(Some("text/plain;version=0.0.4;q=0.5,*/*;q=0.1")),
            Format::Prometheus
        );
        assert_eq!(
            Format::from_accept(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
            )),
            Format::OpenMetrics
        );
    }
}
