//! How the plugins' VMs fare: failures by kind and VMs started in place of
//! failed ones, counted as they happen (rarely) and encoded at each scrape
//! of `/metrics` as `weir_plugin_vm_failures_total{plugin, kind}` and
//! `weir_plugin_vm_restarts_total{plugin}`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;

/// Why a VM failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FailureKind {
    /// The guest trapped (unreachable, a bad memory access, a panic).
    Trap,
    /// A callback overran its CPU deadline.
    Deadline,
    /// The guest trapped after its memory cap refused to grow it.
    OutOfMemory,
    /// A host call failed the guest for misusing the ABI.
    Abi,
}

impl FailureKind {
    /// Its `kind` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trap => "trap",
            Self::Deadline => "deadline",
            Self::OutOfMemory => "out_of_memory",
            Self::Abi => "abi",
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    failures: BTreeMap<(String, FailureKind), u64>,
    restarts: BTreeMap<String, u64>,
}

/// Every plugin's VM failures and restarts.
#[derive(Debug, Default)]
pub struct PluginHealth(Mutex<Counts>);

impl PluginHealth {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // Plain counts: consistent even if a holder panicked.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a VM of `plugin` failing with `kind`.
    pub fn failed(&self, plugin: &str, kind: FailureKind) {
        *self
            .lock()
            .failures
            .entry((plugin.to_owned(), kind))
            .or_default() += 1;
    }

    /// Counts a VM of `plugin` started in place of a failed one.
    pub fn restarted(&self, plugin: &str) {
        *self.lock().restarts.entry(plugin.to_owned()).or_default() += 1;
    }

    /// How many VMs of `plugin` failed with `kind`.
    pub fn failures(&self, plugin: &str, kind: FailureKind) -> u64 {
        let counts = self.lock();
        counts
            .failures
            .get(&(plugin.to_owned(), kind))
            .copied()
            .unwrap_or(0)
    }

    /// The collector `/metrics` reads these through.
    pub fn collector(self: &Arc<Self>) -> PluginHealthMetrics {
        PluginHealthMetrics(self.clone())
    }
}

/// [`PluginHealth`] encoded at each scrape.
#[derive(Debug)]
pub struct PluginHealthMetrics(Arc<PluginHealth>);

impl Collector for PluginHealthMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counts = self.0.lock();
        let mut failures = encoder.encode_descriptor(
            "plugin_vm_failures",
            "VMs of each plugin that failed, by kind (trap, deadline, out_of_memory, abi)",
            None,
            MetricType::Counter,
        )?;
        for ((plugin, kind), count) in &counts.failures {
            let labels = [("plugin", plugin.as_str()), ("kind", kind.as_str())];
            ConstCounter::new(*count).encode(failures.encode_family(&labels)?)?;
        }
        let mut restarts = encoder.encode_descriptor(
            "plugin_vm_restarts",
            "VMs of each plugin started in place of a failed one",
            None,
            MetricType::Counter,
        )?;
        for (plugin, count) in &counts.restarts {
            let labels = [("plugin", plugin.as_str())];
            ConstCounter::new(*count).encode(restarts.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
