//! Consul discovery: the instances of a service from the health API,
//! `GET /v1/health/service/<service>` (with `?passing` for instances whose
//! checks all pass), followed by blocking queries: each request carries the
//! `X-Consul-Index` of the last answer as `?index=` and Consul holds it until
//! the service changes or `?wait=` runs out. As Consul's documentation asks,
//! an index that goes backwards starts over from 0, an index of 0 is taken
//! as 1, and answers that come back at once without a change are spaced out.
//! An instance's address is its service address, else its node's; its
//! weight is `Weights.Passing`.

use std::time::Duration;

use http::header::HeaderName;
use serde::Deserialize;
use tokio::time::Instant;

use super::http::Registry;
use super::{Discovery, DiscoveryError, registered};
use crate::config::model::ConsulDiscovery;
use crate::upstream::TargetSpec;

/// The least time between two queries that return without a change.
const MIN_PAUSE: Duration = Duration::from_millis(200);

/// A service's instances in Consul.
pub struct ConsulSource {
    config: ConsulDiscovery,
    registry: Option<Registry>,
    /// The index of the last answer (0: none yet).
    index: u64,
    /// When the last query was sent.
    last_query: Option<Instant>,
}

/// One entry of `/v1/health/service/<service>`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    node: Node,
    service: Service,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Node {
    #[serde(default)]
    address: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Service {
    #[serde(default)]
    address: String,
    port: u16,
    #[serde(default)]
    weights: Option<Weights>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Weights {
    passing: u32,
}

impl ConsulSource {
    pub fn new(config: ConsulDiscovery) -> Self {
        Self {
            config,
            registry: None,
            index: 0,
            last_query: None,
        }
    }

    /// The query for the answer after `index`.
    fn path(&self) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if self.index > 0 {
            query.append_pair("index", &self.index.to_string());
            query.append_pair("wait", &format!("{}ms", self.config.wait.as_millis()));
        }
        if self.config.passing_only {
            query.append_key_only("passing");
        }
        if let Some(dc) = &self.config.datacenter {
            query.append_pair("dc", dc);
        }
        if let Some(tag) = &self.config.tag {
            query.append_pair("tag", tag);
        }
        let query = query.finish();
        let path = format!("/v1/health/service/{}", self.config.service);
        if query.is_empty() {
            path
        } else {
            format!("{path}?{query}")
        }
    }
}

impl Discovery for ConsulSource {
    async fn next(&mut self) -> Result<Vec<TargetSpec>, DiscoveryError> {
        if self.registry.is_none() {
            self.registry = Some(Registry::new(&self.config.endpoint)?);
        }
        loop {
            if let Some(last) = self.last_query {
                tokio::time::sleep_until(last + MIN_PAUSE).await;
            }
            let Some(registry) = &self.registry else {
                return Err(DiscoveryError::Unreachable("no registry".to_owned()));
            };
            // Consul adds up to wait/16 to the wait; the rest covers the network.
            let timeout = if self.index > 0 {
                self.config.wait + self.config.wait / 16 + Duration::from_secs(5)
            } else {
                Duration::from_secs(10)
            };
            let token = self.config.token.as_ref().map(|t| t.0.as_str());
            let headers: Vec<(HeaderName, &str)> = token
                .map(|t| (HeaderName::from_static("x-consul-token"), t))
                .into_iter()
                .collect();
            let sent_at = Instant::now();
            let answer = registry.get(&self.path(), &headers, timeout).await;
            let answer = answer.inspect_err(|_| self.index = 0)?;
            if !answer.status.is_success() {
                self.index = 0;
                return Err(DiscoveryError::Unreachable(format!(
                    "Consul answered {}: {}",
                    answer.status,
                    String::from_utf8_lossy(&answer.body).trim()
                )));
            }
            let index = answer
                .headers
                .get("x-consul-index")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| DiscoveryError::BadAnswer("no X-Consul-Index header".to_owned()))?;
            let changed = index != self.index;
            let previous = self.index;
            self.index = match index {
                0 => 1,
                i if i < previous => 0,
                i => i,
            };
            // An answer that came back at once without a change is spaced out.
            self.last_query = (!changed && sent_at.elapsed() < MIN_PAUSE).then_some(sent_at);
            if !changed && previous != 0 {
                continue;
            }
            return targets(&answer.body);
        }
    }
}

/// The instances of a health-API answer as targets.
fn targets(body: &[u8]) -> Result<Vec<TargetSpec>, DiscoveryError> {
    let entries: Vec<Entry> = serde_json::from_slice(body)
        .map_err(|e| DiscoveryError::BadAnswer(format!("Consul's answer: {e}")))?;
    let mut targets = Vec::with_capacity(entries.len());
    for entry in entries {
        let host = if entry.service.address.is_empty() {
            &entry.node.address
        } else {
            &entry.service.address
        };
        let weight = entry.service.weights.map_or(1, |w| w.passing);
        match registered(host, entry.service.port, weight) {
            Ok(target) => targets.push(target),
            Err(reason) => {
                tracing::warn!(%reason, "Consul instance skipped: its address is not a target");
            }
        }
    }
    targets.sort_by(|a, b| a.address.cmp(&b.address));
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_service_address_else_node_address_and_passing_weight() {
        let body = br#"[
          {"Node": {"Node": "n1", "Address": "10.0.0.1"},
           "Service": {"ID": "a", "Service": "api", "Address": "", "Port": 8080},
           "Checks": []},
          {"Node": {"Node": "n2", "Address": "10.0.0.2"},
           "Service": {"ID": "b", "Service": "api", "Address": "10.1.0.2", "Port": 8081,
                       "Weights": {"Passing": 3, "Warning": 1}},
           "Checks": []}
        ]"#;
        let found = targets(body).expect("a valid answer");
        assert_eq!(
            found,
            vec![
                TargetSpec {
                    address: "10.0.0.1:8080".to_owned(),
                    weight: 1
                },
                TargetSpec {
                    address: "10.1.0.2:8081".to_owned(),
                    weight: 3
                },
            ]
        );
        assert!(targets(b"{}").is_err());
    }
}
