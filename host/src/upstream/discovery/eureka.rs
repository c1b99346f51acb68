//! Eureka discovery, as Eureka's own client does it: the whole registry
//! once (`GET apps/`), then every interval its recent changes
//! (`GET apps/delta`), each instance applied by its `actionType` (`ADDED`
//! and `MODIFIED` replace the instance, `DELETED` removes it). After each
//! delta the registry's reconcile hash (every instance counted by status,
//! `DOWN_1_UP_3_`) is computed and compared with the delta's
//! `apps__hashcode`; when they disagree a change was missed, and the whole
//! registry is fetched again. The hash covers every application, which is
//! why the statuses of all of them are kept, not only the followed one's.
//! The targets are the application's instances whose status is `UP`, at
//! `ipAddr` (else `hostName`) and their enabled `port`.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::http::Registry;
use super::{Discovery, DiscoveryError, registered};
use crate::config::model::EurekaDiscovery;
use crate::upstream::TargetSpec;

/// An application's instances in a Eureka registry.
pub struct EurekaSource {
    config: EurekaDiscovery,
    registry: Option<Registry>,
    /// The registry as last reconciled; `None` until the first full fetch,
    /// and after an error or a disagreeing hash.
    view: Option<View>,
}

/// What is kept of the registry.
#[derive(Default)]
struct View {
    /// Every instance's status, by (application, instance id).
    statuses: HashMap<(String, String), String>,
    /// The followed application's instances by id.
    instances: BTreeMap<String, Instance>,
}

/// One instance of the followed application.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Instance {
    host: String,
    port: Option<u16>,
    status: String,
}

impl EurekaSource {
    pub fn new(config: EurekaDiscovery) -> Self {
        Self {
            config,
            registry: None,
            view: None,
        }
    }

    /// `GET apps/<path>` as JSON.
    async fn fetch(&self, path: &str) -> Result<Value, DiscoveryError> {
        let Some(registry) = &self.registry else {
            return Err(DiscoveryError::Unreachable("no registry".to_owned()));
        };
        let answer = registry
            .get(
                &format!("/apps/{path}"),
                &[],
                self.config.interval.max(TIMEOUT),
            )
            .await?;
        if !answer.status.is_success() {
            return Err(DiscoveryError::Unreachable(format!(
                "Eureka answered {} to apps/{path}",
                answer.status
            )));
        }
        serde_json::from_slice(&answer.body)
            .map_err(|e| DiscoveryError::BadAnswer(format!("Eureka's apps/{path}: {e}")))
    }

    /// The whole registry.
    async fn full(&self) -> Result<View, DiscoveryError> {
        let registry = self.fetch("").await?;
        let mut view = View::default();
        for (app, instance) in instances(&registry)? {
            view.apply(&self.config.app, &app, instance, "ADDED");
        }
        Ok(view)
    }

    /// The recent changes applied to `view`; whether its hash then agrees.
    async fn delta(&self, view: &mut View) -> Result<bool, DiscoveryError> {
        let delta = self.fetch("delta").await?;
        for (app, instance) in instances(&delta)? {
            let action = text(instance.get("actionType")).unwrap_or("MODIFIED");
            view.apply(&self.config.app, &app, instance, action);
        }
        let expected = text(delta.pointer("/applications/apps__hashcode"));
        Ok(expected.is_none_or(|hash| hash == view.hash()))
    }
}

/// The longest a registry call may take.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl Discovery for EurekaSource {
    async fn next(&mut self) -> Result<Vec<TargetSpec>, DiscoveryError> {
        if self.registry.is_none() {
            self.registry = Some(Registry::new(&self.config.endpoint)?);
        }
        let view = match self.view.take() {
            None => self.full().await?,
            Some(mut view) => {
                tokio::time::sleep(self.config.interval).await;
                if self.delta(&mut view).await? {
                    view
                } else {
                    tracing::info!(
                        app = %self.config.app,
                        "Eureka's reconcile hash disagrees with the deltas applied: fetching the registry again"
                    );
                    self.full().await?
                }
            }
        };
        let targets = view.targets();
        self.view = Some(view);
        Ok(targets)
    }
}

impl View {
    /// Applies one instance of `app` as `action` says.
    fn apply(&mut self, followed: &str, app: &str, instance: &Value, action: &str) {
        let Some(id) = text(instance.get("instanceId")).or(text(instance.get("hostName"))) else {
            return;
        };
        let key = (app.to_ascii_uppercase(), id.to_owned());
        let ours = key.0 == followed;
        if action == "DELETED" {
            self.statuses.remove(&key);
            if ours {
                self.instances.remove(id);
            }
            return;
        }
        let status = text(instance.get("status")).unwrap_or("UNKNOWN").to_owned();
        if ours {
            let host = text(instance.get("ipAddr"))
                .or(text(instance.get("hostName")))
                .unwrap_or_default()
                .to_owned();
            self.instances.insert(
                id.to_owned(),
                Instance {
                    host,
                    port: port(instance.get("port")),
                    status: status.clone(),
                },
            );
        }
        self.statuses.insert(key, status);
    }

