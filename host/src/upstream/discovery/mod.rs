//! Service discovery: the sources that tell an upstream group its targets
//! (DNS, a watched file, etcd, Consul, Eureka), each a [`Discovery`], and the
//! task that applies their answers to the group with
//! [`UpstreamGroup::set_targets`].
//!
//! An answer is the source's whole list of targets; the group's set is
//! replaced only when the list changed, and targets that stay keep their
//! connections, load and health. A source that fails (unreachable, a broken
//! answer, a name without records) leaves the group as it was: the failure is
//! logged once, then at most once a minute while it lasts, and the source is
//! asked again after a growing pause. Only an answer in which the source says
//! the service has no instances (an empty etcd prefix, Consul's or Eureka's
//! empty list, a file holding `[]`) empties the group.

mod consul;
mod dns;
mod etcd;
mod eureka;
mod file;
mod http;

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::{TargetSpec, UpstreamGroup};
use crate::config::model::{Discovery as Source, Target};

/// A source of an upstream group's targets.
pub trait Discovery: Send + 'static {
    /// Waits for the source's next answer: the service's targets now. The
    /// first call answers as soon as it can; later calls wait for a change
    /// (a watch) or for the next poll. After an error the next call starts
    /// over (reconnects, re-reads).
    fn next(&mut self) -> impl Future<Output = Result<Vec<TargetSpec>, DiscoveryError>> + Send;
}

/// Why a source gave no answer this time. The group keeps its targets.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The source could not be reached, or did not answer in time.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The source answered something that is not a list of targets.
    #[error("bad answer: {0}")]
    BadAnswer(String),
    /// The answer held no targets, and that is no proof the service has none
    /// (a DNS name without records).
    #[error("no targets: {0}")]
    NoTargets(String),
}

impl UpstreamGroup {
    /// Starts the group's discovery on `runtime`, once; it ends when the
    /// group is dropped.
    pub fn start_discovery(self: &Arc<Self>, runtime: &tokio::runtime::Handle) {
        let Some(source) = self.config.discovery.clone() else {
            return;
        };
        if self.discovering.swap(true, Ordering::Relaxed) {
            return;
        }
        let group = Arc::downgrade(self);
        let kind = source.kind();
        match source {
            Source::Dns(config) => runtime.spawn(run(group, kind, dns::DnsSource::new(config))),
            Source::File(config) => runtime.spawn(run(group, kind, file::FileSource::new(config))),
            Source::Etcd(config) => runtime.spawn(run(group, kind, etcd::EtcdSource::new(config))),
            Source::Consul(config) => {
                runtime.spawn(run(group, kind, consul::ConsulSource::new(config)))
            }
            Source::Eureka(config) => {
                runtime.spawn(run(group, kind, eureka::EurekaSource::new(config)))
            }
        };
    }

    /// Takes over the targets `previous` (the group this one replaces on a
    /// reload) discovered, when both follow the same source: without it, a
    /// reload that changes, say, a timeout would fall back to the static
    /// `targets` until the source answers again.
    pub(super) fn take_discovered(&self, previous: &UpstreamGroup) {
        if self.config.discovery.is_none() || previous.config.discovery != self.config.discovery {
            return;
        }
        let specs = previous.target_specs();
        // Connections made with other TLS settings or timeouts are not reused.
        let reusable = previous.config.tls == self.config.tls
            && previous.config.timeouts == self.config.timeouts;
        let previous = reusable.then(|| previous.targets.load_full());
        let current = self.targets.load_full();
        let keep = previous.as_deref().unwrap_or(&current);
        match super::target::TargetSet::new(&specs, &self.config.lb, &self.settings, Some(keep)) {
            Ok(set) => self.targets.store(Arc::new(set)),
            Err(error) => {
                tracing::warn!(upstream = %self.name, %error, "discovered targets not taken over")
            }
        }
    }

    /// The group's targets now, as a list a set is made from.
    fn target_specs(&self) -> Vec<TargetSpec> {
        let set = self.targets.load();
        (set.targets.iter())
            .zip(&set.weights)
            .map(|(t, &weight)| TargetSpec {
                address: t.address.to_string(),
                weight,
            })
            .collect()
    }
}

/// The first pause after a failed attempt; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest pause between two failed attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often a failure that lasts is logged again.
const LOG_AGAIN_AFTER: Duration = Duration::from_secs(60);
/// How often the task checks that its group still exists while it waits.
const GROUP_CHECK: Duration = Duration::from_secs(1);

