//! The gateway's upstream groups by name, swapped whole when the config
//! changes.
//!
//! Requests reach their group through the config snapshot; callouts
//! (`proxy_http_call`) name a group and find it here, so both always see the
//! groups of the running config, never the set that existed when a filter
//! started.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::{InvalidUpstream, UpstreamGroup};
use crate::config::model::Upstream;

/// Upstream groups by name.
pub type Groups = HashMap<String, Arc<UpstreamGroup>>;

/// The running upstream groups, by name.
#[derive(Default)]
pub struct Directory {
    groups: ArcSwap<Groups>,
    /// Where the groups' background work (health checks, discovery) runs: the runtime
    /// the directory was made on.
    runtime: Option<tokio::runtime::Handle>,
}

impl Directory {
    /// An empty directory whose groups' background work runs on the current
    /// runtime (none outside one).
    pub fn new() -> Self {
        Self {
            groups: ArcSwap::default(),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// The group named `name` in the running config.
    pub fn get(&self, name: &str) -> Option<Arc<UpstreamGroup>> {
        self.groups.load().get(name).cloned()
    }

    /// The running set.
    pub fn current(&self) -> Arc<Groups> {
        self.groups.load_full()
    }

    /// Makes `groups` the running set, and starts the health checks and
    /// discovery of groups new to it.
    pub fn publish(&self, groups: Arc<Groups>) {
        if let Some(runtime) = &self.runtime {
            for group in groups.values() {
                group.start_checks(runtime);
                group.start_discovery(runtime);
            }
        }
        self.groups.store(groups);
    }
}

/// Builds a group for every upstream of the manifest, keyed by name. A group
/// of `running` whose configuration is unchanged is kept as it is, with its
/// pooled connections and balancer state; a changed one passes on the
/// connections, load and health of the targets it keeps, and the targets
/// its discovery found when it follows the same source.
pub fn build(upstreams: &[Upstream], running: &Groups) -> Result<Groups, InvalidUpstream> {
    upstreams
        .iter()
        .map(|u| {
            if let Some(kept) = running.get(&u.name).filter(|g| g.config() == u) {
                return Ok((u.name.clone(), Arc::clone(kept)));
            }
            let previous = running.get(&u.name).map(Arc::as_ref);
            let group = UpstreamGroup::new(u, previous).map_err(|source| InvalidUpstream {
                upstream: u.name.clone(),
                source,
            })?;
            if let Some(previous) = previous {
                group.take_discovered(previous);
            }
            Ok((u.name.clone(), Arc::new(group)))
        })
        .collect()
}
