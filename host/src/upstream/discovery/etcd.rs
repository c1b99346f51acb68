//! etcd discovery: every key under a prefix is one target, its value
//! `host:port` or `{"address": …, "weight": …}`. The keys are read once
//! (a range read), then watched from the revision after that read; a broken
//! watch (the cluster restarted, the revision was compacted) reconnects and
//! reads the whole prefix again. A key whose value is not a target is
//! skipped with a warning.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, WatchOptions, WatchStream};

use super::{Discovery, DiscoveryError, spec};
use crate::config::model::EtcdDiscovery;
use crate::upstream::TargetSpec;

/// HTTP/2 pings on an idle watch, so a cluster that went away is noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// The targets under a prefix in etcd.
pub struct EtcdSource {
    config: EtcdDiscovery,
    /// The connection and its watch, once made.
    live: Option<Live>,
}

struct Live {
    /// Kept so the connection stays open while the watch runs.
    _client: Client,
    watch: WatchStream,
    /// Each key's target (keys whose value is not a target are absent).
    targets: BTreeMap<Vec<u8>, TargetSpec>,
}

impl EtcdSource {
    pub fn new(config: EtcdDiscovery) -> Self {
        Self { config, live: None }
    }

    /// Connects, reads the prefix and starts watching it.
    async fn start(&self) -> Result<Live, DiscoveryError> {
        let unreachable = |e: etcd_client::Error| DiscoveryError::Unreachable(e.to_string());
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.config.timeout)
            .with_keep_alive(KEEP_ALIVE, self.config.timeout);
        if let Some((user, password)) = &self.config.credentials {
            options = options.with_user(user.clone(), password.0.clone());
        }
        let prefix = self.config.prefix.as_bytes();
        let setup = async {
            let mut client = Client::connect(&self.config.endpoints, Some(options))
                .await
                .map_err(unreachable)?;
            let read = client
                .get(prefix, Some(GetOptions::new().with_prefix()))
                .await
                .map_err(unreachable)?;
            let revision = read.header().map_or(0, |h| h.revision());
            let watch = client
                .watch(
                    prefix,
                    Some(
                        WatchOptions::new()
                            .with_prefix()
                            .with_start_revision(revision + 1),
                    ),
                )
                .await
                .map_err(unreachable)?;
            let mut targets = BTreeMap::new();
            for kv in read.kvs() {
                if let Some(target) = self.target(kv.key(), kv.value()) {
                    targets.insert(kv.key().to_vec(), target);
                }
            }
            Ok(Live {
                _client: client,
                watch,
                targets,
            })
        };
        tokio::time::timeout(self.config.timeout, setup)
            .await
            .unwrap_or_else(|_| {
                Err(DiscoveryError::Unreachable(format!(
                    "no answer from {} within {}ms",
                    self.config.endpoints.join(", "),
                    self.config.timeout.as_millis()
                )))
            })
    }

    /// The target a key's value names; `None` (logged) when it names none.
    fn target(&self, key: &[u8], value: &[u8]) -> Option<TargetSpec> {
        let parsed = std::str::from_utf8(value)
            .map_err(|_| "not UTF-8 text".to_owned())
            .and_then(|text| crate::config::parse_target(text).map_err(|e| e.to_string()));
        match parsed {
            Ok(target) => Some(spec(target)),
            Err(reason) => {
                tracing::warn!(
                    prefix = %self.config.prefix,
                    key = %String::from_utf8_lossy(key),
                    %reason,
                    "etcd key skipped: its value is not a target"
                );
                None
            }
        }
    }
}

impl Discovery for EtcdSource {
    async fn next(&mut self) -> Result<Vec<TargetSpec>, DiscoveryError> {
        let Some(live) = &mut self.live else {
            let live = self.start().await?;
            let targets = live.targets.values().cloned().collect();
            self.live = Some(live);
            return Ok(targets);
        };
        let message = live.watch.message().await;
        let response = match message {
            Ok(Some(response)) if !response.canceled() => response,
            Ok(Some(response)) => {
                self.live = None;
                return Err(DiscoveryError::Unreachable(format!(
                    "the watch was cancelled (compacted at {}): {}",
                    response.compact_revision(),
                    response.cancel_reason()
                )));
            }
            Ok(None) => {
                self.live = None;
                return Err(DiscoveryError::Unreachable("the watch ended".to_owned()));
            }
            Err(error) => {
                self.live = None;
                return Err(DiscoveryError::Unreachable(error.to_string()));
            }
        };
        let mut changes = Vec::new();
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            match event.event_type() {
                EventType::Put => {
                    changes.push((kv.key().to_vec(), self.target(kv.key(), kv.value())))
                }
                EventType::Delete => changes.push((kv.key().to_vec(), None)),
            }
        }
        let Some(live) = &mut self.live else {
            return Err(DiscoveryError::Unreachable("the watch ended".to_owned()));
        };
        for (key, target) in changes {
            match target {
                Some(target) => live.targets.insert(key, target),
                None => live.targets.remove(&key),
            };
        }
        Ok(live.targets.values().cloned().collect())
    }
}
