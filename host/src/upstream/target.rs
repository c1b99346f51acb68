//! A group's targets as a set that can be replaced whole: each target's
//! connections, load and health live in a [`TargetState`] found again by its
//! address, so a new set (a reload, or discovery) keeps the state of every
//! target that stays, wherever it now sits in the list.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::uri::Authority;

use super::GroupError;
use super::balancer::{Balancer, TargetView};
use super::connector::{ConnectSettings, TargetConnections};
use super::health::Health;
use crate::config::model::LbPolicy;

/// A target as a set lists it: where, and its relative share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    /// `host:port`.
    pub address: String,
    /// Relative share of traffic (≥ 1).
    pub weight: u32,
}

/// One target: its connections, its live load and its health.
pub struct TargetState {
    pub(super) address: Arc<str>,
    pub(super) connections: TargetConnections,
    pub(super) in_flight: AtomicUsize,
    pub(super) health: Health,
}

impl TargetState {
    /// The state of a target at `address`; `joined` starts its slow start.
    fn new(address: &str, settings: &ConnectSettings, joined: bool) -> Result<Self, GroupError> {
        let authority: Authority = address.parse()?;
        Ok(Self {
            address: address.into(),
            connections: TargetConnections::new(authority, settings),
            in_flight: AtomicUsize::new(0),
            health: if joined {
                Health::new()
            } else {
                Health::settled()
            },
        })
    }
}

/// The targets of a group at one moment, and the balancer over them.
pub struct TargetSet {
    pub(super) targets: Vec<Arc<TargetState>>,
    pub(super) weights: Vec<u32>,
    pub(super) addresses: Arc<[String]>,
    pub(super) balancer: Balancer,
}

impl TargetSet {
    /// A set of `specs`, reusing the state of each target `previous` has at
    /// the same address. A target listed twice is kept once, with the
    /// weights added.
    pub fn new(
        specs: &[TargetSpec],
        policy: &LbPolicy,
        settings: &ConnectSettings,
        previous: Option<&TargetSet>,
    ) -> Result<Self, GroupError> {
        let kept: HashMap<&str, &Arc<TargetState>> = previous
            .map(|p| p.targets.iter().map(|t| (&*t.address, t)).collect())
            .unwrap_or_default();
        let mut targets: Vec<Arc<TargetState>> = Vec::with_capacity(specs.len());
        let mut weights: Vec<u32> = Vec::with_capacity(specs.len());
        for spec in specs {
            if let Some(i) = targets.iter().position(|t| *t.address == *spec.address) {
                weights[i] = weights[i].saturating_add(spec.weight);
                continue;
            }
            let state = match kept.get(spec.address.as_str()) {
                Some(state) => Arc::clone(state),
                None => Arc::new(TargetState::new(
                    &spec.address,
                    settings,
                    previous.is_some(),
                )?),
            };
            targets.push(state);
            weights.push(spec.weight.max(1));
        }
        let addresses: Arc<[String]> = targets.iter().map(|t| t.address.to_string()).collect();
        let names: Vec<&str> = addresses.iter().map(String::as_str).collect();
        Ok(Self {
            balancer: Balancer::new(policy.clone(), &names, weights.clone()),
            targets,
            weights,
            addresses,
        })
    }

    /// The index of `target` in this set, if it is still in it.
    pub(super) fn index_of(&self, target: &Arc<TargetState>) -> Option<usize> {
        self.targets.iter().position(|t| Arc::ptr_eq(t, target))
    }

    /// Targets that passive detection holds out at `now`.
    pub(super) fn ejected(&self, now: u64) -> usize {
        self.targets
            .iter()
            .filter(|t| t.health.ejected(now))
            .count()
    }
}

/// The balancer's view of a set at one moment: health only when the group
/// checks it, slow start only when the group has one.
pub(super) struct SetView<'a> {
    pub set: &'a TargetSet,
    /// `Some(now)` when the group takes targets out of rotation.
    pub checked_at: Option<u64>,
    /// The slow-start window and `now`, when the group has one.
    pub slow_start: Option<(Duration, u64)>,
}

impl TargetView for SetView<'_> {
    fn available(&self, i: usize) -> bool {
        self.checked_at
            .is_none_or(|now| self.set.targets[i].health.available(now))
    }

    fn in_flight(&self, i: usize) -> usize {
        self.set.targets[i].in_flight.load(Ordering::Relaxed)
    }

    fn share(&self, i: usize) -> f64 {
        self.slow_start.map_or(1.0, |(window, now)| {
            self.set.targets[i].health.slow_start_share(window, now)
        })
    }
}
