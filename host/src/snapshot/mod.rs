//! Manifest → [`Snapshot`]: every route with its chain of filters and its
//! upstream group resolved by name.
//!
//! The long-lived parts a snapshot uses (the Wasm runtime, services, upstream
//! groups) are owned by the gateway and passed in, so that a later build can
//! share them with the running snapshot.

mod build;

use std::sync::Arc;

pub use build::{BuildError, Started, chains};

use crate::config::Manifest;
use crate::config::model::RouteAction;
use crate::lifecycle::{Chain, RouteEntry, Snapshot, Target};
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
/// manifest order) and the upstream `groups` by name.
pub fn assemble(
    manifest: &Manifest,
    generation: u64,
    mut chains: Vec<Chain>,
    groups: &Groups,
) -> Result<Snapshot, MissingGroup> {
    chains.resize_with(manifest.routes.len(), Chain::default);
    let routes = manifest
        .routes
        .iter()
        .zip(chains)
        .map(|(route, chain)| {
            let target = match &route.action {
                RouteAction::Respond(fixed) => Target::Respond(fixed.clone()),
                RouteAction::Forward(id) => {
                    let name = manifest.upstreams.get(id.0).map_or("", |u| u.name.as_str());
                    let group = groups.get(name).ok_or_else(|| MissingGroup {
                        route: route.name.clone(),
                        upstream: name.to_owned(),
                    })?;
                    Target::Forward(Arc::clone(group))
                }
            };
            Ok(RouteEntry {
                route: route.clone(),
                chain,
                target,
            })
        })
        .collect::<Result<Vec<_>, MissingGroup>>()?;
    Ok(Snapshot::new(generation, &manifest.listeners, routes))
}