    /// Eureka's reconcile hash: each status and its count, statuses sorted.
    fn hash(&self) -> String {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for status in self.statuses.values() {
            *counts.entry(status).or_default() += 1;
        }
        counts
            .iter()
            .map(|(status, count)| format!("{status}_{count}_"))
            .collect()
    }

    /// The instances that are `UP` as targets.
    fn targets(&self) -> Vec<TargetSpec> {
        let mut targets = Vec::new();
        for (id, instance) in &self.instances {
            if instance.status != "UP" {
                continue;
            }
            let Some(port) = instance.port else {
                tracing::warn!(instance = %id, "Eureka instance skipped: no enabled port");
                continue;
            };
            match registered(&instance.host, port, 1) {
                Ok(target) => targets.push(target),
                Err(reason) => {
                    tracing::warn!(instance = %id, %reason, "Eureka instance skipped");
                }
            }
        }
        targets.sort_by(|a, b| a.address.cmp(&b.address));
        targets
    }
}

/// Every (application name, instance) of an `applications` document. Eureka
/// writes a list of one as the element alone, so both are read.
fn instances(document: &Value) -> Result<Vec<(String, &Value)>, DiscoveryError> {
    let Some(applications) = document.get("applications") else {
        return Err(DiscoveryError::BadAnswer(
            "Eureka's answer has no `applications`".to_owned(),
        ));
    };
    let mut found = Vec::new();
    for app in one_or_many(applications.get("application")) {
        let name = text(app.get("name")).unwrap_or_default().to_owned();
        for instance in one_or_many(app.get("instance")) {
            found.push((name.clone(), instance));
        }
    }
    Ok(found)
}

fn one_or_many(value: Option<&Value>) -> Vec<&Value> {
    match value {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(item @ Value::Object(_)) => vec![item],
        _ => Vec::new(),
    }
}

fn text(value: Option<&Value>) -> Option<&str> {
    value.and_then(Value::as_str)
}

/// An instance's port when it is enabled: `{"$": 8080, "@enabled": "true"}`
/// (the number may be written as text, and `@enabled` may be a boolean).
fn port(value: Option<&Value>) -> Option<u16> {
    let value = value?;
    let enabled = match value.get("@enabled") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        Some(_) => false,
    };
    let number = match value.get("$").unwrap_or(value) {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    number
        .and_then(|n| u16::try_from(n).ok())
        .filter(|&n| enabled && n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, ip: &str, port: u16, status: &str, action: &str) -> Value {
        serde_json::json!({
            "instanceId": id, "hostName": id, "app": "API", "ipAddr": ip, "status": status,
            "port": {"$": port, "@enabled": "true"}, "actionType": action,
        })
    }

    #[test]
    fn applies_deltas_by_action_and_computes_the_reconcile_hash() {
        let mut view = View::default();
        view.apply(
            "API",
            "API",
            &instance("a", "10.0.0.1", 80, "UP", "ADDED"),
            "ADDED",
        );
        view.apply(
            "API",
            "API",
            &instance("b", "10.0.0.2", 80, "UP", "ADDED"),
            "ADDED",
        );
        view.apply(
            "API",
            "OTHER",
            &instance("c", "10.0.0.3", 80, "DOWN", "ADDED"),
            "ADDED",
        );
        assert_eq!(view.hash(), "DOWN_1_UP_2_");
        view.apply(
            "API",
            "API",
            &instance("a", "10.0.0.1", 80, "OUT_OF_SERVICE", "MODIFIED"),
            "MODIFIED",
        );
        view.apply(
            "API",
            "API",
            &instance("b", "10.0.0.2", 80, "UP", "DELETED"),
            "DELETED",
        );
        assert_eq!(view.hash(), "DOWN_1_OUT_OF_SERVICE_1_");
        assert!(view.targets().is_empty());
        view.apply(
            "API",
            "API",
            &instance("a", "10.0.0.1", 81, "UP", "MODIFIED"),
            "MODIFIED",
        );
        let targets = view.targets();
        assert_eq!(targets[0].address, "10.0.0.1:81");
    }

    #[test]
    fn reads_ports_as_eureka_writes_them() {
        assert_eq!(
            port(Some(&serde_json::json!({"$": 8080, "@enabled": "true"}))),
            Some(8080)
        );
        assert_eq!(
            port(Some(&serde_json::json!({"$": "8081", "@enabled": true}))),
            Some(8081)
        );
        assert_eq!(
            port(Some(&serde_json::json!({"$": 8082, "@enabled": "false"}))),
            None
        );
        assert_eq!(port(Some(&serde_json::json!(8083))), Some(8083));
    }
}
