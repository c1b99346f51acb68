//! `GET /status`: everything the status page shows, as one JSON document:
//! the running routes with their totals, the upstream targets with their
//! health, the plugins with their VMs and memory, the config generation and
//! the recent reloads, and each route's request and 5xx rates over the last
//! minutes.
//!
//! The rates come from a [`RateHistory`] a sampler task fills every
//! [`SAMPLE_EVERY`] from the routes' running totals, so the request path
//! pays nothing for them beyond two atomic adds.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::config::model::{HostMatch, PathMatch};
use crate::gateway::Gateway;
use crate::lifecycle::{RouteEntry, Target};

/// How often the routes' totals are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// How many samples are kept: ten minutes' worth, and one more to take the
/// first rate from.
const KEPT: usize = 121;

/// One reading of every route's totals.
struct Sample {
    /// Milliseconds since the Unix epoch.
    at: u64,
    /// Each route's name, requests and 5xx answers so far.
    totals: Vec<(Arc<str>, u64, u64)>,
}

/// The last ten minutes of route totals, sampled every [`SAMPLE_EVERY`].
#[derive(Default)]
pub struct RateHistory {
    samples: Mutex<VecDeque<Sample>>,
}

impl RateHistory {
    /// Reads `gateway`'s route totals now.
    pub fn sample(&self, gateway: &Gateway) {
        let totals = (gateway.route_totals().iter())
            .map(|stats| (stats.name().clone(), stats.requests(), stats.errors()))
            .collect();
        self.push(Sample {
            at: unix_millis(SystemTime::now()),
            totals,
        });
    }

    fn push(&self, sample: Sample) {
        let mut samples = self.lock();
        if samples.len() == KEPT {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// Samples `gateway` now and every [`SAMPLE_EVERY`], for ever.
    pub async fn run(&self, gateway: &Gateway) {
        let mut every = tokio::time::interval(SAMPLE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            self.sample(gateway);
        }
    }

    /// Each interval between two samples, oldest first: its end and each
    /// route's requests and 5xx answers per second over it.
    fn points(&self) -> Vec<Value> {
        let samples = self.lock();
        (samples.iter().zip(samples.iter().skip(1)))
            .map(|(before, after)| {
                let seconds = (after.at.saturating_sub(before.at) as f64 / 1000.0).max(0.001);
                let routes: serde_json::Map<String, Value> = (after.totals.iter())
                    .map(|(name, requests, errors)| {
                        let (was_requests, was_errors) = (before.totals.iter())
                            .find(|(n, _, _)| n == name)
                            .map_or((0, 0), |(_, r, e)| (*r, *e));
                        let rate = |now: u64, was: u64| now.saturating_sub(was) as f64 / seconds;
                        let rates = json!({
                            "requests": rate(*requests, was_requests),
                            "errors": rate(*errors, was_errors),
                        });
                        (name.to_string(), rates)
                    })
                    .collect();
                json!({ "at": after.at, "routes": routes })
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Sample>> {
        // Plain data: consistent even if a holder panicked.
        self.samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The status document of `gateway`, with the rates of `history`.
pub fn document(gateway: &Gateway, history: &RateHistory) -> Value {
    let snapshot = gateway.snapshot();
    let routes: Vec<Value> = snapshot.routes().iter().map(route).collect();
    let groups = gateway.upstreams();
    let mut upstreams: Vec<(&String, Value)> = (groups.iter())
        .map(|(name, group)| {
            let targets: Vec<Value> = (group.target_statuses().into_iter())
                .map(|t| {
                    json!({
                        "address": t.address,
                        "weight": t.weight,
                        "in_flight": t.in_flight,
                        "health": t.health.as_str(),
                        "ejections": t.ejections,
                    })
                })
                .collect();
            (name, json!({ "name": name, "targets": targets }))
        })
        .collect();
    upstreams.sort_by(|a, b| a.0.cmp(b.0));
    let mut plugins: BTreeMap<String, (usize, usize, u64)> = BTreeMap::new();
    for (name, usage) in gateway.plugin_usage() {
        let entry = plugins.entry(name).or_default();
        entry.0 += 1;
        entry.1 += usage.vms;
        entry.2 += usage.memory_bytes;
    }
    let plugins: Vec<Value> = (plugins.into_iter())
        .map(|(name, (filters, vms, memory))| {
            json!({ "name": name, "filters": filters, "vms": vms, "memory_bytes": memory })
        })
        .collect();
    let reloads: Vec<Value> = (gateway.reloads().into_iter().rev())
        .map(|r| {
            json!({
                "at": unix_millis(r.at),
                "generation": r.generation,
                "outcome": if r.applied { "applied" } else { "refused" },
                "cause": r.cause,
                "reason": r.reason,
            })
        })
        .collect();
    json!({
        "generation": snapshot.generation(),
        "now": unix_millis(SystemTime::now()),
        "routes": routes,
        "upstreams": upstreams.into_iter().map(|(_, u)| u).collect::<Vec<_>>(),
        "plugins": plugins,
        "reloads": reloads,
        "rates": {
            "interval_seconds": SAMPLE_EVERY.as_secs(),
            "points": history.points(),
        },
    })
}

/// One route as the page lists it.
fn route(entry: &RouteEntry) -> Value {
    let matcher = &entry.route.matcher;
    let path = match &matcher.path {
        PathMatch::Exact(path) => format!("= {path}"),
        PathMatch::Prefix(path) => format!("{path}*"),
        PathMatch::Regex(regex) => format!("~ {}", regex.as_str()),
    };
    let hosts: Vec<String> = (matcher.hosts.iter())
        .map(|host| match host {
            HostMatch::Exact(name) => name.clone(),
            HostMatch::Suffix(suffix) => format!("*{suffix}"),
        })
        .collect();
    let methods: Vec<&str> = matcher.methods.iter().map(http::Method::as_str).collect();
    let (upstreams, respond): (Vec<&str>, Option<u16>) = match &entry.target {
        Target::Forward(group) => (vec![group.name()], None),
        Target::Split(split) => (split.groups().map(|g| g.name()).collect(), None),
        Target::Respond(fixed) => (Vec::new(), Some(fixed.status.as_u16())),
    };
    json!({
        "name": &*entry.name,
        "hosts": hosts,
        "path": path,
        "methods": methods,
        "upstreams": upstreams,
        "respond": respond,
        "filters": entry.chain.filter_names().collect::<Vec<_>>(),
        "requests": entry.stats.requests(),
        "errors": entry.stats.errors(),
    })
}

fn unix_millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_the_differences_between_samples_per_second() {
        let history = RateHistory::default();
        history.push(Sample {
            at: 10_000,
            totals: vec![("a".into(), 10, 1)],
        });
        history.push(Sample {
            at: 15_000,
            totals: vec![("a".into(), 60, 6), ("b".into(), 5, 0)],
        });
        let points = history.points();
        assert_eq!(
            points,
            [json!({
                "at": 15_000,
                "routes": {
                    "a": {"requests": 10.0, "errors": 1.0},
                    "b": {"requests": 1.0, "errors": 0.0},
                },
            })]
        );
    }

    #[test]
    fn keeps_ten_minutes_of_samples() {
        let history = RateHistory::default();
        for at in 0..(KEPT as u64 + 10) {
            history.push(Sample {
                at: at * 5_000,
                totals: Vec::new(),
            });
        }
        let points = history.points();
        assert_eq!(points.len(), 120);
        assert_eq!(points[0]["at"], 11 * 5_000);
    }
}
