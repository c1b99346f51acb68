//! Plugin metrics (`proxy_define_metric` …): counters, gauges and histograms
//! kept per plugin, rendered in the Prometheus text format. A plugin defines
//! at most its `metrics` quota of distinct names.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::quota::{Quota, QuotaExceeded};

/// A metric's kind, numbered as the ABI numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 0.
    Counter,
    /// 1.
    Gauge,
    /// 2.
    Histogram,
}

impl Kind {
    /// The kind for an ABI number.
    pub fn from_abi(n: i32) -> Option<Self> {
        match n {
            0 => Some(Self::Counter),
            1 => Some(Self::Gauge),
            2 => Some(Self::Histogram),
            _ => None,
        }
    }
}

/// Histogram bucket bounds (upper, inclusive).
const BUCKETS: [u64; 12] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 5_000, 10_000];

#[derive(Debug, Clone)]
struct Metric {
    plugin: String,
    name: String,
    kind: Kind,
    value: i64,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: i64,
}

/// Why a metric operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MetricError {
    /// No metric has that id.
    #[error("no such metric")]
    NotFound,
    /// The operation does not suit the metric's kind (or a counter would go down).
    #[error("bad argument")]
    BadArgument,
    /// The plugin already defines as many metrics as its quota allows.
    #[error(transparent)]
    Quota(#[from] QuotaExceeded),
}

/// The registry of every plugin's metrics.
#[derive(Default)]
pub struct Metrics {
    metrics: Mutex<Vec<Metric>>,
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Metric>> {
        self.metrics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Defines (or finds) `name` of `kind` for `plugin`; returns its id. A new
    /// name beyond the plugin's `max` metrics is refused.
    pub fn define(
        &self,
        plugin: &str,
        kind: Kind,
        name: &str,
        max: usize,
    ) -> Result<u32, MetricError> {
        let mut metrics = self.lock();
        let mut defined = 0;
        for (i, m) in metrics
            .iter()
            .enumerate()
            .filter(|(_, m)| m.plugin == plugin)
        {
            if m.name == name {
                return if m.kind == kind {
                    Ok(i as u32)
                } else {
                    Err(MetricError::BadArgument)
                };
            }
            defined += 1;
        }
        if defined >= max {
            return Err(QuotaExceeded::from(Quota::Metrics).into());
        }
        metrics.push(Metric {
            plugin: plugin.to_owned(),
            name: name.to_owned(),
            kind,
            value: 0,
            buckets: [0; BUCKETS.len()],
            count: 0,
            sum: 0,
        });
        Ok((metrics.len() - 1) as u32)
    }

    /// Adds `delta` (counters only go up).
    pub fn increment(&self, id: u32, delta: i64) -> Result<(), MetricError> {
        let mut metrics = self.lock();
        let m = metrics.get_mut(id as usize).ok_or(MetricError::NotFound)?;
        match m.kind {
            Kind::Counter if delta < 0 => Err(MetricError::BadArgument),
            Kind::Counter | Kind::Gauge => {
                m.value = m.value.saturating_add(delta);
                Ok(())
            }
            Kind::Histogram => Err(MetricError::BadArgument),
        }
    }

    /// Sets a gauge, adds to a counter, or samples a histogram.
    pub fn record(&self, id: u32, value: i64) -> Result<(), MetricError> {
        let mut metrics = self.lock();
        let m = metrics.get_mut(id as usize).ok_or(MetricError::NotFound)?;
        match m.kind {
            Kind::Gauge => m.value = value,
            Kind::Counter if value < 0 => return Err(MetricError::BadArgument),
            Kind::Counter => m.value = m.value.saturating_add(value),
            Kind::Histogram => {
                let v = u64::try_from(value).unwrap_or(0);
                for (bucket, bound) in m.buckets.iter_mut().zip(BUCKETS) {
                    if v <= bound {
                        *bucket += 1;
                    }
                }
                m.count += 1;
                m.sum = m.sum.saturating_add(value);
            }
        }
        Ok(())
    }

    /// The current value (a histogram's sample count).
    pub fn get(&self, id: u32) -> Result<u64, MetricError> {
        let metrics = self.lock();
        let m = metrics.get(id as usize).ok_or(MetricError::NotFound)?;
        Ok(match m.kind {
            Kind::Histogram => m.count,
            _ => u64::try_from(m.value).unwrap_or(0),
        })
    }

    /// The registry's view for the gateway's `/metrics`.
    pub fn collector(self: &Arc<Self>) -> PluginMetrics {
        PluginMetrics(self.clone())
    }
}

/// Every plugin's metrics, encoded at each scrape: one family per name
/// (`weir_plugin_<name>`, the first plugin's kind deciding), a series per
/// plugin labelled `plugin`.
pub struct PluginMetrics(Arc<Metrics>);

impl std::fmt::Debug for PluginMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PluginMetrics")
    }
}

