//! Manifest → [`Snapshot`]: every route with its chain of filters and its
//! upstream group resolved by name.
//!
//! The long-lived parts a snapshot uses (the Wasm runtime, services, upstream
//! groups) are owned by the gateway and passed in, so that a later build can
//! share them with the running snapshot.

mod build;

pub use build::{BuildError, Started, chains};

use crate::config::Manifest;
use crate::config::model::{RouteAction, UpstreamId};
use crate::lifecycle::{Chain, Mirror, RouteEntry, Snapshot, Split, Target};
use crate::observe::RouteTotals;
use crate::upstream::Groups;

/// A route names an upstream group that was not built with the snapshot.
#[derive(Debug, thiserror::Error)]
#[error("route `{route}` forwards to upstream `{upstream}`, which is not running")]
pub struct MissingGroup {
    /// The route.
    pub route: String,
    /// The upstream group it names.
    pub upstream: String,
}

/// Assembles the snapshot of `manifest` from its `chains` (one per route, in
/// manifest order) and the upstream `groups` by name; each route counts its
/// requests into its entry of `totals` (created when new).
pub fn assemble(
    manifest: &Manifest,
    generation: u64,
    mut chains: Vec<Chain>,
    groups: &Groups,
    totals: &RouteTotals,
) -> Result<Snapshot, MissingGroup> {
    chains.resize_with(manifest.routes.len(), Chain::default);
    let routes = manifest
        .routes
        .iter()
        .zip(chains)
        .map(|(route, chain)| {
            let group = |id: UpstreamId| {
                let name = manifest.upstreams.get(id.0).map_or("", |u| u.name.as_str());
                groups.get(name).cloned().ok_or_else(|| MissingGroup {
                    route: route.name.clone(),
                    upstream: name.to_owned(),
                })
            };
            let target = match &route.action {
                RouteAction::Respond(fixed) => Target::Respond(fixed.clone()),
                RouteAction::Forward(id) => Target::Forward(group(*id)?),
                RouteAction::Split(split) => {
                    let weighted = (split.groups.iter())
                        .map(|&(id, weight)| Ok((group(id)?, weight)))
                        .collect::<Result<Vec<_>, MissingGroup>>()?;
                    Target::Split(Split::new(weighted, split.sticky.clone()))
                }
            };
            let mirror = match &route.mirror {
                Some(settings) => Some(Mirror::new(group(settings.upstream)?, settings.clone())),
                None => None,
            };
            Ok(RouteEntry {
                name: route.name.as_str().into(),
                stats: totals.get_or_create(&route.name),
                route: route.clone(),
                chain,
                target,
                mirror,
            })
        })
        .collect::<Result<Vec<_>, MissingGroup>>()?;
    Ok(Snapshot::new(generation, &manifest.listeners, routes))
}
