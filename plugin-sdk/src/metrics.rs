//! Metrics a plugin defines (Weir exports them namespaced by plugin).

use crate::host::{self, MetricKind};
use crate::status::HostResult;

/// A counter: only goes up.
#[derive(Debug, Clone, Copy)]
pub struct Counter(u32);

/// A gauge: set to a value.
#[derive(Debug, Clone, Copy)]
pub struct Gauge(u32);

/// A histogram: records samples.
#[derive(Debug, Clone, Copy)]
pub struct Histogram(u32);

impl Counter {
    /// Defines (or finds) counter `name`.
    pub fn define(name: &str) -> HostResult<Self> {
        host::define_metric(MetricKind::Counter, name).map(Self)
    }

    /// Adds `delta`.
    pub fn increment(self, delta: u64) -> HostResult<()> {
        host::increment_metric(self.0, i64::try_from(delta).unwrap_or(i64::MAX))
    }
}

impl Gauge {
    /// Defines (or finds) gauge `name`.
    pub fn define(name: &str) -> HostResult<Self> {
        host::define_metric(MetricKind::Gauge, name).map(Self)
    }

    /// Sets it to `value`.
    pub fn set(self, value: u64) -> HostResult<()> {
        host::record_metric(self.0, value)
    }
}

impl Histogram {
    /// Defines (or finds) histogram `name`.
    pub fn define(name: &str) -> HostResult<Self> {
        host::define_metric(MetricKind::Histogram, name).map(Self)
    }

    /// Records one sample.
    pub fn record(self, value: u64) -> HostResult<()> {
        host::record_metric(self.0, value)
    }
}
