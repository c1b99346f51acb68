//! The upstream groups' state as metrics, read at each scrape: each
//! target's health and ejections, each group's circuit.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::{Directory, TargetHealth};

/// Every health a target can be in, for a state-set style gauge.
const HEALTHS: [TargetHealth; 4] = [
    TargetHealth::Unchecked,
    TargetHealth::Healthy,
    TargetHealth::Unhealthy,
    TargetHealth::Ejected,
];

/// The running groups of a directory, encoded at each scrape.
pub struct UpstreamMetrics(pub Arc<Directory>);

impl std::fmt::Debug for UpstreamMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamMetrics")
    }
}

impl Collector for UpstreamMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let groups = self.0.current();
        let mut groups: Vec<_> = groups.values().collect();
        groups.sort_by(|a, b| a.name().cmp(b.name()));
        let statuses: Vec<_> = (groups.iter())
            .map(|g| (g.name(), g.target_statuses()))
            .collect();

        let mut health = encoder.encode_descriptor(
            "upstream_target_health",
            "1 for the health each target is in now (unchecked, healthy, unhealthy, ejected)",
            None,
            MetricType::Gauge,
        )?;
        for (upstream, targets) in &statuses {
            for target in targets {
                for state in HEALTHS {
                    let labels = [
                        ("upstream", *upstream),
                        ("target", target.address.as_str()),
                        ("state", state.as_str()),
                    ];
                    ConstGauge::new(i64::from(target.health == state))
                        .encode(health.encode_family(&labels)?)?;
                }
            }
        }
        let mut ejections = encoder.encode_descriptor(
            "upstream_target_ejections",
            "Times passive health checking ejected each target",
            None,
            MetricType::Counter,
        )?;
        for (upstream, targets) in &statuses {
            for target in targets {
                let labels = [("upstream", *upstream), ("target", target.address.as_str())];
                ConstCounter::new(target.ejections).encode(ejections.encode_family(&labels)?)?;
            }
        }
        let mut circuit = encoder.encode_descriptor(
            "upstream_circuit_open",
            "1 while a group's error-rate breaker is open or half-open",
            None,
            MetricType::Gauge,
        )?;
        for group in &groups {
            let open = group.circuit() != "closed";
            ConstGauge::new(i64::from(open))
                .encode(circuit.encode_family(&[("upstream", group.name())])?)?;
        }
        Ok(())
    }
}
