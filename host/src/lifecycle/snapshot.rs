//! The config a request is served with: one immutable [`Snapshot`] of routers,
//! routes, their chains and their upstream groups, read once per request and
//! swapped whole (`crate::snapshot` builds it from a manifest).
//!
//! Everything in it is reached by name or resolved at build time: a route
//! entry holds its own chain and upstream group, so nothing points into
//! another structure by position.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::chain::Chain;
use crate::config::model::{FixedResponse, Listener, ListenerId, Route, RouteId};
use crate::router::{RequestView, Router};
use crate::upstream::UpstreamGroup;

/// Where a route's requests go.
pub enum Target {
    /// Forward to an upstream group.
    Forward(Arc<UpstreamGroup>),
    /// Answer with a fixed response.
    Respond(FixedResponse),
}

/// A route with everything it needs, resolved.
pub struct RouteEntry {
    /// The route as configured.
    pub route: Route,
    /// Its filters (global ones first).
    pub chain: Chain,
    /// Where its requests go.
    pub target: Target,
}

/// One immutable config.
pub struct Snapshot {
    generation: u64,
    routers: FxHashMap<String, Router>,
    routes: Vec<RouteEntry>,
}

impl Snapshot {
    /// A snapshot serving `routes` on `listeners` (a route's `listeners` ids
    /// index that slice).
    pub fn new(generation: u64, listeners: &[Listener], routes: Vec<RouteEntry>) -> Self {
        let routers = listeners
            .iter()
            .enumerate()
            .map(|(l, listener)| {
                let served = routes.iter().enumerate().filter(|(_, e)| {
                    e.route.listeners.is_empty() || e.route.listeners.contains(&ListenerId(l))
                });
                let router = Router::new(served.map(|(i, e)| (RouteId(i), &e.route.matcher)));
                (listener.name.clone(), router)
            })
            .collect();
        Self {
            generation,
            routers,
            routes,
        }
    }

    /// Counts the configs this gateway has run; the first is 1.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The route for `request` on the listener named `listener`.
    pub fn route(&self, listener: &str, request: &RequestView<'_>) -> Option<&RouteEntry> {
        let id = self.routers.get(listener)?.find(request)?;
        self.routes.get(id.0)
    }
}
