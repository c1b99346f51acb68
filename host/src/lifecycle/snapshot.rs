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
use crate::config::model::{FixedResponse, Listener, ListenerId, PathOptions, Route, RouteId};
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

/// What one listener serves: its routes and how it normalizes paths.
pub struct ListenerRoutes {
    /// The listener's path normalization.
    pub paths: PathOptions,
    router: Router,
}

/// One immutable config.
pub struct Snapshot {
    generation: u64,
    listeners: FxHashMap<String, ListenerRoutes>,
    routes: Vec<RouteEntry>,
}

impl Snapshot {
    /// A snapshot serving `routes` on `listeners` (a route's `listeners` ids
    /// index that slice).
    pub fn new(generation: u64, listeners: &[Listener], routes: Vec<RouteEntry>) -> Self {
        let served = listeners
            .iter()
            .enumerate()
            .map(|(l, listener)| {
                let served = routes.iter().enumerate().filter(|(_, e)| {
                    e.route.listeners.is_empty() || e.route.listeners.contains(&ListenerId(l))
                });
                let router = Router::new(served.map(|(i, e)| (RouteId(i), &e.route.matcher)));
                let routes = ListenerRoutes {
                    paths: listener.paths,
                    router,
                };
                (listener.name.clone(), routes)
            })
            .collect();
        Self {
            generation,
            listeners: served,
            routes,
        }
    }

    /// Counts the configs this gateway has run; the first is 1.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// What the listener named `listener` serves.
    pub fn listener(&self, listener: &str) -> Option<&ListenerRoutes> {
        self.listeners.get(listener)
    }

    /// The route for `request` (canonical target) among `served`'s routes.
    pub fn route(&self, served: &ListenerRoutes, request: &RequestView<'_>) -> Option<&RouteEntry> {
        let id = served.router.find(request)?;
        self.routes.get(id.0)
    }
}

impl ListenerRoutes {
    /// The methods that would find a route for `request` when its own finds
    /// none (see [`Router::allowed_methods`]).
    pub fn allowed_methods(&self, request: &RequestView<'_>) -> Vec<http::Method> {
        self.router.allowed_methods(request)
    }
}
