//! The config a request is served with: one immutable [`Snapshot`] of routers,
//! routes, their chains and their upstream groups, read once per request and
//! swapped whole (`crate::snapshot` builds it from a manifest).
//!
//! Everything in it is reached by name or resolved at build time: a route
//! entry holds its own chain and upstream group, so nothing points into
//! another structure by position.

use std::sync::Arc;

use http::{HeaderMap, Uri};
use rustc_hash::FxHashMap;

use super::chain::Chain;
use super::mirror::Mirror;
use super::split::Split;
use crate::config::model::{FixedResponse, Listener, ListenerId, PathOptions, Route, RouteId};
use crate::observe::RouteStats;
use crate::router::{RequestView, Router};
use crate::upstream::UpstreamGroup;

/// Where a route's requests go.
pub enum Target {
    /// Forward to an upstream group.
    Forward(Arc<UpstreamGroup>),
    /// Forward to one of several upstream groups, chosen by weight.
    Split(Split),
    /// Answer with a fixed response.
    Respond(FixedResponse),
}

/// Where one request goes, once a split has chosen.
#[derive(Clone, Copy)]
pub enum Destination<'a> {
    /// This upstream group.
    Upstream(&'a Arc<UpstreamGroup>),
    /// A fixed response.
    Respond(&'a FixedResponse),
}

impl Target {
    /// Where a request (its `headers` and `uri`) from `client_ip` goes. A
    /// split chooses here, once per request, before any filter runs.
    pub fn destination(&self, headers: &HeaderMap, uri: &Uri, client_ip: &str) -> Destination<'_> {
        match self {
            Self::Forward(group) => Destination::Upstream(group),
            Self::Split(split) => Destination::Upstream(split.choose(headers, uri, client_ip)),
            Self::Respond(fixed) => Destination::Respond(fixed),
        }
    }
}

impl<'a> Destination<'a> {
    /// The upstream group, when it forwards.
    pub fn group(self) -> Option<&'a Arc<UpstreamGroup>> {
        match self {
            Self::Upstream(group) => Some(group),
            Self::Respond(_) => None,
        }
    }
}

/// A route with everything it needs, resolved.
pub struct RouteEntry {
    /// The route's name, shared with the records of its requests.
    pub name: Arc<str>,
    /// The route's request and error totals, kept across reloads.
    pub stats: Arc<RouteStats>,
    /// The route as configured.
    pub route: Route,
    /// Its filters (global ones first).
    pub chain: Chain,
    /// Where its requests go.
    pub target: Target,
    /// Where copies of its requests go, if anywhere.
    pub mirror: Option<Mirror>,
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

    /// Every route, in manifest order.
    pub fn routes(&self) -> &[RouteEntry] {
        &self.routes
    }

    /// The route named `name`.
    pub fn route_named(&self, name: &str) -> Option<&RouteEntry> {
        self.routes.iter().find(|e| e.route.name == name)
    }

    /// Takes over the live state (copies in flight, counts) of `running`'s
    /// mirrors whose route, group and settings stay the same.
    pub fn take_over_mirrors(&mut self, running: &Snapshot) {
        let by_name: FxHashMap<&str, &Mirror> = (running.routes.iter())
            .filter_map(|e| Some((e.route.name.as_str(), e.mirror.as_ref()?)))
            .collect();
        for entry in &mut self.routes {
            if let (Some(mirror), Some(old)) =
                (&mut entry.mirror, by_name.get(entry.route.name.as_str()))
            {
                mirror.take_over(old);
            }
        }
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