/// Applies `source`'s answers to `group` until the group is dropped.
async fn run(group: Weak<UpstreamGroup>, kind: &'static str, mut source: impl Discovery) {
    let Some(name) = group.upgrade().map(|g| g.name().to_owned()) else {
        return;
    };
    let mut failures = FailureLog::new(name.clone(), kind);
    let mut backoff = FIRST_BACKOFF;
    let mut applied: Option<Vec<TargetSpec>> = None;
    loop {
        let answer = tokio::select! {
            answer = source.next() => answer,
            () = dropped(&group) => return,
        };
        let Some(live) = group.upgrade() else {
            return;
        };
        match answer {
            Ok(targets) => {
                failures.recovered();
                backoff = FIRST_BACKOFF;
                if applied.as_ref() == Some(&targets) {
                    continue;
                }
                match live.set_targets(&targets) {
                    Ok(()) => {
                        tracing::info!(
                            upstream = %name,
                            source = kind,
                            targets = %Addresses(&targets),
                            "discovered targets applied"
                        );
                        applied = Some(targets);
                    }
                    Err(error) => failures.failed(&DiscoveryError::BadAnswer(error.to_string())),
                }
            }
            Err(error) => {
                failures.failed(&error);
                drop(live);
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = dropped(&group) => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Resolves when `group` has been dropped.
async fn dropped(group: &Weak<UpstreamGroup>) {
    while group.strong_count() > 0 {
        tokio::time::sleep(GROUP_CHECK).await;
    }
}

/// Logs a source's failures without repeating itself: the first, a new
/// reason, and a reminder once a minute while the failure lasts.
struct FailureLog {
    upstream: String,
    source: &'static str,
    failures: u64,
    last_logged: Option<Instant>,
    last_reason: String,
}

impl FailureLog {
    fn new(upstream: String, source: &'static str) -> Self {
        Self {
            upstream,
            source,
            failures: 0,
            last_logged: None,
            last_reason: String::new(),
        }
    }

    fn failed(&mut self, error: &DiscoveryError) {
        self.failures += 1;
        let reason = error.to_string();
        let due = reason != self.last_reason
            || self
                .last_logged
                .is_none_or(|at| at.elapsed() >= LOG_AGAIN_AFTER);
        if due {
            tracing::warn!(
                upstream = %self.upstream,
                source = self.source,
                failures = self.failures,
                %reason,
                "discovery failed: the group keeps its targets"
            );
            self.last_logged = Some(Instant::now());
            self.last_reason = reason;
        }
    }

    fn recovered(&mut self) {
        if self.failures > 0 {
            tracing::info!(
                upstream = %self.upstream,
                source = self.source,
                failures = self.failures,
                "discovery answers again"
            );
        }
        self.failures = 0;
        self.last_logged = None;
        self.last_reason.clear();
    }
}

/// Targets as a log shows them: `a:1 b:2*3` (weights above 1 after `*`).
struct Addresses<'a>(&'a [TargetSpec]);

impl fmt::Display for Addresses<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(none)");
        }
        for (i, t) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(&t.address)?;
            if t.weight != 1 {
                write!(f, "*{}", t.weight)?;
            }
        }
        Ok(())
    }
}

/// A validated target as a set lists it.
fn spec(target: Target) -> TargetSpec {
    TargetSpec {
        address: target.address,
        weight: target.weight,
    }
}

/// `host:port` for an address a registry gave (IPv6 in brackets), checked
/// as a manifest target is.
fn registered(host: &str, port: u16, weight: u32) -> Result<TargetSpec, String> {
    let host = host.trim();
    let address = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut target = crate::config::parse_target(&address).map_err(|e| e.to_string())?;
    target.weight = weight.clamp(1, MAX_WEIGHT);
    Ok(spec(target))
}

/// The largest weight a registry's answer may give (a manifest's too).
const MAX_WEIGHT: u32 = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_addresses_are_checked_and_bracketed() {
        assert_eq!(
            registered("::1", 80, 1).map(|t| t.address),
            Ok("[::1]:80".to_owned())
        );
        assert_eq!(
            registered("10.0.0.1", 80, 5000),
            Ok(TargetSpec {
                address: "10.0.0.1:80".to_owned(),
                weight: 1000
            })
        );
        assert_eq!(registered("a.internal", 80, 0).map(|t| t.weight), Ok(1));
        assert!(registered("a b", 80, 1).is_err());
        assert!(registered("a", 0, 1).is_err());
    }
}