impl Collector for PluginMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let metrics = self.0.lock();
        let mut by_name: BTreeMap<String, Vec<&Metric>> = BTreeMap::new();
        for m in metrics.iter() {
            by_name
                .entry(family_name(&m.name, m.kind))
                .or_default()
                .push(m);
        }
        for (name, group) in by_name {
            let kind = group[0].kind;
            let metric_type = match kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
                Kind::Histogram => MetricType::Histogram,
            };
            let help = "Defined by plugins (proxy_define_metric)";
            let mut family = encoder.encode_descriptor(&name, help, None, metric_type)?;
            for m in group.iter().filter(|m| m.kind == kind) {
                let labels = [("plugin", m.plugin.as_str())];
                let series = family.encode_family(&labels)?;
                match kind {
                    Kind::Counter => {
                        ConstCounter::new(u64::try_from(m.value).unwrap_or(0)).encode(series)?
                    }
                    Kind::Gauge => ConstGauge::new(m.value).encode(series)?,
                    Kind::Histogram => encode_histogram(m, series)?,
                }
            }
        }
        Ok(())
    }
}

/// A histogram, its cumulative buckets given per bucket as
/// prometheus-client wants them (it sums them again; `f64::MAX` is `+Inf`).
fn encode_histogram(m: &Metric, mut series: MetricEncoder) -> Result<(), std::fmt::Error> {
    let mut below = 0;
    let buckets: Vec<(f64, u64)> = (BUCKETS.iter().zip(m.buckets))
        .map(|(&bound, cumulative)| (bound as f64, cumulative))
        .chain(std::iter::once((f64::MAX, m.count)))
        .map(|(bound, cumulative)| {
            let own = cumulative.saturating_sub(below);
            below = cumulative;
            (bound, own)
        })
        .collect();
    series.encode_histogram::<NoLabelSet>(m.sum as f64, m.count, &buckets, None)
}

/// `plugin_<name>` with every character a metric name cannot hold as `_`
/// (the registry adds `weir_`); a counter's `_total` goes, since the
/// encoder adds it.
fn family_name(name: &str, kind: Kind) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let cleaned = match kind {
        Kind::Counter => cleaned.strip_suffix("_total").unwrap_or(&cleaned),
        _ => &cleaned,
    };
    format!("plugin_{cleaned}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_gauges_and_histograms_render_for_prometheus() {
        let m = Metrics::default();
        let c = m
            .define("auth", Kind::Counter, "requests.denied", 10)
            .expect("define");
        assert_eq!(
            m.define("auth", Kind::Counter, "requests.denied", 10),
            Ok(c)
        );
        assert_eq!(
            m.define("auth", Kind::Gauge, "requests.denied", 10),
            Err(MetricError::BadArgument)
        );
        m.increment(c, 2).expect("increment");
        assert_eq!(m.increment(c, -1), Err(MetricError::BadArgument));
        let g = m
            .define("auth", Kind::Gauge, "inflight", 10)
            .expect("define");
        m.record(g, 7).expect("record");
        let h = m
            .define("auth", Kind::Histogram, "latency_ms", 10)
            .expect("define");
        m.record(h, 3).expect("sample");
        m.record(h, 40).expect("sample");
        assert_eq!(m.get(c), Ok(2));
        assert_eq!(m.get(h), Ok(2));
        assert_eq!(m.get(99), Err(MetricError::NotFound));
        let mut registry = prometheus_client::registry::Registry::with_prefix("weir");
        registry.register_collector(Box::new(Arc::new(m).collector()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(
            text.contains("# TYPE weir_plugin_requests_denied counter"),
            "{text}"
        );
        assert!(
            text.contains("weir_plugin_requests_denied_total{plugin=\"auth\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("weir_plugin_inflight{plugin=\"auth\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("weir_plugin_latency_ms_bucket{le=\"5.0\",plugin=\"auth\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("weir_plugin_latency_ms_bucket{le=\"50.0\",plugin=\"auth\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("weir_plugin_latency_ms_count{plugin=\"auth\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn a_plugin_defines_at_most_its_quota_of_names() {
        let m = Metrics::default();
        let a = m.define("p", Kind::Counter, "a", 2).expect("1");
        m.define("p", Kind::Counter, "b", 2).expect("2");
        assert_eq!(
            m.define("p", Kind::Counter, "c", 2),
            Err(MetricError::Quota(Quota::Metrics.into()))
        );
        assert_eq!(
            m.define("p", Kind::Counter, "a", 2),
            Ok(a),
            "finding a defined name is not a new one"
        );
        m.define("q", Kind::Counter, "c", 2)
            .expect("another plugin has its own count");
    }
}
